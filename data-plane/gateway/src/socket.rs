//! `GET /v1/ws?key=pk_…&token=…[&last_id=itv_…]`: one shopper's socket.
//!
//! The tenant comes from the publishable key, and the upgrade's `Origin` must be one the
//! tenant allows; the shopper comes from the session token ingest signed for that tenant
//! (`POST /v1/sessions`). Nothing the client names decides whose messages it receives.
//!
//! On open the socket replays, from the shopper's history, what came after `last_id` (or
//! after the last acknowledged intervention), then forwards what arrives; the browser
//! acknowledges each intervention by id and drops repeats, so delivery is at least once and
//! shown once.
//!
//! Announcements (`{"type": "announcement"}`, ids `ann_…`) go to every open page of a store
//! at the moment they are sent. They are in no history, so none is replayed; the browser
//! does not acknowledge them, and an acknowledgement naming one changes nothing.
//!
//! # Close codes
//!
//! | code | reason | the client should |
//! |---|---|---|
//! | 1008 | `invalid_message`: a frame that is not a known JSON message | fix the client |
//! | 1009 | `message_too_big`: a frame over 4 KiB | fix the client |
//! | 1012 | `service_restart reconnect_jitter_ms=N`: this replica is draining | reconnect within a random 0–N ms |
//! | 1013 | `try_again_later`: the shopper's history could not be read | reconnect with backoff |
//! | 4000 | `idle`: nothing heard (not even a pong) for the idle timeout | reconnect when active |
//! | 4001 | `session_token_missing` | get a token, reconnect |
//! | 4002 | `session_token_invalid` | get a token, reconnect |
//! | 4003 | the store no longer accepts this key (suspended, key revoked) | stop |
//! | 4005 | `session_token_expired` | get a token, reconnect |
//! | 4006 | `session_token_foreign`: the token is another store's | stop |
//! | 4008 | `slow_consumer`: messages arrived faster than the socket read them | reconnect (it resumes) |
//! | 4009 | `tenant_moved`: the store is on another cell now | new session at once (it says where) |

use std::{
    collections::VecDeque,
    sync::{Arc, atomic::AtomicBool},
};

use axum::{
    extract::{
        State, WebSocketUpgrade,
        ws::{CloseFrame, Message, WebSocket, rejection::WebSocketUpgradeRejection},
    },
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use futures_util::FutureExt;
use nudge_contracts::push::{ClientMessage, PushMessage};
use nudge_data_plane_directory::{
    Directory,
    auth::{authorize, key_from, query_param},
    session::{SessionSigner, TokenError},
};
use nudge_platform_http::{ApiError, ErrorBody};
use nudge_platform_telemetry::Metrics;
use nudge_tenants::TenantId;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};
use serde::{Deserialize, Serialize};
use tokio::time::Duration;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    hub::{CLOSE_SLOW_CONSUMER, Hub, MAX_PER_SHOPPER, Outbound, Pushed, Queue, Refusal, Registration, ShopperAddress},
    route::{ANNOUNCEMENT_PREFIX, AckWriter, History, HistoryConfig, Snapshot},
};

/// Largest frame a client may send; clients only send acknowledgements and pongs.
const MAX_CLIENT_FRAME: usize = 4 * 1024;

/// Per-socket buffers. tungstenite's defaults (128 KiB to read, 128 KiB to gather writes)
/// would cost far more than the socket. Browsers send acknowledgements of ~70 bytes: the
/// read buffer is allocated at this size and grows only for a larger frame (up to the 4 KiB
/// limit); writes are gathered up to 4 KiB.
const READ_BUFFER: usize = 256;
const WRITE_BUFFER: usize = 4 * 1024;
/// A write buffer grows past `WRITE_BUFFER` only while writes fail; beyond this the socket
/// errors out instead of holding more.
const MAX_WRITE_BUFFER: usize = 64 * 1024;

