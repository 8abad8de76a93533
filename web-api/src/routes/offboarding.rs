//! A store's offboarding: `/v1/tenants/{tenant_id}/offboarding` for its owners (ask, see,
//! cancel during the grace period) and `/v1/admin/tenants/{tenant_id}/offboarding` for
//! operators (who may give a shorter grace period). The purge itself is the control plane's
//! sweep (`nudge_control_plane::offboarding`).

use axum::{
    Json,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
};
use nudge_contracts::control::{OffboardingRequestBody, OffboardingView};
use nudge_control_plane::{
    erasure,
    lifecycle::{self, LifecycleError},
    offboarding,
};
use nudge_platform_http::{ApiError, ErrorBody, current_trace};
use nudge_tenants::{Actor, Role, TenantId, TenantState};
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    admin::{Operator, lifecycle_error, parse_tenant},
    erasures::{erasure_error, view},
    merchant::Merchant,
};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_offboarding, request_offboarding, cancel_offboarding))
        .routes(routes!(admin_get_offboarding, admin_request_offboarding))
}

/// The longest grace period an operator may give.
const MAX_GRACE_DAYS: u32 = 90;

fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn offboarding_view(state: &AppState, tenant: TenantId) -> Result<OffboardingView, ApiError> {
    let status = offboarding::status(&state.router, tenant).await.map_err(erasure_error)?;
    let purge = match status.purge {
        Some(request_id) => Some(view(erasure::get(&state.router, tenant, request_id).await.map_err(erasure_error)?)),
        None => None,
    };
    Ok(OffboardingView {
        tenant_id: tenant.to_string(),
        state: status.state.as_str().to_owned(),
        requested_at: status.requested_at.map(time),
        requested_by: status.requested_by,
        purge_after: status.purge_after.map(time),
        purge,
    })
}

fn invalid(field: &str, why: &str) -> ApiError {
    ApiError::unprocessable("invalid_fields", "some fields are invalid")
        .with_details(json!({ "fields": { field: why } }))
}

fn reason_of(body: &OffboardingRequestBody) -> Result<&str, ApiError> {
    let reason = body.reason.trim();
    if reason.is_empty() || reason.len() > 1000 {
        return Err(invalid("reason", "1-1000 characters"));
    }
    Ok(reason)
}

/// Moves the store to `offboarding` with grace period `grace`: 202 when it starts now, 200
/// when it was offboarding already (its grace period unchanged).
async fn offboard(
    state: &AppState,
    tenant: TenantId,
    actor: &Actor,
    reason: &str,
    grace: chrono::Duration,
) -> Result<(StatusCode, Json<OffboardingView>), ApiError> {
    let trace = current_trace().map(|t| t.to_header());
    let done = lifecycle::transition(
        &state.router,
        &state.topics,
        tenant,
        TenantState::Offboarding,
        actor,
        reason,
        grace,
        trace,
    )
    .await
    .map_err(lifecycle_error)?;
    if done.changed {
        state.wake_outbox();
    }
    let status = if done.changed { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, Json(offboarding_view(state, tenant).await?)))
}

/// Where the store's offboarding stands (any member).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/offboarding", tag = "privacy",
    params(("tenant_id" = String, Path)), security(("access_token" = [])),
    responses(
        (status = 200, body = OffboardingView),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn get_offboarding(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
) -> Result<Json<OffboardingView>, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    Ok(Json(offboarding_view(&state, tenant).await?))
}

