//! Erasure requests: a store asks for one of its shoppers to be forgotten; Nudge suppresses
//! them at once, erases them from every store it wrote them to, and signs a receipt.
//!
//! A request is tracked per store it erases from (`erasure_steps`): `postgres` (this
//! database; the shopper's id leaves the suppression list, which keeps only their subject
//! digest) is done when the request is filed; `cell:<id>` (the store's cell: Redis and the
//! compacted `features.v1`) when that cell's report arrives on `erasure.reports.v1`. When no
//! store is pending, the receipt — every store with what it removed and when — is signed by
//! the vault's Transit key and kept; filing the same request again answers the same request
//! and receipt. A legal hold on the subject (or the whole store) refuses the request, naming
//! the hold. Everything is written to `erasure_audit`, which cannot be changed.
//!
//! Shoppers are named by subject digest only (see [`nudge_contracts::subject_digest`]); no
//! shopper id is stored, announced or logged here.

use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, TimeZone, Utc};
use nudge_contracts::{
    ShopperId, Topics,
    proto::control::v1::{ErasureOrder, ErasureReport},
    subject_digest,
    topics::{Scope, catalogue},
};
use nudge_platform_kafka::stage::{Failure, Handler, HandlerFuture, Record};
use nudge_platform_vault::{Vault, VaultError};
use nudge_tenants::TenantId;
use prost::Message;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use crate::{announce::announce, db::DbError, routing::TenantRouter};

/// How long a request may take at most: the legal limit (one month).
pub const DEADLINE_DAYS: i64 = 30;

/// Signs receipts with a Transit key of the vault (created on first use when missing).
#[derive(Clone)]
pub struct ReceiptSigner {
    vault: Vault,
    key: String,
    ensured: Arc<tokio::sync::OnceCell<()>>,
}

impl ReceiptSigner {
    pub fn new(vault: Vault, key: impl Into<String>) -> Self {
        Self { vault, key: key.into(), ensured: Arc::default() }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    async fn ensure(&self) -> Result<(), VaultError> {
        self.ensured.get_or_try_init(|| self.vault.ensure_signing_key(&self.key)).await.map(|_| ())
    }

    async fn sign(&self, data: &[u8]) -> Result<nudge_platform_vault::Signature, VaultError> {
        self.ensure().await?;
        self.vault.sign(&self.key, data).await
    }

    /// The key's public halves by version (base64 ed25519), to check receipts offline.
    pub async fn public_keys(&self) -> Result<BTreeMap<u64, String>, VaultError> {
        self.ensure().await?;
        self.vault.public_keys(&self.key).await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    #[error(transparent)]
    Db(#[from] DbError),
    /// A legal hold covers the subject or the whole store.
    #[error("legal hold {name} prevents erasure")]
    LegalHold { hold_id: Uuid, name: String },
    #[error("no such erasure request")]
    NotFound,
    /// Signing the receipt needs the vault, which cannot be used now.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// An offboarded store's dedicated database could not be returned and dropped.
    #[error("the store's dedicated database: {0}")]
    Dedicated(String),
    /// A cell's report that cannot be recorded as it is.
    #[error("malformed erasure report: {0}")]
    BadReport(String),
}

impl From<sqlx::Error> for ErasureError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

/// One store a request erases from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub store: String,
    /// `pending`, `erased` or `nothing_found`.
    pub status: String,
    /// Place → keys, rows, members or records removed there.
    pub removed: BTreeMap<String, u64>,
    pub finished_at: Option<DateTime<Utc>>,
    /// For an erasure by e-mail, at a cell: the shoppers (subject digests) it found and
    /// erased, and those it left under a legal hold.
    pub subjects: Vec<String>,
    pub held_subjects: Vec<String>,
}

/// One line of a request's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub detail: serde_json::Value,
}

/// An erasure request as tracked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureRequest {
    pub request_id: Uuid,
    /// `shopper`, `email`, or `tenant` (a store's offboarding).
    pub scope: String,
    /// The shopper's subject digest, or the address's email digest; `None` for a whole
    /// store.
    pub subject_digest: Option<String>,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    pub deadline_at: DateTime<Utc>,
    /// `in_progress` or `completed`.
    pub status: String,
    pub completed_at: Option<DateTime<Utc>>,
    pub steps: Vec<Step>,
    pub audit: Vec<AuditEntry>,
}

/// A completed request's receipt, exactly as signed, with its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedReceipt {
    /// The receipt's JSON text; the signature is of these bytes.
    pub receipt: String,
    /// `vault:v<version>:<base64 ed25519 signature>`.
    pub signature: String,
    pub signing_key: String,
    pub key_version: u64,
}