/// A write that takes longer belongs to a shopper who stopped reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Retries of a history read (as a socket opens, or after a lost subscription) before the
/// socket is closed.
const HISTORY_READ_RETRIES: u32 = 3;
/// Ids of the interventions a socket sent recently, to drop the same one arriving both
/// from the history and live.
const RECENT_IDS: usize = 64;

pub const CLOSE_INVALID_MESSAGE: u16 = 1008;
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;
pub const CLOSE_SERVICE_RESTART: u16 = 1012;
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

/// Socket keepalive, history and drain settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GatewayConfig {
    /// Every socket's tenant and key are re-checked once per interval (by one task for all
    /// sockets, a tenth of them at a time), and a socket is pinged then unless the browser
    /// sent something in the last half interval.
    pub ping_interval_ms: u64,
    /// A socket that has sent nothing (not even a pong) for this long is closed (4000).
    pub idle_timeout_ms: u64,
    /// What a reconnecting socket can resume from.
    pub history: HistoryConfig,
    /// Sockets closed by a drain are told to reconnect within a random delay up to this.
    pub reconnect_jitter_ms: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            ping_interval_ms: 20_000,
            idle_timeout_ms: 60_000,
            history: HistoryConfig::default(),
            reconnect_jitter_ms: 5_000,
        }
    }
}

impl GatewayConfig {
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms.max(10))
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

/// Socket counters.
#[derive(Clone)]
pub struct GatewayMetrics {
    open: Gauge,
    refused: Family<CodeLabel, Counter>,
    replayed: Counter,
    acknowledged: Counter,
    ack_failures: Counter,
}

impl GatewayMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self {
            open: Gauge::default(),
            refused: Family::default(),
            replayed: Counter::default(),
            acknowledged: Counter::default(),
            ack_failures: Counter::default(),
        };
        let mut r = metrics.registry();
        r.register("gateway_sockets_open", "Shopper sockets open in this process", this.open.clone());
        r.register("gateway_sockets_refused", "Sockets refused or closed by the server, by code", this.refused.clone());
        r.register("gateway_replayed", "Interventions replayed from shopper histories", this.replayed.clone());
        r.register("gateway_acknowledged", "Interventions acknowledged by browsers", this.acknowledged.clone());
        r.register("gateway_ack_failures", "Acknowledgements that could not be recorded", this.ack_failures.clone());
        this
    }

    /// Acknowledgements that could not be recorded (for the [`AckWriter`]).
    pub fn ack_failures(&self) -> Counter {
        self.ack_failures.clone()
    }

    fn refused(&self, code: &'static str) {
        self.refused.get_or_create(&CodeLabel { code }).inc();
    }
}

/// What the socket handler needs.
#[derive(Clone)]
pub struct GatewayState {
    pub config: GatewayConfig,
    pub directory: Arc<Directory>,
    pub hub: Arc<Hub>,
    pub sessions: Arc<SessionSigner>,
    pub history: History,
    pub acks: AckWriter,
    pub metrics: GatewayMetrics,
    /// True once the process drains: new sockets are refused so clients go elsewhere.
    pub draining: Arc<AtomicBool>,
}

pub fn router() -> OpenApiRouter<Arc<GatewayState>> {
    OpenApiRouter::new().routes(routes!(upgrade))
}

