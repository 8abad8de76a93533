//! `GET /v1/sends`: a store's send log, newest first, for its servers (a secret key with
//! `sends:read`): every campaign send scheduled, sent, skipped (with the reason: consent,
//! quiet hours, caps, holdout, control group, outranked, …), deferred, cancelled by a
//! purchase or failed, with the consent it was checked against. Entries name the
//! intervention and the store's causing event, never the shopper.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Query, State},
    http::HeaderMap,
};
use nudge_data_plane_channels::store::{ChannelStore, LogEntry};
use nudge_data_plane_directory::{Directory, auth::authorize_server_request};
use nudge_platform_http::{ApiError, ErrorBody};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

/// The scope a secret key needs.
pub const SCOPE: &str = "sends:read";
/// Most entries one request returns.
pub const MAX_LIMIT: usize = 1_000;

#[derive(Clone)]
pub struct SendLogState {
    pub directory: Arc<Directory>,
    pub store: ChannelStore,
}

pub fn router() -> OpenApiRouter<SendLogState> {
    OpenApiRouter::new().routes(routes!(read_log))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SendLogQuery {
    /// Entries to read, newest first (1 to 1000; 100 when absent).
    pub limit: Option<usize>,
    /// Only the entries of decisions taken at this event of the store's.
    pub cause_event_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SendLog {
    pub entries: Vec<LogEntry>,
}

/// The store's latest sends and skips.
#[utoipa::path(get, path = "/v1/sends", tag = "sends", params(SendLogQuery),
    security(("secret_key" = [])),
    responses(
        (status = 200, description = "the newest entries first (of the latest `limit`, those of `cause_event_id` when given)", body = SendLog),
        (status = 401, description = "`missing_key`, `invalid_key`", body = ErrorBody),
        (status = 403, description = "`missing_scope` (needs `sends:read`), `tenant_suspended`, `tenant_inactive`", body = ErrorBody),
        (status = 422, description = "`invalid_limit`", body = ErrorBody),
        (status = 503, description = "`send_log_unavailable`, `cell_starting`; retry after `Retry-After`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn read_log(
    State(state): State<SendLogState>,
    headers: HeaderMap,
    Query(query): Query<SendLogQuery>,
) -> Result<Json<SendLog>, ApiError> {
    let tenant = authorize_server_request(&state.directory, &headers, SCOPE)?.tenant_id;
    tracing::Span::current().record("tenant_id", tracing::field::display(tenant));
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::unprocessable("invalid_limit", format!("limit is 1 to {MAX_LIMIT}")));
    }
    let mut entries = state.store.read_log(tenant, limit).await.map_err(|e| {
        tracing::warn!(error = %e, "send log unavailable");
        ApiError::unavailable("send_log_unavailable", "the send log cannot be read now", 1)
    })?;
    if let Some(event) = &query.cause_event_id {
        entries.retain(|e| &e.cause_event_id == event);
    }
    Ok(Json(SendLog { entries }))
}
