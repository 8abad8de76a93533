//! `nudge-bench sockets`: the gateway under many shopper connections, beside a Node `ws`
//! server (`bench/peers/ws-server.js`) in the same run.
//!
//! A process here may hold 20,000 open files, so both sides scale out: the connections are
//! spread over server processes of at most `--per-process` sockets each (the gateway is
//! stateless, so this is how it scales anyway; the peer gets the same number of
//! processes), and over client worker processes (`socket-clients`, one per server) that
//! open them from their own source addresses (127.0.0.x, each with ~28k ephemeral ports).
//! Measured:
//!
//! - **idle memory**: the servers' resident set growth per open connection, at each
//!   connection count;
//! - **routing**: messages addressed to one shopper each, as fast as the publishers go, for
//!   a few seconds with every connection open while some connections churn (close and
//!   reopen); deliveries per second and the delivery latency (publish → the client read it),
//!   each intervention counted and timed at its first delivery; deliveries of one the
//!   client had received before (a history replay after a reconnect, when the
//!   acknowledgement had not been stored yet) are counted apart.
//!
//! - **fan-out**: one announcement to every connection, a few times, each alone: the
//!   deliveries per second of each (sockets reached over the time until the last of them
//!   read it) and the per-socket latency ([`fanout`]).
//!
//! The gateway is driven exactly as a cell runs it: session tokens, the real Redis (the
//! shopper's history appended and the tenant's channel published to in batches,
//! per-tenant subscriptions), the keepalive sweep, an acknowledgement from the
//! client for every delivery. The peer routes from an in-memory map, with no Redis, no
//! history and no acknowledgements: the floor a bare socket server stands on. With
//! `--peer-acks` its clients acknowledge every delivery too and it parses each, so the two
//! socket layers compare like for like.

