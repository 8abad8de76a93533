//! Billing through Stripe: every store is a Stripe customer, subscribed to its plan's price
//! while it stays and cancelled once it leaves.
//!
//! The sync is level-triggered, like a controller: a sweep (`billing.sync_interval_ms`)
//! lists the stores whose Stripe side does not match them (`nudge_billing_due()`: no
//! customer, no subscription to the plan they are on, or a live subscription while they are
//! offboarding or deleted) and moves each one step at a time — create the customer, create
//! the subscription, change its price, cancel it — recording each step in `billing_accounts`
//! before the next. Signing up, a plan change or an offboarding needs no call of its own,
//! and never waits for Stripe: a store is billed once Stripe has answered, and a Stripe that
//! is down delays the sync (backing off per store), never the store.
//!
//! Every creation carries an idempotency key derived from the store (and, for
//! subscriptions, how many it had), so a step retried after its answer was lost creates
//! nothing twice at Stripe. One control-plane replica syncs a store at a time (an advisory
//! lock), so two never race each other's steps.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use nudge_tenants::{Plan, TenantId, TenantState};
use sqlx::Row;

use crate::{
    config::PlanPrices,
    db::DbError,
    routing::TenantRouter,
    stripe::{Stripe, StripeError, Subscription},
};

/// Distinguishes the billing sync's per-store lock from the others on the same key.
const BILLING_LOCK: i64 = 0x6269_6c6c_0000_0000;

/// Steps a sweep takes for one store at most (customer, subscription, price): a store is in
/// sync after one sweep.
const MAX_STEPS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Stripe(#[from] StripeError),
}

impl From<sqlx::Error> for BillingError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

/// What one step did for a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    CustomerCreated,
    Subscribed(Plan),
    PriceChanged(Plan),
    Cancelled,
    /// Nothing to do (or another replica is at it).
    InSync,
}

/// A store's billing as the control plane knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingAccount {
    pub plan: Plan,
    pub stripe_customer_id: Option<String>,
    pub stripe_subscription_id: Option<String>,
    /// The plan the live subscription bills; `None`: none is live.
    pub subscribed_plan: Option<Plan>,
    pub synced_at: Option<DateTime<Utc>>,
    /// The last failure talking to Stripe, while the sync retries.
    pub last_error: Option<String>,
    /// Dunning (`crate::webhooks`): `ok`, `warned`, `ingest_paused`, `suspended`.
    pub dunning: String,
    pub dunning_since: Option<DateTime<Utc>>,
}

impl BillingAccount {
    /// Whether Stripe bills what the store is on.
    pub fn in_sync(&self, state: TenantState) -> bool {
        let staying = !matches!(state, TenantState::Offboarding | TenantState::Deleted);
        if staying {
            self.stripe_customer_id.is_some() && self.subscribed_plan == Some(self.plan)
        } else {
            self.subscribed_plan.is_none()
        }
    }
}

/// Keeps Stripe in step with the stores.
#[derive(Clone)]
pub struct BillingSync {
    pub router: Arc<TenantRouter>,
    pub stripe: Stripe,
    pub prices: PlanPrices,
}

impl BillingSync {
    /// Makes the plans' prices in Stripe when the platform owns its Stripe account (the local
    /// run, the tests: `billing.create_prices`).
    pub async fn create_prices(&self) -> Result<(), StripeError> {
        for plan in Plan::ALL {
            let name = format!("Nudge {}", plan.as_str());
            self.stripe.ensure_plan(self.prices.of(plan), plan.monthly_price_cents(), &name).await?;
        }
        Ok(())
    }

    /// Brings every store that is out of step in step, as far as Stripe lets it now; the
    /// stores it moved.
    pub async fn sweep(&self) -> Result<usize, DbError> {
        let due = self.router.tenants_everywhere("SELECT nudge_billing_due()", crate::routing::SweepArg::None).await?;
        let mut moved = 0;
        for tenant in due {
            for _ in 0..MAX_STEPS {
                match self.step(tenant).await {
                    Ok(Step::InSync) => break,
                    Ok(step) => {
                        moved += 1;
                        tracing::info!(tenant_id = %tenant, ?step, "billing synced a step with Stripe");
                    }
                    Err(e) => {
                        tracing::warn!(tenant_id = %tenant, error = %e, "billing could not sync with Stripe; backing off");
                        if let Err(e) = self.record_failure(tenant, &e).await {
                            tracing::warn!(tenant_id = %tenant, error = %e, "a billing failure could not be recorded");
                        }
                        break;
                    }
                }
            }
        }
        Ok(moved)
    }

