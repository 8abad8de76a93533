//! `nudge-bench sockets`: the gateway under many shopper connections, beside a Node `ws`
//! server (`bench/peers/ws-server.js`) in the same run.
//!
//! Each server runs in its own process, so its resident memory is its own. The load
//! generator (this process) opens connections from several source addresses (127.0.0.2…,
//! each with its own ~28k ephemeral ports), then measures:
//!
//! - **idle memory**: the server's resident set growth per open connection, at each
//!   connection count;
//! - **routing**: messages addressed to one shopper each, as fast as the publishers go, for
//!   a few seconds with every connection open while some connections churn (close and
//!   reopen); deliveries per second and the delivery latency (publish → the client read it).
//!
//! The gateway is driven exactly as a cell runs it: session tokens, the real Redis (the
//! publish script that appends to the shopper's history and publishes on the tenant's
//! channel, the per-tenant subscription), the keepalive sweep, acknowledgements from every
//! client. The peer routes from an in-memory map with no Redis and no history: it is the
//! floor a bare socket server stands on.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use axum::middleware::from_fn_with_state;
use futures_util::{SinkExt, StreamExt};
use nudge_contracts::{ShopperId, proto::interventions::v1::Intervention, push::ClientMessage};
use nudge_data_plane_directory::session::{SessionConfig, SessionSigner};
use nudge_data_plane_gateway::{
    GatewayConfig, GatewayMetrics, GatewayState, Hub,
    hub::{ShopperAddress, heartbeat},
    route::{History, InterventionPublisher, Naming, push_frame},
};
use nudge_platform_http::middleware::{HttpMetrics, trace_layer};
use nudge_platform_telemetry::Metrics;
use nudge_tenants::{CellId, TenantId};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpSocket,
    process::{Child, Command},
    sync::{Notify, Semaphore},
};
use tokio_tungstenite::tungstenite::{
    Message, client::IntoClientRequest, http::HeaderValue, protocol::WebSocketConfig,
};
use tokio_util::sync::CancellationToken;

