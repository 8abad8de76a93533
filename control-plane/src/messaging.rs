//! A store's messaging policy ([`nudge_campaigns::policy`]): read with the defaults filled
//! in, replaced whole after being checked, and announced to the cells with the store's
//! record, so every campaign send follows the latest.

use chrono::{DateTime, Utc};
use nudge_campaigns::{model::FieldError, policy::MessagingPolicy};
use nudge_contracts::Topics;
use nudge_tenants::TenantId;
use sqlx::{Postgres, Row, Transaction};

use crate::{announce::announce, db::DbError, routing::TenantRouter};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("the policy is not valid")]
    Invalid(Vec<FieldError>),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for PolicyError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

/// A store's policy and when it was last set (`None`: never, the defaults).
#[derive(Debug, Clone)]
pub struct StoredPolicy {
    pub policy: MessagingPolicy,
    pub updated_at: Option<DateTime<Utc>>,
}

/// The policy in `tx`'s store, as stored JSON (`None`: the defaults), for the store's record.
pub async fn policy_json(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
) -> Result<Option<String>, sqlx::Error> {
    let policy: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT policy FROM messaging_policies WHERE tenant_id = $1")
            .bind(tenant.as_uuid())
            .fetch_optional(&mut **tx)
            .await?;
    Ok(policy.map(|p| p.to_string()))
}

/// The store's policy.
pub async fn get(router: &TenantRouter, tenant: TenantId) -> Result<StoredPolicy, PolicyError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let row = sqlx::query("SELECT policy, updated_at FROM messaging_policies WHERE tenant_id = $1")
        .bind(tenant.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await.map_err(DbError::from)?;
    let Some(row) = row else { return Ok(StoredPolicy { policy: MessagingPolicy::default(), updated_at: None }) };
    let json: serde_json::Value = row.try_get("policy")?;
    // Stored only after being checked by this release or a later one.
    let policy = serde_json::from_value(json).map_err(|e| DbError::Query(sqlx::Error::Decode(Box::new(e))))?;
    Ok(StoredPolicy { policy, updated_at: Some(row.try_get("updated_at")?) })
}

/// Replaces the store's policy with `policy` and announces the store, in one transaction.
pub async fn set(
    router: &TenantRouter,
    topics: &Topics,
    tenant: TenantId,
    policy: &MessagingPolicy,
    actor: &str,
) -> Result<StoredPolicy, PolicyError> {
    let problems = policy.validate();
    if !problems.is_empty() {
        return Err(PolicyError::Invalid(problems));
    }
    let json = serde_json::to_value(policy).map_err(|e| DbError::Query(sqlx::Error::Encode(Box::new(e))))?;
    let mut tx = router.tenant_tx(tenant).await?;
    let updated_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO messaging_policies (tenant_id, policy, updated_by) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id) DO UPDATE SET policy = EXCLUDED.policy, updated_by = EXCLUDED.updated_by,
             updated_at = now()
         RETURNING updated_at",
    )
    .bind(tenant.as_uuid())
    .bind(json)
    .bind(actor)
    .fetch_one(&mut *tx)
    .await?;
    announce(&mut tx, topics, tenant, None).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(StoredPolicy { policy: policy.clone(), updated_at: Some(updated_at) })
}
