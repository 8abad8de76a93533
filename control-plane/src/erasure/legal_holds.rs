//! Legal holds: a subject (or a whole store) that must not be erased while the hold is in
//! force; erasure requests naming them are refused, naming the hold.

use chrono::{DateTime, Utc};
use nudge_contracts::{ShopperId, Topics, subject_digest};
use nudge_tenants::TenantId;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::{ErasureError, audit};
use crate::{announce::announce, db::DbError, routing::TenantRouter};

/// A legal hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegalHold {
    pub hold_id: Uuid,
    pub name: String,
    /// The subject it covers; `None`: the whole store.
    pub subject_digest: Option<String>,
    pub placed_by: String,
    pub placed_at: DateTime<Utc>,
    pub released_at: Option<DateTime<Utc>>,
}

/// Places a legal hold on `shopper` (or, with `None`, the whole store).
pub async fn place_hold(
    router: &TenantRouter,
    topics: &Topics,
    tenant: TenantId,
    name: &str,
    shopper: Option<&ShopperId>,
    actor: &str,
) -> Result<LegalHold, ErasureError> {
    let digest = shopper.map(|s| subject_digest(tenant.as_uuid(), s));
    let hold_id = Uuid::now_v7();
    let mut tx = router.tenant_tx(tenant).await?;
    let placed_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO legal_holds (tenant_id, hold_id, name, subject_digest, placed_by) VALUES ($1, $2, $3, $4, $5)
         RETURNING placed_at",
    )
    .bind(tenant.as_uuid())
    .bind(hold_id)
    .bind(name)
    .bind(&digest)
    .bind(actor)
    .fetch_one(&mut *tx)
    .await?;
    audit(
        &mut tx,
        tenant,
        None,
        actor,
        "hold_placed",
        serde_json::json!({ "hold_id": hold_id.to_string(), "name": name, "subject_digest": digest }),
    )
    .await?;
    announce_holds(&mut tx, topics, tenant).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(LegalHold {
        hold_id,
        name: name.to_owned(),
        subject_digest: digest,
        placed_by: actor.to_owned(),
        placed_at,
        released_at: None,
    })
}

/// Re-announces the store when an erasure by e-mail is in progress, whose order lists the
/// held shoppers: the cell leaves a shopper held since the order went out alone too.
async fn announce_holds(
    tx: &mut Transaction<'static, Postgres>,
    topics: &Topics,
    tenant: TenantId,
) -> Result<(), sqlx::Error> {
    let pending: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM erasure_requests
                        WHERE tenant_id = $1 AND scope = 'email' AND status = 'in_progress')",
    )
    .bind(tenant.as_uuid())
    .fetch_one(&mut **tx)
    .await?;
    if pending {
        announce(tx, topics, tenant, None).await?;
    }
    Ok(())
}

/// The store's legal holds, active first.
pub async fn holds(router: &TenantRouter, tenant: TenantId) -> Result<Vec<LegalHold>, ErasureError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let rows = sqlx::query(
        "SELECT hold_id, name, subject_digest, placed_by, placed_at, released_at FROM legal_holds
         WHERE tenant_id = $1 ORDER BY released_at IS NOT NULL, placed_at DESC",
    )
    .bind(tenant.as_uuid())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await.map_err(DbError::from)?;
    rows.iter()
        .map(|r| {
            Ok(LegalHold {
                hold_id: r.try_get("hold_id")?,
                name: r.try_get("name")?,
                subject_digest: r.try_get("subject_digest")?,
                placed_by: r.try_get("placed_by")?,
                placed_at: r.try_get("placed_at")?,
                released_at: r.try_get("released_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(ErasureError::from)
}

/// Releases an active hold; `NotFound` when there is none by that id.
pub async fn release_hold(
    router: &TenantRouter,
    topics: &Topics,
    tenant: TenantId,
    hold_id: Uuid,
    actor: &str,
) -> Result<(), ErasureError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let released = sqlx::query(
        "UPDATE legal_holds SET released_at = now() WHERE tenant_id = $1 AND hold_id = $2 AND released_at IS NULL",
    )
    .bind(tenant.as_uuid())
    .bind(hold_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if released == 0 {
        return Err(ErasureError::NotFound);
    }
    audit(&mut tx, tenant, None, actor, "hold_released", serde_json::json!({ "hold_id": hold_id.to_string() })).await?;
    announce_holds(&mut tx, topics, tenant).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(())
}
