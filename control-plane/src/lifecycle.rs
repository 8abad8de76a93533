//! Tenant lifecycle transitions: checked against the state machine in `nudge-tenants`,
//! recorded in the append-only audit log, and announced to the cells, in one transaction.

use chrono::{DateTime, Utc};
use nudge_contracts::Topics;
use nudge_tenants::{Actor, InvalidTransition, Step, TenantId, TenantState, lifecycle::plan};
use sqlx::{Postgres, Row, Transaction};

use crate::{announce::announce, db::DbError, routing::TenantRouter};

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// No such tenant (or not visible in this context).
    #[error("no such tenant")]
    NotFound,
    #[error(transparent)]
    Invalid(#[from] InvalidTransition),
    /// A store is deleted only by its offboarding's purge, which erases it first.
    #[error(
        "a store is deleted by its offboarding: request offboarding, and it is erased and deleted when its grace period ends"
    )]
    DeletedByPurge,
    /// The offboarding's purge has begun: the store can no longer come back.
    #[error("the store's data is being erased; its offboarding cannot be cancelled")]
    PurgeStarted,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for LifecycleError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

/// The result of a transition request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transitioned {
    pub tenant_id: TenantId,
    pub state: TenantState,
    pub revision: i64,
    /// False when the tenant was already in the requested state (nothing recorded).
    pub changed: bool,
}

/// One audit-log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: i64,
    pub actor: String,
    pub from: Option<TenantState>,
    pub to: TenantState,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// Appends an audit entry inside `tx`.
pub async fn record(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    actor: &Actor,
    from: Option<TenantState>,
    to: TenantState,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO tenant_audit (tenant_id, actor, from_state, to_state, reason) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant.as_uuid())
    .bind(actor.to_string())
    .bind(from.map(TenantState::as_str))
    .bind(to.as_str())
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The job that deletes stores (see `crate::offboarding`): only it moves a store to
/// `deleted`.
pub const PURGE: Actor = Actor::System("offboarding");

/// Moves `tenant` to `to`. Requesting the current state succeeds and changes nothing, so a
/// retried request is harmless. Entering `offboarding` starts the store's grace period
/// (`grace`), after which it is purged; going back to `active` during it cancels the
/// offboarding; `deleted` is reached only by the purge ([`PURGE`]).
#[allow(clippy::too_many_arguments)]
pub async fn transition(
    db: &TenantRouter,
    topics: &Topics,
    tenant: TenantId,
    to: TenantState,
    actor: &Actor,
    reason: &str,
    grace: chrono::Duration,
    traceparent: Option<String>,
) -> Result<Transitioned, LifecycleError> {
    let mut tx = db.tenant_tx(tenant).await?;
    let done = transition_in(&mut tx, topics, tenant, to, actor, reason, grace, traceparent).await?;
    tx.commit().await?;
    if done.changed {
        tracing::info!(tenant_id = %tenant, to = to.as_str(), %actor, "tenant transitioned");
    }
    Ok(done)
}

/// [`transition`] inside `tx` (acting for `tenant`), which the caller commits.
#[allow(clippy::too_many_arguments)]
pub async fn transition_in(
    tx: &mut Transaction<'static, Postgres>,
    topics: &Topics,
    tenant: TenantId,
    to: TenantState,
    actor: &Actor,
    reason: &str,
    grace: chrono::Duration,
    traceparent: Option<String>,
) -> Result<Transitioned, LifecycleError> {
    // FOR UPDATE serialises concurrent transitions of one tenant.
    let row = sqlx::query("SELECT state, revision FROM tenants WHERE tenant_id = $1 FOR UPDATE")
        .bind(tenant.as_uuid())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(LifecycleError::NotFound)?;
    let current_text: String = row.try_get("state")?;
    let current = TenantState::parse(&current_text)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown tenant state {current_text}").into()))?;
    let revision: i64 = row.try_get("revision")?;

    match plan(current, to)? {
        Step::Unchanged(state) => Ok(Transitioned { tenant_id: tenant, state, revision, changed: false }),
        Step::Move { from, to } => {
            if to == TenantState::Deleted && *actor != PURGE {
                return Err(LifecycleError::DeletedByPurge);
            }
            if from == TenantState::Offboarding {
                let purging: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM erasure_requests WHERE tenant_id = $1 AND scope = 'tenant')",
                )
                .bind(tenant.as_uuid())
                .fetch_one(&mut **tx)
                .await?;
                if purging && to != TenantState::Deleted {
                    return Err(LifecycleError::PurgeStarted);
                }
            }
            sqlx::query(
                "UPDATE tenants SET state = $2,
                        offboarding_requested_at = CASE WHEN $2 = 'offboarding' THEN now()
                                                        WHEN $2 = 'deleted' THEN offboarding_requested_at END,
                        offboarding_requested_by = CASE WHEN $2 = 'offboarding' THEN $3
                                                        WHEN $2 = 'deleted' THEN offboarding_requested_by END,
                        purge_after = CASE WHEN $2 = 'offboarding' THEN now() + make_interval(secs => $4)
                                           WHEN $2 = 'deleted' THEN purge_after END,
                        offboarding_from = CASE WHEN $2 = 'offboarding' THEN $5
                                                WHEN $2 = 'deleted' THEN offboarding_from END
                 WHERE tenant_id = $1",
            )
            .bind(tenant.as_uuid())
            .bind(to.as_str())
            .bind(actor.to_string())
            .bind(grace.num_milliseconds() as f64 / 1000.0)
            .bind(from.as_str())
            .execute(&mut **tx)
            .await?;
            record(tx, tenant, actor, Some(from), to, reason).await?;
            let revision = announce(tx, topics, tenant, traceparent).await?;
            Ok(Transitioned { tenant_id: tenant, state: to, revision, changed: true })
        }
    }
}

/// The audit log of `tenant`, oldest first, after `after_seq`, at most `limit` entries.
pub async fn audit_log(
    db: &TenantRouter,
    tenant: TenantId,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<AuditEntry>, LifecycleError> {
    let mut tx = db.tenant_tx(tenant).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE tenant_id = $1)")
        .bind(tenant.as_uuid())
        .fetch_one(&mut *tx)
        .await?;
    if !exists {
        return Err(LifecycleError::NotFound);
    }
    let rows = sqlx::query(
        "SELECT seq, actor, from_state, to_state, reason, at FROM tenant_audit
         WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(tenant.as_uuid())
    .bind(after_seq)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| {
            let state = |col: &str| -> Result<Option<TenantState>, sqlx::Error> {
                let text: Option<String> = r.try_get(col)?;
                text.map(|t| {
                    TenantState::parse(&t).ok_or_else(|| sqlx::Error::Decode(format!("unknown state {t}").into()))
                })
                .transpose()
            };
            Ok(AuditEntry {
                seq: r.try_get("seq")?,
                actor: r.try_get("actor")?,
                from: state("from_state")?,
                to: state("to_state")?.ok_or_else(|| sqlx::Error::Decode("to_state is null".into()))?,
                reason: r.try_get("reason")?,
                at: r.try_get("at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}