/// What a receipt says, in the order it is written.
#[derive(Debug, Serialize)]
struct Receipt<'a> {
    receipt_version: u32,
    request_id: String,
    tenant_id: String,
    scope: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject_digest: Option<&'a str>,
    requested_at: String,
    deadline_at: String,
    completed_at: String,
    /// `erased` when anything was found anywhere, else `nothing_found`.
    outcome: &'static str,
    /// An erasure by e-mail: the shoppers (subject digests) the address led to and who were
    /// erased.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    subjects_erased: Vec<String>,
    /// An erasure by e-mail: the shoppers it led to whom a legal hold kept, with the hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    subjects_held: Vec<HeldSubject>,
    stores: Vec<ReceiptStore>,
    signing_key: &'a str,
}

#[derive(Debug, Serialize)]
struct HeldSubject {
    subject_digest: String,
    hold_id: Option<String>,
    hold: Option<String>,
}

#[derive(Debug, Serialize)]
struct ReceiptStore {
    store: String,
    status: String,
    removed: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

/// What the receipt says of the event streams, which are not erased record by record: every
/// record naming a shopper is sealed with the shopper's data key, so the cells' deleting
/// that key (`redis.data_key` in their steps) shreds them all — and a store's offboarding
/// deletes the store's Transit key, which wrapped every one of them; the unreadable
/// records are then deleted when their topic's retention ends.
fn event_streams(shredded: bool, whole_tenant: bool) -> ReceiptStore {
    let topics: Vec<String> = catalogue()
        .iter()
        // The sealed topics, and the DLQ, which keeps sealed records as they were.
        .filter(|t| t.scope == Scope::Cell && (t.value.starts_with("nudge.sealed.v1.Sealed") || t.name == "events.dlq"))
        .map(|t| format!("{} ({} days)", t.name, t.retention_hours / 24))
        .collect();
    ReceiptStore {
        store: "kafka event streams".into(),
        status: if shredded { "crypto_shredded" } else { "nothing_found" }.into(),
        removed: BTreeMap::new(),
        finished_at: None,
        note: Some(format!(
            "records naming the shopper are sealed with the shopper's own data key; {}; the unreadable records are \
             deleted when their topic's retention ends: {}",
            if whole_tenant && shredded {
                "the store's Transit key, which wrapped every one of its shoppers' data keys, was deleted, so none of \
                 its records can be read any more"
            } else if whole_tenant {
                "the store had no Transit key (it never sealed a record), so nothing on the topics can be read as its"
            } else if shredded {
                "the key was deleted, so none of them can be read any more"
            } else {
                "no cell held a data key for them (none was ever made, or it had expired with the rest of their data), so nothing on the topics can be read as theirs"
            },
            topics.join(", ")
        )),
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub(crate) async fn audit(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    request: Option<Uuid>,
    actor: &str,
    action: &str,
    detail: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO erasure_audit (tenant_id, request_id, actor, action, detail) VALUES ($1, $2, $3, $4, $5)")
        .bind(tenant.as_uuid())
        .bind(request)
        .bind(actor)
        .bind(action)
        .bind(detail)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Whether `s` has the form of a subject digest (64 lowercase hex digits).
pub fn is_digest(s: &str) -> bool {
    nudge_contracts::is_sha256_hex(s)
}

/// Whom an erasure request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// One shopper, by subject digest ([`subject_digest`]).
    Shopper(&'a str),
    /// Every shopper the store identified with one e-mail address, by the address's email
    /// digest ([`nudge_contracts::email_digest`]).
    Email(&'a str),
}

impl Subject<'_> {
    fn scope(self) -> &'static str {
        match self {
            Self::Shopper(_) => "shopper",
            Self::Email(_) => "email",
        }
    }

    fn digest(self) -> String {
        match self {
            Self::Shopper(d) | Self::Email(d) => d.to_owned(),
        }
    }
}

/// Files an erasure request for `subject` of `tenant` on behalf of `actor` (`account:<id>`,
/// `operator:<name>`): suppresses them at once and orders their cell to erase. Filing it
/// again answers the existing request (`false`: not new), completing it if only its receipt
/// was missing.
///
/// A shopper under a legal hold (or a store under one) is refused, naming the hold. An
/// e-mail address is refused only for a hold on the whole store: the shoppers it leads to are
/// known once the cell has looked, so the order lists the held shoppers and the cell leaves
/// them as they are (the receipt names them and their holds).
pub async fn request(
    router: &TenantRouter,
    topics: &Topics,
    signer: &ReceiptSigner,
    tenant: TenantId,
    subject: Subject<'_>,
    actor: &str,
    traceparent: Option<String>,
) -> Result<(ErasureRequest, bool), ErasureError> {
    let (scope, digest) = (subject.scope(), subject.digest());
    let by_email = matches!(subject, Subject::Email(_));
    let mut tx = router.tenant_tx(tenant).await?;
    let cell: Option<Option<String>> = sqlx::query_scalar("SELECT cell_id FROM tenants WHERE tenant_id = $1")
        .bind(tenant.as_uuid())
        .fetch_optional(&mut *tx)
        .await?;
    let Some(cell) = cell else { return Err(ErasureError::NotFound) };
    let existing: Option<Uuid> = sqlx::query_scalar(
        "SELECT request_id FROM erasure_requests WHERE tenant_id = $1 AND scope = $2 AND subject_digest = $3",
    )
    .bind(tenant.as_uuid())
    .bind(scope)
    .bind(&digest)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(request_id) = existing {
        return repeated(router, topics, signer, tx, tenant, request_id, actor, traceparent).await;
    }
    let hold = sqlx::query(
        "SELECT hold_id, name FROM legal_holds
         WHERE tenant_id = $1 AND released_at IS NULL
           AND (subject_digest IS NULL OR (NOT $3 AND subject_digest = $2))
         ORDER BY placed_at LIMIT 1",
    )
    .bind(tenant.as_uuid())
    .bind(&digest)
    .bind(by_email)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(hold) = hold {
        let (hold_id, name): (Uuid, String) = (hold.try_get("hold_id")?, hold.try_get("name")?);
        audit(
            &mut tx,
            tenant,
            None,
            actor,
            "refused_legal_hold",
            serde_json::json!({ "hold_id": hold_id.to_string(), "scope": scope, "subject_digest": digest }),
        )
        .await?;
        tx.commit().await.map_err(DbError::from)?;
        return Err(ErasureError::LegalHold { hold_id, name });
    }

    let request_id = Uuid::now_v7();
    let inserted = sqlx::query(
        "INSERT INTO erasure_requests (tenant_id, request_id, scope, subject_digest, requested_by, deadline_at, status)
         VALUES ($1, $2, $6, $3, $4, now() + make_interval(days => $5), 'in_progress')
         ON CONFLICT (tenant_id, scope, subject_digest) DO NOTHING",
    )
    .bind(tenant.as_uuid())
    .bind(request_id)
    .bind(&digest)
    .bind(actor)
    .bind(i32::try_from(DEADLINE_DAYS).unwrap_or(30))
    .bind(scope)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        // Filed concurrently by another request, which has committed: answer that one.
        tx.rollback().await.map_err(DbError::from)?;
        let mut tx = router.tenant_tx(tenant).await?;
        let request_id: Uuid = sqlx::query_scalar(
            "SELECT request_id FROM erasure_requests WHERE tenant_id = $1 AND scope = $2 AND subject_digest = $3",
        )
        .bind(tenant.as_uuid())
        .bind(scope)
        .bind(&digest)
        .fetch_one(&mut *tx)
        .await?;
        return repeated(router, topics, signer, tx, tenant, request_id, actor, traceparent).await;
    }
    // Suppressed first: the shopper's id leaves the list (an opt-out may have held it) and
    // their digest stays on it, so their events are dropped from now on. An address is
    // suppressed by the request itself (the tenant record lists erased addresses), so no
    // identify links a shopper to it any more; the shoppers it leads to follow when the cell
    // reports them.
    // (The address is not a shopper: the store's record lists it apart, see `announce`.)
    let ids_removed =
        if by_email { 0 } else { suppress_erased(&mut tx, tenant, std::slice::from_ref(&digest)).await? };
    if by_email && cell.is_some() {
        // This database holds no address; what it holds of the shoppers the cell finds is
        // removed when the cell reports them.
        sqlx::query(
            "INSERT INTO erasure_steps (tenant_id, request_id, store, status) VALUES ($1, $2, 'postgres', 'pending')",
        )
        .bind(tenant.as_uuid())
        .bind(request_id)
        .execute(&mut *tx)
        .await?;
    } else {
        sqlx::query(
            "INSERT INTO erasure_steps (tenant_id, request_id, store, status, removed, finished_at)
             VALUES ($1, $2, 'postgres', $3, $4, now())",
        )
        .bind(tenant.as_uuid())
        .bind(request_id)
        .bind(if ids_removed > 0 { "erased" } else { "nothing_found" })
        .bind(serde_json::json!({ "suppressions.shopper_id": ids_removed }))
        .execute(&mut *tx)
        .await?;
    }
    if let Some(cell) = &cell {
        sqlx::query("INSERT INTO erasure_steps (tenant_id, request_id, store, status) VALUES ($1, $2, $3, 'pending')")
            .bind(tenant.as_uuid())
            .bind(request_id)
            .bind(format!("cell:{cell}"))
            .execute(&mut *tx)
            .await?;
    }
    audit(
        &mut tx,
        tenant,
        Some(request_id),
        actor,
        "requested",
        serde_json::json!({ "scope": scope, "subject_digest": digest }),
    )
    .await?;
    // The cell learns of the suppression and the order with the tenant's next record.
    announce(&mut tx, topics, tenant, traceparent.clone()).await?;
    tx.commit().await.map_err(DbError::from)?;
    // A store with no cell has nothing pending: signed now, or when filed again.
    settle(router, topics, signer, tenant, request_id, traceparent).await;
    Ok((get(router, tenant, request_id).await?, true))
}

/// Puts `digests` on the store's suppression list for an erasure (an opt-out's shopper id
/// leaves it: an erased shopper's id is not kept); how many shopper ids were removed.
async fn suppress_erased(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    digests: &[String],
) -> Result<u64, sqlx::Error> {
    let ids_removed = sqlx::query(
        "UPDATE suppressions SET shopper_id = NULL, reason = 'erasure'
         WHERE tenant_id = $1 AND subject_digest = ANY($2) AND shopper_id IS NOT NULL",
    )
    .bind(tenant.as_uuid())
    .bind(digests)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    sqlx::query(
        "INSERT INTO suppressions (tenant_id, subject_digest, shopper_id, reason)
         SELECT $1, d, NULL, 'erasure' FROM unnest($2::text[]) AS d
         ON CONFLICT (tenant_id, subject_digest) DO UPDATE SET reason = 'erasure', shopper_id = NULL",
    )
    .bind(tenant.as_uuid())
    .bind(digests)
    .execute(&mut **tx)
    .await?;
    Ok(ids_removed)
}

/// Answers a request filed before, after auditing the repeat and completing it if only its
/// receipt was missing.
#[allow(clippy::too_many_arguments)]
async fn repeated(
    router: &TenantRouter,
    topics: &Topics,
    signer: &ReceiptSigner,
    mut tx: Transaction<'static, Postgres>,
    tenant: TenantId,
    request_id: Uuid,
    actor: &str,
    traceparent: Option<String>,
) -> Result<(ErasureRequest, bool), ErasureError> {
    audit(&mut tx, tenant, Some(request_id), actor, "repeated", serde_json::json!({})).await?;
    tx.commit().await.map_err(DbError::from)?;
    settle(router, topics, signer, tenant, request_id, traceparent).await;
    Ok((get(router, tenant, request_id).await?, false))
}

/// Tries to complete `request_id`; a failure (the vault down) leaves it in progress, to be
/// completed by the next report or filing, and is logged.
async fn settle(
    router: &TenantRouter,
    topics: &Topics,
    signer: &ReceiptSigner,
    tenant: TenantId,
    request_id: Uuid,
    traceparent: Option<String>,
) {
    if let Err(e) = complete(router, topics, signer, tenant, request_id, traceparent).await {
        tracing::warn!(tenant_id = %tenant, %request_id, error = %e, "an erasure request could not be completed yet");
    }
}

/// Completes `request_id` in a transaction of its own when no store is pending; whether it
/// did now.
pub async fn complete(
    router: &TenantRouter,
    topics: &Topics,
    signer: &ReceiptSigner,
    tenant: TenantId,
    request_id: Uuid,
    traceparent: Option<String>,
) -> Result<bool, ErasureError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let completed = complete_if_done(&mut tx, topics, signer, tenant, request_id, traceparent).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(completed)
}

/// Signs and keeps the receipt of `request_id` when no store is pending any more (and it
/// has none yet); re-announces the tenant so its cell drops the order.
async fn complete_if_done(
    tx: &mut Transaction<'static, Postgres>,
    topics: &Topics,
    signer: &ReceiptSigner,
    tenant: TenantId,
    request_id: Uuid,
    traceparent: Option<String>,
) -> Result<bool, ErasureError> {
    let row = sqlx::query(
        "SELECT scope, subject_digest, requested_at, deadline_at, status FROM erasure_requests
         WHERE tenant_id = $1 AND request_id = $2 FOR UPDATE",
    )
    .bind(tenant.as_uuid())
    .bind(request_id)
    .fetch_one(&mut **tx)
    .await?;
    let status: String = row.try_get("status")?;
    if status == "completed" {
        return Ok(false);
    }
    let steps = steps_of(tx, tenant, request_id).await?;
    if steps.iter().any(|s| s.status == "pending") {
        return Ok(false);
    }
    let (scope, digest): (String, Option<String>) = (row.try_get("scope")?, row.try_get("subject_digest")?);
    let whole_tenant = scope == "tenant";
    let completed_at = Utc::now();
    let mut stores: Vec<ReceiptStore> = steps
        .iter()
        .map(|s| ReceiptStore {
            store: s.store.clone(),
            status: s.status.clone(),
            removed: s.removed.clone(),
            finished_at: s.finished_at.map(rfc3339),
            note: None,
        })
        .collect();
    let found = steps.iter().any(|s| s.status == "erased");
    let subjects_erased: std::collections::BTreeSet<String> =
        steps.iter().flat_map(|s| s.subjects.iter().cloned()).collect();
    let held: std::collections::BTreeSet<String> = steps.iter().flat_map(|s| s.held_subjects.iter().cloned()).collect();
    let mut subjects_held = Vec::with_capacity(held.len());
    for digest in held {
        // The subject's hold: one still in force, else the last released (it was in force
        // when the order went out).
        let hold = sqlx::query(
            "SELECT hold_id, name FROM legal_holds WHERE tenant_id = $1 AND subject_digest = $2
             ORDER BY released_at IS NULL DESC, placed_at DESC LIMIT 1",
        )
        .bind(tenant.as_uuid())
        .bind(&digest)
        .fetch_optional(&mut **tx)
        .await?;
        let (hold_id, hold) = match hold {
            Some(row) => (Some(row.try_get::<Uuid, _>("hold_id")?.to_string()), Some(row.try_get("name")?)),
            None => (None, None),
        };
        subjects_held.push(HeldSubject { subject_digest: digest, hold_id, hold });
    }
    let shredded = if whole_tenant {
        steps.iter().any(|s| s.removed.get("transit.key").is_some_and(|n| *n > 0))
    } else {
        steps.iter().any(|s| s.removed.get("redis.data_key").is_some_and(|n| *n > 0))
    };
    stores.push(event_streams(shredded, whole_tenant));
    let receipt = Receipt {
        receipt_version: 1,
        request_id: request_id.to_string(),
        tenant_id: tenant.to_string(),
        scope: &scope,
        subject_digest: digest.as_deref(),
        requested_at: rfc3339(row.try_get("requested_at")?),
        deadline_at: rfc3339(row.try_get("deadline_at")?),
        completed_at: rfc3339(completed_at),
        outcome: if found { "erased" } else { "nothing_found" },
        subjects_erased: subjects_erased.into_iter().collect(),
        subjects_held,
        stores,
        signing_key: &signer.key,
    };
    let text = serde_json::to_string(&receipt).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let signature = signer.sign(text.as_bytes()).await?;
    sqlx::query(
        "UPDATE erasure_requests SET status = 'completed', completed_at = $3, receipt = $4, signature = $5,
                signing_key = $6, key_version = $7
         WHERE tenant_id = $1 AND request_id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(request_id)
    .bind(completed_at)
    .bind(&text)
    .bind(&signature.signature)
    .bind(&signature.key)
    .bind(i64::try_from(signature.key_version).unwrap_or(i64::MAX))
    .execute(&mut **tx)
    .await?;
    audit(
        tx,
        tenant,
        Some(request_id),
        "system",
        "completed",
        serde_json::json!({ "outcome": receipt.outcome, "key_version": signature.key_version }),
    )
    .await?;
    if whole_tenant {
        // The store is gone: its cells drop it, and the tenant topic forgets it.
        crate::lifecycle::transition_in(
            tx,
            topics,
            tenant,
            nudge_tenants::TenantState::Deleted,
            &crate::lifecycle::PURGE,
            "offboarding: every store erased",
            chrono::Duration::zero(),
            traceparent,
        )
        .await
        .map_err(|e| match e {
            crate::lifecycle::LifecycleError::Db(db) => ErasureError::Db(db),
            other => ErasureError::Db(DbError::Query(sqlx::Error::Protocol(other.to_string()))),
        })?;
    } else {
        announce(tx, topics, tenant, traceparent).await?;
    }
    Ok(true)
}

async fn steps_of(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
    request_id: Uuid,
) -> Result<Vec<Step>, sqlx::Error> {
    sqlx::query(
        "SELECT store, status, removed, finished_at, subjects, held_subjects FROM erasure_steps
         WHERE tenant_id = $1 AND request_id = $2 ORDER BY store",
    )
    .bind(tenant.as_uuid())
    .bind(request_id)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|r| {
        let removed: serde_json::Value = r.try_get("removed")?;
        Ok(Step {
            store: r.try_get("store")?,
            status: r.try_get("status")?,
            removed: serde_json::from_value(removed).unwrap_or_default(),
            finished_at: r.try_get("finished_at")?,
            subjects: r.try_get("subjects")?,
            held_subjects: r.try_get("held_subjects")?,
        })
    })
    .collect()
}

fn request_of(row: &sqlx::postgres::PgRow) -> Result<ErasureRequest, sqlx::Error> {
    Ok(ErasureRequest {
        request_id: row.try_get("request_id")?,
        scope: row.try_get("scope")?,
        subject_digest: row.try_get("subject_digest")?,
        requested_by: row.try_get("requested_by")?,
        requested_at: row.try_get("requested_at")?,
        deadline_at: row.try_get("deadline_at")?,
        status: row.try_get("status")?,
        completed_at: row.try_get("completed_at")?,
        steps: Vec::new(),
        audit: Vec::new(),
    })
}

const REQUEST_COLUMNS: &str =
    "request_id, scope, subject_digest, requested_by, requested_at, deadline_at, status, completed_at";

/// One of the store's requests, with its steps and audit trail.
pub async fn get(router: &TenantRouter, tenant: TenantId, request_id: Uuid) -> Result<ErasureRequest, ErasureError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let row = sqlx::query(&format!(
        "SELECT {REQUEST_COLUMNS} FROM erasure_requests WHERE tenant_id = $1 AND request_id = $2"
    ))
    .bind(tenant.as_uuid())
    .bind(request_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ErasureError::NotFound)?;
    let mut request = request_of(&row)?;
    request.steps = steps_of(&mut tx, tenant, request_id).await?;
    request.audit = sqlx::query(
        "SELECT at, actor, action, detail FROM erasure_audit WHERE tenant_id = $1 AND request_id = $2 ORDER BY seq",
    )
    .bind(tenant.as_uuid())
    .bind(request_id)
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|r| {
        Ok(AuditEntry {
            at: r.try_get("at")?,
            actor: r.try_get("actor")?,
            action: r.try_get("action")?,
            detail: r.try_get("detail")?,
        })
    })
    .collect::<Result<_, sqlx::Error>>()?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(request)
}