/// Open a shopper's WebSocket. Text frames are JSON: `{"type": "ready", …}` once, then
/// `{"type": "intervention", …}` for each intervention (replayed ones first); the browser
/// answers each with `{"type": "ack", "intervention_id": "…"}`. A refused token closes the
/// socket with a 4xxx code (see the gateway's close codes).
#[utoipa::path(get, path = "/v1/ws", tag = "sockets",
    params(
        ("key" = String, Query, description = "the store's publishable key"),
        ("token" = String, Query, description = "a session token from `POST /v1/sessions`"),
        ("last_id" = Option<String>, Query, description = "the last intervention this browser received: replay what came after it"),
    ),
    responses(
        (status = 101, description = "switching to the WebSocket protocol"),
        (status = 400, description = "`not_a_websocket`", body = ErrorBody),
        (status = 401, description = "`missing_key`, `invalid_key`", body = ErrorBody),
        (status = 421, description = "`tenant_moved`: the store is on another cell now, `details.cell_url`", body = ErrorBody),
        (status = 403, description = "`origin_required`, `origin_not_allowed`, `tenant_suspended`, `tenant_inactive`", body = ErrorBody),
        (status = 422, description = "`invalid_last_id`", body = ErrorBody),
        (status = 429, description = "`connection_limit`: the store's plan allows no more open sockets; `shopper_connection_limit`: this shopper holds 8 already", body = ErrorBody),
        (status = 503, description = "`cell_starting`, `draining`: connect again (elsewhere) after `Retry-After`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn upgrade(
    State(state): State<Arc<GatewayState>>,
    uri: Uri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match accept(&state, &uri, &headers, ws) {
        Ok(response) => response,
        Err(e) => {
            state.metrics.refused(e.code);
            e.into_response()
        }
    }
}

fn accept(
    state: &Arc<GatewayState>,
    uri: &Uri,
    headers: &HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    if state.draining.load(std::sync::atomic::Ordering::Acquire) {
        return Err(ApiError::unavailable("draining", "this server is restarting; connect again", 1));
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let key = key_from(headers, query_param(uri, "key").as_deref())?;
    let tenant = authorize(&state.directory, &key, origin)?;
    tracing::Span::current().record("tenant_id", tracing::field::display(tenant.tenant_id));
    let ws =
        ws.map_err(|rejection| ApiError::new(StatusCode::BAD_REQUEST, "not_a_websocket", rejection.body_text()))?;
    let resume = query_param(uri, "last_id");
    if resume
        .as_deref()
        .is_some_and(|id| id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic() && b != b'|'))
    {
        return Err(ApiError::unprocessable("invalid_last_id", "last_id is the intervention_id of a message received"));
    }
    let ws = ws
        .max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER);
    // A refused token is answered on the socket, where a browser can read the reason (an
    // HTTP status on a failed upgrade is invisible to page scripts).
    let claims = match query_param(uri, "token") {
        None => Err(TokenError::Missing),
        Some(token) => state.sessions.verify(&token, tenant.tenant_id),
    };
    let claims = match claims {
        Ok(claims) => claims,
        Err(e) => {
            state.metrics.refused(e.code());
            tracing::debug!(tenant_id = %tenant.tenant_id, code = e.code(), "socket token refused");
            return Ok(ws.on_upgrade(move |socket| refuse(socket, e.close_code(), e.code())));
        }
    };
    let address = ShopperAddress { tenant: claims.tenant, shopper: claims.shopper };
    // The slot is taken before upgrading, so the refusal is an HTTP answer with a code; if
    // the upgrade never completes, dropping the registration frees it.
    let registered = state.hub.register(address, key, tenant.limits.connections).map_err(|refusal| match refusal {
        Refusal::TenantCap(cap) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "connection_limit",
            format!("this store's plan allows {cap} open connections"),
        )
        .with_retry_after(5),
        Refusal::ShopperCap => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "shopper_connection_limit",
            format!("a shopper may hold {MAX_PER_SHOPPER} sockets at once"),
        )
        .with_retry_after(5),
        Refusal::Closing => ApiError::unavailable("draining", "this server is restarting; connect again", 1),
    })?;
    let state = state.clone();
    Ok(ws.on_upgrade(move |socket| serve(socket, state, registered, resume)))
}

