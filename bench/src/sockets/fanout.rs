//! The fan-out phase: one message to every open connection, as a store's announcement
//! reaches every page of its shop. The gateway's path is the cell's: one `PUBLISH` on the
//! store's channel, each gateway process rendering the announcement once and queueing the
//! same bytes on all of its sockets. The peer's is a driver socket per server process
//! sending the frame once, written to each of its sockets from one buffer.
//!
//! Announcements go out `--announcement-gap-ms` apart, so each is measured alone: the
//! sockets it reached, and how long after publishing the last of them read it. Its rate is
//! the one over the other. The CPU time the server processes (and the client workers)
//! spent over the phase, divided by the deliveries, says what a delivery costs each side
//! whatever else shares the cores.

use std::{collections::HashMap, time::Duration};

use futures_util::SinkExt;
use nudge_contracts::proto::interventions::v1::Intervention;
use nudge_data_plane_gateway::route::announcement_frame;
use tokio_tungstenite::tungstenite::Message;

use super::{
    Args, Driver, Fleet,
    clients::{ANNOUNCEMENT_PHASE, connect},
    now_us,
};

/// What the fan-out phase measured.
#[derive(Default)]
pub(super) struct FannedOut {
    /// Per announcement: the sockets it reached, and µs from publishing to the last of them.
    pub announcements: Vec<(u64, u32)>,
    /// Every delivery's latency, sorted, µs.
    pub latencies: Vec<f64>,
    /// CPU seconds the server processes spent during the phase, and the client workers.
    pub server_cpu_s: f64,
    pub client_cpu_s: f64,
}

impl FannedOut {
    /// Each announcement's deliveries per second (sockets reached over the time to the last
    /// of them), sorted.
    pub fn rates(&self) -> Vec<f64> {
        let mut rates: Vec<f64> = self
            .announcements
            .iter()
            .filter(|(_, latest)| *latest > 0)
            .map(|(reached, latest)| *reached as f64 / (f64::from(*latest) / 1e6))
            .collect();
        rates.sort_by(f64::total_cmp);
        rates
    }

    /// Milliseconds from publishing to the last socket, per announcement, sorted.
    pub fn times_ms(&self) -> Vec<f64> {
        let mut times: Vec<f64> = self.announcements.iter().map(|(_, latest)| f64::from(*latest) / 1000.0).collect();
        times.sort_by(f64::total_cmp);
        times
    }

    /// CPU µs per delivery of the servers and of the clients.
    pub fn cpu_us_per_delivery(&self) -> (f64, f64) {
        let deliveries = self.announcements.iter().map(|(n, _)| *n).sum::<u64>() as f64;
        (self.server_cpu_s * 1e6 / deliveries, self.client_cpu_s * 1e6 / deliveries)
    }

    /// Sockets reached, per announcement, sorted.
    pub fn reached(&self) -> Vec<f64> {
        let mut reached: Vec<f64> = self.announcements.iter().map(|(n, _)| *n as f64).collect();
        reached.sort_by(f64::total_cmp);
        reached
    }
}

/// Sends `args.announcements` announcements to every connection, one at a time, and
/// gathers what the client workers saw.
pub(super) async fn fan_out(fleet: &mut Fleet, args: &Args, driver: &Driver) -> anyhow::Result<FannedOut> {
    if args.announcements == 0 {
        return Ok(FannedOut::default());
    }
    // Whatever the routing phases left queued is delivered first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut drivers = Vec::new();
    if matches!(driver, Driver::Peer) {
        for (_, addr) in &fleet.servers {
            drivers.push(connect(*addr, std::net::Ipv4Addr::LOCALHOST, &format!("ws://{addr}/driver")).await?);
        }
    }
    let pid = |p: &super::Process| p.child.id();
    let servers: Vec<u32> = fleet.servers.iter().filter_map(|(p, _)| pid(p)).collect();
    let workers: Vec<u32> = fleet.workers.iter().filter_map(pid).collect();
    let (servers_before, workers_before) = (crate::cpu::seconds_of(&servers)?, crate::cpu::seconds_of(&workers)?);
    for number in 0..args.announcements {
        let mut announcement = Intervention {
            intervention_id: format!("{ANNOUNCEMENT_PHASE}{number}"),
            kind: "announcement".into(),
            title: "Free shipping until midnight".into(),
            body: now_us().to_string(),
            ..Default::default()
        };
        match driver {
            Driver::Gateway(publisher, tenant) => {
                announcement.tenant_id = tenant.to_string();
                publisher.announce(tenant, &announcement).await?;
            }
            Driver::Peer => {
                let frame = format!("*|{}", announcement_frame(&announcement));
                for d in &mut drivers {
                    d.send(Message::Text(frame.clone().into())).await?;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(args.announcement_gap_ms)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server_cpu_s = crate::cpu::seconds_of(&servers)? - servers_before;
    let client_cpu_s = crate::cpu::seconds_of(&workers)? - workers_before;

    let dir = std::env::temp_dir();
    let mut by_number: HashMap<u32, (u64, u32)> = HashMap::new();
    let mut latencies: Vec<f64> = Vec::new();
    for (k, w) in fleet.workers.iter_mut().enumerate() {
        let path = dir.join(format!("nudge-bench-fanout-{}-{k}", std::process::id()));
        w.say(&format!("fanout-report {}", path.display())).await?;
        let answer = w.line(Duration::from_secs(60)).await?;
        anyhow::ensure!(answer.starts_with("fanout"), "{}: {answer}", fleet.name);
        for entry in answer.split_whitespace().skip(1) {
            let parts: Vec<u64> = entry.split(':').filter_map(|p| p.parse().ok()).collect();
            let &[number, reached, latest] = parts.as_slice() else { anyhow::bail!("bad fan-out entry {entry:?}") };
            let seen = by_number.entry(u32::try_from(number)?).or_default();
            seen.0 += reached;
            seen.1 = seen.1.max(u32::try_from(latest)?);
        }
        let bytes = std::fs::read(&path)?;
        std::fs::remove_file(&path)?;
        latencies.extend(bytes.chunks_exact(4).map(|c| f64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))));
    }
    latencies.sort_by(f64::total_cmp);
    let mut numbers: Vec<u32> = by_number.keys().copied().collect();
    numbers.sort_unstable();
    let announcements: Vec<(u64, u32)> = numbers.iter().map(|n| by_number[n]).collect();
    eprintln!(
        "{} (fan-out): {} announcements sent, {} seen, reaching {:?} sockets",
        fleet.name,
        args.announcements,
        announcements.len(),
        announcements.iter().map(|a| a.0).collect::<Vec<_>>()
    );
    Ok(FannedOut { announcements, latencies, server_cpu_s, client_cpu_s })
}
