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
use tokio_util::sync::CancellationToken;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::hub::{Hub, ShopperAddress};

/// Largest frame a client may send; clients only send pings and acknowledgements.
const MAX_CLIENT_FRAME: usize = 4 * 1024;

/// What the socket handler needs.
#[derive(Clone)]
pub struct GatewayState {
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
    let accepted = key_from(&headers, query_param(&uri, "key"))
        .and_then(|key| authorize(&state.directory, &key, origin))
        .and_then(|tenant| {
            let shopper = query_param(&uri, "shopper_id")
                .ok_or_else(|| ApiError::unprocessable("missing_shopper_id", "give shopper_id in the query"))
                .and_then(|s| {
                    ShopperId::parse(s).map_err(|e| ApiError::unprocessable("invalid_shopper_id", e.to_string()))
                })?;
            Ok(ShopperAddress { tenant: tenant.tenant_id, shopper })
        });
    let address = match accepted {
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
    ws.max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| serve(socket, state, address))
}

async fn serve(mut socket: WebSocket, state: GatewayState, address: ShopperAddress) {
    let (registration, mut frames) = state.hub.register(address.clone());
    let ready = PushMessage::Ready { shopper_id: address.shopper.to_string() };
    // Serialising the enum cannot fail.
    let ready = serde_json::to_string(&ready).unwrap_or_default();
    if socket.send(Message::Text(ready.into())).await.is_err() {
        return;
    }
    tracing::debug!(tenant_id = %address.tenant, "shopper socket open");
    loop {
        tokio::select! {
            frame = frames.recv() => {
                let Some(frame) = frame else { break };
                if socket.send(Message::Text((&*frame).into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                // Pings are answered by the protocol layer; acknowledgements come later.
                Some(Ok(_)) => {}
            },
            _ = state.shutdown.cancelled() => {
                let close = CloseFrame { code: 1001, reason: "server shutting down; reconnect".into() };
                let _ = socket.send(Message::Close(Some(close))).await;
                break;
            }
        }
    }
    drop(registration);
    tracing::debug!(tenant_id = %address.tenant, "shopper socket closed");
}
