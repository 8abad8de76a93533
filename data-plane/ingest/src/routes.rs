//! `POST /v1/events`: a batch of events from a browser (or a store's server).
//!
//! Answers `202 {"accepted": n}` once every event is on the broker. A batch is accepted or
//! refused as a whole, so a client never has to work out which events to resend.

use std::{sync::Arc, time::Duration};

use axum::{
    body::{Body, to_bytes},
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use chrono::Utc;
use nudge_contracts::{
    ShopperId,
    headers::EVENT_V1,
    ingest::{BatchAccepted, EventBatch},
    proto::{events::v1::event::Payload, features::v1::SubjectKey},
    subject_digest,
};
use nudge_data_plane_directory::{
    Directory,
    auth::{authorize, authorize_server, key_from, query_param, secret_key_from},
    session::SessionSigner,
};
use nudge_data_plane_keyring::{KeyError, Keyring};
use nudge_platform_http::{ApiError, ErrorBody, current_trace};
use nudge_platform_telemetry::Metrics;
use nudge_tenants::TenantId;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};
use prost::Message;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    dedup::{Dedup, DedupUnavailable, KeyState},
    limits::RateLimiter,
    sink::{EventRecord, EventSink, SinkError},
    usage::{Drop, UsageCounters},
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
    /// Most records waiting for the broker's acknowledgement at once. Beyond it, requests
    /// are answered 503 at once instead of queueing behind a broker that is not keeping up.
    pub max_queued_records: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self { max_batch_events: 500, max_body_bytes: 512 * 1024, ack_timeout_ms: 800, max_queued_records: 50_000 }
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
    pub dedup: Arc<dyn Dedup>,
    pub usage: Arc<UsageCounters>,
    pub sink: Arc<dyn EventSink>,
    /// Seals each event with its shopper's data key before it is stored.
    pub keyring: Arc<Keyring>,
    pub config: IngestConfig,
    pub metrics: IngestMetrics,
    /// Signs the session tokens shopper sockets open with.
    pub sessions: Arc<SessionSigner>,
}

pub fn router() -> OpenApiRouter<IngestState> {
    OpenApiRouter::new()
        .routes(routes!(ingest, preflight))
        .routes(routes!(crate::session::issue, crate::session::preflight))
}

/// CORS preflight. The key is not sent with a preflight, so the origin is checked on the
/// real request; here the browser only learns which methods and headers it may use.
#[utoipa::path(options, path = "/v1/events", tag = "events", responses((status = 204, description = "CORS preflight")))]
async fn preflight(headers: HeaderMap) -> Response {
    cors_preflight(&headers)
}

/// A CORS preflight answer for a browser `POST` with the key in `Authorization`.
pub(crate) fn cors_preflight(headers: &HeaderMap) -> Response {
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

/// Makes `response` readable by the page at `origin`, refusals included, so the snippet can
/// tell "fix this" from "retry later". What protects the tenant is the server-side Origin
/// check, not CORS.
pub(crate) fn allow_origin(response: &mut Response, origin: Option<&str>) {
    if let Some(o) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("retry-after, x-trace-id, idempotent-replayed"),
        );
    }
}

