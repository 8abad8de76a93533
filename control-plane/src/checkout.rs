//! Self-service plan changes: an owner moves the store between the plans sold without the
//! platform's staff (free and growth; enterprise is negotiated, so operators set it).
//!
//! A paid plan needs a way to pay. An owner whose store has none on file gets a link to
//! Stripe Checkout in *setup* mode: Stripe's hosted page collects a payment method for the
//! store's customer. When Stripe reports the session completed (`checkout.session.completed`,
//! a webhook), the method becomes the customer's default and the store moves to the plan
//! recorded when the link was made (`billing_checkouts`), never to one the event names; a
//! session applies once. The store keeps its one subscription: the billing sync moves it to
//! the new plan's price. Setup mode, rather than Checkout's subscription mode, because every
//! store already has a subscription (to the free plan's price from signup), and a second
//! one would bill it twice.
//!
//! To a plan that costs nothing the change is immediate; to a paid one it is immediate when
//! Stripe has a default payment method for the customer (given through Checkout or the
//! billing portal: Stripe is asked, so a card removed in the portal is noticed).

use nudge_contracts::Topics;
use nudge_tenants::{Plan, TenantId};
use serde_json::Value;
use sqlx::Row;

use crate::{
    announce::announce,
    db::DbError,
    routing::TenantRouter,
    stripe::{CheckoutSession, Stripe, StripeError},
};

/// Why a plan change or a checkout was refused.
#[derive(Debug, thiserror::Error)]
pub enum PlanChangeError {
    #[error("no such store")]
    NotFound,
    /// The plan is set by the platform's staff (enterprise), or the store is on one.
    #[error("the {} plan is not self-service", .0.as_str())]
    NotSelfService(Plan),
    #[error("the store is on the {} plan already", .0.as_str())]
    AlreadyOnPlan(Plan),
    /// A paid plan and no payment method on file: go through Checkout first.
    #[error("a payment method is needed for the {} plan", .0.as_str())]
    PaymentMethodRequired(Plan),
    /// The store is not a Stripe customer yet (seconds after signup).
    #[error("the store is not a Stripe customer yet")]
    NotReady,
    /// The plan costs nothing: no Checkout is needed.
    #[error("the {} plan needs no payment", .0.as_str())]
    NoPaymentNeeded(Plan),
    /// The platform bills no one (no Stripe key): a paid plan cannot be chosen.
    #[error("billing is off")]
    BillingOff,
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Stripe(#[from] StripeError),
}

impl From<sqlx::Error> for PlanChangeError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

/// Whether an owner may choose `plan` themselves.
pub fn self_service(plan: Plan) -> bool {
    matches!(plan, Plan::Free | Plan::Growth)
}

/// Where the store stands: its plan and its customer.
struct Standing {
    plan: Plan,
    customer: Option<String>,
}

async fn standing(router: &TenantRouter, tenant: TenantId) -> Result<Standing, PlanChangeError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let row = sqlx::query(
        "SELECT t.plan, b.stripe_customer_id
         FROM tenants t LEFT JOIN billing_accounts b ON b.tenant_id = t.tenant_id
         WHERE t.tenant_id = $1 AND t.state NOT IN ('offboarding', 'deleted')",
    )
    .bind(tenant.as_uuid())
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(PlanChangeError::NotFound)?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Standing {
        plan: Plan::parse(&row.try_get::<String, _>("plan")?).unwrap_or_default(),
        customer: row.try_get("stripe_customer_id")?,
    })
}

/// Checks that an owner may move the store from `current` to `wanted` themselves.
fn allowed(current: Plan, wanted: Plan) -> Result<(), PlanChangeError> {
    if !self_service(wanted) {
        return Err(PlanChangeError::NotSelfService(wanted));
    }
    if !self_service(current) {
        return Err(PlanChangeError::NotSelfService(current));
    }
    if current == wanted {
        return Err(PlanChangeError::AlreadyOnPlan(current));
    }
    Ok(())
}

