//! CPU time spent by the processes a measurement runs on: this one (load tool and servers)
//! and the local services it drives (Redis, the vault, the broker), from `/proc/<pid>/stat`.
//! Divided by the events of a measurement it gives CPU per event; divided by its wall time,
//! the cores it kept busy.

use std::path::Path;

/// The processes whose CPU time is summed.
pub struct Meter {
    pids: Vec<u32>,
    /// Clock ticks per second, the unit of `/proc/<pid>/stat`'s times.
    ticks: f64,
}

impl Meter {
    /// This process and `others` (those that are not local processes are left out).
    pub fn new(others: impl IntoIterator<Item = u32>) -> anyhow::Result<Self> {
        let out = std::process::Command::new("getconf").arg("CLK_TCK").output()?;
        let ticks: f64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
        anyhow::ensure!(ticks > 0.0, "CLK_TCK is {ticks}");
        let mut pids = vec![std::process::id()];
        pids.extend(others.into_iter().filter(|pid| Path::new(&format!("/proc/{pid}/stat")).exists()));
        Ok(Self { pids, ticks })
    }

    /// User and system CPU seconds the processes have used so far.
    pub fn seconds(&self) -> f64 {
        self.pids.iter().filter_map(|pid| cpu_ticks(*pid)).sum::<u64>() as f64 / self.ticks
    }
}

/// utime + stime of `pid`, all its threads.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are counted from its `)`.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The pid of the Redis server behind `redis`, from `INFO server`.
pub async fn redis_pid(redis: &mut redis::aio::ConnectionManager) -> Option<u32> {
    let info: String = redis::cmd("INFO").arg("server").query_async(redis).await.ok()?;
    info.lines().find_map(|l| l.strip_prefix("process_id:")).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_cpu() {
        let meter = Meter::new([]).unwrap();
        let before = meter.seconds();
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while meter.seconds() <= before && started.elapsed().as_secs() < 10 {
            x = x.wrapping_add(std::hint::black_box(x) ^ 1);
        }
        assert!(meter.seconds() > before, "no CPU time counted after spinning");
    }
}
