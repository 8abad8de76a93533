//! `POST /v1/test-interventions`: a message sent at once to one shopper's open pages, for a
//! store checking its installation (the console's "send a test message"). It goes the way
//! every on-site message goes (the shopper's history, the gateways holding the store's
//! sockets) but is decided by no campaign: it is not logged as a send, counts in no report,
//! and the shopper's feedback on it is ignored. Only owners and admins, with their access
//! tokens (a server's secret key cannot push text to shoppers' pages), at most
//! [`PER_MINUTE`] a minute per store.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use axum::{Json, extract::State, extract::rejection::JsonRejection, http::HeaderMap, http::StatusCode};
use chrono::Utc;
use nudge_contracts::{ShopperId, proto::interventions::v1::Intervention};
use nudge_data_plane_directory::{Directory, auth::authorize_member_request};
use nudge_data_plane_gateway::{
    hub::ShopperAddress,
    route::{InterventionPublisher, TEST_INTERVENTION_PREFIX},
};
use nudge_platform_http::{ApiError, ErrorBody, current_trace};
use nudge_tenants::TenantId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

/// The scope a member's role must reach (owners and admins).
pub const SCOPE: &str = "events:write";
/// Test messages a store may send a minute.
pub const PER_MINUTE: usize = 10;
const MAX_TITLE: usize = 120;
const MAX_BODY: usize = 1000;

#[derive(Clone)]
pub struct TestInterventionState {
    pub directory: Arc<Directory>,
    pub publisher: InterventionPublisher,
    /// Each store's sends in the last minute.
    pub recent: Arc<Mutex<HashMap<TenantId, Vec<Instant>>>>,
}

impl TestInterventionState {
    pub fn new(directory: Arc<Directory>, publisher: InterventionPublisher) -> Self {
        Self { directory, publisher, recent: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// Whether `tenant` may send one more now (and counts it).
    fn allow(&self, tenant: TenantId) -> bool {
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let sent = recent.entry(tenant).or_default();
        sent.retain(|at| now.duration_since(*at) < Duration::from_secs(60));
        if sent.len() >= PER_MINUTE {
            return false;
        }
        sent.push(now);
        true
    }
}

pub fn router() -> OpenApiRouter<TestInterventionState> {
    OpenApiRouter::new().routes(routes!(send_test))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestInterventionRequest {
    /// The shopper whose open pages show it (`nudge.shopperId` in a page of the shop).
    pub shopper_id: String,
    /// 1 to 120 characters; a default when absent.
    #[serde(default)]
    pub title: Option<String>,
    /// 1 to 1000 characters; a default when absent.
    #[serde(default)]
    pub body: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TestInterventionSent {
    pub intervention_id: String,
    /// Gateway processes that held a socket of the store when it was sent: 0 means no page
    /// of the store was open there; the shopper sees it on their next page within the
    /// history's time to live.
    pub gateways: usize,
}

/// Sends a test message to a shopper's open pages.
#[utoipa::path(post, path = "/v1/test-interventions", tag = "events", request_body = TestInterventionRequest,
    security(("access_token" = [])),
    responses(
        (status = 202, description = "sent", body = TestInterventionSent),
        (status = 429, description = "`rate_limited`: ten a minute per store; retry after `Retry-After`", body = ErrorBody),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 401, description = "`members_only`, `invalid_token`, `members_not_accepted`", body = ErrorBody),
        (status = 403, description = "`missing_scope`, `tenant_suspended`, `tenant_inactive`", body = ErrorBody),
        (status = 422, description = "`invalid_shopper_id`, `invalid_text`", body = ErrorBody),
        (status = 503, description = "`routing_unavailable`; retry after `Retry-After`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn send_test(
    State(state): State<TestInterventionState>,
    headers: HeaderMap,
    body: Result<Json<TestInterventionRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<TestInterventionSent>), ApiError> {
    let tenant = authorize_member_request(&state.directory, &headers, SCOPE)?.tenant_id;
    tracing::Span::current().record("tenant_id", tracing::field::display(tenant));
    if !state.allow(tenant) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "ten test messages a minute per store",
        )
        .with_retry_after(10));
    }
    let Json(request) = body.map_err(|e| ApiError::bad_request("malformed_json", e.body_text()))?;
    let shopper = ShopperId::parse(request.shopper_id.trim())
        .map_err(|e| ApiError::unprocessable("invalid_shopper_id", e.to_string()))?;
    let text = |value: Option<String>, default: &str, max: usize, field: &str| {
        let value = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned());
        if value.chars().count() > max {
            return Err(ApiError::unprocessable("invalid_text", format!("{field} is 1 to {max} characters")));
        }
        Ok(value)
    };
    let title = text(request.title, "Nudge is installed", MAX_TITLE, "title")?;
    let body = text(request.body, "This test message reached your shop's page.", MAX_BODY, "body")?;
    let intervention_id = format!("{TEST_INTERVENTION_PREFIX}{}", uuid::Uuid::new_v4().simple());
    let iv = Intervention {
        intervention_id: intervention_id.clone(),
        tenant_id: tenant.to_string(),
        shopper_id: shopper.to_string(),
        kind: "message".into(),
        title,
        body,
        score: 0.0,
        model_version: String::new(),
        cause_event_id: String::new(),
        decided_at_ms: Utc::now().timestamp_millis(),
        traceparent: current_trace().map(|t| t.to_header()).unwrap_or_default(),
        campaign_id: String::new(),
        campaign_version: 0,
        variant: String::new(),
    };
    let gateways = state.publisher.publish(&ShopperAddress { tenant, shopper }, &iv).await.map_err(|e| {
        tracing::warn!(error = %e, "a test message could not be routed");
        ApiError::unavailable("routing_unavailable", "the message cannot be routed now", 1)
    })?;
    tracing::info!(intervention_id = %intervention_id, gateways, "test message sent");
    Ok((StatusCode::ACCEPTED, Json(TestInterventionSent { intervention_id, gateways })))
}