    /// Takes the next step for `tenant`, recorded before it returns.
    pub async fn step(&self, tenant: TenantId) -> Result<Step, BillingError> {
        let mut tx = self.router.tenant_tx(tenant).await?;
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(crate::db::lock_key(tenant) ^ BILLING_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !held {
            return Ok(Step::InSync);
        }
        sqlx::query("INSERT INTO billing_accounts (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(tenant.as_uuid())
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(
            "SELECT t.state, t.plan, t.name, b.stripe_customer_id, b.stripe_subscription_id, b.stripe_item_id,
                    b.subscribed_plan, b.subscriptions_created
             FROM tenants t JOIN billing_accounts b ON b.tenant_id = t.tenant_id WHERE t.tenant_id = $1",
        )
        .bind(tenant.as_uuid())
        .fetch_one(&mut *tx)
        .await?;
        let state = TenantState::parse(&row.try_get::<String, _>("state")?).unwrap_or(TenantState::Pending);
        let plan = Plan::parse(&row.try_get::<String, _>("plan")?).unwrap_or_default();
        let customer: Option<String> = row.try_get("stripe_customer_id")?;
        let subscription = match (
            row.try_get::<Option<String>, _>("stripe_subscription_id")?,
            row.try_get::<Option<String>, _>("stripe_item_id")?,
            row.try_get::<Option<String>, _>("subscribed_plan")?.as_deref().and_then(Plan::parse),
        ) {
            (Some(id), Some(item_id), Some(on)) => Some((Subscription { id, item_id }, on)),
            _ => None,
        };
        let staying = !matches!(state, TenantState::Offboarding | TenantState::Deleted);
        let id = tenant.to_string();

        let step = match (staying, customer, subscription) {
            (true, None, _) => {
                let name: String = row.try_get("name")?;
                let customer = self.stripe.create_customer(&id, &name, &format!("nudge-customer-{id}")).await?;
                sqlx::query("UPDATE billing_accounts SET stripe_customer_id = $2 WHERE tenant_id = $1")
                    .bind(tenant.as_uuid())
                    .bind(&customer)
                    .execute(&mut *tx)
                    .await?;
                Step::CustomerCreated
            }
            (true, Some(customer), None) => {
                let created: i32 = row.try_get("subscriptions_created")?;
                let key = format!("nudge-subscription-{id}-{}", created + 1);
                let subscription = self.stripe.create_subscription(&customer, self.prices.of(plan), &id, &key).await?;
                sqlx::query(
                    "UPDATE billing_accounts SET stripe_subscription_id = $2, stripe_item_id = $3,
                            subscribed_plan = $4, subscriptions_created = subscriptions_created + 1
                     WHERE tenant_id = $1",
                )
                .bind(tenant.as_uuid())
                .bind(&subscription.id)
                .bind(&subscription.item_id)
                .bind(plan.as_str())
                .execute(&mut *tx)
                .await?;
                Step::Subscribed(plan)
            }
            (true, Some(_), Some((subscription, on))) if on != plan => {
                // An update sets the same price however often it is repeated.
                let key = format!("nudge-price-{id}-{}", uuid::Uuid::new_v4());
                self.stripe.change_price(&subscription, self.prices.of(plan), &key).await?;
                sqlx::query("UPDATE billing_accounts SET subscribed_plan = $2 WHERE tenant_id = $1")
                    .bind(tenant.as_uuid())
                    .bind(plan.as_str())
                    .execute(&mut *tx)
                    .await?;
                Step::PriceChanged(plan)
            }
            (false, _, Some((subscription, _))) => {
                self.stripe.cancel(&subscription.id).await?;
                sqlx::query(
                    "UPDATE billing_accounts SET subscribed_plan = NULL, stripe_subscription_id = NULL,
                            stripe_item_id = NULL
                     WHERE tenant_id = $1",
                )
                .bind(tenant.as_uuid())
                .execute(&mut *tx)
                .await?;
                Step::Cancelled
            }
            _ => Step::InSync,
        };
        sqlx::query(
            "UPDATE billing_accounts SET failures = 0, last_error = NULL, synced_at = now(), updated_at = now()
             WHERE tenant_id = $1",
        )
        .bind(tenant.as_uuid())
        .execute(&mut *tx)
        .await?;
        tx.commit().await.map_err(DbError::from)?;
        Ok(step)
    }

    async fn record_failure(&self, tenant: TenantId, error: &BillingError) -> Result<(), DbError> {
        let mut tx = self.router.tenant_tx(tenant).await?;
        sqlx::query(
            "INSERT INTO billing_accounts (tenant_id, failures, last_error) VALUES ($1, 1, $2)
             ON CONFLICT (tenant_id) DO UPDATE
                SET failures = billing_accounts.failures + 1, last_error = $2, updated_at = now()",
        )
        .bind(tenant.as_uuid())
        .bind(error.to_string().chars().take(500).collect::<String>())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The store's billing account; `None` for a store with none yet (or no such store).
pub async fn account(
    router: &TenantRouter,
    tenant: TenantId,
) -> Result<Option<(BillingAccount, TenantState)>, DbError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let row = sqlx::query(
        "SELECT t.state, t.plan, b.stripe_customer_id, b.stripe_subscription_id, b.subscribed_plan, b.synced_at,
                b.last_error, COALESCE(b.dunning, 'ok') AS dunning, b.dunning_since
         FROM tenants t LEFT JOIN billing_accounts b ON b.tenant_id = t.tenant_id WHERE t.tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let Some(row) = row else { return Ok(None) };
    let state = TenantState::parse(&row.try_get::<String, _>("state")?).unwrap_or(TenantState::Pending);
    let account = BillingAccount {
        plan: Plan::parse(&row.try_get::<String, _>("plan")?).unwrap_or_default(),
        stripe_customer_id: row.try_get("stripe_customer_id")?,
        stripe_subscription_id: row.try_get("stripe_subscription_id")?,
        subscribed_plan: row.try_get::<Option<String>, _>("subscribed_plan")?.as_deref().and_then(Plan::parse),
        synced_at: row.try_get("synced_at")?,
        last_error: row.try_get("last_error")?,
        dunning: row.try_get("dunning")?,
        dunning_since: row.try_get("dunning_since")?,
    };
    Ok(Some((account, state)))
}