/// The store's requests, newest first (without steps and audit).
pub async fn list(router: &TenantRouter, tenant: TenantId) -> Result<Vec<ErasureRequest>, ErasureError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let rows = sqlx::query(&format!(
        "SELECT {REQUEST_COLUMNS} FROM erasure_requests WHERE tenant_id = $1 ORDER BY requested_at DESC LIMIT 500"
    ))
    .bind(tenant.as_uuid())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(rows.iter().map(request_of).collect::<Result<_, _>>()?)
}

/// The signed receipt of a completed request; `None` while it is in progress.
pub async fn receipt(
    router: &TenantRouter,
    tenant: TenantId,
    request_id: Uuid,
) -> Result<Option<SignedReceipt>, ErasureError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let row = sqlx::query(
        "SELECT receipt, signature, signing_key, key_version FROM erasure_requests
         WHERE tenant_id = $1 AND request_id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(request_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ErasureError::NotFound)?;
    tx.commit().await.map_err(DbError::from)?;
    let receipt: Option<String> = row.try_get("receipt")?;
    let Some(receipt) = receipt else { return Ok(None) };
    Ok(Some(SignedReceipt {
        receipt,
        signature: row.try_get("signature")?,
        signing_key: row.try_get("signing_key")?,
        key_version: u64::try_from(row.try_get::<i64, _>("key_version")?).unwrap_or(0),
    }))
}

