//! Offboarding: a store that leaves is erased whole, after a grace period.
//!
//! A store enters `offboarding` (its owner asks, or an operator: see
//! [`crate::lifecycle::transition`]); from then its cell refuses its traffic, and its members
//! can still read and export what it holds, or cancel (back to `active`) until the grace
//! period ends (`purge_after`). Then the [`Purger`] — a sweep the control plane runs on an
//! interval, under a clock the caller gives, so tests control it — files an erasure request
//! of scope `tenant` for it and carries it out, one store ([`crate::erasure::Step`]) at a
//! time:
//!
//! 1. `cell:<id>`: the store's cell deletes every Redis key of the store (feature sessions,
//!    data keys, dedup sets, histories…) and its idle-cart timers, writes a `features.v1`
//!    tombstone for every shopper it knew, and reports on `erasure.reports.v1`.
//! 2. `vault`: the store's Transit key is deleted, with every version, so no record sealed
//!    for any of its shoppers — on any topic, in any copy — can be read again, whatever
//!    the cell found.
//! 3. `postgres`: the store's API keys, origins and suppression list are deleted.
//! 4. `database:<name>` (a store with a dedicated database): what remains of the store is
//!    copied back to the main database, routed there, and the dedicated database dropped.
//!
//! When all are done the receipt is signed, the store becomes `deleted` (its cells drop
//! it; the compacted tenant topic gets a tombstone) and its cell is released (a local
//! dedicated process stopped, the Kubernetes `Tenant` resource deleted, whose finalizer
//! takes its dedicated cell down). What remains is the store's row, its audit trails and
//! its receipts: the proof. A legal hold on the store or any of its shoppers holds the purge
//! until released. Every step is idempotent; a sweep that fails for one store leaves the
//! others alone and is retried at the next interval.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use nudge_contracts::Topics;
use nudge_platform_vault::Vault;
use nudge_tenants::TenantId;
use serde_json::json;
use sqlx::Row;
use uuid::Uuid;

use crate::{
    announce::announce,
    db::DbError,
    erasure::{self, DEADLINE_DAYS, ErasureError, ReceiptSigner},
    provision::Provisioner,
    routing::TenantRouter,
};

/// The actor the purge's audit entries name.
const ACTOR: &str = "system:offboarding";

/// Mixed into a store's lock key for its purge lock (a session-level advisory lock in the
/// main database), so it never meets the store's own transaction lock.
const PURGE_LOCK: i64 = 0x7075_7267_6500_0000;

/// Where a store's offboarding stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offboarding {
    pub state: nudge_tenants::TenantState,
    pub requested_at: Option<DateTime<Utc>>,
    pub requested_by: Option<String>,
    /// When the grace period ends and the purge may start.
    pub purge_after: Option<DateTime<Utc>>,
    /// The purge's erasure request, once it started.
    pub purge: Option<Uuid>,
}

/// A store's offboarding as it stands (`NotFound` for a store that does not exist here).
pub async fn status(router: &TenantRouter, tenant: TenantId) -> Result<Offboarding, ErasureError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let row = sqlx::query(
        "SELECT t.state, t.offboarding_requested_at, t.offboarding_requested_by, t.purge_after,
                (SELECT request_id FROM erasure_requests r WHERE r.tenant_id = t.tenant_id AND r.scope = 'tenant') AS purge
         FROM tenants t WHERE t.tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ErasureError::NotFound)?;
    tx.commit().await.map_err(DbError::from)?;
    let state: String = row.try_get("state")?;
    Ok(Offboarding {
        state: nudge_tenants::TenantState::parse(&state)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown tenant state {state}").into()))?,
        requested_at: row.try_get("offboarding_requested_at")?,
        requested_by: row.try_get("offboarding_requested_by")?,
        purge_after: row.try_get("purge_after")?,
        purge: row.try_get("purge")?,
    })
}

