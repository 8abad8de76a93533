//! Placement: which cell serves a tenant, as the control plane records it. The cells
//! themselves come from the [`crate::provision::Provisioner`]; this module keeps the `cells`
//! rows and each tenant's `cell_id` (its route, announced to the cells).

use nudge_contracts::Topics;
use nudge_tenants::{CellId, Plan, TenantId};
use sqlx::{Postgres, Transaction};

use crate::{
    announce::announce,
    config::PlacementConfig,
    db::{Database, DbError},
    routing::TenantRouter,
};

/// A cell as the control plane knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub id: CellId,
    /// Base URL browsers reach the cell at.
    pub public_url: String,
}

/// Records the configured shared cell (idempotent; updates its URL when it changed).
pub async fn register_shared_cell(db: &Database, config: &PlacementConfig) -> Result<Cell, DbError> {
    let cell = Cell { id: config.shared_cell_id.clone(), public_url: config.shared_cell_url.clone() };
    let mut tx = db.platform_tx().await?;
    upsert_cell(&mut tx, &cell, "shared").await?;
    tx.commit().await?;
    Ok(cell)
}

/// Inserts the `cells` row of `cell`, or updates its URL.
async fn upsert_cell(tx: &mut Transaction<'static, Postgres>, cell: &Cell, tier: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO cells (cell_id, tier, public_url) VALUES ($1, $2, $3)
         ON CONFLICT (cell_id) DO UPDATE SET public_url = EXCLUDED.public_url",
    )
    .bind(cell.id.as_str())
    .bind(tier)
    .bind(&cell.public_url)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records `cell` (idempotent; a changed URL is updated). Reads first, so the signups that
/// find their cell already recorded take no lock on its row.
pub async fn record_cell(db: &Database, cell: &Cell, tier: &str) -> Result<(), DbError> {
    let mut tx = db.platform_tx().await?;
    let known: Option<String> = sqlx::query_scalar("SELECT public_url FROM cells WHERE cell_id = $1")
        .bind(cell.id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    if known.as_deref() != Some(cell.public_url.as_str()) {
        upsert_cell(&mut tx, cell, tier).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The plan `tenant` is on, or `None` when there is no such tenant.
pub async fn plan_of(router: &TenantRouter, tenant: TenantId) -> Result<Option<Plan>, DbError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let plan: Option<String> = sqlx::query_scalar("SELECT plan FROM tenants WHERE tenant_id = $1")
        .bind(tenant.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(plan.as_deref().and_then(Plan::parse))
}

/// The public URL of `tenant`'s cell, when it has one.
pub async fn cell_url_of(router: &TenantRouter, tenant: TenantId) -> Result<Option<String>, DbError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let url: Option<String> = sqlx::query_scalar(
        "SELECT c.public_url FROM tenants t JOIN cells c ON c.cell_id = t.cell_id WHERE t.tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(url)
}

/// Routes `tenant` to `cell` (recorded in the tenant's database, which may be a dedicated
/// one) and announces it, in one transaction: the old cell forgets the tenant and the new one
/// takes it from the same record. False when there is no such tenant.
pub async fn route_to(
    router: &TenantRouter,
    topics: &Topics,
    tenant: TenantId,
    cell: &Cell,
    isolation: &str,
    traceparent: Option<String>,
) -> Result<bool, DbError> {
    let mut tx = router.tenant_tx(tenant).await?;
    // Reads only when nothing changed: a periodic sync calls this for every tenant.
    let current: Option<(Option<String>, String, Option<String>)> = sqlx::query_as(
        "SELECT t.cell_id, t.isolation, c.public_url FROM tenants t LEFT JOIN cells c USING (cell_id)
         WHERE t.tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_optional(&mut *tx)
    .await?;
    let Some((cell_id, current_isolation, url)) = current else {
        tx.commit().await?;
        return Ok(false);
    };
    if cell_id.as_deref() == Some(cell.id.as_str())
        && current_isolation == isolation
        && url.as_deref() == Some(cell.public_url.as_str())
    {
        tx.commit().await?;
        return Ok(true);
    }
    upsert_cell(&mut tx, cell, isolation).await?;
    sqlx::query("UPDATE tenants SET cell_id = $2, isolation = $3 WHERE tenant_id = $1")
        .bind(tenant.as_uuid())
        .bind(cell.id.as_str())
        .bind(isolation)
        .execute(&mut *tx)
        .await?;
    announce(&mut tx, topics, tenant, traceparent).await?;
    tx.commit().await?;
    tracing::info!(tenant_id = %tenant, cell_id = %cell.id, isolation, "tenant routed to its cell");
    Ok(true)
}
