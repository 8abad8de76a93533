//! `POST /v1/events`: a batch of events from a browser (or a store's server).
//!
//! Answers `202 {"accepted": n}` once every event is on the broker. A batch is accepted or
//! refused as a whole, so a client never has to work out which events to resend.

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    body::{Body, to_bytes},
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use chrono::Utc;
use nudge_contracts::{
    ingest::{BatchAccepted, EventBatch},
    proto::events::v1::ShopperKey,
};
use nudge_data_plane_directory::{
    Directory,
    auth::{authorize, authorize_server, key_from, query_param, secret_key_from},
};
use nudge_platform_http::{ApiError, ErrorBody, current_trace};
use nudge_platform_telemetry::Metrics;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};
use prost::Message;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    limits::RateLimiter,
    sink::{EventRecord, EventSink, SinkError},
    validate::parse_event,
};

/// Limits and timeouts of the intake.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct IngestConfig {
    /// Most events in one batch.
    pub max_batch_events: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// How long a request waits for the broker's acknowledgement before answering 503.
    pub ack_timeout_ms: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self { max_batch_events: 500, max_body_bytes: 512 * 1024, ack_timeout_ms: 800 }
    }
}

impl IngestConfig {
    pub fn ack_timeout(&self) -> Duration {
        Duration::from_millis(self.ack_timeout_ms)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

/// Intake counters.
#[derive(Clone)]
pub struct IngestMetrics {
    accepted: Counter,
    rejected: Family<CodeLabel, Counter>,
}

impl IngestMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let accepted = Counter::default();
        let rejected = Family::<CodeLabel, Counter>::default();
        let mut r = metrics.registry();
        r.register("ingest_events_accepted", "Events durably accepted", accepted.clone());
        r.register("ingest_requests_rejected", "Ingest requests refused, by error code", rejected.clone());
        Self { accepted, rejected }
    }
}

/// What the intake handlers need.
#[derive(Clone)]
pub struct IngestState {
    pub directory: Arc<Directory>,
    pub limiter: Arc<RateLimiter>,
    pub sink: Arc<dyn EventSink>,
    pub config: IngestConfig,
    pub metrics: IngestMetrics,
}

pub fn router() -> OpenApiRouter<IngestState> {
    OpenApiRouter::new().routes(routes!(ingest, preflight))
}

/// CORS preflight. The key is not sent with a preflight, so the origin is checked on the
/// real request; here the browser only learns which methods and headers it may use.
#[utoipa::path(options, path = "/v1/events", tag = "events", responses((status = 204, description = "CORS preflight")))]
async fn preflight(headers: HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    if let Some(origin) = headers.get(header::ORIGIN) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, OPTIONS"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, traceparent, idempotency-key"),
    );
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    response
}

/// Send a batch of shopper events. Accepted (202) only once every event is stored; a batch
/// is accepted or refused whole. The tenant is the key's: a publishable key (`pk_…`, from
/// a browser, with an allowed `Origin`) or a secret key (`sk_…` with `events:write`, from
/// the store's server).
#[utoipa::path(post, path = "/v1/events", tag = "events", request_body = EventBatch,
    params(("key" = Option<String>, Query, description = "publishable key, for clients that cannot set headers")),
    security(("publishable_key" = [])),
    responses(
        (status = 202, description = "every event is durably stored", body = BatchAccepted),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 401, description = "`missing_key`, `invalid_key`", body = ErrorBody),
        (status = 403, description = "`origin_required`, `origin_not_allowed`, `missing_scope`, `tenant_suspended`, `tenant_inactive`", body = ErrorBody),
        (status = 413, description = "`batch_too_large`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: over the plan's events per second; retry after `Retry-After`", body = ErrorBody),
        (status = 422, description = "`empty_batch`, or the first invalid event's code (`unknown_event_type`, `invalid_property`, …) with every invalid event in details", body = ErrorBody),
        (status = 503, description = "`broker_unavailable`, `cell_starting`; retry after `Retry-After`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn ingest(State(state): State<IngestState>, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut response = match accept(&state, &uri, &headers, origin.as_deref(), body).await {
        Ok(accepted) => {
            state.metrics.accepted.inc_by(accepted as u64);
            (StatusCode::ACCEPTED, Json(BatchAccepted { accepted })).into_response()
        }
        Err(e) => {
            state.metrics.rejected.get_or_create(&CodeLabel { code: e.code }).inc();
            e.into_response()
        }
    };
    // Every answer is readable by the page that asked, refusals included, so the snippet can
    // tell "fix this" (drop the batch) from "retry later". What protects the tenant is the
    // server-side Origin check above, not CORS.
    if let Some(o) = origin.as_deref().and_then(|o| HeaderValue::from_str(o).ok()) {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("retry-after, x-trace-id"));
    }
    response
}

async fn accept(
    state: &IngestState,
    uri: &Uri,
    headers: &HeaderMap,
    origin: Option<&str>,
    body: Body,
) -> Result<usize, ApiError> {
    let tenant = match secret_key_from(headers) {
        // A store's server: no browser, no Origin; the key's scope decides.
        Some(key) => authorize_server(&state.directory, &key?, "events:write")?,
        None => {
            let key = key_from(headers, query_param(uri, "key").as_deref())?;
            authorize(&state.directory, &key, origin)?
        }
    };
    tracing::Span::current().record("tenant_id", tracing::field::display(tenant.tenant_id));

    let bytes = to_bytes(body, state.config.max_body_bytes).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("the body is larger than {} bytes; send smaller batches", state.config.max_body_bytes),
        )
    })?;
    let batch: EventBatch = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("malformed_json", format!("the body is not a valid event batch: {e}")))?;
    if batch.events.is_empty() {
        return Err(ApiError::unprocessable("empty_batch", "the batch has no events"));
    }
    if batch.events.len() > state.config.max_batch_events {
        let e = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("a batch holds at most {} events", state.config.max_batch_events),
        );
        return Err(e);
    }

    let now = Utc::now();
    let mut records = Vec::with_capacity(batch.events.len());
    let mut errors = Vec::new();
    for (i, raw) in batch.events.iter().enumerate() {
        match parse_event(i, raw, tenant.tenant_id, now) {
            Ok(event) => {
                let key = ShopperKey { tenant_id: event.tenant_id.clone(), shopper_id: event.shopper_id.clone() };
                records.push(EventRecord { key: key.encode_to_vec(), value: event.encode_to_vec() });
            }
            Err(e) => errors.push(e),
        }
    }
    if let Some(first) = errors.first() {
        // The batch is refused as a whole; the top-level code is the first event's.
        let e = ApiError::unprocessable(
            first.code,
            format!("{} of {} events are invalid", errors.len(), batch.events.len()),
        )
        .with_details(json!({ "events": errors }));
        return Err(e);
    }

    let accepted = records.len();
    if let Err(retry_after) = state.limiter.take(tenant.tenant_id, accepted as u32, tenant.limits) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("this store's plan allows {} events per second; retry later", tenant.limits.events_per_second),
        )
        .with_retry_after(retry_after));
    }
    state.sink.publish(records, current_trace()).await.map_err(|e| match e {
        SinkError::Unavailable(why) => {
            tracing::warn!(reason = %why, "broker unavailable; batch refused");
            ApiError::unavailable("broker_unavailable", "events cannot be stored right now; retry later", 1)
        }
        SinkError::Rejected(ref inner) => ApiError::internal(inner),
    })?;
    Ok(accepted)
}
