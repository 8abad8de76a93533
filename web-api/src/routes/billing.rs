//! `GET /v1/tenants/{tenant_id}/billing`: a store's plan, its price and where Stripe stands.
//! The sync with Stripe itself is the control plane's sweep (`nudge_control_plane::billing`).

use axum::{
    Json,
    extract::{Path, State},
};
use nudge_contracts::control::BillingView;
use nudge_control_plane::billing;
use nudge_platform_http::{ApiError, ErrorBody};
use nudge_tenants::TenantState;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{error::db_error, merchant::Merchant};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_billing))
}

/// The store's plan, its list price, and its Stripe customer and subscription.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/billing", tag = "billing",
    params(("tenant_id" = String, Path)), security(("access_token" = [])),
    responses(
        (status = 200, body = BillingView),
        (status = 403, description = "`forbidden`: owners and admins only", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn get_billing(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
) -> Result<Json<BillingView>, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    merchant.require(merchant.role().manages_keys())?;
    let (account, lifecycle) =
        billing::account(&state.router, tenant).await.map_err(db_error)?.ok_or_else(ApiError::not_found)?;
    let leaving = matches!(lifecycle, TenantState::Offboarding | TenantState::Deleted);
    let status = if !state.billing_enabled {
        "off"
    } else if !account.in_sync(lifecycle) {
        "syncing"
    } else if leaving {
        "cancelled"
    } else {
        "subscribed"
    };
    Ok(Json(BillingView {
        tenant_id: tenant.to_string(),
        plan: account.plan.as_str().to_owned(),
        monthly_price_cents: account.plan.monthly_price_cents(),
        currency: "eur".to_owned(),
        status: status.to_owned(),
        stripe_customer_id: account.stripe_customer_id,
        stripe_subscription_id: account.stripe_subscription_id,
        subscribed_plan: account.subscribed_plan.map(|p| p.as_str().to_owned()),
        synced_at: account.synced_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        last_error: account.last_error,
    }))
}
