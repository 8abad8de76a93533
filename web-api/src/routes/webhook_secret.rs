//! `/v1/tenants/{tenant_id}/webhook-secret`: the secret the store's campaign webhooks are
//! signed with (`Nudge-Signature: t=…,v1=HMAC-SHA256(secret, "t.body")`). Owners and
//! admins make a new one (shown once; it replaces the old one at once); every member sees
//! whether there is one and when it was made.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use nudge_control_plane::webhook_secrets;
use nudge_platform_http::{ApiError, ErrorBody};
use serde::Serialize;
use utoipa::ToSchema;
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
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NewWebhookSecret {
    /// `whsec_…`: shown this once.
    pub secret: String,
    pub created_at: String,
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
    let made = webhook_secrets::made_at(&state.vault, tenant).await.map_err(unavailable)?;
    Ok(Json(WebhookSecretStatus {
        configured: made.is_some(),
        created_at: made.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    }))
}

/// Make a new webhook signing secret (the old one stops signing within 30 s).
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/webhook-secret", tag = "campaigns",
    params(("tenant_id" = String, Path)), security(("access_token" = [])),
    responses(
        (status = 201, description = "the secret, shown this once", body = NewWebhookSecret),
        (status = 403, description = "`forbidden`: owners and admins only", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 503, description = "`vault_unavailable`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn rotate_webhook_secret(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
) -> Result<(StatusCode, Json<NewWebhookSecret>), ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    merchant.require(merchant.role().manages_keys())?;
    let made = webhook_secrets::rotate(&state.vault, tenant).await.map_err(unavailable)?;
    tracing::info!(tenant_id = %tenant, "a webhook signing secret was made");
    Ok((StatusCode::CREATED, Json(NewWebhookSecret { secret: made.secret, created_at: made.created_at })))
}