use std::{
    net::{Ipv4Addr, SocketAddr},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use axum::middleware::from_fn_with_state;
use futures_util::SinkExt;
use nudge_contracts::{ShopperId, proto::interventions::v1::Intervention};
use nudge_data_plane_directory::session::{SessionConfig, SessionSigner};
use nudge_data_plane_gateway::{
    GatewayConfig, GatewayMetrics, GatewayState, Hub,
    hub::{ShopperAddress, heartbeat},
    route::{AckWriter, History, InterventionPublisher, Naming, push_frame},
};
use nudge_platform_http::middleware::{HttpMetrics, trace_layer};
use nudge_platform_telemetry::Metrics;
use nudge_tenants::{CellId, PublishableKey, TenantId};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use self::clients::connect;
use crate::{
    stats::quantile,
    targets::{BENCH_SESSION_SECRET, Store, directory_for},
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Connection counts at which idle memory is measured (ascending; connections are added
    /// to reach each one).
    #[arg(long, value_delimiter = ',', default_value = "10000,50000,100000")]
    connections: Vec<usize>,
    /// Most sockets one server process (and one client worker) holds.
    #[arg(long, default_value_t = 17_000)]
    per_process: usize,
    /// Source addresses each client worker spreads its connections over.
    #[arg(long, default_value_t = 2)]
    addresses: u8,
    /// Seconds of routed messages with every connection open.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent publishers (gateway) or driver sockets per server (peer).
    #[arg(long, default_value_t = 32)]
    publishers: usize,
    /// Messages per second (in all) while the delivery latency is measured; throughput is
    /// measured unpaced.
    #[arg(long, default_value_t = 5_000)]
    rate: u64,
    /// Connections closed and reopened per second while messages are routed (in all).
    #[arg(long, default_value_t = 200)]
    churn: usize,
    /// Only the gateway.
    #[arg(long)]
    no_peer: bool,
    /// The peer's clients acknowledge every delivery too, and the peer parses each
    /// acknowledgement (and stores nothing): the socket layer compared like for like.
    #[arg(long)]
    peer_acks: bool,
    /// Runtime worker threads of each gateway process (tokio's `TOKIO_WORKER_THREADS`); 0,
    /// one per core, as the cell binary runs on this machine. 1 is how a cell in a
    /// container of one CPU or less runs (its runtime sizes itself by the CPU limit), and how
    /// each Node peer runs (one event loop).
    #[arg(long, default_value_t = 0)]
    server_threads: usize,
    /// Announcements of the fan-out phase (each to every connection; 0 skips the phase).
    #[arg(long, default_value_t = 10)]
    announcements: u32,
    /// Milliseconds between two announcements, so each is measured alone.
    #[arg(long, default_value_t = 2_000)]
    announcement_gap_ms: u64,
}

/// `nudge-bench socket-server`: the gateway as a cell mounts it, in its own process.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    #[arg(long)]
    redis: String,
    #[arg(long)]
    prefix: String,
    #[arg(long)]
    tenant: String,
    #[arg(long)]
    key: String,
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn signer() -> anyhow::Result<SessionSigner> {
    Ok(SessionSigner::new(&SessionConfig { secrets: vec![BENCH_SESSION_SECRET.into()], ttl_secs: 3600 })?)
}

/// Runs the gateway on 127.0.0.1 until killed; prints `listening ADDR`.
pub async fn serve(args: ServerArgs) -> anyhow::Result<()> {
    let store = Store { tenant: args.tenant.parse()?, key: PublishableKey::parse(&args.key)? };
    let (directory, _) = directory_for(store, u32::MAX)?;
    let client = redis::Client::open(args.redis.as_str())?;
    let redis = client.get_connection_manager().await?;
    let naming = Naming::new(&args.prefix, &CellId::default_shared());
    let config = GatewayConfig::default();
    let hub = Arc::new(Hub::default());
    let shutdown = CancellationToken::new();
    let metrics = Metrics::new("bench");
    tokio::spawn(nudge_data_plane_gateway::subscriber::subscribe(
        client,
        naming.clone(),
        hub.clone(),
        nudge_data_plane_gateway::subscriber::RouteMetrics::register(&metrics),
        Arc::default(),
        shutdown.clone(),
    ));
    tokio::spawn(heartbeat(
        hub.clone(),
        directory.clone(),
        config.ping_interval(),
        config.idle_timeout(),
        shutdown.clone(),
    ));
    let gateway_metrics = GatewayMetrics::register(&metrics);
    let history = History::new(redis, naming, config.history.clone());
    // Deliveries are not billed here.
    let (acks, write_acks) =
        AckWriter::new(history.clone(), gateway_metrics.ack_failures(), Arc::new(|_, _| {}), shutdown.clone());
    tokio::spawn(write_acks);
    let state = GatewayState {
        history,
        acks,
        config,
        directory,
        hub,
        sessions: Arc::new(signer()?),
        metrics: gateway_metrics,
        draining: Arc::default(),
    };
    let (router, _) = nudge_data_plane_gateway::router().with_state(Arc::new(state)).split_for_parts();
    let router = router.layer(from_fn_with_state(HttpMetrics::register(&metrics), trace_layer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?);
    axum::serve(listener, router).await?;
    Ok(())
}

/// Connections each server takes and drops before its baseline is read: enough to set up
/// the runtime and allocator, few enough that the memory they leave for reuse (up to 100
/// connections' worth, 1 % of the smallest count) barely flatters the figures.
const WARM_UP: usize = 100;

/// A child process this benchmark talks to over its stdin and stdout.
struct Process {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Process {
    fn spawn(what: &str, mut command: Command) -> anyhow::Result<Self> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let stdin = child.stdin.take().context("no stdin")?;
        let lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        Ok(Self { child, stdin, lines })
    }

    async fn line(&mut self, wait: Duration) -> anyhow::Result<String> {
        tokio::time::timeout(wait, self.lines.next_line())
            .await
            .context("no answer in time")??
            .context("the process exited")
    }

    async fn say(&mut self, line: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        Ok(self.stdin.flush().await?)
    }

    /// Resident set, bytes.
    fn rss(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("the process exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("no VmRSS")?;
        Ok(kb * 1024)
    }
}

/// Server processes of one kind, each with its client worker.
struct Fleet {
    name: &'static str,
    servers: Vec<(Process, SocketAddr)>,
    workers: Vec<Process>,
}

impl Fleet {
    fn rss(&self) -> anyhow::Result<u64> {
        self.servers.iter().map(|(p, _)| p.rss()).sum()
    }

    async fn all(&mut self, command: &str, wait: Duration) -> anyhow::Result<Vec<String>> {
        for w in &mut self.workers {
            w.say(command).await?;
        }
        let mut answers = Vec::new();
        for w in &mut self.workers {
            let answer = w.line(wait).await.with_context(|| format!("{}: `{command}`", self.name))?;
            anyhow::ensure!(!answer.starts_with("failed"), "{}: `{command}`: {answer}", self.name);
            answers.push(answer);
        }
        Ok(answers)
    }
}

/// Figures for one server kind.
struct Report {
    name: &'static str,
    processes: usize,
    /// (connections, resident bytes per connection, total resident bytes).
    memory: Vec<(usize, f64, u64)>,
    deliveries_per_s: f64,
    latency_us: (f64, f64, f64),
    reconnects: usize,
    /// Deliveries of an intervention the client had received before, both phases.
    repeated: u64,
    fanout: fanout::FannedOut,
}

mod clients;
mod fanout;

pub use clients::{ClientArgs, clients};

pub async fn run(args: Args) -> anyhow::Result<()> {
    let max = args.connections.iter().copied().max().unwrap_or(0);
    let processes = max.div_ceil(args.per_process).max(1);
    anyhow::ensure!(
        usize::from(args.addresses) * processes * 2 + 2 < 250,
        "too many source addresses: lower --addresses or raise --per-process"
    );
    // The unpaced phase is rate 0; the paced one must differ, its messages carry its rate.
    anyhow::ensure!(args.rate > 0, "--rate must be above 0 (the latency phase is paced)");
    let redis_url = std::env::var("NUDGE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let prefix = format!("nudge-bench:{}:{}:", std::process::id(), now_us());
    let exe = std::env::current_exe()?;
    let store = Store { tenant: TenantId::new(), key: PublishableKey::generate()? };

    let mut reports = Vec::new();
    let mut gateway = Vec::new();
    for _ in 0..processes {
        let mut command = Command::new(&exe);
        command.args(["socket-server", "--redis", &redis_url, "--prefix", &prefix]);
        command.args(["--tenant", &store.tenant.to_string(), "--key", store.key.as_str()]);
        if args.server_threads > 0 {
            command.env("TOKIO_WORKER_THREADS", args.server_threads.to_string());
        } else {
            command.env_remove("TOKIO_WORKER_THREADS");
        }
        gateway.push(command);
    }
    let publisher = {
        let redis = redis::Client::open(redis_url.as_str())?.get_connection_manager().await?;
        InterventionPublisher::new(
            redis,
            Naming::new(&prefix, &CellId::default_shared()),
            GatewayConfig::default().history,
        )
    };
    let fleet = start("gateway", gateway, Some(&store), 2, &args).await?;
    reports.push(measure(fleet, &args, Driver::Gateway(publisher, store.tenant)).await?);

    if !args.no_peer {
        let root = std::env::var("NUDGE_ROOT").unwrap_or_else(|_| ".".into());
        let mut node = Vec::new();
        for _ in 0..processes {
            let mut command = Command::new("node");
            command.arg(format!("{root}/bench/peers/ws-server.js"));
            if let Ok(modules) = std::env::var("NUDGE_NODE_MODULES") {
                command.env("NODE_PATH", modules);
            }
            node.push(command);
        }
        let first_source = 2 + args.addresses * processes as u8;
        let fleet = start("node ws", node, None, first_source, &args).await?;
        reports.push(measure(fleet, &args, Driver::Peer).await?);
    }
    print(&args, &reports);
    clean_up(&redis_url, &prefix).await
}

/// Starts the servers and one client worker per server.
async fn start(
    name: &'static str,
    servers: Vec<Command>,
    store: Option<&Store>,
    first_source: u8,
    args: &Args,
) -> anyhow::Result<Fleet> {
    let exe = std::env::current_exe()?;
    let mut fleet = Fleet { name, servers: Vec::new(), workers: Vec::new() };
    for (k, command) in servers.into_iter().enumerate() {
        let mut server = Process::spawn(name, command)?;
        let line = server.line(Duration::from_secs(30)).await.with_context(|| format!("{name} did not start"))?;
        let addr: SocketAddr = line.split_whitespace().nth(1).context("no address")?.parse()?;
        let mut worker = Command::new(&exe);
        worker.args(["socket-clients", "--server", &addr.to_string(), "--first", &(k * args.per_process).to_string()]);
        worker.args(["--source", &(first_source + args.addresses * k as u8).to_string()]);
        worker.args(["--addresses", &args.addresses.to_string()]);
        if let Some(store) = store {
            worker.args(["--tenant", &store.tenant.to_string(), "--key", store.key.as_str()]);
        }
        if store.is_some() || args.peer_acks {
            worker.arg("--ack");
        }
        fleet.workers.push(Process::spawn("socket-clients", worker)?);
        fleet.servers.push((server, addr));
    }
    Ok(fleet)
}

enum Driver {
    Gateway(InterventionPublisher, TenantId),
    Peer,
}

async fn measure(mut fleet: Fleet, args: &Args, driver: Driver) -> anyhow::Result<Report> {
    // Warm-up: open and close some connections on every server first, so one-time set-up
    // (runtime threads' buffers, allocator pages, tables' first growth) is in the baseline
    // rather than charged to the first connection count.
    let warm = WARM_UP.min(args.per_process);
    fleet.all(&format!("open {warm}"), Duration::from_secs(120)).await?;
    fleet.all("reset", Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = fleet.rss()?;
    let mut memory = Vec::new();
    for &target in &args.connections {
        for (k, w) in fleet.workers.iter_mut().enumerate() {
            let n = target.saturating_sub(k * args.per_process).min(args.per_process);
            w.say(&format!("open {n}")).await?;
        }
        for w in &mut fleet.workers {
            let answer = w.line(Duration::from_secs(300)).await?;
            anyhow::ensure!(answer.starts_with("ready"), "{}: {answer}", fleet.name);
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss = fleet.rss()?;
        memory.push((target, rss.saturating_sub(baseline) as f64 / target as f64, rss));
        eprintln!("{}: {target} connections, {:.0} bytes each", fleet.name, memory.last().map_or(0.0, |m| m.1));
    }

    // Routing, with churn, every connection open: as fast as it goes, then at a steady rate
    // below that, for the latency.
    let unpaced = route(&mut fleet, args, &driver, 0).await?;
    let paced = route(&mut fleet, args, &driver, args.rate).await?;
    // Then one message to every connection, a few times.
    let fanout = fanout::fan_out(&mut fleet, args, &driver).await?;
    let latencies = &paced.latencies;
    Ok(Report {
        name: fleet.name,
        processes: fleet.servers.len(),
        memory,
        deliveries_per_s: unpaced.deliveries_per_s,
        latency_us: (
            quantile(latencies, 0.5),
            quantile(latencies, 0.99),
            latencies.last().copied().unwrap_or(f64::NAN),
        ),
        reconnects: unpaced.reconnects,
        repeated: unpaced.repeated + paced.repeated,
        fanout,
    })
}

/// One routing phase's outcome.
struct Routed {
    /// Distinct interventions delivered per second.
    deliveries_per_s: f64,
    /// Of first deliveries while recording, sorted, µs.
    latencies: Vec<f64>,
    /// Reconnects so far.
    reconnects: usize,
    /// Interventions delivered again during the phase.
    repeated: u64,
}

/// Publishes one message per shopper for `args.seconds`, at `rate` per second in all (0:
/// as fast as the publishers go), while connections churn.
async fn route(fleet: &mut Fleet, args: &Args, driver: &Driver, rate: u64) -> anyhow::Result<Routed> {
    let n = args.connections.iter().copied().max().unwrap_or(0);
    // Whatever an earlier phase left queued is delivered before this one records.
    tokio::time::sleep(Duration::from_secs(3)).await;
    fleet.all(&format!("record {rate}"), Duration::from_secs(10)).await?;
    let churn = format!("churn {} {}", args.churn.div_ceil(fleet.workers.len()), args.seconds);
    fleet.all(&churn, Duration::from_secs(10)).await?;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let servers: Vec<SocketAddr> = fleet.servers.iter().map(|(_, a)| *a).collect();
    let per_process = args.per_process;
    let publishers: Vec<_> = (0..args.publishers)
        .map(|p| {
            let (sent, servers, publishers) = (sent.clone(), servers.clone(), args.publishers);
            let gateway = match driver {
                Driver::Gateway(publisher, tenant) => Some((publisher.clone(), *tenant)),
                Driver::Peer => None,
            };
            tokio::spawn(async move {
                let mut drivers = Vec::new();
                if gateway.is_none() {
                    for addr in &servers {
                        drivers.push(connect(*addr, Ipv4Addr::LOCALHOST, &format!("ws://{addr}/driver")).await?);
                    }
                }
                let mut pace =
                    (rate > 0).then(|| tokio::time::interval(Duration::from_secs_f64(publishers as f64 / rate as f64)));
                let mut k = p;
                while Instant::now() < deadline {
                    if let Some(pace) = &mut pace {
                        pace.tick().await;
                    }
                    let i = (k * 104_729) % n;
                    let shopper = format!("shp_{i}");
                    let mut iv = Intervention {
                        // The phase is in the id (see `phase_of`).
                        intervention_id: format!("itv_b{rate}_{k}"),
                        shopper_id: shopper.clone(),
                        kind: "cart_reminder".into(),
                        title: "Still thinking it over?".into(),
                        body: now_us().to_string(),
                        ..Default::default()
                    };
                    match &gateway {
                        Some((publisher, tenant)) => {
                            iv.tenant_id = tenant.to_string();
                            let to = ShopperAddress { tenant: *tenant, shopper: ShopperId::parse(&shopper)? };
                            publisher.publish(&to, &iv).await?;
                        }
                        None => {
                            let frame = format!("{shopper}|{}", push_frame(&iv));
                            drivers[i / per_process].send(Message::Text(frame.into())).await?;
                        }
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    k += publishers;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for p in publishers {
        p.await??;
    }
    // Deliveries in flight when the publishers stop still count, for a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let dir = std::env::temp_dir();
    let mut delivered = 0u64;
    let mut reconnects = 0usize;
    let mut repeated = 0u64;
    let mut closed_by_server: std::collections::BTreeMap<String, usize> = Default::default();
    let mut latencies: Vec<f64> = Vec::new();
    for (k, w) in fleet.workers.iter_mut().enumerate() {
        let path = dir.join(format!("nudge-bench-latencies-{}-{k}", std::process::id()));
        w.say(&format!("report {}", path.display())).await?;
        let answer = w.line(Duration::from_secs(60)).await?;
        let mut words = answer.split_whitespace().skip(1);
        delivered += words.next().and_then(|v| v.parse::<u64>().ok()).context("no delivered count")?;
        reconnects += words.next().and_then(|v| v.parse::<usize>().ok()).context("no reconnect count")?;
        repeated += words.next().and_then(|v| v.parse::<u64>().ok()).context("no repeat count")?;
        for entry in words.next().context("no close counts")?.split(',').filter(|e| *e != "-") {
            let (code, n) = entry.split_once(':').context("a close count is CODE:N")?;
            *closed_by_server.entry(code.to_owned()).or_default() += n.parse::<usize>()?;
        }
        let bytes = std::fs::read(&path)?;
        std::fs::remove_file(&path)?;
        latencies.extend(bytes.chunks_exact(4).map(|c| f64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))));
    }
    latencies.sort_by(f64::total_cmp);
    let rate = if rate == 0 { "unpaced".to_owned() } else { format!("{rate}/s") };
    eprintln!(
        "{} ({rate}): sent {}, delivered {delivered}, and {repeated} again; sockets closed by the server so far \
         (and reopened), by close code: {closed_by_server:?}",
        fleet.name,
        sent.load(Ordering::Relaxed)
    );
    Ok(Routed { deliveries_per_s: delivered as f64 / elapsed, latencies, reconnects, repeated })
}

fn print(args: &Args, reports: &[Report]) {
    println!("\n### Idle memory per connection (servers' resident set growth ÷ connections)\n");
    print!("| connections |");
    for r in reports {
        print!(" {} ({} processes of ≤ {}) |", r.name, r.processes, args.per_process);
    }
    println!();
    println!("|---|{}", "---|".repeat(reports.len()));
    for (i, &n) in args.connections.iter().enumerate() {
        print!("| {n} |");
        for r in reports {
            match r.memory.get(i) {
                Some((_, per, total)) => {
                    print!(" {:.2} KiB ({:.0} MiB in all) |", per / 1024.0, *total as f64 / 1048576.0)
                }
                None => print!(" — |"),
            }
        }
        println!();
    }
    println!(
        "\n### Routing one message per shopper: {} connections, {} publishers, {} reconnects/s; {} s unpaced for deliveries/s, {} s at {}/s for latency\n",
        args.connections.iter().max().unwrap_or(&0),
        args.publishers,
        args.churn,
        args.seconds,
        args.seconds,
        args.rate
    );
    println!(
        "| server | deliveries/s | latency p50 | p99 | max | reconnects (unpaced phase) | repeated deliveries (both phases) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in reports {
        println!(
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {:.1} ms | {} | {} |",
            r.name,
            r.deliveries_per_s,
            r.latency_us.0 / 1000.0,
            r.latency_us.1 / 1000.0,
            r.latency_us.2 / 1000.0,
            r.reconnects,
            r.repeated
        );
    }
    if args.announcements == 0 {
        return;
    }
    println!(
        "\n### Fan-out: one announcement to every connection: {} connections, {} announcements {} ms apart, no churn\n",
        args.connections.iter().max().unwrap_or(&0),
        args.announcements,
        args.announcement_gap_ms
    );
    println!(
        "| server | deliveries/s median (range) | to the last socket, median (range) | sockets reached (fewest) | latency p50 | p99 | server CPU µs per delivery | clients' |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in reports {
        let f = &r.fanout;
        let (rates, times, reached) = (f.rates(), f.times_ms(), f.reached());
        let (server_us, client_us) = f.cpu_us_per_delivery();
        let first = |v: &[f64]| v.first().copied().unwrap_or(f64::NAN);
        let last = |v: &[f64]| v.last().copied().unwrap_or(f64::NAN);
        println!(
            "| {} | {:.0} ({:.0}–{:.0}) | {:.1} ms ({:.1}–{:.1}) | {:.0} | {:.2} ms | {:.2} ms | {:.2} | {:.2} |",
            r.name,
            quantile(&rates, 0.5),
            first(&rates),
            last(&rates),
            quantile(&times, 0.5),
            first(&times),
            last(&times),
            first(&reached),
            quantile(&f.latencies, 0.5) / 1000.0,
            quantile(&f.latencies, 0.99) / 1000.0,
            server_us,
            client_us,
        );
    }
}

/// Deletes the run's keys (histories, acknowledgements), a batch at a time.
async fn clean_up(redis_url: &str, prefix: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(redis_url)?;
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            redis::cmd("UNLINK").arg(&keys).query_async::<()>(&mut conn).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}
