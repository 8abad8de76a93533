//! `nudge-bench socket-clients`: one client worker's shoppers, commanded by `sockets` over
//! stdin (`open N`, `reset`, `record PHASE`, `churn PER_SECOND SECONDS`, `report PATH`,
//! `fanout-report PATH`), answering each command with one line.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use nudge_contracts::{ShopperId, push::ClientMessage};
use nudge_tenants::TenantId;
use tokio::{
    net::TcpSocket,
    sync::{Notify, Semaphore},
};
use tokio_tungstenite::tungstenite::{
    Message, client::IntoClientRequest, http::HeaderValue, protocol::WebSocketConfig,
};
use tokio_util::sync::CancellationToken;

use super::{now_us, signer};
use crate::targets::ORIGIN;

/// Shoppers `first..first+count` of one server.
#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    #[arg(long)]
    server: SocketAddr,
    /// The store, for the gateway (session tokens); the peer when absent.
    #[arg(long)]
    tenant: Option<String>,
    #[arg(long)]
    key: Option<String>,
    #[arg(long)]
    first: usize,
    /// Source addresses 127.0.0.<source>… of this worker.
    #[arg(long)]
    source: u8,
    #[arg(long)]
    addresses: u8,
    /// Acknowledge every delivery.
    #[arg(long)]
    ack: bool,
}

/// What a worker's shoppers share.
#[derive(Default)]
struct Tally {
    ready: AtomicUsize,
    /// Distinct interventions received (a repeat of one received before is not counted).
    delivered: AtomicU64,
    /// Interventions received again: replays from a shopper's history of messages already
    /// delivered whose acknowledgement had not been stored yet.
    repeated: AtomicU64,
    /// The phase being recorded (its publishers' rate, which their intervention ids carry):
    /// a message of an earlier phase that arrives late is neither counted nor timed.
    phase: AtomicU64,
    failed: AtomicUsize,
    reconnected: AtomicUsize,
    /// Sockets the server closed asking the client to come back, by close code (1012
    /// draining, 1013 try again later, 4008 slow consumer).
    closed_by_server: Mutex<HashMap<u16, usize>>,
    /// Latencies (µs) of deliveries while `recording`.
    latencies: Mutex<Vec<u32>>,
    recording: AtomicBool,
    /// Announcements of the fan-out phase: by number, the sockets they reached and the
    /// latest of those deliveries (µs after publishing).
    announcements: Mutex<HashMap<u32, (u64, u32)>>,
    /// Every announcement delivery's latency (µs).
    announcement_latencies: Mutex<Vec<u32>>,
}

impl Tally {
    /// Counts and times one socket's delivery of a fan-out announcement (`ann_f{number}`,
    /// its body the publishing time in µs).
    fn announced(&self, announcement_id: &str, body: &str) {
        let (Some(number), Ok(sent)) =
            (announcement_id.strip_prefix(ANNOUNCEMENT_PHASE).and_then(|n| n.parse::<u32>().ok()), body.parse::<u64>())
        else {
            return;
        };
        let us = now_us().saturating_sub(sent).min(u64::from(u32::MAX)) as u32;
        {
            let mut all = self.announcements.lock().unwrap_or_else(PoisonError::into_inner);
            let (reached, latest) = all.entry(number).or_default();
            *reached += 1;
            *latest = (*latest).max(us);
        }
        self.announcement_latencies.lock().unwrap_or_else(PoisonError::into_inner).push(us);
    }
}

/// The id prefix of the fan-out phase's announcements: `ann_f{number}`.
pub const ANNOUNCEMENT_PHASE: &str = "ann_f";

pub(super) fn client_config() -> WebSocketConfig {
    // The client side is not what is measured; small buffers let many of them fit.
    WebSocketConfig::default().read_buffer_size(1024).write_buffer_size(0)
}

