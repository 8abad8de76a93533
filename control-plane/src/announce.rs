//! Announcing a tenant's configuration to the cells.
//!
//! After any change to what a cell needs (state, keys, origins, placement), the change's
//! transaction calls [`announce`], which snapshots the tenant as it now stands and adds it to
//! the outbox. Always a full snapshot, so the latest record per tenant is the whole truth.
//! A deleted tenant is announced twice: a `deleted` record carrying its revision (cells drop
//! the tenant and remember the revision, so no replayed older record revives it), then a
//! tombstone, so compaction removes the key from the topic.

use chrono::{DateTime, Utc};
use nudge_contracts::{
    Topics,
    headers::TENANT_CONFIG_V1,
    proto::control::v1::{
        Limits as WireLimits, Rollout as WireRollout, ServerKey, TenantConfig, TenantState as WireState,
        rollout::Mode as WireRolloutMode,
    },
    topics::Topic,
};
use nudge_tenants::{KeyId, RolloutMode, TenantId, TenantState};
use prost::Message;
use sqlx::{Postgres, Row, Transaction};

use crate::outbox::{self, OutboxRecord};

/// Maps a lifecycle state to its wire form.
pub fn wire_state(state: TenantState) -> WireState {
    match state {
        TenantState::Pending => WireState::Pending,
        TenantState::Provisioning => WireState::Provisioning,
        TenantState::Active => WireState::Active,
        TenantState::Suspended => WireState::Suspended,
        TenantState::Offboarding => WireState::Offboarding,
        TenantState::Deleted => WireState::Deleted,
    }
}

/// Bumps the tenant's revision and enqueues its current configuration, inside `tx` (which
/// must act for `tenant`). The new revision.
pub async fn announce(
    tx: &mut Transaction<'static, Postgres>,
    topics: &Topics,
    tenant: TenantId,
    traceparent: Option<String>,
) -> Result<i64, sqlx::Error> {
    let row = sqlx::query(
        "UPDATE tenants SET revision = revision + 1, updated_at = now() WHERE tenant_id = $1
         RETURNING state, cell_id, revision, updated_at, plan, limit_overrides, model_version, model_rollout",
    )
    .bind(tenant.as_uuid())
    .fetch_one(&mut **tx)
    .await?;
    let state_text: String = row.try_get("state")?;
    let state = TenantState::parse(&state_text)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown tenant state {state_text}").into()))?;
    let cell_id: Option<String> = row.try_get("cell_id")?;
    let revision: i64 = row.try_get("revision")?;
    let updated_at: DateTime<Utc> = row.try_get("updated_at")?;
    let (plan, limits) = crate::plans::effective(&row)?;
    let model_version: Option<String> = row.try_get("model_version")?;
    let rollout = crate::plans::rollout_of(&row)?.map(|r| WireRollout {
        candidate_model_version: r.candidate,
        mode: match r.mode {
            RolloutMode::Canary => WireRolloutMode::Canary,
            RolloutMode::Shadow => WireRolloutMode::Shadow,
        } as i32,
        canary_basis_points: r.canary_basis_points,
    });

    let payload = {
        let publishable_keys: Vec<String> = sqlx::query_scalar(
            "SELECT publishable_key FROM api_keys
             WHERE tenant_id = $1 AND kind = 'publishable' AND revoked_at IS NULL ORDER BY created_at",
        )
        .bind(tenant.as_uuid())
        .fetch_all(&mut **tx)
        .await?;
        let allowed_origins: Vec<String> =
            sqlx::query_scalar("SELECT origin FROM tenant_origins WHERE tenant_id = $1 ORDER BY origin")
                .bind(tenant.as_uuid())
                .fetch_all(&mut **tx)
                .await?;
        let server_keys = sqlx::query(
            "SELECT key_id, secret_hash, scopes FROM api_keys
             WHERE tenant_id = $1 AND kind = 'secret' AND revoked_at IS NULL ORDER BY created_at",
        )
        .bind(tenant.as_uuid())
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| {
            Ok(ServerKey {
                key_id: KeyId::from_uuid(r.try_get("key_id")?).to_string(),
                sha256: r.try_get("secret_hash")?,
                scopes: r.try_get("scopes")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let cell_url: Option<String> = sqlx::query_scalar("SELECT public_url FROM cells WHERE cell_id = $1")
            .bind(cell_id.as_deref())
            .fetch_optional(&mut **tx)
            .await?;
        let suppressed_subjects: Vec<String> =
            sqlx::query_scalar("SELECT subject_digest FROM suppressions WHERE tenant_id = $1 ORDER BY subject_digest")
                .bind(tenant.as_uuid())
                .fetch_all(&mut **tx)
                .await?;
        // Erased e-mail addresses stay erased: no identify links a shopper to one again.
        let suppressed_emails: Vec<String> = sqlx::query_scalar(
            "SELECT subject_digest FROM erasure_requests WHERE tenant_id = $1 AND scope = 'email'
             ORDER BY subject_digest",
        )
        .bind(tenant.as_uuid())
        .fetch_all(&mut **tx)
        .await?;
        let erasures = crate::erasure::pending_orders(tx, tenant).await?;
        let dunning: Option<String> = sqlx::query_scalar("SELECT dunning FROM billing_accounts WHERE tenant_id = $1")
            .bind(tenant.as_uuid())
            .fetch_optional(&mut **tx)
            .await?;
        let ingest_paused = matches!(dunning.as_deref(), Some("ingest_paused" | "suspended"));
        // Past the plan's monthly events (computed afresh: a plan change lifts it at once).
        let quota_exceeded = crate::usage::quota(tx, tenant).await?.state() == "hard_limit";
        let messaging_policy_json = crate::messaging::policy_json(tx, tenant).await?.unwrap_or_default();
        let config = TenantConfig {
            tenant_id: tenant.to_string(),
            state: wire_state(state) as i32,
            cell_id: cell_id.unwrap_or_default(),
            publishable_keys,
            allowed_origins,
            revision: u64::try_from(revision).unwrap_or(0),
            updated_at_ms: updated_at.timestamp_millis(),
            server_keys,
            suppressed_shoppers: Vec::new(),
            suppressed_subjects,
            suppressed_emails,
            ingest_paused,
            quota_exceeded,
            messaging_policy_json,
            erasures,
            model_version: model_version.unwrap_or_default(),
            rollout,
            cell_url: cell_url.unwrap_or_default(),
            limits: Some(WireLimits {
                plan: plan.as_str().to_owned(),
                events_per_second: limits.events_per_second,
                burst_events: limits.burst_events,
                connections: limits.connections,
                retention_days: limits.retention_days,
            }),
        };
        config.encode_to_vec()
    };
    let record = OutboxRecord {
        topic: topics.name(Topic::ControlTenants),
        key: tenant.to_string().into_bytes(),
        payload: Some(payload),
        schema: TENANT_CONFIG_V1,
        traceparent,
    };
    outbox::enqueue(tx, &record).await?;
    if state == TenantState::Deleted {
        outbox::enqueue(tx, &OutboxRecord { payload: None, ..record }).await?;
    }
    Ok(revision)
}
