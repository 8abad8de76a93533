//! `GET /v1/ws?key=pk_…&shopper_id=…`: one shopper's socket.
//!
//! The tenant comes from the publishable key and the upgrade's `Origin` must be one the
//! tenant allows, so another store's key can never open a socket on this tenant's
//! shoppers: sockets are registered under the key's tenant, and interventions are
//! delivered by (tenant, shopper).

use std::sync::Arc;

use axum::{
    extract::{
        State, WebSocketUpgrade,
        ws::{CloseFrame, Message, WebSocket, rejection::WebSocketUpgradeRejection},
    },
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use nudge_contracts::{ShopperId, push::PushMessage};
use nudge_data_plane_directory::{
    Directory,
    auth::{authorize, key_from, query_param},
};
use nudge_platform_http::{ApiError, ErrorBody};
use nudge_tenants::PublishableKey;
use serde::{Deserialize, Serialize};
use tokio::{
    sync::mpsc,
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::hub::{CLOSE_SLOW_CONSUMER, CapReached, Hub, Registration, ShopperAddress};

/// Largest frame a client may send; clients only send pings and acknowledgements.
const MAX_CLIENT_FRAME: usize = 4 * 1024;

/// Per-socket buffers. tungstenite's defaults (128 KiB to read, 128 KiB to gather writes)
/// would cost far more than the socket: frames both ways are small, so small buffers.
const READ_BUFFER: usize = 4 * 1024;
const WRITE_BUFFER: usize = 4 * 1024;
/// A write buffer grows past `WRITE_BUFFER` only while writes fail; beyond this the socket
/// errors out instead of holding more.
const MAX_WRITE_BUFFER: usize = 64 * 1024;

/// Socket keepalive settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GatewayConfig {
    /// How often the server pings each socket and re-checks that its tenant still takes
    /// traffic with the key the socket was opened with.
    pub ping_interval_ms: u64,
    /// A socket that has sent nothing (not even a pong) for this long is dropped.
    pub idle_timeout_ms: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self { ping_interval_ms: 20_000, idle_timeout_ms: 60_000 }
    }
}

impl GatewayConfig {
    fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms.max(10))
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
}

/// What the socket handler needs.
#[derive(Clone)]
pub struct GatewayState {
    pub config: GatewayConfig,
    pub directory: Arc<Directory>,
    pub hub: Arc<Hub>,
    /// Cancelled at shutdown: sockets close with 1001 (going away).
    pub shutdown: CancellationToken,
}

pub fn router() -> OpenApiRouter<GatewayState> {
    OpenApiRouter::new().routes(routes!(upgrade))
}