/// Close the store (owners only). It stops taking traffic at once; its members can still
/// read and export what it holds, and cancel, until the grace period ends
/// (`purge_after`); then everything of it is erased, with a signed receipt, and it is
/// deleted.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/offboarding", tag = "privacy",
    params(("tenant_id" = String, Path)), request_body = OffboardingRequestBody, security(("access_token" = [])),
    responses(
        (status = 202, description = "offboarding from now", body = OffboardingView),
        (status = 200, description = "offboarding already", body = OffboardingView),
        (status = 403, description = "`forbidden`: owners only", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`invalid_transition` (a store not active or suspended)", body = ErrorBody),
        (status = 422, description = "`invalid_fields` (a reason is needed; the grace period is not the owner's to choose)", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn request_offboarding(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
    body: Result<Json<OffboardingRequestBody>, JsonRejection>,
) -> Result<(StatusCode, Json<OffboardingView>), ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    merchant.require(merchant.role() == Role::Owner)?;
    let Json(body) = body.map_err(|e| ApiError::bad_request("malformed_json", e.body_text()))?;
    if body.grace_days.is_some() {
        return Err(invalid("grace_days", "set by the platform; ask an operator for a shorter one"));
    }
    let reason = reason_of(&body)?;
    offboard(&state, tenant, &Actor::Account(merchant.0.account), reason, state.offboarding_grace).await
}

/// Cancel the store's offboarding during its grace period (owners only): it goes back to
/// the state it left (active, or suspended if it was). Once the purge has been filed it is
/// too late (409 `purge_started`).
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/offboarding", tag = "privacy",
    params(("tenant_id" = String, Path)), security(("access_token" = [])),
    responses(
        (status = 200, description = "cancelled: the store is back in the state it left", body = OffboardingView),
        (status = 403, description = "`forbidden`: owners only", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`not_offboarding`, `purge_started`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn cancel_offboarding(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
) -> Result<Json<OffboardingView>, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    merchant.require(merchant.role() == Role::Owner)?;
    let trace = current_trace().map(|t| t.to_header());
    offboarding::cancel(&state.router, &state.topics, tenant, &Actor::Account(merchant.0.account), trace)
        .await
        .map_err(|e| match e {
            LifecycleError::Invalid(invalid) => {
                ApiError::new(StatusCode::CONFLICT, "not_offboarding", "the store is not offboarding")
                    .with_details(json!({ "current_state": invalid.current.as_str() }))
            }
            other => lifecycle_error(other),
        })?;
    state.wake_outbox();
    Ok(Json(offboarding_view(&state, tenant).await?))
}

/// Where a tenant's offboarding stands.
#[utoipa::path(get, path = "/v1/admin/tenants/{tenant_id}/offboarding", tag = "admin",
    params(("tenant_id" = String, Path)), security(("operator_token" = [])),
    responses(
        (status = 200, body = OffboardingView),
        (status = 401, description = "`invalid_operator_token`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn admin_get_offboarding(
    State(state): State<AppState>,
    _operator: Operator,
    Path(tenant_id): Path<String>,
) -> Result<Json<OffboardingView>, ApiError> {
    let tenant = parse_tenant(&tenant_id)?;
    Ok(Json(offboarding_view(&state, tenant).await?))
}

/// Offboard a tenant, with the platform's grace period or a shorter one (`grace_days`,
/// 0-90; 0: purged at the next sweep).
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant_id}/offboarding", tag = "admin",
    params(("tenant_id" = String, Path)), request_body = OffboardingRequestBody, security(("operator_token" = [])),
    responses(
        (status = 202, description = "offboarding from now", body = OffboardingView),
        (status = 200, description = "offboarding already (its grace period unchanged)", body = OffboardingView),
        (status = 401, description = "`invalid_operator_token`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`invalid_transition`", body = ErrorBody),
        (status = 422, description = "`invalid_fields`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn admin_request_offboarding(
    State(state): State<AppState>,
    operator: Operator,
    Path(tenant_id): Path<String>,
    body: Result<Json<OffboardingRequestBody>, JsonRejection>,
) -> Result<(StatusCode, Json<OffboardingView>), ApiError> {
    let tenant = parse_tenant(&tenant_id)?;
    let Json(body) = body.map_err(|e| ApiError::bad_request("malformed_json", e.body_text()))?;
    let reason = reason_of(&body)?;
    let grace = match body.grace_days {
        None => state.offboarding_grace,
        Some(days) if days <= MAX_GRACE_DAYS => chrono::Duration::days(i64::from(days)),
        Some(_) => return Err(invalid("grace_days", "0-90")),
    };
    offboard(&state, tenant, &Actor::Operator(operator.0), reason, grace).await
}