/// Records the cells' reports and completes the requests they finish; a stage handler for
/// `erasure.reports.v1`.
pub struct ReportSink {
    pub router: Arc<TenantRouter>,
    pub topics: Topics,
    pub signer: ReceiptSigner,
    /// Woken after a completion enqueued the tenant's record.
    pub outbox_wake: Arc<tokio::sync::Notify>,
}

impl Handler for ReportSink {
    fn handle<'a>(&'a self, record: &'a Record<'a>) -> HandlerFuture<'a> {
        Box::pin(async move {
            let report = ErasureReport::decode(record.payload.unwrap_or_default())
                .map_err(|e| Failure::Failed(format!("undecodable erasure report: {e}")))?;
            let tenant: TenantId = report
                .tenant_id
                .parse()
                .map_err(|_| Failure::Failed("erasure report without a valid tenant".into()))?;
            let request_id: Uuid = report
                .request_id
                .parse()
                .map_err(|_| Failure::Failed("erasure report without a valid request id".into()))?;
            match self.record(tenant, request_id, &report, Some(record.trace.to_header())).await {
                Ok(completed) => {
                    if completed {
                        self.outbox_wake.notify_waiters();
                        self.outbox_wake.notify_one();
                    }
                    Ok(())
                }
                Err(ErasureError::Db(DbError::Unavailable(e))) => Err(Failure::Unavailable(e.to_string())),
                Err(ErasureError::Db(DbError::TenantMoving)) => Err(Failure::Unavailable("tenant moving".into())),
                // A vault that refuses (an expired token, a missing policy) needs an operator;
                // the report waits for it rather than going to the dead letters.
                Err(ErasureError::Vault(e)) => Err(Failure::Unavailable(e.to_string())),
                Err(e) => Err(Failure::Failed(e.to_string())),
            }
        })
    }
}