/// Open a shopper's WebSocket. Text frames are JSON: `{"type": "ready", …}` once, then
/// `{"type": "intervention", …}` for each intervention decided for this shopper.
#[utoipa::path(get, path = "/v1/ws", tag = "sockets",
    params(
        ("key" = String, Query, description = "the store's publishable key"),
        ("shopper_id" = String, Query, description = "the shopper the socket listens for"),
    ),
    responses(
        (status = 101, description = "switching to the WebSocket protocol"),
        (status = 400, description = "`not_a_websocket`", body = ErrorBody),
        (status = 401, description = "`missing_key`, `invalid_key`", body = ErrorBody),
        (status = 403, description = "`origin_required`, `origin_not_allowed`, `tenant_suspended`", body = ErrorBody),
        (status = 422, description = "`missing_shopper_id`, `invalid_shopper_id`", body = ErrorBody),
        (status = 429, description = "`connection_limit`: the store's plan allows no more open sockets", body = ErrorBody),
        (status = 503, description = "`cell_starting`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn upgrade(
    State(state): State<GatewayState>,
    uri: Uri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let accepted = key_from(&headers, query_param(&uri, "key").as_deref()).and_then(|key| {
        let tenant = authorize(&state.directory, &key, origin)?;
        Ok((tenant, key))
    });
    let accepted = accepted.and_then(|(tenant, key)| {
        let shopper = query_param(&uri, "shopper_id")
            .ok_or_else(|| ApiError::unprocessable("missing_shopper_id", "give shopper_id in the query"))
            .and_then(|s| {
                ShopperId::parse(&s).map_err(|e| ApiError::unprocessable("invalid_shopper_id", e.to_string()))
            })?;
        Ok((ShopperAddress { tenant: tenant.tenant_id, shopper }, key))
    });
    let (address, key) = match accepted {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return ApiError::new(StatusCode::BAD_REQUEST, "not_a_websocket", rejection.body_text()).into_response();
        }
    };
    tracing::Span::current().record("tenant_id", tracing::field::display(address.tenant));
    let cap = state.directory.by_tenant(address.tenant).map(|t| t.limits.connections).unwrap_or(0);
    // The slot is taken before upgrading, so the refusal is an HTTP answer with a code; if
    // the upgrade never completes, dropping the registration frees it.
    let registered = match state.hub.register(address.clone(), cap) {
        Ok(r) => r,
        Err(CapReached(cap)) => {
            return ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "connection_limit",
                format!("this store's plan allows {cap} open connections"),
            )
            .with_retry_after(5)
            .into_response();
        }
    };
    ws.max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .on_upgrade(move |socket| serve(socket, state, address, key, registered))
}

/// A write that takes longer belongs to a shopper who stopped reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Close code when the tenant stopped taking traffic or the key was revoked.
const CLOSE_NOT_AUTHORIZED: u16 = 4003;

async fn serve(
    mut socket: WebSocket,
    state: GatewayState,
    address: ShopperAddress,
    key: PublishableKey,
    (registration, mut frames): (Registration, mpsc::Receiver<Arc<str>>),
) {
    let ready = PushMessage::Ready { shopper_id: address.shopper.to_string() };
    // Serialising the enum cannot fail.
    let ready = serde_json::to_string(&ready).unwrap_or_default();
    if send(&mut socket, Message::Text(ready.into())).await.is_err() {
        return;
    }
    tracing::debug!(tenant_id = %address.tenant, "shopper socket open");
    let mut tick = tokio::time::interval(state.config.ping_interval());
    tick.tick().await;
    let mut last_heard = Instant::now();
    let close = loop {
        tokio::select! {
            frame = frames.recv() => {
                // The hub ends the queue only when it evicts this socket for falling behind.
                let Some(frame) = frame else {
                    break Some(CloseFrame { code: CLOSE_SLOW_CONSUMER, reason: "too slow to keep up; reconnect".into() });
                };
                if send(&mut socket, Message::Text((&*frame).into())).await.is_err() {
                    break None;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                // Pongs and anything else prove the shopper is still there.
                Some(Ok(_)) => last_heard = Instant::now(),
            },
            _ = tick.tick() => {
                let still_allowed = state
                    .directory
                    .by_key(&key)
                    .is_some_and(|t| t.tenant_id == address.tenant && t.state.accepts_traffic());
                if !still_allowed {
                    break Some(CloseFrame { code: CLOSE_NOT_AUTHORIZED, reason: "the store no longer accepts this key".into() });
                }
                if last_heard.elapsed() > state.config.idle_timeout() {
                    break None;
                }
                if send(&mut socket, Message::Ping(Vec::new().into())).await.is_err() {
                    break None;
                }
            }
            _ = state.shutdown.cancelled() => {
                break Some(CloseFrame { code: 1001, reason: "server shutting down; reconnect".into() });
            }
        }
    };
    if let Some(frame) = close {
        // The peer may already be gone; nothing more to do either way.
        let _ = send(&mut socket, Message::Close(Some(frame))).await;
    }
    drop(registration);
    tracing::debug!(tenant_id = %address.tenant, "shopper socket closed");
}

async fn send(socket: &mut WebSocket, message: Message) -> Result<(), ()> {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}
