//! `/v1/tenants/{tenant_id}/messaging-policy`: the store's rules for every campaign send —
//! per channel the global frequency cap, quiet hours in the shopper's time zone and whether
//! consent is required, and the store's global holdout. Every member reads it; owners and
//! admins replace it (whole: a channel left out gets no cap, no quiet hours and no
//! consent requirement; the store's record, with the policy, reaches its cells within
//! seconds).

use axum::{
    Json,
    extract::{Path, State, rejection::JsonRejection},
};
use nudge_campaigns::policy::MessagingPolicy;
use nudge_control_plane::messaging::{self, PolicyError, StoredPolicy};
use nudge_platform_http::{ApiError, ErrorBody};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{error::db_error, merchant::Merchant};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_policy, set_policy))
}

/// The store's messaging policy.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyView {
    pub policy: MessagingPolicy,
    /// When it was last set (RFC 3339); absent: never, these are the defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

fn view(stored: StoredPolicy) -> PolicyView {
    PolicyView {
        policy: stored.policy,
        updated_at: stored.updated_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    }
}

fn policy_error(e: PolicyError) -> ApiError {
    match e {
        PolicyError::Invalid(problems) => {
            ApiError::unprocessable("invalid_policy", "the policy has problems; each is named by its field")
                .with_details(json!({ "problems": problems }))
        }
        PolicyError::Db(db) => db_error(db),
    }
}

/// The store's messaging policy (the defaults until an owner or admin sets one).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/messaging-policy", tag = "campaigns",
    params(("tenant_id" = String, Path)), security(("access_token" = [])),
    responses(
        (status = 200, body = PolicyView),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn get_policy(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
) -> Result<Json<PolicyView>, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    Ok(Json(view(messaging::get(&state.router, tenant).await.map_err(policy_error)?)))
}

/// Replace the store's messaging policy.
#[utoipa::path(put, path = "/v1/tenants/{tenant_id}/messaging-policy", tag = "campaigns",
    params(("tenant_id" = String, Path)), security(("access_token" = [])),
    request_body = MessagingPolicy,
    responses(
        (status = 200, description = "in force; the cells follow it within seconds", body = PolicyView),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`: owners and admins only", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_policy`: `details.problems`, each `{field, code, message}`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn set_policy(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
    body: Result<Json<MessagingPolicy>, JsonRejection>,
) -> Result<Json<PolicyView>, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    merchant.require(merchant.role().manages_keys())?;
    let policy = match body {
        Ok(Json(policy)) => policy,
        Err(JsonRejection::JsonDataError(e)) => {
            return Err(ApiError::unprocessable(
                "invalid_policy",
                "the policy has problems; each is named by its field",
            )
            .with_details(
                json!({ "problems": [{ "field": "", "code": "invalid_value", "message": e.body_text() }] }),
            ));
        }
        Err(other) => return Err(ApiError::bad_request("malformed_json", other.body_text())),
    };
    let actor = format!("account:{}", merchant.0.account);
    let stored = messaging::set(&state.router, &state.topics, tenant, &policy, &actor).await.map_err(policy_error)?;
    Ok(Json(view(stored)))
}