use crate::{
    stats::quantile,
    targets::{BENCH_SESSION_SECRET, ORIGIN, directory},
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Connection counts at which idle memory is measured (ascending; connections are added
    /// to reach each one).
    #[arg(long, value_delimiter = ',', default_value = "10000,50000,100000")]
    connections: Vec<usize>,
    /// Source addresses (127.0.0.2 onwards) the connections are spread over.
    #[arg(long, default_value_t = 8)]
    addresses: u8,
    /// Seconds of routed messages with every connection open.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent publishers (gateway) or driver sockets (peer).
    #[arg(long, default_value_t = 32)]
    publishers: usize,
    /// Connections closed and reopened per second while messages are routed.
    #[arg(long, default_value_t = 200)]
    churn: usize,
    /// Only the gateway.
    #[arg(long)]
    no_peer: bool,
}

/// `nudge-bench socket-server`: the gateway as a cell mounts it, in its own process.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    #[arg(long)]
    redis: String,
    #[arg(long)]
    prefix: String,
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn signer() -> anyhow::Result<SessionSigner> {
    Ok(SessionSigner::new(&SessionConfig { secrets: vec![BENCH_SESSION_SECRET.into()], ttl_secs: 3600 })?)
}

/// Runs the gateway on 127.0.0.1 until killed; prints `listening ADDR TENANT KEY`.
pub async fn serve(args: ServerArgs) -> anyhow::Result<()> {
    let (directory, store) = directory(u32::MAX)?;
    let client = redis::Client::open(args.redis.as_str())?;
    let redis = client.get_connection_manager().await?;
    let naming = Naming::new(&args.prefix, &CellId::default_shared());
    let config = GatewayConfig::default();
    let hub = Arc::new(Hub::default());
    let shutdown = CancellationToken::new();
    let metrics = Metrics::new("bench");
    tokio::spawn(nudge_data_plane_gateway::route::subscribe(
        client,
        naming.clone(),
        hub.clone(),
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
    let state = GatewayState {
        history: History::new(redis, naming, config.history.clone()),
        config,
        directory,
        hub,
        sessions: Arc::new(signer()?),
        metrics: GatewayMetrics::register(&metrics),
        draining: Arc::default(),
    };
    let (router, _) = nudge_data_plane_gateway::router().with_state(Arc::new(state)).split_for_parts();
    let router = router.layer(from_fn_with_state(HttpMetrics::register(&metrics), trace_layer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {} {} {}", listener.local_addr()?, store.tenant, store.key);
    axum::serve(listener, router).await?;
    Ok(())
}

/// A server under test, in its own process.
struct Server {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    /// Gateway: the store's tenant and key.
    store: Option<(TenantId, String)>,
}

impl Server {
    async fn spawn(name: &'static str, mut command: Command) -> anyhow::Result<Self> {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .with_context(|| format!("{name} did not start"))??
            .with_context(|| format!("{name} exited"))?;
        let mut words = line.split_whitespace().skip(1);
        let addr = words.next().context("no address")?.parse()?;
        let store = match (words.next(), words.next()) {
            (Some(tenant), Some(key)) => Some((tenant.parse()?, key.to_owned())),
            _ => None,
        };
        Ok(Self { name, child, addr, store })
    }

    /// Resident set of the server process, bytes.
    fn rss(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("the server exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("no VmRSS")?;
        Ok(kb * 1024)
    }

    fn shopper_url(&self, signer: &SessionSigner, shopper: usize) -> anyhow::Result<String> {
        let id = format!("shp_{shopper}");
        Ok(match &self.store {
            Some((tenant, key)) => {
                let (token, _) = signer.issue(*tenant, &ShopperId::parse(&id)?);
                format!("ws://{}/v1/ws?key={key}&token={token}", self.addr)
            }
            None => format!("ws://{}/?shopper={id}", self.addr),
        })
    }
}

/// What the clients share.
#[derive(Default)]
struct Tally {
    ready: AtomicUsize,
    delivered: AtomicU64,
    failed: AtomicUsize,
    reconnected: AtomicUsize,
    /// Latencies (µs) of deliveries while `recording`.
    latencies: Mutex<Vec<u32>>,
    recording: std::sync::atomic::AtomicBool,
}

fn client_config() -> WebSocketConfig {
    // The client side is not what is measured; small buffers let 100k of them fit.
    WebSocketConfig::default().read_buffer_size(1024).write_buffer_size(0)
}

async fn connect(
    server: SocketAddr,
    source: Ipv4Addr,
    url: &str,
) -> anyhow::Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    let mut request = url.into_client_request()?;
    request.headers_mut().insert("Origin", HeaderValue::from_static(ORIGIN));
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(client_config())).await?;
    Ok(ws)
}

/// One shopper's browser: connects (at most `gate` handshakes at a time), counts
/// deliveries (acknowledging each when `ack`), reconnects when `churn` is notified, until
/// `stop`.
#[allow(clippy::too_many_arguments)]
async fn shopper(
    server: SocketAddr,
    source: Ipv4Addr,
    url: String,
    ack: bool,
    tally: Arc<Tally>,
    gate: Arc<Semaphore>,
    churn: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut first = true;
    loop {
        let Ok(permit) = gate.acquire().await else { return };
        let connected = connect(server, source, &url).await;
        drop(permit);
        let mut ws = match connected {
            Ok(ws) => ws,
            Err(e) => {
                if tally.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!("connecting from {source} failed: {e}");
                }
                return;
            }
        };
        if first {
            first = false;
        } else {
            tally.reconnected.fetch_add(1, Ordering::Relaxed);
        }
        let mut counted = false;
        loop {
            let frame = tokio::select! {
                _ = stop.cancelled() => return,
                _ = churn.notified() => break,
                f = ws.next() => f,
            };
            let text = match frame {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(_)) => continue,
                _ => {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            if !counted {
                counted = true;
                tally.ready.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let Ok(message) = serde_json::from_str::<Delivered>(&text) else { continue };
            tally.delivered.fetch_add(1, Ordering::Relaxed);
            if tally.recording.load(Ordering::Relaxed)
                && let Ok(sent) = message.body.parse::<u64>()
            {
                let us = now_us().saturating_sub(sent).min(u64::from(u32::MAX)) as u32;
                tally.latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(us);
            }
            if ack {
                let ack = ClientMessage::Ack { intervention_id: message.intervention_id };
                let Ok(text) = serde_json::to_string(&ack) else { continue };
                if ws.send(Message::Text(text.into())).await.is_err() {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        let _ = ws.close(None).await;
        tally.ready.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(serde::Deserialize)]
struct Delivered {
    intervention_id: String,
    body: String,
}

/// Figures for one server.
struct Report {
    name: &'static str,
    /// (connections, bytes of resident memory per connection, total resident bytes).
    memory: Vec<(usize, f64, u64)>,
    deliveries_per_s: f64,
    latency_us: (f64, f64, f64),
    churned: usize,
    failed: usize,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let max = args.connections.iter().copied().max().unwrap_or(0);
    check_fd_limit(max)?;
    let redis_url = std::env::var("NUDGE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let prefix = format!("nudge-bench:{}:{}:", std::process::id(), now_us());
    let exe = std::env::current_exe()?;

    let mut reports = Vec::new();
    let mut gateway = Command::new(&exe);
    gateway.args(["socket-server", "--redis", &redis_url, "--prefix", &prefix]);
    let server = Server::spawn("gateway", gateway).await?;
    let publisher = {
        let redis = redis::Client::open(redis_url.as_str())?.get_connection_manager().await?;
        InterventionPublisher::new(
            redis,
            Naming::new(&prefix, &CellId::default_shared()),
            GatewayConfig::default().history,
        )
    };
    reports.push(measure(&server, &args, 2, Driver::Gateway(publisher)).await?);
    drop(server);

    if !args.no_peer {
        let root = std::env::var("NUDGE_ROOT").unwrap_or_else(|_| ".".into());
        let mut node = Command::new("node");
        node.arg(format!("{root}/bench/peers/ws-server.js"));
        if let Ok(modules) = std::env::var("NUDGE_NODE_MODULES") {
            node.env("NODE_PATH", modules);
        }
        let server = Server::spawn("node ws", node).await?;
        reports.push(measure(&server, &args, 2 + args.addresses, Driver::Peer).await?);
    }
    print(&args, &reports);
    clean_up(&redis_url, &prefix).await
}

enum Driver {
    Gateway(InterventionPublisher),
    Peer,
}

async fn measure(server: &Server, args: &Args, first_source: u8, driver: Driver) -> anyhow::Result<Report> {
    let signer = signer()?;
    let tally = Arc::new(Tally::default());
    let stop = CancellationToken::new();
    let ack = matches!(driver, Driver::Gateway(_));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = server.rss()?;
    let mut memory = Vec::new();
    let mut churns: Vec<Arc<Notify>> = Vec::new();
    let mut tasks = Vec::new();
    // Handshakes at a time: the accept queue stays short, so no SYN is dropped and retried.
    let gate = Arc::new(Semaphore::new(256));
    for &target in &args.connections {
        let start = churns.len();
        let urls: Vec<String> =
            (start..target).map(|i| server.shopper_url(&signer, i)).collect::<anyhow::Result<_>>()?;
        for (n, url) in urls.into_iter().enumerate() {
            let i = start + n;
            let source = Ipv4Addr::new(127, 0, 0, first_source + (i % usize::from(args.addresses)) as u8);
            let churn = Arc::new(Notify::new());
            let (tally, gate, stop) = (tally.clone(), gate.clone(), stop.clone());
            tasks.push(tokio::spawn(shopper(server.addr, source, url, ack, tally, gate, churn.clone(), stop)));
            churns.push(churn);
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while tally.ready.load(Ordering::Relaxed) < target {
            anyhow::ensure!(
                Instant::now() < deadline && tally.failed.load(Ordering::Relaxed) == 0,
                "{}: {} of {target} connections ready, {} failed",
                server.name,
                tally.ready.load(Ordering::Relaxed),
                tally.failed.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss = server.rss()?;
        memory.push((target, rss.saturating_sub(baseline) as f64 / target as f64, rss));
        eprintln!("{}: {target} connections, {:.0} bytes each", server.name, memory.last().map_or(0.0, |m| m.1));
    }

    // Routing, with churn, every connection open.
    let n = churns.len();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let sent = Arc::new(AtomicU64::new(0));
    tally.recording.store(true, Ordering::Relaxed);
    let before = tally.delivered.load(Ordering::Relaxed);
    let started = Instant::now();
    let churner = {
        let churns = churns.clone();
        let per_second = args.churn;
        tokio::spawn(async move {
            let mut i = 0usize;
            let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second.max(1) as u32);
            while Instant::now() < deadline {
                tick.tick().await;
                if per_second > 0 {
                    churns[(i * 7919) % churns.len()].notify_one();
                    i += 1;
                }
            }
            i
        })
    };
    let publishers: Vec<_> = (0..args.publishers)
        .map(|p| {
            let sent = sent.clone();
            let store = server.store.clone();
            let (addr, publishers) = (server.addr, args.publishers);
            let publisher = match &driver {
                Driver::Gateway(publisher) => Some(publisher.clone()),
                Driver::Peer => None,
            };
            tokio::spawn(async move {
                let mut peer = match publisher {
                    Some(_) => None,
                    None => Some(connect(addr, Ipv4Addr::LOCALHOST, &format!("ws://{addr}/driver")).await?),
                };
                let mut k = p;
                while Instant::now() < deadline {
                    let shopper = format!("shp_{}", (k * 104_729) % n);
                    let iv = Intervention {
                        intervention_id: format!("itv_b{k}"),
                        tenant_id: store.as_ref().map(|s| s.0.to_string()).unwrap_or_default(),
                        shopper_id: shopper.clone(),
                        kind: "cart_reminder".into(),
                        title: "Still thinking it over?".into(),
                        body: now_us().to_string(),
                        ..Default::default()
                    };
                    match (&publisher, &mut peer) {
                        (Some(publisher), _) => {
                            let to =
                                ShopperAddress { tenant: iv.tenant_id.parse()?, shopper: ShopperId::parse(&shopper)? };
                            publisher.publish(&to, &iv).await?;
                        }
                        (None, Some(driver)) => {
                            driver.send(Message::Text(format!("{shopper}|{}", push_frame(&iv)).into())).await?;
                        }
                        (None, None) => anyhow::bail!("no driver"),
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
    let churned = churner.await?;
    // Deliveries in flight when the publishers stop still count, for a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let elapsed = started.elapsed().as_secs_f64();
    tally.recording.store(false, Ordering::Relaxed);
    let delivered = tally.delivered.load(Ordering::Relaxed) - before;
    let mut latencies: Vec<f64> = tally
        .latencies
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|&us| f64::from(us))
        .collect();
    latencies.sort_by(f64::total_cmp);
    eprintln!("{}: sent {}, delivered {delivered}", server.name, sent.load(Ordering::Relaxed));
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    Ok(Report {
        name: server.name,
        memory,
        deliveries_per_s: delivered as f64 / elapsed,
        latency_us: (
            quantile(&latencies, 0.5),
            quantile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(f64::NAN),
        ),
        churned,
        failed: tally.failed.load(Ordering::Relaxed),
    })
}

fn print(args: &Args, reports: &[Report]) {
    println!("\n### Idle memory per connection (server resident set growth ÷ connections)\n");
    print!("| connections |");
    for r in reports {
        print!(" {} |", r.name);
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
        "\n### Routing one message per shopper, {} s, {} publishers, {} connections, {} reconnects/s\n",
        args.seconds,
        args.publishers,
        args.connections.iter().max().unwrap_or(&0),
        args.churn
    );
    println!("| server | deliveries/s | latency p50 | p99 | max | reconnects | failed |");
    println!("|---|---|---|---|---|---|---|");
    for r in reports {
        println!(
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {:.1} ms | {} | {} |",
            r.name,
            r.deliveries_per_s,
            r.latency_us.0 / 1000.0,
            r.latency_us.1 / 1000.0,
            r.latency_us.2 / 1000.0,
            r.churned,
            r.failed
        );
    }
}

/// Both ends of every connection live on this machine: the limit on open files must hold
/// them (`scripts/bench` raises it).
fn check_fd_limit(connections: usize) -> anyhow::Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let soft: usize = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    anyhow::ensure!(
        soft >= connections + 1024,
        "open-file limit {soft} is below {connections} connections; run through scripts/bench or `ulimit -n {}`",
        connections * 2 + 4096
    );
    Ok(())
}

async fn clean_up(redis_url: &str, prefix: &str) -> anyhow::Result<()> {
    let mut conn = redis::Client::open(redis_url)?.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await?;
    for chunk in keys.chunks(1000) {
        redis::cmd("DEL").arg(chunk).query_async::<()>(&mut conn).await?;
    }
    Ok(())
}
