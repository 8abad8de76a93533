//! `/v1/tenants/{tenant_id}/webhook-secret`: the secret the store's campaign webhooks are
//! signed with (`Nudge-Signature: t=…,v1=HMAC-SHA256(secret, "t.body")`). Owners and
//! admins make a new one (shown once); the one it replaces goes on signing beside it for
//! `keep_previous_hours` (24 by default, 0 to stop it at once, at most 168), each request
//! then carrying one `v1=` per secret. Every member sees whether there is one, when it was
//! made, and until when the replaced one signs.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use nudge_control_plane::webhook_secrets;
use nudge_platform_http::{ApiError, ErrorBody};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::merchant::Merchant;
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(webhook_secret_status, rotate_webhook_secret))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookSecretStatus {
    pub configured: bool,
    /// RFC 3339, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// RFC 3339: until when the secret it replaced still signs beside it, while it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_signs_until: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NewWebhookSecret {
    /// `whsec_…`: shown this once.
    pub secret: String,
    pub created_at: String,
    /// RFC 3339: until when the secret it replaced still signs beside it; absent when there
    /// was none or `keep_previous_hours` was 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_signs_until: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct RotateQuery {
    /// Hours the replaced secret goes on signing beside the new one: 0 to 168, 24 when
    /// absent.
    pub keep_previous_hours: Option<u32>,
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn unavailable(e: nudge_platform_vault::VaultError) -> ApiError {
    tracing::warn!(error = %e, "the vault is unavailable for webhook secrets");
    ApiError::unavailable("vault_unavailable", "the secret store cannot be reached; try again shortly", 2)
}

/// Whether the store has a webhook signing secret.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/webhook-secret", tag = "campaigns",
    params(("tenant_id" = String, Path)), security(("access_token" = [])),
    responses(
        (status = 200, body = WebhookSecretStatus),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 503, description = "`vault_unavailable`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn webhook_secret_status(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
) -> Result<Json<WebhookSecretStatus>, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    let status = webhook_secrets::status(&state.vault, tenant).await.map_err(unavailable)?;
    Ok(Json(WebhookSecretStatus {
        configured: status.made_at.is_some(),
        created_at: status.made_at.map(rfc3339),
        previous_signs_until: status.previous_until.map(rfc3339),
    }))
}

/// Make a new webhook signing secret; the one it replaces signs beside it for
/// `keep_previous_hours` (cells pick up either change within 30 s).
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/webhook-secret", tag = "campaigns",
    params(("tenant_id" = String, Path), RotateQuery), security(("access_token" = [])),
    responses(
        (status = 201, description = "the secret, shown this once", body = NewWebhookSecret),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 403, description = "`forbidden`: owners and admins only", body = ErrorBody),
        (status = 422, description = "`invalid_overlap`: `keep_previous_hours` above 168", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 503, description = "`vault_unavailable`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn rotate_webhook_secret(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
    query: Result<Query<RotateQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<(StatusCode, Json<NewWebhookSecret>), ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    merchant.require(merchant.role().manages_keys())?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let overlap = query.keep_previous_hours.unwrap_or(24);
    if overlap > webhook_secrets::MAX_OVERLAP_HOURS {
        return Err(ApiError::unprocessable(
            "invalid_overlap",
            format!("keep_previous_hours is 0 to {}", webhook_secrets::MAX_OVERLAP_HOURS),
        ));
    }
    let made = webhook_secrets::rotate(&state.vault, tenant, overlap).await.map_err(unavailable)?;
    tracing::info!(tenant_id = %tenant, overlap_hours = overlap, "a webhook signing secret was made");
    Ok((
        StatusCode::CREATED,
        Json(NewWebhookSecret {
            secret: made.secret,
            created_at: made.created_at,
            previous_signs_until: made.previous.map(|p| p.until),
        }),
    ))
}
