//! CPU time spent by the processes a measurement runs on: this one (load tool and servers)
//! and the local services it drives (Redis, the vault, the broker), from `/proc/<pid>/stat`.
//! Divided by the events of a measurement it gives CPU per event; divided by its wall time,
//! the cores it kept busy.

use std::path::Path;

/// The processes whose CPU time is summed, each with a name for the breakdown.
pub struct Meter {
    pids: Vec<(&'static str, u32)>,
    /// Clock ticks per second, the unit of `/proc/<pid>/stat`'s times.
    ticks: f64,
}

impl Meter {
    /// This process (named "bench") and `others`, by name. One that is not a local process
    /// is left out, and said so on standard error.
    pub fn new(others: impl IntoIterator<Item = (&'static str, Option<u32>)>) -> anyhow::Result<Self> {
        let out = std::process::Command::new("getconf").arg("CLK_TCK").output()?;
        let ticks: f64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
        anyhow::ensure!(ticks > 0.0, "CLK_TCK is {ticks}");
        let mut pids = vec![("bench", std::process::id())];
        for (name, pid) in others {
            match pid.filter(|pid| Path::new(&format!("/proc/{pid}/stat")).exists()) {
                Some(pid) => pids.push((name, pid)),
                None => eprintln!("{name} is not a local process: its CPU time is left out of the figures"),
            }
        }
        Ok(Self { pids, ticks })
    }

    /// The names of the measured processes, in the order of [`Meter::by_process`].
    pub fn names(&self) -> Vec<&'static str> {
        self.pids.iter().map(|(name, _)| *name).collect()
    }

    /// User and system CPU seconds each process has used so far (0 for one that ended).
    pub fn by_process(&self) -> Vec<f64> {
        self.pids.iter().map(|(_, pid)| cpu_ticks(*pid).unwrap_or(0) as f64 / self.ticks).collect()
    }
}

/// User and system CPU seconds `pids` have used so far, together (0 for one that ended).
pub fn seconds_of(pids: &[u32]) -> anyhow::Result<f64> {
    let out = std::process::Command::new("getconf").arg("CLK_TCK").output()?;
    let ticks: f64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    anyhow::ensure!(ticks > 0.0, "CLK_TCK is {ticks}");
    Ok(pids.iter().map(|pid| cpu_ticks(*pid).unwrap_or(0)).sum::<u64>() as f64 / ticks)
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

/// The pid of the Redis server behind `redis`, from `INFO server`, when `client` reaches it
/// on this machine (another machine's pid could name an unrelated process here).
pub async fn redis_pid(client: &redis::Client, redis: &mut redis::aio::ConnectionManager) -> Option<u32> {
    if !on_this_machine(client) {
        return None;
    }
    let info: String = redis::cmd("INFO").arg("server").query_async(redis).await.ok()?;
    info.lines().find_map(|l| l.strip_prefix("process_id:")).and_then(|v| v.trim().parse().ok())
}

/// Whether `client` connects to a server on this machine.
fn on_this_machine(client: &redis::Client) -> bool {
    match client.get_connection_info().addr() {
        redis::ConnectionAddr::Unix(_) => true,
        redis::ConnectionAddr::Tcp(host, _) | redis::ConnectionAddr::TcpTls { host, .. } => {
            matches!(host.as_str(), "localhost" | "127.0.0.1" | "::1" | "[::1]")
        }
        // A kind of address this code does not know: not assumed local.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_local_redis_is_metered() {
        for (url, local) in [
            ("redis://127.0.0.1:6379", true),
            ("redis://localhost/", true),
            ("redis://[::1]:6379", true),
            ("redis://redis.internal:6379", false),
            ("redis://10.0.0.7:6379", false),
        ] {
            assert_eq!(on_this_machine(&redis::Client::open(url).unwrap()), local, "{url}");
        }
    }

    #[test]
    fn this_process_uses_cpu() {
        let meter = Meter::new([("gone", None)]).unwrap();
        assert_eq!(meter.names(), ["bench"]);
        let before = meter.by_process()[0];
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while meter.by_process()[0] <= before && started.elapsed().as_secs() < 10 {
            x = x.wrapping_add(std::hint::black_box(x) ^ 1);
        }
        assert!(meter.by_process()[0] > before, "no CPU time counted after spinning");
    }
}