pub(super) async fn connect(
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

/// The phase (publishers' rate) an intervention id of [`route`] names.
fn phase_of(intervention_id: &str) -> Option<u64> {
    intervention_id.strip_prefix("itv_b")?.split('_').next()?.parse().ok()
}

/// An intervention (`intervention_id`) or an announcement (`announcement_id`).
#[derive(serde::Deserialize)]
struct Delivered {
    #[serde(default)]
    intervention_id: String,
    #[serde(default)]
    announcement_id: String,
    body: String,
}

/// One shopper's browser: connects (at most `gate` handshakes at a time), counts
/// deliveries (acknowledging each when `ack`), reconnects when `churn` is notified
/// (resuming after the last intervention received), until `stop`.
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
    // As nudge.js does, a reconnect resumes after the last intervention received, and what
    // arrives twice is noticed by id.
    let mut last_id: Option<String> = None;
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        let Ok(permit) = gate.acquire().await else { return };
        let resuming = last_id.as_ref().map(|id| format!("{url}&last_id={id}"));
        let connected = connect(server, source, resuming.as_deref().unwrap_or(&url)).await;
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
        let mut closed_with: Option<u16> = None;
        loop {
            let frame = tokio::select! {
                _ = stop.cancelled() => {
                    if counted {
                        tally.ready.fetch_sub(1, Ordering::Relaxed);
                    }
                    let _ = ws.close(None).await;
                    return;
                }
                _ = churn.notified() => break,
                f = ws.next() => f,
            };
            let text = match frame {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => {
                    closed_with = frame.map(|f| u16::from(f.code));
                    continue;
                }
                Some(Ok(_)) => continue,
                _ if let Some(code @ (1012 | 1013 | 4008)) = closed_with => {
                    // The server asked it to come back (draining, busy, fell behind): as
                    // nudge.js does, after a moment, resuming after the last id.
                    *tally.closed_by_server.lock().unwrap_or_else(PoisonError::into_inner).entry(code).or_default() +=
                        1;
                    tokio::time::sleep(Duration::from_millis(100 + now_us() % 400)).await;
                    break;
                }
                _ => {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    if counted {
                        tally.ready.fetch_sub(1, Ordering::Relaxed);
                    }
                    eprintln!("a socket from {source} ended (close code {closed_with:?}); not reconnecting");
                    return;
                }
            };
            if !counted {
                counted = true;
                tally.ready.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let Ok(message) = serde_json::from_str::<Delivered>(&text) else { continue };
            if !message.announcement_id.is_empty() {
                // Not acknowledged, not resumed after (as nudge.js treats them).
                tally.announced(&message.announcement_id, &message.body);
                continue;
            }
            let first_time = seen.insert(message.intervention_id.clone());
            if phase_of(&message.intervention_id) != Some(tally.phase.load(Ordering::Relaxed)) {
                // A late message of an earlier phase: not this phase's to count or time.
            } else if first_time {
                tally.delivered.fetch_add(1, Ordering::Relaxed);
                if tally.recording.load(Ordering::Relaxed)
                    && let Ok(sent) = message.body.parse::<u64>()
                {
                    let us = now_us().saturating_sub(sent).min(u64::from(u32::MAX)) as u32;
                    tally.latencies.lock().unwrap_or_else(PoisonError::into_inner).push(us);
                }
            } else {
                // Counted and timed once; acknowledged again, as nudge.js does.
                tally.repeated.fetch_add(1, Ordering::Relaxed);
            }
            last_id = Some(message.intervention_id.clone());
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
        if counted {
            tally.ready.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// `socket-clients`: follows the commands on stdin, answering each with one line.
pub async fn clients(args: ClientArgs) -> anyhow::Result<()> {
    let signer = signer()?;
    let store = match (&args.tenant, &args.key) {
        (Some(tenant), Some(key)) => Some((tenant.parse::<TenantId>()?, key.clone())),
        _ => None,
    };
    let tally = Arc::new(Tally::default());
    let mut stop = CancellationToken::new();
    // Handshakes at a time: the accept queue stays short, so no SYN is dropped and retried.
    let gate = Arc::new(Semaphore::new(128));
    let mut churns: Vec<Arc<Notify>> = Vec::new();
    // Commands arrive on stdin, read by a thread of its own (blocking reads).
    let (commands, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if commands.send(line).is_err() {
                break;
            }
        }
    });
    let (mut before, mut repeated_before) = (0, 0);
    while let Some(line) = lines.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["open", n] => {
                let target: usize = n.parse()?;
                for i in churns.len()..target {
                    let id = format!("shp_{}", args.first + i);
                    let url = match &store {
                        Some((tenant, key)) => {
                            let (token, _) = signer.issue(*tenant, &ShopperId::parse(&id)?);
                            format!("ws://{}/v1/ws?key={key}&token={token}", args.server)
                        }
                        None => format!("ws://{}/?shopper={id}", args.server),
                    };
                    let source = Ipv4Addr::new(127, 0, 0, args.source + (i % usize::from(args.addresses)) as u8);
                    let churn = Arc::new(Notify::new());
                    let (tally, gate, stop) = (tally.clone(), gate.clone(), stop.clone());
                    tokio::spawn(shopper(args.server, source, url, args.ack, tally, gate, churn.clone(), stop));
                    churns.push(churn);
                }
                let deadline = Instant::now() + Duration::from_secs(240);
                loop {
                    let (ready, failed) = (tally.ready.load(Ordering::Relaxed), tally.failed.load(Ordering::Relaxed));
                    if failed > 0 {
                        break format!("failed {failed} connections ({ready} ready)");
                    }
                    if ready >= target {
                        break format!("ready {ready}");
                    }
                    if Instant::now() > deadline {
                        break format!("failed: {ready} of {target} ready in time");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            ["reset"] => {
                // Close every connection; later `open`s start from shopper `first` again.
                stop.cancel();
                stop = CancellationToken::new();
                churns.clear();
                let deadline = Instant::now() + Duration::from_secs(30);
                while tally.ready.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                match tally.ready.load(Ordering::Relaxed) {
                    0 => "reset".to_owned(),
                    n => format!("failed: {n} connections still open"),
                }
            }
            ["record", phase] => {
                tally.phase.store(phase.parse()?, Ordering::Relaxed);
                before = tally.delivered.load(Ordering::Relaxed);
                repeated_before = tally.repeated.load(Ordering::Relaxed);
                tally.recording.store(true, Ordering::Relaxed);
                "recording".to_owned()
            }
            ["churn", per_second, seconds] => {
                let (per_second, seconds): (u64, u64) = (per_second.parse()?, seconds.parse()?);
                let churns = churns.clone();
                tokio::spawn(async move {
                    if per_second == 0 || churns.is_empty() {
                        return;
                    }
                    let deadline = Instant::now() + Duration::from_secs(seconds);
                    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / per_second));
                    let mut i = 0usize;
                    while Instant::now() < deadline {
                        tick.tick().await;
                        churns[(i * 7919) % churns.len()].notify_one();
                        i += 1;
                    }
                });
                "churning".to_owned()
            }
            ["report", path] => {
                tally.recording.store(false, Ordering::Relaxed);
                let latencies = std::mem::take(&mut *tally.latencies.lock().unwrap_or_else(PoisonError::into_inner));
                let bytes: Vec<u8> = latencies.iter().flat_map(|l| l.to_le_bytes()).collect();
                std::fs::write(path, bytes)?;
                let delivered = tally.delivered.load(Ordering::Relaxed) - before;
                let repeated = tally.repeated.load(Ordering::Relaxed) - repeated_before;
                let closed = tally.closed_by_server.lock().unwrap_or_else(PoisonError::into_inner);
                let mut closed: Vec<String> = closed.iter().map(|(code, n)| format!("{code}:{n}")).collect();
                closed.sort();
                let closed = if closed.is_empty() { "-".to_owned() } else { closed.join(",") };
                format!("report {delivered} {} {repeated} {closed}", tally.reconnected.load(Ordering::Relaxed))
            }
            ["fanout-report", path] => {
                let latencies =
                    std::mem::take(&mut *tally.announcement_latencies.lock().unwrap_or_else(PoisonError::into_inner));
                let bytes: Vec<u8> = latencies.iter().flat_map(|l| l.to_le_bytes()).collect();
                std::fs::write(path, bytes)?;
                let all = std::mem::take(&mut *tally.announcements.lock().unwrap_or_else(PoisonError::into_inner));
                let mut answer = "fanout".to_owned();
                for (number, (reached, latest)) in all {
                    answer.push_str(&format!(" {number}:{reached}:{latest}"));
                }
                answer
            }
            _ => format!("failed: unknown command {line:?}"),
        };
        println!("{answer}");
    }
    stop.cancel();
    Ok(())
}
