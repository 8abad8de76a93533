//! `GET /v1/tenants/{tenant_id}/billing`: a store's plan, its price and where Stripe stands;
//! `POST /v1/webhooks/stripe`: Stripe's events. The sync with Stripe itself is the control
//! plane's sweep (`nudge_control_plane::billing`); dunning is `nudge_control_plane::webhooks`.

use axum::extract::rejection::JsonRejection;
use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
};
use nudge_contracts::control::{BillingView, PlanChoice};
use nudge_control_plane::{
    billing,
    checkout::PlanChangeError,
    webhooks::{self, Received, SignatureError, WebhookError},
};
use nudge_platform_http::{ApiError, ErrorBody};
use nudge_tenants::{Plan, Role, TenantState};
use serde_json::{Value, json};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{error::db_error, merchant::Merchant};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_billing))
        .routes(routes!(stripe_webhook))
        .routes(routes!(reconciliation))
        .routes(routes!(portal))
        .routes(routes!(checkout))
        .routes(routes!(choose_plan))
}

/// Reads an owner's plan choice.
fn plan_choice(body: Result<Json<PlanChoice>, JsonRejection>) -> Result<Plan, ApiError> {
    let Json(choice) = body.map_err(|e| ApiError::bad_request("malformed_json", e.body_text()))?;
    Plan::parse(&choice.plan).ok_or_else(|| {
        ApiError::unprocessable("invalid_fields", "some fields are invalid")
            .with_details(json!({ "fields": { "plan": "free, growth or enterprise" } }))
    })
}

/// What a refused plan change answers.
fn plan_change_error(e: PlanChangeError) -> ApiError {
    match e {
        PlanChangeError::NotFound => ApiError::not_found(),
        PlanChangeError::NotSelfService(plan) => ApiError::unprocessable(
            "plan_not_self_service",
            format!("the {} plan is agreed with Nudge's staff; contact sales to change it", plan.as_str()),
        ),
        PlanChangeError::AlreadyOnPlan(plan) => ApiError::new(
            StatusCode::CONFLICT,
            "already_on_plan",
            format!("the store is on the {} plan already", plan.as_str()),
        ),
        PlanChangeError::PaymentMethodRequired(plan) => ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            "payment_method_required",
            format!("the {} plan needs a payment method: start a Checkout (POST …/billing/checkout)", plan.as_str()),
        ),
        PlanChangeError::NotReady => ApiError::new(
            StatusCode::CONFLICT,
            "billing_not_ready",
            "the store is not a Stripe customer yet; try again in a few seconds",
        ),
        PlanChangeError::NoPaymentNeeded(plan) => ApiError::unprocessable(
            "no_payment_needed",
            format!("the {} plan costs nothing: choose it with POST …/billing/plan", plan.as_str()),
        ),
        PlanChangeError::BillingOff => {
            ApiError::unavailable("billing_off", "the platform bills no one (no Stripe key)", 3600)
        }
        PlanChangeError::Db(db) => db_error(db),
        PlanChangeError::Stripe(e @ nudge_control_plane::stripe::StripeError::Rejected { .. }) => {
            tracing::warn!(error = %e, "Stripe refused a plan change's request");
            ApiError::new(StatusCode::BAD_GATEWAY, "stripe_refused", "Stripe refused the request; contact support")
        }
        PlanChangeError::Stripe(e) => {
            tracing::warn!(error = %e, "Stripe did not answer a plan change's request");
            ApiError::unavailable("stripe_unavailable", "Stripe did not answer; try again", 5)
        }
    }
}