/// Send a batch of shopper events. Accepted (202) only once every event is stored; a batch
/// is accepted or refused whole. The tenant is the key's: a publishable key (`pk_…`, from
/// a browser, with an allowed `Origin`) or a secret key (`sk_…` with `events:write`, from
/// the store's server).
#[utoipa::path(post, path = "/v1/events", tag = "events", request_body = EventBatch,
    params(
        ("key" = Option<String>, Query, description = "publishable key, for clients that cannot set headers"),
        ("Idempotency-Key" = Option<String>, Header, description = "replays the first answer for the same key and body (required with a secret key)"),
    ),
    security(("publishable_key" = [])),
    responses(
        (status = 202, description = "every new event is durably stored (resent ones are counted as duplicates)", body = BatchAccepted),
        (status = 400, description = "`malformed_json`, `invalid_idempotency_key`, `idempotency_key_required` (secret keys)", body = ErrorBody),
        (status = 409, description = "`idempotency_key_in_use`: a request with this key is still running", body = ErrorBody),
        (status = 401, description = "`missing_key`, `invalid_key`", body = ErrorBody),
        (status = 421, description = "`tenant_moved`: the store is on another cell now, `details.cell_url`", body = ErrorBody),
        (status = 403, description = "`origin_required`, `origin_not_allowed`, `missing_scope`, `tenant_suspended`, `tenant_inactive`", body = ErrorBody),
        (status = 402, description = "`payment_required`: the store's payment failed and its events are paused (dunning)", body = ErrorBody),
        (status = 413, description = "`batch_too_large`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: over the plan's events per second; `quota_exceeded`: over the plan's events this month (until the month ends or the plan grows); retry after `Retry-After`", body = ErrorBody),
        (status = 422, description = "`idempotency_key_reused` (same key, different body), `empty_batch`, or the first invalid event's code (`unknown_event_type`, `invalid_property`, …) with every invalid event in details", body = ErrorBody),
        (status = 503, description = "`broker_unavailable`, `idempotency_unavailable`, `keys_unavailable` (the vault wrapping the shoppers' data keys), `cell_starting`; retry after `Retry-After`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn ingest(State(state): State<IngestState>, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (outcome, claim) = accept(&state, &uri, &headers, origin.as_deref(), body).await;
    let mut retry_after = None;
    let (status, body) = match outcome {
        Ok(Answer::Accepted(accepted)) => {
            state.metrics.accepted.inc_by(accepted.accepted as u64);
            (StatusCode::ACCEPTED, serde_json::to_vec(&accepted).unwrap_or_default())
        }
        Ok(Answer::Replay { status, body }) => (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body),
        Err(e) => {
            state.metrics.rejected.get_or_create(&CodeLabel { code: e.code }).inc();
            retry_after = e.retry_after;
            let response = e.into_response();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap_or_default().to_vec();
            (status, body)
        }
    };
    // The answer of a request with an idempotency key is kept for replays, unless it asks for
    // a retry (429, 5xx): then the key is let go so the retry can run.
    let mut replayed = false;
    if let Some(claim) = claim {
        replayed = claim.replayed;
        if !claim.replayed {
            let kept = if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                state.dedup.abandon(claim.tenant, &claim.key).await
            } else {
                state.dedup.finish(claim.tenant, &claim.key, status.as_u16(), &body).await
            };
            if let Err(e) = kept {
                tracing::warn!(error = %e, "could not record the idempotency key's answer");
            }
        }
    }
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    if let Some(seconds) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // The body was not read to its end, so the connection cannot carry another request:
        // tell the client not to reuse it.
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    allow_origin(&mut response, origin.as_deref());
    response
}

/// What a successful request answers.
enum Answer {
    Accepted(BatchAccepted),
    /// The stored answer of an earlier request with the same idempotency key.
    Replay {
        status: u16,
        body: Vec<u8>,
    },
}

/// An idempotency key this request holds (or replays).
struct Claim {
    tenant: TenantId,
    key: String,
    replayed: bool,
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(raw) = headers.get("idempotency-key") else { return Ok(None) };
    let key = raw
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()));
    key.map(|k| Some(k.to_owned())).ok_or_else(|| {
        ApiError::bad_request("invalid_idempotency_key", "an Idempotency-Key is 1-255 printable ASCII characters")
    })
}

async fn accept(
    state: &IngestState,
    uri: &Uri,
    headers: &HeaderMap,
    origin: Option<&str>,
    body: Body,
) -> (Result<Answer, ApiError>, Option<Claim>) {
    let mut claim = None;
    let outcome = accept_inner(state, uri, headers, origin, body, &mut claim).await;
    (outcome, claim)
}