/// Moves the store to `plan` now: a plan that costs nothing, or a paid one when Stripe
/// has a payment method for the store's customer. The billing sync then moves its
/// subscription.
pub async fn change_plan(
    router: &TenantRouter,
    stripe: Option<&Stripe>,
    topics: &Topics,
    tenant: TenantId,
    plan: Plan,
    traceparent: Option<String>,
) -> Result<Plan, PlanChangeError> {
    let now = standing(router, tenant).await?;
    allowed(now.plan, plan)?;
    if plan.monthly_price_cents() > 0 {
        let stripe = stripe.ok_or(PlanChangeError::BillingOff)?;
        let customer = now.customer.ok_or(PlanChangeError::NotReady)?;
        // Stripe's word, not a record: a card removed in the portal is seen.
        let method = stripe.default_payment_method(&customer).await?;
        let mut tx = router.tenant_tx(tenant).await?;
        sqlx::query(
            "UPDATE billing_accounts SET stripe_payment_method_id = $2, updated_at = now() WHERE tenant_id = $1",
        )
        .bind(tenant.as_uuid())
        .bind(&method)
        .execute(&mut *tx)
        .await?;
        tx.commit().await.map_err(DbError::from)?;
        if method.is_none() {
            return Err(PlanChangeError::PaymentMethodRequired(plan));
        }
    }
    put_on(router, topics, tenant, now.plan, plan, traceparent).await?;
    Ok(plan)
}

/// Sets the plan column alone (negotiated overrides stay), if the store is still on `from`,
/// and tells its cell. False when it moved meanwhile.
async fn put_on(
    router: &TenantRouter,
    topics: &Topics,
    tenant: TenantId,
    from: Plan,
    to: Plan,
    traceparent: Option<String>,
) -> Result<bool, PlanChangeError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let moved = sqlx::query("UPDATE tenants SET plan = $3 WHERE tenant_id = $1 AND plan = $2")
        .bind(tenant.as_uuid())
        .bind(from.as_str())
        .bind(to.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    if moved {
        announce(&mut tx, topics, tenant, traceparent).await?;
    }
    tx.commit().await.map_err(DbError::from)?;
    if moved {
        tracing::info!(tenant_id = %tenant, from = from.as_str(), to = to.as_str(), "a store changed its plan");
    }
    Ok(moved)
}

/// A Checkout link for an owner to give a payment method and move to paid `plan`.
pub async fn start(
    router: &TenantRouter,
    stripe: &Stripe,
    tenant: TenantId,
    plan: Plan,
    requested_by: &str,
    console_url: &str,
) -> Result<CheckoutSession, PlanChangeError> {
    let now = standing(router, tenant).await?;
    allowed(now.plan, plan)?;
    if plan.monthly_price_cents() == 0 {
        // Nothing to pay: the change needs no card (`change_plan`).
        return Err(PlanChangeError::NoPaymentNeeded(plan));
    }
    let customer = now.customer.ok_or(PlanChangeError::NotReady)?;
    let separator = if console_url.contains('?') { '&' } else { '?' };
    let session = stripe
        .setup_checkout(
            &customer,
            &tenant.to_string(),
            plan.as_str(),
            &format!("{console_url}{separator}checkout=complete&session_id={{CHECKOUT_SESSION_ID}}"),
            &format!("{console_url}{separator}checkout=cancelled"),
        )
        .await?;
    let mut tx = router.tenant_tx(tenant).await?;
    sqlx::query("INSERT INTO billing_checkouts (tenant_id, session_id, plan, requested_by) VALUES ($1, $2, $3, $4)")
        .bind(tenant.as_uuid())
        .bind(&session.id)
        .bind(plan.as_str())
        .bind(requested_by)
        .execute(&mut *tx)
        .await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(session)
}

/// What a completed Checkout session did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The method is on file and the store on the plan.
    PlanChanged(Plan),
    /// The method is on file; the store had moved off the plan it started from meanwhile
    /// (an operator set another), so its plan was left alone.
    MethodSaved,
    /// Not a session this platform made for the store, or one applied before.
    Unknown,
    /// The session's setup intent has not succeeded (yet): nothing was applied.
    Incomplete,
}