async fn refuse(mut socket: WebSocket, code: u16, reason: &'static str) {
    // The peer may already be gone; nothing more to do either way.
    let _ = send(&mut socket, Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
}

/// What a socket has sent, to resume and to drop repeats.
#[derive(Default)]
struct Sent {
    /// The last intervention the browser has (sent here, or named when it reconnected).
    cursor: Option<String>,
    recent: VecDeque<Box<str>>,
}

impl Sent {
    fn contains(&self, id: &str) -> bool {
        self.recent.iter().any(|r| &**r == id)
    }

    fn record(&mut self, id: &str) {
        if self.recent.len() == RECENT_IDS {
            self.recent.pop_front();
        }
        self.recent.push_back(id.into());
        self.cursor = Some(id.to_owned());
    }
}

#[cfg_attr(test, derive(Debug, PartialEq))]
enum Ending {
    Close(u16, String),
    Gone,
}

async fn serve(
    mut socket: WebSocket,
    state: Arc<GatewayState>,
    (registration, queue): (Registration, Arc<Queue>),
    resume: Option<String>,
) {
    state.metrics.open.inc();
    let ending = run(&mut socket, &state, &registration, &queue, resume).await;
    state.metrics.open.dec();
    drop(registration);
    if let Ending::Close(code, reason) = ending {
        if code >= 4000 || code == CLOSE_MESSAGE_TOO_BIG || code == CLOSE_INVALID_MESSAGE {
            state.metrics.refused(close_label(code));
        }
        if send(&mut socket, Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await.is_ok() {
            // The closing handshake: wait (briefly) for the client's Close before the
            // connection goes, so a client still answering a ping reads the code instead of
            // a reset.
            let answered = async {
                while let Some(Ok(message)) = socket.recv().await {
                    if matches!(message, Message::Close(_)) {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE, answered).await;
        }
    }
}

/// How long a socket the gateway closes waits for the client's Close frame.
const CLOSE_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(2);

fn close_label(code: u16) -> &'static str {
    match code {
        CLOSE_INVALID_MESSAGE => "invalid_message",
        CLOSE_MESSAGE_TOO_BIG => "message_too_big",
        crate::hub::CLOSE_IDLE => "idle",
        crate::hub::CLOSE_NOT_AUTHORIZED => "not_authorized",
        crate::hub::CLOSE_TENANT_MOVED => "tenant_moved",
        CLOSE_SLOW_CONSUMER => "slow_consumer",
        _ => "other",
    }
}

async fn run(
    socket: &mut WebSocket,
    state: &GatewayState,
    registration: &Registration,
    queue: &Queue,
    resume: Option<String>,
) -> Ending {
    let address = registration.address();
    // What runs once or rarely is boxed, so an idle socket's task holds only the loop.
    let mut sent = match Box::pin(open(socket, state, address, queue, resume)).await {
        Ok(sent) => sent,
        Err(ending) => return ending,
    };
    loop {
        tokio::select! {
            out = queue.recv() => match out {
                // The hub ends the queue only when it evicts this socket for falling behind.
                None => return Ending::Close(CLOSE_SLOW_CONSUMER, "slow_consumer".into()),
                Some(Outbound::Push(p)) => {
                    if !sent.contains(&p.intervention_id) && push(socket, &mut sent, &p).await.is_err() {
                        return Ending::Gone;
                    }
                }
                Some(Outbound::Announce(p)) => {
                    if send(socket, Message::Text(p.text.clone())).await.is_err() {
                        return Ending::Gone;
                    }
                }
                Some(Outbound::Ping) => {
                    if send(socket, Message::Ping(Vec::new().into())).await.is_err() {
                        return Ending::Gone;
                    }
                }
                Some(Outbound::Resync) => {
                    if let Err(ending) = Box::pin(resync(socket, state, address, queue, &mut sent)).await {
                        return ending;
                    }
                }
                Some(Outbound::Close(code, reason)) => return Ending::Close(code, reason.to_string()),
            },
            incoming = socket.recv() => {
                registration.heard();
                if let Err(ending) = received(state, address, Some(&sent), incoming) {
                    return ending;
                }
            }
        }
    }
}

/// Acts on what the browser sent (`None`: the connection ended); `sent` is what this socket
/// has sent, `None` before it opened.
fn received(
    state: &GatewayState,
    address: &ShopperAddress,
    sent: Option<&Sent>,
    incoming: Option<Result<Message, axum::Error>>,
) -> Result<(), Ending> {
    match incoming {
        Some(Ok(Message::Text(text))) => match serde_json::from_str::<ClientMessage>(&text) {
            Ok(ClientMessage::Ack { intervention_id }) => {
                let sent_here = sent.is_some_and(|sent| sent.contains(&intervention_id));
                acknowledge(state, address, &intervention_id, sent_here);
                Ok(())
            }
            Err(_) => Err(Ending::Close(CLOSE_INVALID_MESSAGE, "invalid_message".into())),
        },
        Some(Ok(Message::Binary(_))) => Err(Ending::Close(CLOSE_INVALID_MESSAGE, "invalid_message".into())),
        Some(Ok(Message::Close(_))) | None => Err(Ending::Gone),
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => {
            Err(if too_big(e) { Ending::Close(CLOSE_MESSAGE_TOO_BIG, "message_too_big".into()) } else { Ending::Gone })
        }
    }
}

/// Reads the shopper's history, sends `ready` and replays what came after `resume` (or the
/// last acknowledged id).
async fn open(
    socket: &mut WebSocket,
    state: &GatewayState,
    address: &ShopperAddress,
    queue: &Queue,
    resume: Option<String>,
) -> Result<Sent, Ending> {
    // The upgrade hands the socket the HTTP connection's read buffer (8 KiB), kept until the
    // socket first reads: reading once now lets it go before the wait for the history, so
    // sockets opening by the thousand (a drained replica's shoppers arriving) do not each
    // hold one meanwhile. A browser sends nothing before `ready`; whatever came is handled.
    if let Some(incoming) = socket.recv().now_or_never() {
        received(state, address, None, incoming)?;
    }
    // Registered first, read second: whatever is published from here on is queued too,
    // and a repeat is dropped by id.
    let snapshot = read_history(state, address, queue).await?;
    let mut sent = Sent { cursor: resume.or(snapshot.acked.clone()), recent: VecDeque::new() };
    let replay = snapshot.after(sent.cursor.as_deref());
    let ready = PushMessage::Ready { shopper_id: address.shopper.to_string(), replaying: replay.len() };
    // Serialising the enum cannot fail.
    let ready = serde_json::to_string(&ready).unwrap_or_default();
    send(socket, Message::Text(ready.into())).await.map_err(|()| Ending::Gone)?;
    state.metrics.replayed.inc_by(replay.len() as u64);
    for p in replay {
        push(socket, &mut sent, p).await.map_err(|()| Ending::Gone)?;
    }
    tracing::debug!(tenant_id = %address.tenant, replayed = replay.len(), "shopper socket open");
    Ok(sent)
}

/// Sends what the history holds after the last message sent and was not sent yet.
async fn resync(
    socket: &mut WebSocket,
    state: &GatewayState,
    address: &ShopperAddress,
    queue: &Queue,
    sent: &mut Sent,
) -> Result<(), Ending> {
    let snapshot = read_history(state, address, queue).await?;
    for p in snapshot.after(sent.cursor.as_deref()) {
        if !sent.contains(&p.intervention_id) {
            push(socket, sent, p).await.map_err(|()| Ending::Gone)?;
        }
    }
    Ok(())
}

/// The shopper's history. A failed or slow read is tried again a few times before the
/// socket is closed with 1013: the socket stays registered meanwhile (whatever is published
/// is queued), and a close would turn a Redis hiccup, or a moment of overload, into a
/// reconnect storm that reads every history again. A close queued for the socket meanwhile
/// (a drain's 1012) or its eviction ends the wait at once.
async fn read_history(state: &GatewayState, address: &ShopperAddress, queue: &Queue) -> Result<Snapshot, Ending> {
    unless_ended(queue, retrying(&address.tenant, || state.history.read(address))).await
}

/// `work`'s outcome, unless the socket must end first (a close queued for it, its eviction).
async fn unless_ended<T>(
    queue: &Queue,
    work: impl std::future::Future<Output = Result<T, Ending>>,
) -> Result<T, Ending> {
    tokio::select! {
        outcome = work => outcome,
        stop = queue.ending() => Err(match stop {
            Some((code, reason)) => Ending::Close(code, reason.to_string()),
            None => Ending::Close(CLOSE_SLOW_CONSUMER, "slow_consumer".into()),
        }),
    }
}

async fn retrying<F, R>(tenant: &TenantId, mut read: F) -> Result<Snapshot, Ending>
where
    F: FnMut() -> R,
    R: std::future::Future<Output = Result<Snapshot, redis::RedisError>>,
{
    let mut attempt = 0;
    loop {
        match read().await {
            Ok(snapshot) => return Ok(snapshot),
            Err(e) if attempt < HISTORY_READ_RETRIES => {
                attempt += 1;
                tracing::debug!(tenant_id = %tenant, error = %e, attempt, "reading a shopper's history failed; retrying");
                tokio::time::sleep(retry_pause(attempt)).await;
            }
            Err(e) => {
                tracing::warn!(tenant_id = %tenant, error = %e, "reading a shopper's history failed");
                return Err(Ending::Close(CLOSE_TRY_AGAIN_LATER, "try_again_later".into()));
            }
        }
    }
}

/// The pause before retry `attempt` (from 1): 250 ms × attempt plus up to twice that at
/// random, so sockets that failed together do not retry together.
fn retry_pause(attempt: u32) -> Duration {
    use std::hash::BuildHasher;
    let step = Duration::from_millis(250) * attempt;
    // Each `RandomState` is keyed afresh: a random number without a generator to share.
    let spread = std::collections::hash_map::RandomState::new().hash_one(attempt) % 1_000;
    step + step * 2 * u32::try_from(spread).unwrap_or(0) / 1_000
}

async fn push(socket: &mut WebSocket, sent: &mut Sent, p: &Pushed) -> Result<(), ()> {
    send(socket, Message::Text(p.text.clone())).await?;
    sent.record(&p.intervention_id);
    Ok(())
}

/// What a browser's acknowledgement naming `intervention_id` is.
#[derive(Debug, PartialEq, Eq)]
enum AckOf {
    /// Not an id this gateway could have sent: counted as a failure.
    Invalid,
    /// An announcement's: in no history to resume after, so it must not become the
    /// shopper's cursor, and it counts in no usage meter. Nothing is recorded.
    Announcement,
    /// An intervention's: recorded.
    Intervention,
}

fn ack_of(intervention_id: &str) -> AckOf {
    if intervention_id.is_empty() || intervention_id.len() > 64 || intervention_id.contains('|') {
        AckOf::Invalid
    } else if intervention_id.starts_with(ANNOUNCEMENT_PREFIX) {
        AckOf::Announcement
    } else {
        AckOf::Intervention
    }
}

fn acknowledge(state: &GatewayState, address: &ShopperAddress, intervention_id: &str, sent_here: bool) {
    match ack_of(intervention_id) {
        AckOf::Invalid => {
            state.metrics.ack_failures.inc();
        }
        AckOf::Announcement => {}
        AckOf::Intervention => {
            state.metrics.acknowledged.inc();
            // Written in batches by the acknowledgement writer; this task never waits on Redis.
            if !state.acks.record(address, intervention_id, sent_here) {
                state.metrics.ack_failures.inc();
            }
        }
    }
}

/// Whether a read failed because the client sent a frame over the limit.
fn too_big(e: axum::Error) -> bool {
    e.into_inner().downcast::<tungstenite::Error>().is_ok_and(|e| matches!(*e, tungstenite::Error::Capacity(_)))
}

async fn send(socket: &mut WebSocket, message: Message) -> Result<(), ()> {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use nudge_tenants::PublishableKey;

    use super::*;

    #[test]
    fn only_interventions_acknowledgements_are_recorded() {
        assert_eq!(ack_of("itv_0123"), AckOf::Intervention);
        assert_eq!(ack_of("test_0123"), AckOf::Intervention, "test messages resume like interventions");
        assert_eq!(ack_of("ann_0123"), AckOf::Announcement, "never a resume cursor, never billed");
        for invalid in ["", "itv_a|b", &"x".repeat(65)] {
            assert_eq!(ack_of(invalid), AckOf::Invalid, "{invalid:?}");
        }
    }

    /// A read answering `Err` for its first `failures` calls, counting them.
    fn flaky(
        failures: u32,
        calls: &std::cell::Cell<u32>,
    ) -> impl FnMut() -> std::future::Ready<Result<Snapshot, redis::RedisError>> + '_ {
        move || {
            calls.set(calls.get() + 1);
            std::future::ready(if calls.get() <= failures {
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "reading the history timed out").into())
            } else {
                Ok(Snapshot { entries: Vec::new(), acked: Some("itv_1".into()) })
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_history_read_is_tried_again_before_the_socket_is_closed() {
        let tenant = TenantId::new();
        let calls = std::cell::Cell::new(0);
        let started = tokio::time::Instant::now();
        let snapshot = retrying(&tenant, flaky(3, &calls)).await.unwrap();
        assert_eq!(snapshot.acked.as_deref(), Some("itv_1"));
        assert_eq!(calls.get(), 4, "three failures, then the read that answered");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(1_500) && waited <= Duration::from_millis(4_500), "{waited:?}");

        let calls = std::cell::Cell::new(0);
        let ending = retrying(&tenant, flaky(u32::MAX, &calls)).await.unwrap_err();
        assert_eq!(ending, Ending::Close(CLOSE_TRY_AGAIN_LATER, "try_again_later".into()));
        assert_eq!(calls.get(), 4, "closed after the third retry, no more");
    }

    #[tokio::test]
    async fn a_socket_waiting_on_its_history_ends_at_a_queued_close_or_its_eviction() {
        let hub = Arc::new(Hub::default());
        let address =
            ShopperAddress { tenant: TenantId::new(), shopper: nudge_contracts::ShopperId::parse("s").unwrap() };
        let key = PublishableKey::generate().unwrap();
        let (_registration, queue) = hub.register(address.clone(), key.clone(), 10).unwrap();
        let never = std::future::pending::<Result<Snapshot, Ending>>;
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { unless_ended(&queue, never()).await }
        });
        hub.close_all(1012, "service_restart reconnect_jitter_ms=5000");
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("ended at once").unwrap().unwrap_err(),
            Ending::Close(1012, "service_restart reconnect_jitter_ms=5000".into()),
            "a drain's close is not held up by a history read"
        );

        let hub = Arc::new(Hub::default());
        let (_registration, queue) = hub.register(address.clone(), key, 10).unwrap();
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { unless_ended(&queue, never()).await }
        });
        let pushed = Arc::new(Pushed { intervention_id: "itv_1".into(), text: "{}".into() });
        while hub.deliver(&address, pushed.clone()).evicted == 0 {}
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("ended at once").unwrap().unwrap_err(),
            Ending::Close(CLOSE_SLOW_CONSUMER, "slow_consumer".into())
        );

        let (_registration, queue) =
            Arc::new(Hub::default()).register(address, PublishableKey::generate().unwrap(), 10).unwrap();
        let read = unless_ended(&queue, async { Ok(Snapshot::default()) }).await.unwrap();
        assert!(read.entries.is_empty(), "otherwise the work's outcome");
    }

    #[test]
    fn retry_pauses_grow_and_spread() {
        for attempt in 1..=3 {
            let step = Duration::from_millis(250) * attempt;
            let pauses: std::collections::HashSet<Duration> = (0..50).map(|_| retry_pause(attempt)).collect();
            assert!(pauses.iter().all(|p| *p >= step && *p <= step * 3), "{pauses:?}");
            assert!(pauses.len() > 10, "sockets failing together retry apart: {pauses:?}");
        }
    }
}
