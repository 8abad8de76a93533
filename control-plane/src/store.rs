//! A store's profile, as its own members read it.

use chrono::{DateTime, Utc};
use nudge_tenants::{TenantId, TenantState};
use sqlx::Row;

use crate::{db::DbError, routing::TenantRouter};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub tenant: TenantId,
    pub name: String,
    pub state: TenantState,
    pub cell_id: String,
    /// Where the store's snippet and events go: its cell's base URL.
    pub cell_url: String,
    pub allowed_origins: Vec<String>,
    pub created_at: DateTime<Utc>,
    /// Days its data is kept (the effective limit).
    pub retention_days: u32,
}

/// The model chosen for `tenant` (`None` in the first place: the platform's default) and the
/// rollout in force; `None` when the store does not exist (or is not visible).
#[allow(clippy::type_complexity)]
pub async fn model(
    db: &TenantRouter,
    tenant: TenantId,
) -> Result<Option<(Option<String>, Option<nudge_tenants::ModelRollout>)>, DbError> {
    let mut tx = db.tenant_tx(tenant).await?;
    let row = sqlx::query("SELECT model_version, model_rollout FROM tenants WHERE tenant_id = $1")
        .bind(tenant.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some((row.try_get("model_version")?, crate::plans::rollout_of(&row)?)))
}

/// The profile of `tenant`; `None` when it does not exist (or is not visible).
pub async fn profile(db: &TenantRouter, tenant: TenantId) -> Result<Option<Profile>, DbError> {
    let mut tx = db.tenant_tx(tenant).await?;
    let row = sqlx::query(
        "SELECT t.name, t.state, coalesce(t.cell_id, '') AS cell_id, coalesce(c.public_url, '') AS cell_url, t.created_at,
                t.plan, t.limit_overrides
         FROM tenants t LEFT JOIN cells c USING (cell_id) WHERE t.tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let Some(row) = row else { return Ok(None) };
    let state: String = row.try_get("state")?;
    Ok(Some(Profile {
        tenant,
        name: row.try_get("name")?,
        state: TenantState::parse(&state).ok_or_else(|| DbError::Query(sqlx::Error::Decode("unknown state".into())))?,
        cell_id: row.try_get("cell_id")?,
        cell_url: row.try_get("cell_url")?,
        allowed_origins: crate::origins::list(db, tenant).await?,
        created_at: row.try_get("created_at")?,
        retention_days: crate::plans::effective(&row)?.1.retention_days,
    }))
}