/// A link to Stripe Checkout where the owner gives a payment method for a paid plan; once
/// Stripe reports it completed, the store is on the plan (and Stripe bills it from then).
/// Each call makes a new link; only a completed one changes anything.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/billing/checkout", tag = "billing",
    params(("tenant_id" = String, Path)), security(("access_token" = [])),
    request_body = PlanChoice,
    responses(
        (status = 200, description = "`url`: where to send the owner; `session_id`; `expires_at` (unix seconds)"),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`: owners only", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`already_on_plan`; `billing_not_ready`: the store is not a Stripe customer yet (seconds after signup)", body = ErrorBody),
        (status = 422, description = "`invalid_fields`; `plan_not_self_service`: enterprise (to or from); `no_payment_needed`: a plan that costs nothing (`POST …/billing/plan`)", body = ErrorBody),
        (status = 502, description = "`stripe_refused`", body = ErrorBody),
        (status = 503, description = "`billing_off`, `stripe_unavailable`; retry after `Retry-After`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn checkout(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
    body: Result<Json<PlanChoice>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    merchant.require(merchant.role() == Role::Owner)?;
    let plan = plan_choice(body)?;
    let Some(stripe) = &state.stripe else {
        return Err(ApiError::unavailable("billing_off", "the platform bills no one (no Stripe key)", 3600));
    };
    let session = nudge_control_plane::checkout::start(
        &state.router,
        stripe,
        tenant,
        plan,
        &merchant.0.account.to_string(),
        &state.portal_return_url,
    )
    .await
    .map_err(plan_change_error)?;
    Ok(Json(json!({ "url": session.url, "session_id": session.id, "expires_at": session.expires_at })))
}

/// Moves the store to another self-service plan now: to free at any time, to a paid plan
/// once a payment method is on file (else 402: go through Checkout). Stripe's subscription
/// follows within seconds; the store's cell enforces the plan's limits as soon.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/billing/plan", tag = "billing",
    params(("tenant_id" = String, Path)), security(("access_token" = [])),
    request_body = PlanChoice,
    responses(
        (status = 200, description = "`plan`: the plan now in force"),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 402, description = "`payment_method_required`: Stripe has no payment method for the store; start a Checkout first", body = ErrorBody),
        (status = 403, description = "`forbidden`: owners only", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`already_on_plan`; `billing_not_ready`: the store is not a Stripe customer yet", body = ErrorBody),
        (status = 422, description = "`invalid_fields`; `plan_not_self_service`: enterprise, to or from", body = ErrorBody),
        (status = 502, description = "`stripe_refused`", body = ErrorBody),
        (status = 503, description = "`billing_off` (a paid plan while the platform bills no one), `stripe_unavailable`, `database_unavailable`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn choose_plan(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
    body: Result<Json<PlanChoice>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    merchant.require(merchant.role() == Role::Owner)?;
    let plan = plan_choice(body)?;
    let trace = nudge_platform_http::current_trace().map(|t| t.to_header());
    let plan = nudge_control_plane::checkout::change_plan(
        &state.router,
        state.stripe.as_ref(),
        &state.topics,
        tenant,
        plan,
        trace,
    )
    .await
    .map_err(plan_change_error)?;
    state.wake_outbox();
    Ok(Json(json!({ "plan": plan.as_str() })))
}

/// A link to Stripe's billing portal for the store (update the payment method, see and pay
/// invoices), valid for a short while; Stripe sends the merchant back to the console.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/billing/portal", tag = "billing",
    params(("tenant_id" = String, Path)), security(("access_token" = [])),
    responses(
        (status = 200, description = "`url`: where to send the merchant"),
        (status = 403, description = "`forbidden`: owners and admins only", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`billing_not_ready`: the store is not a Stripe customer yet (seconds after signup)", body = ErrorBody),
        (status = 503, description = "`billing_off` (the platform bills no one), `stripe_unavailable`; retry after `Retry-After`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn portal(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    merchant.require(merchant.role().manages_keys())?;
    let Some(stripe) = &state.stripe else {
        return Err(ApiError::unavailable("billing_off", "the platform bills no one (no Stripe key)", 3600));
    };
    let (account, _) =
        billing::account(&state.router, tenant).await.map_err(db_error)?.ok_or_else(ApiError::not_found)?;
    let Some(customer) = account.stripe_customer_id else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "billing_not_ready",
            "the store is not a Stripe customer yet; try again in a few seconds",
        ));
    };
    let url = stripe.portal_session(&customer, &state.portal_return_url).await.map_err(|e| {
        tracing::warn!(error = %e, "a billing portal link could not be made");
        ApiError::unavailable("stripe_unavailable", "Stripe did not answer; try again", 5)
    })?;
    Ok(Json(json!({ "url": url })))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
struct Period {
    /// RFC 3339; 48 hours ago when absent.
    from: Option<String>,
    /// RFC 3339; now when absent.
    to: Option<String>,
}

/// The store's usage ledger beside what was sent to Stripe's meters, hour by hour (as this
/// platform recorded its sends: Stripe's own later checks of meter events are not read).
#[utoipa::path(get, path = "/v1/admin/tenants/{tenant_id}/billing/reconciliation", tag = "admin",
    params(("tenant_id" = String, Path), Period), security(("operator_token" = [])),
    responses(
        (status = 200, description = "`rows`: hour, meter, quantity (the ledger), sent, difference; `unsent`: their sum"),
        (status = 401, description = "`invalid_operator_token`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_fields`: `from`, `to` not RFC 3339", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn reconciliation(
    State(state): State<AppState>,
    _operator: super::admin::Operator,
    Path(tenant_id): Path<String>,
    axum::extract::Query(period): axum::extract::Query<Period>,
) -> Result<Json<Value>, ApiError> {
    let tenant = super::admin::parse_tenant(&tenant_id)?;
    let time = |field: &str, raw: Option<&String>, default: chrono::DateTime<chrono::Utc>| match raw {
        None => Ok(default),
        Some(raw) => chrono::DateTime::parse_from_rfc3339(raw).map(|t| t.to_utc()).map_err(|_| {
            ApiError::unprocessable("invalid_fields", "some fields are invalid")
                .with_details(json!({ "fields": { field: "an RFC 3339 time" } }))
        }),
    };
    let now = chrono::Utc::now();
    let from = time("from", period.from.as_ref(), now - chrono::Duration::hours(48))?;
    let to = time("to", period.to.as_ref(), now)?;
    if billing::account(&state.router, tenant).await.map_err(db_error)?.is_none() {
        return Err(ApiError::not_found());
    }
    let rows = nudge_control_plane::meters::reconcile(&state.router, tenant, from, to).await.map_err(db_error)?;
    let unsent: i64 = rows.iter().map(|r| r.quantity - r.sent).sum();
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            json!({
                "hour": r.hour.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "meter": r.meter,
                "quantity": r.quantity,
                "sent": r.sent,
                "difference": r.quantity - r.sent,
                "sent_at": r.sent_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            })
        })
        .collect();
    Ok(Json(json!({ "tenant_id": tenant.to_string(), "rows": rows, "unsent": unsent })))
}