/// Cancels `tenant`'s offboarding before its purge is filed: it goes back to the state it
/// left (a suspended store stays suspended), which it answers. `Invalid` (naming the current
/// state) when it is not offboarding; `PurgeStarted` once the purge has been filed.
pub async fn cancel(
    router: &TenantRouter,
    topics: &Topics,
    tenant: TenantId,
    actor: &nudge_tenants::Actor,
    traceparent: Option<String>,
) -> Result<nudge_tenants::TenantState, crate::lifecycle::LifecycleError> {
    use nudge_tenants::TenantState;
    let mut tx = router.tenant_tx(tenant).await?;
    let row = sqlx::query("SELECT state, offboarding_from FROM tenants WHERE tenant_id = $1 FOR UPDATE")
        .bind(tenant.as_uuid())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(crate::lifecycle::LifecycleError::NotFound)?;
    let parse =
        |s: &str| TenantState::parse(s).ok_or_else(|| sqlx::Error::Decode(format!("unknown tenant state {s}").into()));
    let current = parse(&row.try_get::<String, _>("state")?)?;
    if current != TenantState::Offboarding {
        return Err(nudge_tenants::InvalidTransition { current, requested: TenantState::Active }.into());
    }
    let back = match row.try_get::<Option<String>, _>("offboarding_from")? {
        Some(from) => parse(&from)?,
        None => TenantState::Active,
    };
    crate::lifecycle::transition_in(
        &mut tx,
        topics,
        tenant,
        back,
        actor,
        "offboarding cancelled during its grace period",
        chrono::Duration::zero(),
        traceparent,
    )
    .await?;
    tx.commit().await.map_err(DbError::from)?;
    tracing::info!(tenant_id = %tenant, %actor, to = back.as_str(), "offboarding cancelled");
    Ok(back)
}

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Stores whose purge was filed.
    pub started: Vec<TenantId>,
    /// Stores whose purge a legal hold holds, with the hold's name.
    pub held: Vec<(TenantId, String)>,
    /// Stores erased and deleted.
    pub deleted: Vec<TenantId>,
    /// Stores a step failed for (retried at the next sweep), with the error.
    pub failed: Vec<(TenantId, String)>,
}

/// What happened to one store in a sweep.
enum Advanced {
    Started,
    Held(String),
    /// Waiting for its cell's report.
    Waiting,
    Deleted,
    /// Not due (cancelled meanwhile, or deleted already).
    Nothing,
}

/// Purges the stores whose grace period has ended.
pub struct Purger {
    pub router: Arc<TenantRouter>,
    pub topics: Topics,
    pub signer: ReceiptSigner,
    /// The vault holding the stores' Transit keys.
    pub vault: Vault,
    /// The Transit key of a store is this followed by its id (the cells' `keys.transit_key_prefix`).
    pub tenant_key_prefix: String,
    pub provisioner: Arc<dyn Provisioner>,
}

