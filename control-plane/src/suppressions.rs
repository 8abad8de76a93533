//! A store's suppression list: shoppers whose events its cell drops at ingest. Every change
//! re-announces the store, so the cell applies it within seconds. GDPR erasure adds to it.

use chrono::{DateTime, Utc};
use nudge_contracts::{ShopperId, Topics};
use nudge_tenants::TenantId;
use sqlx::Row;

use crate::{announce::announce, db::DbError, routing::TenantRouter};

/// Why a shopper is suppressed.
pub const REASONS: [&str; 3] = ["erasure", "opt_out", "merchant"];

/// One suppressed shopper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    pub shopper_id: String,
    pub reason: String,
    pub created_at: DateTime<Utc>,
}

/// Suppresses `shopper` (idempotent); whether it was new.
pub async fn add(
    router: &TenantRouter,
    topics: &Topics,
    tenant: TenantId,
    shopper: &ShopperId,
    reason: &str,
    traceparent: Option<String>,
) -> Result<bool, DbError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let added = sqlx::query(
        "INSERT INTO suppressions (tenant_id, shopper_id, reason) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(tenant.as_uuid())
    .bind(shopper.as_str())
    .bind(reason)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if added {
        announce(&mut tx, topics, tenant, traceparent).await?;
    }
    tx.commit().await?;
    Ok(added)
}

/// Lifts a suppression; whether there was one.
pub async fn remove(
    router: &TenantRouter,
    topics: &Topics,
    tenant: TenantId,
    shopper: &ShopperId,
    traceparent: Option<String>,
) -> Result<bool, DbError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let removed = sqlx::query("DELETE FROM suppressions WHERE tenant_id = $1 AND shopper_id = $2")
        .bind(tenant.as_uuid())
        .bind(shopper.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    if removed {
        announce(&mut tx, topics, tenant, traceparent).await?;
    }
    tx.commit().await?;
    Ok(removed)
}

/// The store's suppressions, oldest first.
pub async fn list(router: &TenantRouter, tenant: TenantId) -> Result<Vec<Suppression>, DbError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let rows = sqlx::query(
        "SELECT shopper_id, reason, created_at FROM suppressions WHERE tenant_id = $1 ORDER BY created_at, shopper_id",
    )
    .bind(tenant.as_uuid())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| {
            Ok(Suppression {
                shopper_id: r.try_get("shopper_id")?,
                reason: r.try_get("reason")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(DbError::Query)
}