async fn accept_inner(
    state: &IngestState,
    uri: &Uri,
    headers: &HeaderMap,
    origin: Option<&str>,
    body: Body,
    claim: &mut Option<Claim>,
) -> Result<Answer, ApiError> {
    let server = secret_key_from(headers);
    let from_server = server.is_some();
    let tenant = match server {
        // A store's server: no browser, no Origin; the key's scope decides.
        Some(key) => authorize_server(&state.directory, &key?, "events:write")?,
        None => {
            let key = key_from(headers, query_param(uri, "key").as_deref())?;
            authorize(&state.directory, &key, origin)?
        }
    };
    let tenant_id = tenant.tenant_id;
    tracing::Span::current().record("tenant_id", tracing::field::display(tenant_id));
    if tenant.ingest_paused {
        // Dunning: the store's payment failed again; nothing is taken until it pays (the
        // snippet keeps its events and retries later).
        return Err(ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            "payment_required",
            "this store's events are paused: its payment failed; update the payment method in billing",
        ));
    }

    let bytes = to_bytes(body, state.config.max_body_bytes).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("the body is larger than {} bytes; send smaller batches", state.config.max_body_bytes),
        )
    })?;

    // Servers retry on their own schedule: they must say which request is which.
    let key = idempotency_key(headers)?;
    if from_server && key.is_none() {
        return Err(ApiError::bad_request(
            "idempotency_key_required",
            "requests with a secret key must carry an Idempotency-Key header",
        ));
    }
    if let Some(key) = key {
        let body_sha256 = hex::encode(Sha256::digest(&bytes));
        let state_of_key = state.dedup.begin(tenant_id, &key, &body_sha256).await.map_err(dedup_unavailable)?;
        match state_of_key {
            KeyState::Fresh => *claim = Some(Claim { tenant: tenant_id, key, replayed: false }),
            KeyState::Replay { status, body } => {
                *claim = Some(Claim { tenant: tenant_id, key, replayed: true });
                return Ok(Answer::Replay { status, body });
            }
            KeyState::InProgress => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_key_in_use",
                    "a request with this Idempotency-Key is still running; retry when it has finished",
                )
                .with_retry_after(1));
            }
            KeyState::Mismatch => {
                return Err(ApiError::unprocessable(
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with a different body",
                ));
            }
        }
    }

    let batch: EventBatch = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("malformed_json", format!("the body is not a valid event batch: {e}")))?;
    if batch.events.is_empty() {
        return Err(ApiError::unprocessable("empty_batch", "the batch has no events"));
    }
    if batch.events.len() > state.config.max_batch_events {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("a batch holds at most {} events", state.config.max_batch_events),
        ));
    }

    let now = Utc::now();
    let mut events = Vec::with_capacity(batch.events.len());
    let mut errors = Vec::new();
    for (i, raw) in batch.events.iter().enumerate() {
        match parse_event(i, raw, tenant_id, now) {
            Ok(event) => events.push(event),
            Err(e) => errors.push(e),
        }
    }
    if let Some(first) = errors.first() {
        // The batch is refused as a whole; the top-level code is the first event's.
        state.usage.dropped(tenant_id, Drop::Schema, batch.events.len() as u64);
        return Err(ApiError::unprocessable(
            first.code,
            format!("{} of {} events are invalid", errors.len(), batch.events.len()),
        )
        .with_details(json!({ "events": errors })));
    }

    // Suppressed shoppers (erased, or opted out): dropped, counted, and not told apart from
    // accepted ones, so the answer reveals nothing about who is suppressed.
    let before = events.len();
    events.retain(|e| {
        !tenant.is_suppressed(&e.shopper_id)
            && !matches!(&e.payload, Some(Payload::Identify(i))
                if !i.email_sha256.is_empty() && tenant.is_suppressed_email(&i.email_sha256))
    });
    let suppressed = before - events.len();
    state.usage.dropped(tenant_id, Drop::Suppressed, suppressed as u64);

    if tenant.quota_exceeded {
        // The plan's events for the month are used up: until the month ends (UTC) or the plan
        // grows.
        state.usage.dropped(tenant_id, Drop::Quota, events.len() as u64);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "quota_exceeded",
            "this store has used the events its plan includes this month; upgrade the plan or wait for next month",
        )
        .with_retry_after(seconds_to_next_month(Utc::now())));
    }
    if let Err(retry_after) = state.limiter.take(tenant_id, events.len() as u32, tenant.limits) {
        state.usage.dropped(tenant_id, Drop::Rate, events.len() as u64);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("this store's plan allows {} events per second; retry later", tenant.limits.events_per_second),
        )
        .with_retry_after(retry_after));
    }

    // Resent events (same id within a day) are dropped here; if the store is unreachable the
    // batch goes through and the pipeline's own deduplication keeps effects single.
    let ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
    // Each shopper's subject digest names their data key and their records' key.
    let subjects = events
        .iter()
        .map(|e| ShopperId::parse(&e.shopper_id).map(|s| subject_digest(tenant_id.as_uuid(), &s)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| ApiError::unprocessable("invalid_shopper_id", "a shopper id is invalid"))?;
    let fresh = match state.dedup.claim(tenant_id, &ids).await {
        Ok(fresh) => fresh,
        Err(e) => {
            tracing::warn!(error = %e, "event-id dedup unavailable; relying on the pipeline's");
            vec![true; ids.len()]
        }
    };
    let mut claimed = Vec::new();
    let mut plain = Vec::with_capacity(events.len());
    for ((event, subject), fresh) in events.into_iter().zip(subjects).zip(fresh) {
        if fresh {
            claimed.push(event.event_id.clone());
            plain.push((subject, event.encode_to_vec()));
        }
    }
    let duplicates = ids.len() - plain.len();
    state.usage.dropped(tenant_id, Drop::Duplicate, duplicates as u64);

    // Each event sealed with its shopper's data key: erasing the key later makes every
    // stored copy unreadable.
    let sealed = match state.keyring.seal_many(tenant_id, EVENT_V1.name, &plain).await {
        Ok(sealed) => sealed,
        Err(e) => {
            if let Err(release) = state.dedup.release(tenant_id, &claimed).await {
                tracing::warn!(error = %release, "releasing event-id claims");
            }
            return Err(match e {
                KeyError::Unavailable(why) => {
                    tracing::warn!(reason = %why, "data keys unavailable; batch refused");
                    ApiError::unavailable("keys_unavailable", "events cannot be stored right now; retry later", 1)
                }
                other => ApiError::internal(&other),
            });
        }
    };
    // A shopper suppressed (or erased) while the batch was on its way has no key: dropped
    // and counted like the suppressed ones above.
    let records: Vec<EventRecord> = sealed
        .into_iter()
        .flatten()
        .map(|sealed| EventRecord {
            key: SubjectKey { tenant_id: sealed.tenant_id.clone(), subject_digest: sealed.subject_digest.clone() }
                .encode_to_vec(),
            value: sealed.encode_to_vec(),
        })
        .collect();
    let late = plain.len() - records.len();
    state.usage.dropped(tenant_id, Drop::Suppressed, late as u64);
    let suppressed = suppressed + late;

    let accepted = records.len();
    if !records.is_empty()
        && let Err(e) = state.sink.publish(records, current_trace()).await
    {
        // Not stored: let the ids go, so the client's retry is not taken for a duplicate.
        if let Err(release) = state.dedup.release(tenant_id, &claimed).await {
            tracing::warn!(error = %release, "releasing event-id claims");
        }
        return Err(match e {
            SinkError::Unavailable(why) => {
                tracing::warn!(reason = %why, "broker unavailable; batch refused");
                ApiError::unavailable("broker_unavailable", "events cannot be stored right now; retry later", 1)
            }
            SinkError::Rejected(ref inner) => ApiError::internal(inner),
        });
    }
    state.usage.accepted(tenant_id, accepted as u64);
    Ok(Answer::Accepted(BatchAccepted { accepted: accepted + suppressed, duplicates }))
}

fn dedup_unavailable(e: DedupUnavailable) -> ApiError {
    tracing::warn!(error = %e, "idempotency store unavailable");
    ApiError::unavailable("idempotency_unavailable", "idempotency keys cannot be checked right now; retry later", 1)
}

/// Seconds until the next month begins (UTC), for a refusal that lasts the month.
fn seconds_to_next_month(now: chrono::DateTime<Utc>) -> u32 {
    use chrono::Datelike;
    let (year, month) = if now.month() == 12 { (now.year() + 1, 1) } else { (now.year(), now.month() + 1) };
    let next = chrono::NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or(now);
    u32::try_from((next - now).num_seconds().max(1)).unwrap_or(u32::MAX)
}