impl Purger {
    /// Every store of every database whose grace period ended by `now`, advanced as far as
    /// it can go now.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<Swept, DbError> {
        let due = self
            .router
            .tenants_everywhere("SELECT nudge_offboardings_due($1)", crate::routing::SweepArg::At(now))
            .await?;
        let mut swept = Swept::default();
        for tenant in due {
            // One control-plane replica purges a store at a time; the others pass it by.
            let mut lock = match self.router.registry().pool().acquire().await {
                Ok(conn) => conn,
                Err(e) => return Err(DbError::from_acquire(e)),
            };
            let key = crate::db::lock_key(tenant) ^ PURGE_LOCK;
            let held: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(&mut *lock).await?;
            if !held {
                continue;
            }
            let mut advanced = self.advance(tenant, now).await;
            if matches!(advanced, Err(ErasureError::Db(DbError::TenantMoving))) {
                // A return to the main database that died mid-copy left its fence: lift it,
                // and the return starts again.
                match crate::dedicated::lift_return_fence(&self.router, tenant).await {
                    Ok(true) => advanced = self.advance(tenant, now).await,
                    Ok(false) => {}
                    Err(e) => advanced = Err(ErasureError::Dedicated(e.to_string())),
                }
            }
            if let Err(e) = sqlx::query("SELECT pg_advisory_unlock($1)").bind(key).execute(&mut *lock).await {
                // The lock ends with the session: drop the connection rather than return it.
                tracing::warn!(error = %e, "a purge lock could not be released; closing its connection");
                let _ = lock.detach();
            }
            match advanced {
                Ok(Advanced::Started) => swept.started.push(tenant),
                Ok(Advanced::Held(name)) => swept.held.push((tenant, name)),
                Ok(Advanced::Deleted) => swept.deleted.push(tenant),
                Ok(Advanced::Waiting | Advanced::Nothing) => {}
                Err(e) => {
                    tracing::warn!(tenant_id = %tenant, error = %e, "a store's purge could not go on; trying again at the next sweep");
                    swept.failed.push((tenant, e.to_string()));
                }
            }
        }
        Ok(swept)
    }

    /// Takes `tenant`'s purge one or more steps further.
    async fn advance(&self, tenant: TenantId, now: DateTime<Utc>) -> Result<Advanced, ErasureError> {
        let mut tx = self.router.tenant_tx(tenant).await?;
        let row = sqlx::query(
            "SELECT t.state, t.purge_after, t.cell_id,
                    (SELECT request_id FROM erasure_requests r WHERE r.tenant_id = t.tenant_id AND r.scope = 'tenant') AS purge
             FROM tenants t WHERE t.tenant_id = $1 FOR UPDATE",
        )
        .bind(tenant.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(Advanced::Nothing) };
        let state: String = row.try_get("state")?;
        let purge_after: Option<DateTime<Utc>> = row.try_get("purge_after")?;
        if state != "offboarding" || purge_after.is_none_or(|at| at > now) {
            return Ok(Advanced::Nothing);
        }
        let cell: Option<String> = row.try_get("cell_id")?;
        let request_id = match row.try_get::<Option<Uuid>, _>("purge")? {
            Some(id) => {
                tx.commit().await.map_err(DbError::from)?;
                id
            }
            None => return self.start(tx, tenant, cell).await,
        };

        let steps = erasure::get(&self.router, tenant, request_id).await?.steps;
        let pending = |store: &str| steps.iter().any(|s| s.store == store && s.status == "pending");
        if steps.iter().any(|s| s.store.starts_with("cell:") && s.status == "pending") {
            return Ok(Advanced::Waiting);
        }
        if pending("vault") {
            let key = format!("{}{tenant}", self.tenant_key_prefix);
            let deleted = if self.vault.key_exists(&key).await? {
                self.begin_step(tenant, request_id, "vault", true).await?;
                self.vault.delete_key(&key).await?;
                true
            } else {
                // Gone, but an earlier attempt found it: that attempt deleted it.
                self.begin_step(tenant, request_id, "vault", false).await?
            };
            self.finish_step(tenant, request_id, "vault", json!({ "transit.key": u64::from(deleted) })).await?;
        }
        if pending("postgres") {
            let mut tx = self.router.tenant_tx(tenant).await?;
            let mut removed = serde_json::Map::new();
            for table in ["api_keys", "tenant_origins", "suppressions"] {
                let n = sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
                    .bind(tenant.as_uuid())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                removed.insert(table.to_owned(), json!(n));
            }
            // Its campaigns stop everywhere (the cells drop them) and are kept, archived, with
            // the store's account.
            let archived = crate::campaigns::archive_all(&mut tx, &self.topics, tenant, "system:offboarding")
                .await
                .map_err(|e| match e {
                    crate::campaigns::CampaignError::Db(db) => ErasureError::Db(db),
                    other => ErasureError::Db(DbError::Query(sqlx::Error::Protocol(other.to_string()))),
                })?;
            removed.insert("campaigns.archived".to_owned(), json!(archived));
            record_step(&mut tx, tenant, request_id, "postgres", serde_json::Value::Object(removed)).await?;
            tx.commit().await.map_err(DbError::from)?;
        }
        for step in steps.iter().filter(|s| s.store.starts_with("database:") && s.status == "pending") {
            let name = step.store.trim_start_matches("database:");
            let began = self.begin_step(tenant, request_id, &step.store, true).await?;
            let dropped = crate::dedicated::return_and_drop(&self.router, tenant, name)
                .await
                .map_err(|e| ErasureError::Dedicated(e.to_string()))?;
            // Recorded where the store lives now: the main database.
            let removed = json!({ "database": u64::from(dropped || began) });
            self.finish_step(tenant, request_id, &step.store, removed).await?;
        }
        // Its cell goes before the store is deleted, so a failure is retried with the rest.
        self.provisioner
            .release(tenant)
            .await
            .map_err(|e| ErasureError::Dedicated(format!("releasing its cell: {e}")))?;
        if !erasure::complete(&self.router, &self.topics, &self.signer, tenant, request_id, None).await? {
            return Ok(Advanced::Waiting);
        }
        tracing::info!(tenant_id = %tenant, %request_id, "store erased and deleted");
        Ok(Advanced::Deleted)
    }

    /// Files the purge of `tenant` (in `tx`, which holds the store's row): unless a legal
    /// hold is active, an erasure request of scope `tenant` with a pending step per store,
    /// announced with the whole-tenant order its cell carries out.
    async fn start(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        tenant: TenantId,
        cell: Option<String>,
    ) -> Result<Advanced, ErasureError> {
        let hold: Option<String> = sqlx::query_scalar(
            "SELECT name FROM legal_holds WHERE tenant_id = $1 AND released_at IS NULL ORDER BY placed_at LIMIT 1",
        )
        .bind(tenant.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(name) = hold {
            tracing::info!(tenant_id = %tenant, "a legal hold holds a store's purge");
            return Ok(Advanced::Held(name));
        }
        let request_id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO erasure_requests (tenant_id, request_id, scope, subject_digest, requested_by, deadline_at, status)
             VALUES ($1, $2, 'tenant', NULL, $3, now() + make_interval(days => $4), 'in_progress')",
        )
        .bind(tenant.as_uuid())
        .bind(request_id)
        .bind(ACTOR)
        .bind(i32::try_from(DEADLINE_DAYS).unwrap_or(30))
        .execute(&mut *tx)
        .await?;
        let mut stores = vec!["vault".to_owned(), "postgres".to_owned()];
        stores.extend(cell.map(|c| format!("cell:{c}")));
        // A dedicated database goes last: what remains of the store returns to the main one.
        // One an interrupted move left behind (holding a copy of the store) is dropped too.
        let routed = self.router.database_of(tenant).await?;
        let own = crate::routing::dedicated_name(tenant);
        let mut registry = self.router.registry().platform_tx().await?;
        let left_behind: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM databases WHERE name = $1)")
            .bind(&own)
            .fetch_one(&mut *registry)
            .await?;
        registry.commit().await.map_err(DbError::from)?;
        stores.extend(routed.clone().map(|name| format!("database:{name}")));
        if left_behind && routed.as_deref() != Some(own.as_str()) {
            stores.push(format!("database:{own}"));
        }
        for store in &stores {
            sqlx::query(
                "INSERT INTO erasure_steps (tenant_id, request_id, store, status) VALUES ($1, $2, $3, 'pending')",
            )
            .bind(tenant.as_uuid())
            .bind(request_id)
            .bind(store)
            .execute(&mut *tx)
            .await?;
        }
        erasure::audit(
            &mut tx,
            tenant,
            Some(request_id),
            ACTOR,
            "requested",
            json!({ "scope": "tenant", "stores": stores }),
        )
        .await?;
        announce(&mut tx, &self.topics, tenant, None).await?;
        tx.commit().await.map_err(DbError::from)?;
        tracing::info!(tenant_id = %tenant, %request_id, "a store's grace period ended: its purge is filed");
        Ok(Advanced::Started)
    }

    /// With `mark`, audits that a step that cannot be undone is being carried out, before it
    /// is; whether an earlier attempt already began it (so what it removed is not there any
    /// more).
    async fn begin_step(
        &self,
        tenant: TenantId,
        request_id: Uuid,
        store: &str,
        mark: bool,
    ) -> Result<bool, ErasureError> {
        let mut tx = self.router.tenant_tx(tenant).await?;
        let began: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM erasure_audit
                            WHERE tenant_id = $1 AND request_id = $2 AND action = 'store_started' AND detail ->> 'store' = $3)",
        )
        .bind(tenant.as_uuid())
        .bind(request_id)
        .bind(store)
        .fetch_one(&mut *tx)
        .await?;
        if mark && !began {
            erasure::audit(&mut tx, tenant, Some(request_id), ACTOR, "store_started", json!({ "store": store }))
                .await?;
        }
        tx.commit().await.map_err(DbError::from)?;
        Ok(began)
    }

    async fn finish_step(
        &self,
        tenant: TenantId,
        request_id: Uuid,
        store: &str,
        removed: serde_json::Value,
    ) -> Result<(), ErasureError> {
        let mut tx = self.router.tenant_tx(tenant).await?;
        record_step(&mut tx, tenant, request_id, store, removed).await?;
        tx.commit().await.map_err(DbError::from)?;
        Ok(())
    }
}

/// Marks a pending step done with what it removed, and audits it.
async fn record_step(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    tenant: TenantId,
    request_id: Uuid,
    store: &str,
    removed: serde_json::Value,
) -> Result<(), sqlx::Error> {
    let found = removed.as_object().is_some_and(|m| m.values().any(|n| n.as_u64().is_some_and(|n| n > 0)));
    let updated = sqlx::query(
        "UPDATE erasure_steps SET status = $4, removed = $5, finished_at = now()
         WHERE tenant_id = $1 AND request_id = $2 AND store = $3 AND status = 'pending'",
    )
    .bind(tenant.as_uuid())
    .bind(request_id)
    .bind(store)
    .bind(if found { "erased" } else { "nothing_found" })
    .bind(&removed)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if updated > 0 {
        erasure::audit(
            tx,
            tenant,
            Some(request_id),
            ACTOR,
            "store_finished",
            json!({ "store": store, "found": found }),
        )
        .await?;
    }
    Ok(())
}
