//! Receipts: when no store is pending, what every store removed is written down, signed
//! with the vault's Transit key and kept beside the request.

use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, Utc};
use nudge_contracts::{
    Topics,
    topics::{Scope, catalogue},
};
use nudge_platform_vault::{Vault, VaultError};
use nudge_tenants::TenantId;
use serde::Serialize;
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::{ErasureError, audit, steps_of};
use crate::{announce::announce, db::DbError, routing::TenantRouter};

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

/// Signs and keeps the receipt of `request_id` when no store is pending any more (and it
/// has none yet); re-announces the tenant so its cell drops the order.
pub(super) async fn complete_if_done(
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
