//! Billing through Stripe: every store is a Stripe customer, subscribed to its plan's price
//! while it stays and cancelled once it leaves.
//!
//! The sync is level-triggered, like a controller: a sweep (`billing.sync_interval_ms`)
//! lists the stores whose Stripe side does not match them (`nudge_billing_due()`: no
//! customer, no subscription to the plan they are on, or a live subscription while they are
//! offboarding or deleted) and moves each one step at a time — create the customer, create
//! the subscription, change its price, cancel it — recording each step in `billing_accounts`
//! before the next. Signing up, a plan change or an offboarding needs no call of its own,
//! and never waits for Stripe: Stripe is called outside any transaction, a store is billed
//! once Stripe has answered, and a Stripe that is down delays the sync (backing off per
//! store), never the store.
//!
//! Every creation carries an idempotency key derived from the store (and, for
//! subscriptions, how many it had), so a step retried within Stripe's idempotency window
//! after its answer was lost creates nothing twice; and before subscribing, the store's live
//! subscriptions at Stripe are looked up and adopted, and leaving cancels every one of them,
//! so a lost answer never leaves a store billed twice, or billed after it left. One
//! control-plane replica syncs a store at a time (a session advisory lock), so two never race
//! each other's steps.

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
    /// Whether Stripe has a payment method for the store (from a completed Checkout).
    pub payment_method_on_file: bool,
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
    /// steps taken. A Stripe that is unavailable ends the sweep (the next one tries again),
    /// so an outage costs one timeout, not one per store.
    pub async fn sweep(&self) -> Result<usize, DbError> {
        let due = self.router.tenants_everywhere("SELECT nudge_billing_due()", crate::routing::SweepArg::None).await?;
        let mut moved = 0;
        for tenant in due {
            for _ in 0..MAX_STEPS {
                match self.locked_step(tenant).await {
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
                        if matches!(e, BillingError::Stripe(StripeError::Unavailable(_))) {
                            return Ok(moved);
                        }
                        break;
                    }
                }
            }
        }
        Ok(moved)
    }

    /// [`BillingSync::step`] under the store's billing lock (a session lock in the main
    /// database: one replica syncs a store at a time); `InSync` when another holds it.
    async fn locked_step(&self, tenant: TenantId) -> Result<Step, BillingError> {
        let mut lock = self.router.registry().pool().acquire().await.map_err(DbError::from_acquire)?;
        let key = crate::db::lock_key(tenant) ^ BILLING_LOCK;
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(&mut *lock).await?;
        if !held {
            return Ok(Step::InSync);
        }
        let step = self.step(tenant).await;
        if let Err(e) = sqlx::query("SELECT pg_advisory_unlock($1)").bind(key).execute(&mut *lock).await {
            // The lock ends with the session: drop the connection rather than return it.
            tracing::warn!(error = %e, "a billing lock could not be released; closing its connection");
            let _ = lock.detach();
        }
        step
    }

    /// Takes the next step for `tenant`: reads the store, calls Stripe outside any
    /// transaction (a slow Stripe holds no lock a request of the store waits on), records
    /// what Stripe did. The caller holds the store's billing lock.
    pub async fn step(&self, tenant: TenantId) -> Result<Step, BillingError> {
        let mut tx = self.router.tenant_tx(tenant).await?;
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
        tx.commit().await.map_err(DbError::from)?;
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
        if state == TenantState::Pending {
            // Not yet placed on a cell (a signup that has not finished): billed once it is.
            return Ok(Step::InSync);
        }
        let staying = !matches!(state, TenantState::Offboarding | TenantState::Deleted);
        let id = tenant.to_string();

        let (step, update, binds): (Step, &str, Vec<Option<String>>) = match (staying, customer, subscription) {
            (true, None, _) => {
                let name: String = row.try_get("name")?;
                let customer = self.stripe.create_customer(&id, &name, &format!("nudge-customer-{id}")).await?;
                (
                    Step::CustomerCreated,
                    "UPDATE billing_accounts SET stripe_customer_id = $2 WHERE tenant_id = $1 AND stripe_customer_id IS NULL",
                    vec![Some(customer)],
                )
            }
            (true, Some(customer), None) => {
                // A subscription whose creation's answer was lost is live at Stripe: adopted,
                // not made twice.
                let live = self.stripe.live_subscriptions(&customer, &id).await?;
                let subscription = match live.into_iter().next() {
                    Some(found) => {
                        if found.price.as_deref() != Some(self.prices.of(plan)) {
                            let key = format!("nudge-price-{id}-{}", uuid::Uuid::new_v4());
                            self.stripe.change_price(&found.subscription, self.prices.of(plan), &key).await?;
                        }
                        found.subscription
                    }
                    None => {
                        let created: i32 = row.try_get("subscriptions_created")?;
                        let key = format!("nudge-subscription-{id}-{}", created + 1);
                        self.stripe.create_subscription(&customer, self.prices.of(plan), &id, &key).await?
                    }
                };
                (
                    Step::Subscribed(plan),
                    "UPDATE billing_accounts SET stripe_subscription_id = $2, stripe_item_id = $3,
                            subscribed_plan = $4, subscriptions_created = subscriptions_created + 1
                     WHERE tenant_id = $1 AND subscribed_plan IS NULL",
                    vec![Some(subscription.id), Some(subscription.item_id), Some(plan.as_str().to_owned())],
                )
            }
            (true, Some(_), Some((subscription, on))) if on != plan => {
                // An update sets the same price however often it is repeated.
                let key = format!("nudge-price-{id}-{}", uuid::Uuid::new_v4());
                self.stripe.change_price(&subscription, self.prices.of(plan), &key).await?;
                (
                    Step::PriceChanged(plan),
                    "UPDATE billing_accounts SET subscribed_plan = $2 WHERE tenant_id = $1 AND stripe_subscription_id = $3",
                    vec![Some(plan.as_str().to_owned()), Some(subscription.id)],
                )
            }
            (false, Some(customer), Some(_)) => {
                // Every live subscription of the store's, the recorded one and any a lost
                // answer left unrecorded.
                for live in self.stripe.live_subscriptions(&customer, &id).await? {
                    self.stripe.cancel(&live.subscription.id).await?;
                }
                (
                    Step::Cancelled,
                    "UPDATE billing_accounts SET subscribed_plan = NULL, stripe_subscription_id = NULL,
                            stripe_item_id = NULL
                     WHERE tenant_id = $1",
                    Vec::new(),
                )
            }
            _ => (Step::InSync, "UPDATE billing_accounts SET tenant_id = tenant_id WHERE tenant_id = $1", Vec::new()),
        };
        let mut tx = self.router.tenant_tx(tenant).await?;
        let mut query = sqlx::query(update).bind(tenant.as_uuid());
        for bind in binds {
            query = query.bind(bind);
        }
        query.execute(&mut *tx).await?;
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

    /// Records a failed step. What merchants see (`last_error`) is a code; the detail, which
    /// may name the platform's Stripe set-up, is in the log.
    async fn record_failure(&self, tenant: TenantId, error: &BillingError) -> Result<(), DbError> {
        let code = match error {
            BillingError::Db(_) => "database_unavailable".to_owned(),
            BillingError::Stripe(StripeError::Unavailable(_)) => "stripe_unavailable".to_owned(),
            BillingError::Stripe(StripeError::Rejected { status, code, .. }) => {
                format!("stripe_refused:{}", code.clone().unwrap_or_else(|| status.to_string()))
            }
            BillingError::Stripe(StripeError::Unexpected(_)) => "stripe_unexpected_answer".to_owned(),
        };
        let mut tx = self.router.tenant_tx(tenant).await?;
        sqlx::query(
            "INSERT INTO billing_accounts (tenant_id, failures, last_error) VALUES ($1, 1, $2)
             ON CONFLICT (tenant_id) DO UPDATE
                SET failures = billing_accounts.failures + 1, last_error = $2, updated_at = now()",
        )
        .bind(tenant.as_uuid())
        .bind(code.chars().take(200).collect::<String>())
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
                b.last_error, COALESCE(b.dunning, 'ok') AS dunning, b.dunning_since,
                b.stripe_payment_method_id IS NOT NULL AS payment_method_on_file
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
        payment_method_on_file: row.try_get::<Option<bool>, _>("payment_method_on_file")?.unwrap_or(false),
    };
    Ok(Some((account, state)))
}