/// Applies a completed setup-mode Checkout `session` (the event's object) to `tenant`, the
/// store whose customer it names.
pub async fn complete(
    router: &TenantRouter,
    stripe: &Stripe,
    topics: &Topics,
    tenant: TenantId,
    session: &Value,
) -> Result<Completion, PlanChangeError> {
    let (Some(id), Some(customer)) = (session["id"].as_str(), session["customer"].as_str()) else {
        return Ok(Completion::Unknown);
    };
    if session["mode"].as_str() != Some("setup") {
        return Ok(Completion::Unknown);
    }
    let mut tx = router.tenant_tx(tenant).await?;
    let plan: Option<String> = sqlx::query_scalar(
        "SELECT plan FROM billing_checkouts WHERE tenant_id = $1 AND session_id = $2 AND completed_at IS NULL",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await.map_err(DbError::from)?;
    let Some(plan) = plan.as_deref().and_then(Plan::parse) else { return Ok(Completion::Unknown) };
    // Stripe first, outside any transaction; both calls can be repeated safely if the
    // event is delivered again after a failure below.
    let intent = session["setup_intent"].as_str().or_else(|| session["setup_intent"]["id"].as_str());
    let method = match intent {
        Some(intent) => stripe.setup_payment_method(intent).await?,
        None => None,
    };
    let Some(method) = method else { return Ok(Completion::Incomplete) };
    stripe.set_default_payment_method(customer, &method).await?;

    let mut tx = router.tenant_tx(tenant).await?;
    let pending: Option<String> = sqlx::query_scalar(
        "UPDATE billing_checkouts SET completed_at = now()
         WHERE tenant_id = $1 AND session_id = $2 AND completed_at IS NULL RETURNING plan",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    if pending.is_none() {
        // Applied by a delivery that raced this one.
        return Ok(Completion::Unknown);
    }
    sqlx::query("UPDATE billing_accounts SET stripe_payment_method_id = $2, updated_at = now() WHERE tenant_id = $1")
        .bind(tenant.as_uuid())
        .bind(&method)
        .execute(&mut *tx)
        .await?;
    // From a self-service plan only (a store an operator has put on enterprise meanwhile
    // keeps it), and not for a store that is leaving.
    let moved = sqlx::query(
        "UPDATE tenants SET plan = $2
         WHERE tenant_id = $1 AND plan <> $2 AND plan IN ('free', 'growth')
           AND state NOT IN ('offboarding', 'deleted')",
    )
    .bind(tenant.as_uuid())
    .bind(plan.as_str())
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let on_plan: String = sqlx::query_scalar("SELECT plan FROM tenants WHERE tenant_id = $1")
        .bind(tenant.as_uuid())
        .fetch_one(&mut *tx)
        .await?;
    if moved {
        announce(&mut tx, topics, tenant, None).await?;
    }
    tx.commit().await.map_err(DbError::from)?;
    if on_plan == plan.as_str() {
        tracing::info!(tenant_id = %tenant, plan = plan.as_str(), "a store completed Checkout and is on its new plan");
        Ok(Completion::PlanChanged(plan))
    } else {
        tracing::info!(tenant_id = %tenant, plan = %on_plan, "a store completed Checkout; its plan was left as it is (set by an operator, or the store is leaving)");
        Ok(Completion::MethodSaved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_move_between_the_self_service_plans_only() {
        assert!(allowed(Plan::Free, Plan::Growth).is_ok());
        assert!(allowed(Plan::Growth, Plan::Free).is_ok());
        assert!(matches!(
            allowed(Plan::Free, Plan::Enterprise),
            Err(PlanChangeError::NotSelfService(Plan::Enterprise))
        ));
        assert!(matches!(
            allowed(Plan::Enterprise, Plan::Free),
            Err(PlanChangeError::NotSelfService(Plan::Enterprise))
        ));
        assert!(matches!(allowed(Plan::Growth, Plan::Growth), Err(PlanChangeError::AlreadyOnPlan(Plan::Growth))));
    }
}
