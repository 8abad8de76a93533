//! A store's plan and negotiated limit overrides, and the model its events are scored with.

use nudge_contracts::Topics;
use nudge_tenants::{LimitOverrides, Limits, ModelRollout, Plan, TenantId, rollout::ALL_BASIS_POINTS};
use sqlx::{Row, postgres::PgRow};

use crate::{announce::announce, db::DbError, routing::TenantRouter};

/// The plan and effective limits from a `tenants` row holding `plan` and `limit_overrides`.
pub fn effective(row: &PgRow) -> Result<(Plan, Limits), sqlx::Error> {
    let plan_text: String = row.try_get("plan")?;
    let plan =
        Plan::parse(&plan_text).ok_or_else(|| sqlx::Error::Decode(format!("unknown plan {plan_text}").into()))?;
    let overrides: serde_json::Value = row.try_get("limit_overrides")?;
    let overrides: LimitOverrides =
        serde_json::from_value(overrides).map_err(|e| sqlx::Error::Decode(format!("limit_overrides: {e}").into()))?;
    Ok((plan, plan.limits().with(&overrides)))
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("no such tenant")]
    NotFound,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for PlanError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

/// Puts `tenant` on `plan` with `overrides` and announces the new limits to its cell.
pub async fn set_plan(
    db: &TenantRouter,
    topics: &Topics,
    tenant: TenantId,
    plan: Plan,
    overrides: &LimitOverrides,
    traceparent: Option<String>,
) -> Result<Limits, PlanError> {
    let mut tx = db.tenant_tx(tenant).await?;
    let overrides_json = serde_json::to_value(overrides).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let updated = sqlx::query("UPDATE tenants SET plan = $2, limit_overrides = $3 WHERE tenant_id = $1")
        .bind(tenant.as_uuid())
        .bind(plan.as_str())
        .bind(overrides_json)
        .execute(&mut *tx)
        .await?;
    if updated.rows_affected() == 0 {
        return Err(PlanError::NotFound);
    }
    announce(&mut tx, topics, tenant, traceparent).await?;
    tx.commit().await?;
    Ok(plan.limits().with(overrides))
}

/// The effective limits of `tenant`.
pub async fn limits_of(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    tenant: TenantId,
) -> Result<Limits, sqlx::Error> {
    let row = sqlx::query("SELECT plan, limit_overrides FROM tenants WHERE tenant_id = $1")
        .bind(tenant.as_uuid())
        .fetch_one(&mut **tx)
        .await?;
    Ok(effective(&row)?.1)
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("no such tenant")]
    NotFound,
    #[error("no cell ships model {0}")]
    UnknownModel(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for ModelError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

/// Scores `tenant`'s events with `model` (a version the cells ship), or with the cells'
/// default when `None`, and announces it to the tenant's cell.
pub async fn set_model(
    db: &TenantRouter,
    topics: &Topics,
    tenant: TenantId,
    model: Option<&str>,
    traceparent: Option<String>,
) -> Result<(), ModelError> {
    if let Some(m) = model
        && !nudge_contracts::models::BUNDLED_MODELS.contains(&m)
    {
        return Err(ModelError::UnknownModel(m.to_owned()));
    }
    let mut tx = db.tenant_tx(tenant).await?;
    let updated = sqlx::query("UPDATE tenants SET model_version = $2 WHERE tenant_id = $1")
        .bind(tenant.as_uuid())
        .bind(model)
        .execute(&mut *tx)
        .await?;
    if updated.rows_affected() == 0 {
        return Err(ModelError::NotFound);
    }
    announce(&mut tx, topics, tenant, traceparent).await?;
    tx.commit().await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("no such tenant")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("the store has no rollout")]
    NoRollout,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for RolloutError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

/// Starts (or replaces) a rollout of a candidate model for `tenant`, or ends it (`None`:
/// the rollback), and announces it to the tenant's cell.
pub async fn set_rollout(
    db: &TenantRouter,
    topics: &Topics,
    tenant: TenantId,
    rollout: Option<&ModelRollout>,
    traceparent: Option<String>,
) -> Result<(), RolloutError> {
    if let Some(r) = rollout {
        if !nudge_contracts::models::BUNDLED_MODELS.contains(&r.candidate.as_str()) {
            return Err(RolloutError::Invalid(format!("no cell ships model `{}`", r.candidate)));
        }
        if r.canary_basis_points > ALL_BASIS_POINTS {
            return Err(RolloutError::Invalid(format!("a canary share is at most {ALL_BASIS_POINTS} basis points")));
        }
    }
    let mut tx = db.tenant_tx(tenant).await?;
    let json = rollout.map(serde_json::to_value).transpose().map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let updated = sqlx::query("UPDATE tenants SET model_rollout = $2 WHERE tenant_id = $1")
        .bind(tenant.as_uuid())
        .bind(json)
        .execute(&mut *tx)
        .await?;
    if updated.rows_affected() == 0 {
        return Err(RolloutError::NotFound);
    }
    announce(&mut tx, topics, tenant, traceparent).await?;
    tx.commit().await?;
    Ok(())
}

/// Makes the rollout's candidate the store's model and ends the rollout, in one step.
/// Returns the promoted version.
pub async fn promote_rollout(
    db: &TenantRouter,
    topics: &Topics,
    tenant: TenantId,
    traceparent: Option<String>,
) -> Result<String, RolloutError> {
    let mut tx = db.tenant_tx(tenant).await?;
    let row = sqlx::query("SELECT model_rollout FROM tenants WHERE tenant_id = $1 FOR UPDATE")
        .bind(tenant.as_uuid())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(RolloutError::NotFound)?;
    let current: Option<serde_json::Value> = row.try_get("model_rollout")?;
    let rollout: ModelRollout = serde_json::from_value(current.ok_or(RolloutError::NoRollout)?)
        .map_err(|e| sqlx::Error::Decode(format!("model_rollout: {e}").into()))?;
    sqlx::query("UPDATE tenants SET model_version = $2, model_rollout = NULL WHERE tenant_id = $1")
        .bind(tenant.as_uuid())
        .bind(&rollout.candidate)
        .execute(&mut *tx)
        .await?;
    announce(&mut tx, topics, tenant, traceparent).await?;
    tx.commit().await?;
    Ok(rollout.candidate)
}

/// A tenant row's rollout (`model_rollout`).
pub fn rollout_of(row: &PgRow) -> Result<Option<ModelRollout>, sqlx::Error> {
    let value: Option<serde_json::Value> = row.try_get("model_rollout")?;
    value.map(serde_json::from_value).transpose().map_err(|e| sqlx::Error::Decode(format!("model_rollout: {e}").into()))
}