impl ReportSink {
    /// Marks the reporting cell's step finished (once; a repeated report changes nothing)
    /// and completes the request when it was the last; whether it completed it.
    async fn record(
        &self,
        tenant: TenantId,
        request_id: Uuid,
        report: &ErasureReport,
        traceparent: Option<String>,
    ) -> Result<bool, ErasureError> {
        let removed: BTreeMap<String, u64> = report.places.iter().map(|p| (p.place.clone(), p.removed)).collect();
        if let Some(bad) = report.subject_digests.iter().chain(&report.held_subject_digests).find(|d| !is_digest(d)) {
            return Err(ErasureError::BadReport(format!("`{}` is not a subject digest", bad.escape_debug())));
        }
        // A tombstone is written for every subject; what was found is what the rest removed.
        let found = removed.iter().any(|(place, n)| *n > 0 && !place.ends_with(".tombstones"));
        let finished_at = Utc.timestamp_millis_opt(report.completed_at_ms).single().unwrap_or_else(Utc::now);
        let store = format!("cell:{}", report.cell_id);
        let mut tx = self.router.tenant_tx(tenant).await?;
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM erasure_requests WHERE tenant_id = $1 AND request_id = $2)",
        )
        .bind(tenant.as_uuid())
        .bind(request_id)
        .fetch_one(&mut *tx)
        .await?;
        if !exists {
            // A report for a request this database does not hold (a tenant deleted since):
            // nothing to record.
            tracing::warn!(tenant_id = %tenant, %request_id, "erasure report for an unknown request; ignored");
            return Ok(false);
        }
        // A cell the request did not wait for (the store moved meanwhile) is recorded too.
        let updated = sqlx::query(
            "INSERT INTO erasure_steps (tenant_id, request_id, store, status, removed, finished_at, subjects, held_subjects)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (tenant_id, request_id, store) DO UPDATE
                SET status = EXCLUDED.status, removed = EXCLUDED.removed, finished_at = EXCLUDED.finished_at,
                    subjects = EXCLUDED.subjects, held_subjects = EXCLUDED.held_subjects
                WHERE erasure_steps.status = 'pending'",
        )
        .bind(tenant.as_uuid())
        .bind(request_id)
        .bind(&store)
        .bind(if found { "erased" } else { "nothing_found" })
        .bind(serde_json::to_value(&removed).unwrap_or_default())
        .bind(finished_at)
        .bind(&report.subject_digests)
        .bind(&report.held_subject_digests)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            // Reported before (a redelivery, or a cell that carried the order out again):
            // the request may still lack its receipt.
            tx.commit().await.map_err(DbError::from)?;
            return complete(&self.router, &self.topics, &self.signer, tenant, request_id, traceparent).await;
        }
        audit(
            &mut tx,
            tenant,
            Some(request_id),
            &store,
            "store_finished",
            serde_json::json!({
                "store": store,
                "found": found,
                "subjects": report.subject_digests.len(),
                "held_subjects": report.held_subject_digests.len(),
            }),
        )
        .await?;
        self.suppress_found(&mut tx, tenant, request_id, &report.subject_digests).await?;
        // The step is recorded whatever the vault does; completing needs it.
        tx.commit().await.map_err(DbError::from)?;
        complete(&self.router, &self.topics, &self.signer, tenant, request_id, traceparent).await
    }
}

