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
//!
//! # Layout
//! - this file: filing a request, reading requests, and what is kept about a subject;
//! - `receipt`: completing a request with its signed receipt;
//! - `reports`: the orders a cell is sent and the reports it sends back;
//! - `legal_holds`: placing, listing and releasing holds.

mod legal_holds;
mod receipt;
mod reports;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use nudge_contracts::Topics;
use nudge_platform_vault::VaultError;
use nudge_tenants::TenantId;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

pub use self::{
    legal_holds::{LegalHold, holds, place_hold, release_hold},
    receipt::{ReceiptSigner, SignedReceipt, receipt},
    reports::{ReportSink, pending_orders},
};
use crate::{announce::announce, db::DbError, routing::TenantRouter};

/// How long a request may take at most: the legal limit (one month).
pub const DEADLINE_DAYS: i64 = 30;

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
    let completed = receipt::complete_if_done(&mut tx, topics, signer, tenant, request_id, traceparent).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(completed)
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
