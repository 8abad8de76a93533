//! `POST /v1/sessions`: a signed, short-lived token for one shopper's socket.
//!
//! The tenant is the publishable key's (with an allowed `Origin`), as for events; the token
//! binds that tenant to the shopper id the snippet uses for its events, so the gateway never
//! takes either from what a socket asks for. Issuing costs one HMAC and stores nothing, so
//! it is not charged to the store's event rate: a store at its event limit still opens its
//! shoppers' sockets (up to its connection cap).

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use chrono::{TimeZone, Utc};
use nudge_contracts::{
    ShopperId,
    ingest::{SessionIssued, SessionRequest},
};
use nudge_data_plane_directory::auth::{authorize, key_from, query_param};
use nudge_platform_http::{ApiError, ErrorBody};

use crate::routes::{IngestState, allow_origin, cors_preflight};

/// A session request names one shopper; nothing bigger is read.
const MAX_BODY: usize = 1024;

/// CORS preflight for `POST /v1/sessions`.
#[utoipa::path(options, path = "/v1/sessions", tag = "events", responses((status = 204, description = "CORS preflight")))]
pub(crate) async fn preflight(headers: HeaderMap) -> Response {
    cors_preflight(&headers)
}

/// Get a session token for a shopper's socket. Send it as `token` when opening `/v1/ws`;
/// fetch a new one when the socket is refused with close code 4005 (expired).
#[utoipa::path(post, path = "/v1/sessions", tag = "events", request_body = SessionRequest,
    security(("publishable_key" = [])),
    responses(
        (status = 201, description = "a token for this shopper of this store", body = SessionIssued),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 401, description = "`missing_key`, `invalid_key`", body = ErrorBody),
        (status = 421, description = "`tenant_moved`: the store is on another cell now, `details.cell_url`", body = ErrorBody),
        (status = 403, description = "`origin_required`, `origin_not_allowed`, `tenant_suspended`, `tenant_inactive`", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 422, description = "`invalid_shopper_id`", body = ErrorBody),
        (status = 503, description = "`cell_starting`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
pub(crate) async fn issue(State(state): State<IngestState>, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut response = match issue_inner(&state, &uri, &headers, origin.as_deref(), body).await {
        Ok(issued) => (StatusCode::CREATED, axum::Json(issued)).into_response(),
        Err(e) => e.into_response(),
    };
    allow_origin(&mut response, origin.as_deref());
    response
}

async fn issue_inner(
    state: &IngestState,
    uri: &Uri,
    headers: &HeaderMap,
    origin: Option<&str>,
    body: Body,
) -> Result<SessionIssued, ApiError> {
    let key = key_from(headers, query_param(uri, "key").as_deref())?;
    let tenant = authorize(&state.directory, &key, origin)?;
    tracing::Span::current().record("tenant_id", tracing::field::display(tenant.tenant_id));
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("a session request is at most {MAX_BODY} bytes"),
        )
    })?;
    let request: SessionRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("malformed_json", format!("expected {{\"shopper_id\": \"…\"}}: {e}")))?;
    let shopper = ShopperId::parse(&request.shopper_id)
        .map_err(|e| ApiError::unprocessable("invalid_shopper_id", e.to_string()))?;
    let (token, expires_at) = state.sessions.issue(tenant.tenant_id, &shopper);
    let expires_at = Utc
        .timestamp_opt(i64::try_from(expires_at).unwrap_or(i64::MAX), 0)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    Ok(SessionIssued { token, shopper_id: shopper.to_string(), expires_at })
}
