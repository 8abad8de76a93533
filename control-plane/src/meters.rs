//! Usage reported to Stripe's meters, from the ledger (`crate::usage`), which stays the
//! source of truth.
//!
//! Once an hour has ended (`billing.meter_delay_secs` after it, for reports still on their
//! way), each of a store's meters (`events`, `predictions`, `interventions`; peak
//! connections are not billed) is sent as one meter event `nudge_<meter>` for the store's
//! Stripe customer, at the hour, with the quantity not yet sent. Usage that arrives later
//! raises the ledger above what was sent, and the difference goes as another event. An event
//! (`<tenant>:<meter>:<hour>:<quantity sent before it>`, its identifier and idempotency key,
//! and its value) is written on its ledger row before it is sent and resent exactly so
//! until Stripe acknowledges it, so a send retried after a lost answer is the same event to
//! Stripe, counted once, whatever arrived meanwhile. A row Stripe refuses is logged and
//! retried at the next sweep without holding up the rows after it. Stripe takes events up to
//! 35 days old: older hours stay unsent, and the reconciliation ([`reconcile`]) shows them.
//! The subscriptions bill the plans' flat prices: these meters record usage at Stripe for
//! metered prices yet to be added to them.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use nudge_tenants::TenantId;
use sqlx::Row;

use crate::{
    billing::BillingError,
    db::DbError,
    routing::{SweepArg, TenantRouter},
    stripe::{Stripe, StripeError},
};

/// Sends the ledger's usage to Stripe.
#[derive(Clone)]
pub struct MeterReporter {
    pub router: Arc<TenantRouter>,
    pub stripe: Stripe,
    /// How long after an hour ends its usage is sent.
    pub delay: chrono::Duration,
}

impl MeterReporter {
    /// Sends what is due for every store; the events sent. A Stripe that is unavailable ends
    /// the sweep (the next one tries again).
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<usize, BillingError> {
        let before = now - self.delay;
        let due = self.router.tenants_everywhere("SELECT nudge_meter_due($1)", SweepArg::At(before)).await?;
        let mut sent = 0;
        for tenant in due {
            match self.report(tenant, before).await {
                Ok(n) => sent += n,
                Err(e @ BillingError::Stripe(StripeError::Unavailable(_))) => return Err(e),
                Err(e) => {
                    tracing::warn!(tenant_id = %tenant, error = %e, "a store's usage could not be sent to Stripe")
                }
            }
        }
        Ok(sent)
    }

    /// Sends `tenant`'s unsent usage of the hours that ended by `before`. Each event is
    /// written down before it is sent and resent exactly so until Stripe acknowledges it; a
    /// row Stripe refuses is logged and passed by, holding up none after it.
    async fn report(&self, tenant: TenantId, before: DateTime<Utc>) -> Result<usize, BillingError> {
        let mut tx = self.router.tenant_tx(tenant).await?;
        let customer: Option<String> =
            sqlx::query_scalar("SELECT stripe_customer_id FROM billing_accounts WHERE tenant_id = $1")
                .bind(tenant.as_uuid())
                .fetch_optional(&mut *tx)
                .await?
                .flatten();
        // Stripe takes events up to 35 days old: a day's margin.
        let rows = sqlx::query(
            "SELECT hour, meter, quantity, sent_quantity, pending_identifier, pending_value FROM usage_ledger
             WHERE tenant_id = $1 AND meter <> 'peak_connections'
               AND (quantity > sent_quantity OR pending_identifier IS NOT NULL)
               AND hour + interval '1 hour' <= $2 AND hour > now() - interval '34 days'
             ORDER BY hour, meter LIMIT 1000",
        )
        .bind(tenant.as_uuid())
        .bind(before)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await.map_err(DbError::from)?;
        let Some(customer) = customer else { return Ok(0) };
        let mut sent = 0;
        for row in rows {
            let (hour, meter): (DateTime<Utc>, String) = (row.try_get("hour")?, row.try_get("meter")?);
            let pending: Option<(String, i64)> =
                match (row.try_get::<Option<String>, _>("pending_identifier")?, row.try_get("pending_value")?) {
                    (Some(identifier), Some(value)) => Some((identifier, value)),
                    _ => None,
                };
            let (identifier, value) = match pending {
                Some(pending) => pending,
                None => {
                    let (quantity, already): (i64, i64) = (row.try_get("quantity")?, row.try_get("sent_quantity")?);
                    let pending = (format!("{tenant}:{meter}:{}:{already}", hour.timestamp()), quantity - already);
                    let mut tx = self.router.tenant_tx(tenant).await?;
                    let noted = sqlx::query(
                        "UPDATE usage_ledger SET pending_identifier = $4, pending_value = $5
                         WHERE tenant_id = $1 AND hour = $2 AND meter = $3 AND sent_quantity = $6
                           AND pending_identifier IS NULL",
                    )
                    .bind(tenant.as_uuid())
                    .bind(hour)
                    .bind(&meter)
                    .bind(&pending.0)
                    .bind(pending.1)
                    .bind(already)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    tx.commit().await.map_err(DbError::from)?;
                    if noted == 0 {
                        // Another sender has it.
                        continue;
                    }
                    pending
                }
            };
            match self
                .stripe
                .meter_event(&format!("nudge_{meter}"), &customer, value, hour.timestamp(), &identifier)
                .await
            {
                Ok(()) => {}
                Err(e @ StripeError::Unavailable(_)) => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(tenant_id = %tenant, %meter, error = %e, "Stripe refused a meter event; it is retried at the next sweep");
                    continue;
                }
            }
            let mut tx = self.router.tenant_tx(tenant).await?;
            sqlx::query(
                "UPDATE usage_ledger SET sent_quantity = sent_quantity + pending_value, sent_at = now(),
                        pending_identifier = NULL, pending_value = NULL
                 WHERE tenant_id = $1 AND hour = $2 AND meter = $3 AND pending_identifier = $4",
            )
            .bind(tenant.as_uuid())
            .bind(hour)
            .bind(&meter)
            .bind(&identifier)
            .execute(&mut *tx)
            .await?;
            tx.commit().await.map_err(DbError::from)?;
            sent += 1;
        }
        Ok(sent)
    }
}

/// One ledger row against what Stripe was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    pub hour: DateTime<Utc>,
    pub meter: String,
    pub quantity: i64,
    pub sent: i64,
    pub sent_at: Option<DateTime<Utc>>,
}

/// The store's ledger in `[from, to)` beside what was sent to Stripe, hour by hour (peak
/// connections, which are not billed, left out).
pub async fn reconcile(
    router: &TenantRouter,
    tenant: TenantId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Reconciled>, DbError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let rows = sqlx::query(
        "SELECT hour, meter, quantity, sent_quantity, sent_at FROM usage_ledger
         WHERE tenant_id = $1 AND hour >= $2 AND hour < $3 AND meter <> 'peak_connections'
         ORDER BY hour, meter",
    )
    .bind(tenant.as_uuid())
    .bind(from)
    .bind(to)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| {
            Ok(Reconciled {
                hour: r.try_get("hour")?,
                meter: r.try_get("meter")?,
                quantity: r.try_get("quantity")?,
                sent: r.try_get("sent_quantity")?,
                sent_at: r.try_get("sent_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(DbError::Query)
}
