//! A store's suppression list: shoppers whose events its cell drops at ingest, by subject
//! digest. Every change re-announces the store (digests only), so the cell applies it within
//! seconds. An erasure request adds to it ([`crate::erasure`]) and leaves only the digest;
//! opt-outs and the merchant's own suppressions keep the shopper id for the merchant's view.

use chrono::{DateTime, Utc};
use nudge_contracts::{ShopperId, Topics, subject_digest};
use nudge_tenants::TenantId;
use sqlx::Row;

use crate::{announce::announce, db::DbError, routing::TenantRouter};

/// Why a shopper is suppressed.
pub const REASONS: [&str; 3] = ["erasure", "opt_out", "merchant"];

/// One suppressed shopper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    pub subject_digest: String,
    /// `None` for an erased shopper.
    pub shopper_id: Option<String>,
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
        "INSERT INTO suppressions (tenant_id, subject_digest, shopper_id, reason) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant.as_uuid())
    .bind(subject_digest(tenant.as_uuid(), shopper))
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

/// Lifts a suppression; whether there was one. An erased shopper's stays.
pub async fn remove(
    router: &TenantRouter,
    topics: &Topics,
    tenant: TenantId,
    shopper: &ShopperId,
    traceparent: Option<String>,
) -> Result<bool, DbError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let removed =
        sqlx::query("DELETE FROM suppressions WHERE tenant_id = $1 AND subject_digest = $2 AND reason <> 'erasure'")
            .bind(tenant.as_uuid())
            .bind(subject_digest(tenant.as_uuid(), shopper))
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
        "SELECT subject_digest, shopper_id, reason, created_at FROM suppressions WHERE tenant_id = $1
         ORDER BY created_at, subject_digest",
    )
    .bind(tenant.as_uuid())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.iter().map(suppression_of).collect::<Result<_, sqlx::Error>>().map_err(DbError::Query)
}

/// The suppression of the shopper with subject digest `digest`, if any.
pub async fn of_subject(router: &TenantRouter, tenant: TenantId, digest: &str) -> Result<Option<Suppression>, DbError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let row = sqlx::query(
        "SELECT subject_digest, shopper_id, reason, created_at FROM suppressions
         WHERE tenant_id = $1 AND subject_digest = $2",
    )
    .bind(tenant.as_uuid())
    .bind(digest)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    row.as_ref().map(suppression_of).transpose().map_err(DbError::Query)
}

fn suppression_of(r: &sqlx::postgres::PgRow) -> Result<Suppression, sqlx::Error> {
    Ok(Suppression {
        subject_digest: r.try_get("subject_digest")?,
        shopper_id: r.try_get("shopper_id")?,
        reason: r.try_get("reason")?,
        created_at: r.try_get("created_at")?,
    })
}