impl ReportSink {
    /// For an erasure by e-mail: the shoppers the cell found go on the suppression list (so
    /// their events are dropped, and any cell erases what it keeps of them), and this
    /// database's step — what it held of them — finishes.
    async fn suppress_found(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        tenant: TenantId,
        request_id: Uuid,
        subjects: &[String],
    ) -> Result<(), ErasureError> {
        let row = sqlx::query("SELECT scope, status FROM erasure_requests WHERE tenant_id = $1 AND request_id = $2")
            .bind(tenant.as_uuid())
            .bind(request_id)
            .fetch_one(&mut **tx)
            .await?;
        let (scope, status): (String, String) = (row.try_get("scope")?, row.try_get("status")?);
        if scope != "email" {
            return Ok(());
        }
        if status != "in_progress" {
            // A cell reporting after the receipt was signed (one the request did not wait
            // for): its shoppers are not on the receipt, so nothing is done in its name.
            audit(
                tx,
                tenant,
                Some(request_id),
                "system",
                "late_report_ignored",
                serde_json::json!({ "subjects": subjects.len() }),
            )
            .await?;
            return Ok(());
        }
        let ids_removed = if subjects.is_empty() { 0 } else { suppress_erased(tx, tenant, subjects).await? };
        // Counts add up over the cells that report (a store that moved has two).
        sqlx::query(
            "UPDATE erasure_steps
                SET removed = jsonb_build_object('suppressions.shopper_id',
                        COALESCE((removed->>'suppressions.shopper_id')::bigint, 0) + $3),
                    status = CASE WHEN COALESCE((removed->>'suppressions.shopper_id')::bigint, 0) + $3 > 0
                                  THEN 'erased' ELSE 'nothing_found' END,
                    finished_at = now()
              WHERE tenant_id = $1 AND request_id = $2 AND store = 'postgres'",
        )
        .bind(tenant.as_uuid())
        .bind(request_id)
        .bind(i64::try_from(ids_removed).unwrap_or(i64::MAX))
        .execute(&mut **tx)
        .await?;
        if !subjects.is_empty() {
            // The cell learns of the new suppressions with the tenant's next record.
            announce(tx, &self.topics, tenant, None).await?;
        }
        Ok(())
    }
}