/// Stripe's events for the platform's account (set this URL as a webhook endpoint in
/// Stripe). Signed (`Stripe-Signature`), received once (a repeat answers 200 and does
/// nothing), applied in the order Stripe created them; failed and recovered payments move the
/// store's dunning grade.
#[utoipa::path(post, path = "/v1/webhooks/stripe", tag = "billing",
    request_body(content = String, content_type = "application/json", description = "a Stripe event, as Stripe sent it"),
    responses(
        (status = 200, description = "received (`outcome`: `applied`, `duplicate`, `stale`, `ignored`, `unknown_customer`)"),
        (status = 400, description = "`invalid_signature` (missing, malformed or matching no secret), `signature_expired` (signed more than `billing.webhook_tolerance_secs` from now, either way), `malformed_event`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`, `webhooks_not_configured` (no webhook secret: Stripe retries until one is), `stripe_unavailable` (Stripe did not answer what the event needs), `not_applicable_yet` (a completed Checkout whose setup intent has not succeeded); Stripe delivers the event again", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all)]
async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Some(hooks) = &state.webhooks else {
        // Stripe keeps retrying for days: events sent before the secret is set are not lost.
        return Err(ApiError::unavailable(
            "webhooks_not_configured",
            "no webhook secret is configured (billing.webhook_secrets)",
            60,
        ));
    };
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    webhooks::verify(signature, &body, &state.webhook_secrets, now, state.webhook_tolerance_secs).map_err(|e| {
        tracing::warn!(error = %e, "a Stripe webhook was refused");
        match e {
            SignatureError::OutsideTolerance(_) => {
                ApiError::bad_request("signature_expired", "the signature's time is too far from now")
            }
            _ => ApiError::bad_request("invalid_signature", "the Stripe-Signature does not match the body"),
        }
    })?;
    let event: Value = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("malformed_event", "the body is not a JSON Stripe event"))?;
    let received = hooks.receive(&event).await.map_err(|e| match e {
        WebhookError::Db(db) => db_error(db),
        WebhookError::Malformed(why) => ApiError::bad_request("malformed_event", why),
        WebhookError::Stripe(e) => {
            tracing::warn!(error = %e, "a Stripe event could not be applied: Stripe did not answer");
            ApiError::unavailable("stripe_unavailable", "Stripe did not answer; Stripe delivers the event again", 30)
        }
        WebhookError::NotYet(why) => {
            tracing::info!(why, "a Stripe event cannot be applied yet; Stripe delivers it again");
            ApiError::unavailable("not_applicable_yet", why, 60)
        }
    })?;
    let outcome = match received {
        Received::Applied(_) => "applied",
        Received::Duplicate => "duplicate",
        Received::Stale => "stale",
        Received::Ignored => "ignored",
        Received::Checkout(done) => match done {
            nudge_control_plane::checkout::Completion::PlanChanged(_)
            | nudge_control_plane::checkout::Completion::MethodSaved => "applied",
            nudge_control_plane::checkout::Completion::Unknown
            | nudge_control_plane::checkout::Completion::Incomplete => "ignored",
        },
        Received::UnknownCustomer => {
            tracing::warn!("a Stripe event names a customer no store is; ignored");
            "unknown_customer"
        }
    };
    if matches!(received, Received::Applied(_) | Received::Checkout(_)) {
        state.wake_outbox();
    }
    Ok((StatusCode::OK, Json(json!({ "received": true, "outcome": outcome }))))
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
    let quota = nudge_control_plane::usage::quota_of(&state.router, tenant).await.map_err(db_error)?;
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
        // A failure since recovered from (or of a step no longer wanted) is no news.
        last_error: account.last_error.filter(|_| status == "syncing"),
        dunning: account.dunning,
        monthly_events_included: quota.included,
        monthly_events_used: quota.used,
        quota: quota.state().to_owned(),
        dunning_since: account.dunning_since.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        payment_method_on_file: account.payment_method_on_file,
    }))
}
