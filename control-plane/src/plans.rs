//! A store's plan and negotiated limit overrides, and the model its events are scored with.

use nudge_contracts::Topics;
use nudge_tenants::{LimitOverrides, Limits, ModelRollout, Plan, TenantId, rollout::ALL_BASIS_POINTS};
use sqlx::{Row, postgres::PgRow};

use crate::{
    announce::announce,
    db::DbError,
    registry::{self, Stage, StageError},
    routing::TenantRouter,
};

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
    #[error("the registry has no model {0}")]
    UnknownModel(String),
    #[error("model {version} is {stage}; only a production model can be assigned", stage = stage.as_str())]
    NotProduction { version: String, stage: Stage },
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for ModelError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

/// Scores `tenant`'s events with `model` (a registered version in stage `production`), or
/// with the registry's default when `None`, and announces it to the tenant's cell.
pub async fn set_model(
    db: &TenantRouter,
    topics: &Topics,
    tenant: TenantId,
    model: Option<&str>,
    traceparent: Option<String>,
) -> Result<(), ModelError> {
    if let Some(m) = model {
        match registry::stage_of(db.registry(), m).await? {
            None => return Err(ModelError::UnknownModel(m.to_owned())),
            Some(Stage::Production) => {}
            Some(stage) => return Err(ModelError::NotProduction { version: m.to_owned(), stage }),
        }
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
/// the rollback), and announces it to the tenant's cell. The candidate must be registered
/// and not archived; a canary rollout moves a `candidate` version to `canary`.
pub async fn set_rollout(
    db: &TenantRouter,
    topics: &Topics,
    tenant: TenantId,
    rollout: Option<&ModelRollout>,
    actor: &str,
    traceparent: Option<String>,
) -> Result<(), RolloutError> {
    if let Some(r) = rollout {
        if r.canary_basis_points > ALL_BASIS_POINTS {
            return Err(RolloutError::Invalid(format!("a canary share is at most {ALL_BASIS_POINTS} basis points")));
        }
        match registry::stage_of(db.registry(), &r.candidate).await? {
            None => return Err(RolloutError::Invalid(format!("the registry has no model `{}`", r.candidate))),
            Some(Stage::Archived) => {
                return Err(RolloutError::Invalid(format!("model `{}` is archived", r.candidate)));
            }
            Some(_) => {}
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
    // The store rolls the candidate out now; the registry records it as a canary. Done
    // after the store's change, so a refused rollout never moves a stage.
    if let Some(r) = rollout
        && r.mode == nudge_tenants::RolloutMode::Canary
        && registry::stage_of(db.registry(), &r.candidate).await? == Some(Stage::Candidate)
    {
        registry::set_stage(db, topics, &r.candidate, Stage::Canary, actor, &format!("canary rollout for {tenant}"))
            .await
            .map_err(stage_error)?;
    }
    Ok(())
}

/// Makes the rollout's candidate the store's model and ends the rollout, in one step; the
/// candidate's registry stage becomes `production`. Returns the promoted version.
pub async fn promote_rollout(
    db: &TenantRouter,
    topics: &Topics,
    tenant: TenantId,
    actor: &str,
    traceparent: Option<String>,
) -> Result<String, RolloutError> {
    let candidate = {
        let mut tx = db.tenant_tx(tenant).await?;
        let row = sqlx::query("SELECT model_rollout FROM tenants WHERE tenant_id = $1")
            .bind(tenant.as_uuid())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(RolloutError::NotFound)?;
        tx.commit().await?;
        rollout_of(&row)?.ok_or(RolloutError::NoRollout)?.candidate
    };
    // The stage first: a store never runs a version the registry does not call production.
    registry::set_stage(db, topics, &candidate, Stage::Production, actor, &format!("promoted for {tenant}"))
        .await
        .map_err(stage_error)?;
    let mut tx = db.tenant_tx(tenant).await?;
    let row = sqlx::query("SELECT model_rollout FROM tenants WHERE tenant_id = $1 FOR UPDATE")
        .bind(tenant.as_uuid())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(RolloutError::NotFound)?;
    let current: Option<serde_json::Value> = row.try_get("model_rollout")?;
    let rollout: ModelRollout = serde_json::from_value(current.ok_or(RolloutError::NoRollout)?)
        .map_err(|e| sqlx::Error::Decode(format!("model_rollout: {e}").into()))?;
    if rollout.candidate != candidate {
        return Err(RolloutError::Invalid("the rollout changed while it was being promoted; try again".into()));
    }
    sqlx::query("UPDATE tenants SET model_version = $2, model_rollout = NULL WHERE tenant_id = $1")
        .bind(tenant.as_uuid())
        .bind(&rollout.candidate)
        .execute(&mut *tx)
        .await?;
    announce(&mut tx, topics, tenant, traceparent).await?;
    tx.commit().await?;
    Ok(rollout.candidate)
}

fn stage_error(e: StageError) -> RolloutError {
    match e {
        StageError::Db(db) => RolloutError::Db(db),
        other => RolloutError::Invalid(other.to_string()),
    }
}

/// A tenant row's rollout (`model_rollout`).
pub fn rollout_of(row: &PgRow) -> Result<Option<ModelRollout>, sqlx::Error> {
    let value: Option<serde_json::Value> = row.try_get("model_rollout")?;
    value.map(serde_json::from_value).transpose().map_err(|e| sqlx::Error::Decode(format!("model_rollout: {e}").into()))
}