/// The erasure orders a tenant's record carries: in-progress requests whose cell has not
/// reported yet. An order by e-mail lists the shoppers under a legal hold, whom the cell
/// leaves alone.
pub async fn pending_orders(
    tx: &mut Transaction<'static, Postgres>,
    tenant: TenantId,
) -> Result<Vec<ErasureOrder>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT r.request_id, r.scope, r.subject_digest FROM erasure_requests r
         WHERE r.tenant_id = $1 AND r.status = 'in_progress'
           AND EXISTS (SELECT 1 FROM erasure_steps s
                       WHERE s.tenant_id = r.tenant_id AND s.request_id = r.request_id
                         AND s.store LIKE 'cell:%' AND s.status = 'pending')
         ORDER BY r.requested_at",
    )
    .bind(tenant.as_uuid())
    .fetch_all(&mut **tx)
    .await?;
    let mut held: Option<Vec<String>> = None;
    let mut orders = Vec::with_capacity(rows.len());
    for r in &rows {
        let scope: String = r.try_get("scope")?;
        let by_email = scope == "email";
        let held_subjects = if by_email {
            if held.is_none() {
                held = Some(
                    sqlx::query_scalar(
                        "SELECT DISTINCT subject_digest FROM legal_holds
                         WHERE tenant_id = $1 AND released_at IS NULL AND subject_digest IS NOT NULL
                         ORDER BY subject_digest",
                    )
                    .bind(tenant.as_uuid())
                    .fetch_all(&mut **tx)
                    .await?,
                );
            }
            held.clone().unwrap_or_default()
        } else {
            Vec::new()
        };
        orders.push(ErasureOrder {
            request_id: r.try_get::<Uuid, _>("request_id")?.to_string(),
            subject_digest: r.try_get::<Option<String>, _>("subject_digest")?.unwrap_or_default(),
            whole_tenant: scope == "tenant",
            by_email,
            held_subjects,
        });
    }
    Ok(orders)
}

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

/// What the control plane keeps about the shopper with subject digest `digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRecords {
    pub suppression: Option<crate::suppressions::Suppression>,
    /// With their steps and audit trails.
    pub requests: Vec<ErasureRequest>,
    pub holds: Vec<LegalHold>,
}

/// Everything the store's database holds naming the subject, for an access request.
pub async fn subject_records(
    router: &TenantRouter,
    tenant: TenantId,
    digest: &str,
) -> Result<SubjectRecords, ErasureError> {
    let suppression = crate::suppressions::of_subject(router, tenant, digest).await?;
    let mut tx = router.tenant_tx(tenant).await?;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT request_id FROM erasure_requests WHERE tenant_id = $1 AND subject_digest = $2 ORDER BY requested_at",
    )
    .bind(tenant.as_uuid())
    .bind(digest)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await.map_err(DbError::from)?;
    let mut requests = Vec::with_capacity(ids.len());
    for id in ids {
        requests.push(get(router, tenant, id).await?);
    }
    let holds =
        holds(router, tenant).await?.into_iter().filter(|h| h.subject_digest.as_deref() == Some(digest)).collect();
    Ok(SubjectRecords { suppression, requests, holds })
}
