//! A store's API keys: publishable keys for browsers, secret keys for its servers. Creating
//! or revoking a key announces the store again, so cells learn of it within seconds.

use chrono::{DateTime, Utc};
use nudge_contracts::Topics;
use nudge_tenants::{AccountId, KeyError, KeyId, SecretKey, TenantId};
use sqlx::Row;

use crate::{announce::announce, db::DbError, routing::TenantRouter};

/// What a secret key may do.
pub const SCOPES: [&str; 5] = [
    // Send events from a server (no browser, no Origin).
    "events:write",
    // Read shoppers' current features at the cell.
    "features:read",
    // Export everything the cell keeps about a shopper (access and portability requests).
    "shoppers:export",
    // Read the store's send log at the cell (campaign sends, skips and their reasons).
    "sends:read",
    // Read the store's lift reports at the cell (campaigns against their holdouts).
    "reports:read",
];

#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error("no such key")]
    NotFound,
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl From<sqlx::Error> for ApiKeyError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

/// A key as its store's members see it (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub key_id: KeyId,
    /// `publishable` or `secret`.
    pub kind: String,
    pub name: String,
    /// The publishable key in full; the first characters of a secret key.
    pub display: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Creates a secret key; the key in clear is in the answer and nowhere else.
pub async fn create_secret(
    db: &TenantRouter,
    topics: &Topics,
    tenant: TenantId,
    name: &str,
    scopes: &[String],
    created_by: AccountId,
    traceparent: Option<String>,
) -> Result<(KeyInfo, SecretKey), ApiKeyError> {
    let key = SecretKey::generate()?;
    let key_id = KeyId::new();
    let mut tx = db.tenant_tx(tenant).await?;
    let created_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO api_keys (tenant_id, key_id, kind, secret_hash, visible_prefix, name, scopes, created_by)
         VALUES ($1, $2, 'secret', $3, $4, $5, $6, $7) RETURNING created_at",
    )
    .bind(tenant.as_uuid())
    .bind(key_id.as_uuid())
    .bind(key.hash().as_bytes().as_slice())
    .bind(key.visible_prefix())
    .bind(name)
    .bind(scopes)
    .bind(created_by.as_uuid())
    .fetch_one(&mut *tx)
    .await?;
    announce(&mut tx, topics, tenant, traceparent).await?;
    tx.commit().await?;
    let info = KeyInfo {
        key_id,
        kind: "secret".into(),
        name: name.to_owned(),
        display: key.visible_prefix().to_owned(),
        scopes: scopes.to_vec(),
        created_at,
        revoked_at: None,
    };
    Ok((info, key))
}

/// Every key of the store, newest first.
pub async fn list(db: &TenantRouter, tenant: TenantId) -> Result<Vec<KeyInfo>, ApiKeyError> {
    let mut tx = db.tenant_tx(tenant).await?;
    let rows = sqlx::query(
        "SELECT key_id, kind, name, coalesce(publishable_key, visible_prefix) AS display, scopes, created_at, revoked_at
         FROM api_keys WHERE tenant_id = $1 ORDER BY created_at DESC",
    )
    .bind(tenant.as_uuid())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| {
            Ok(KeyInfo {
                key_id: KeyId::from_uuid(r.try_get("key_id")?),
                kind: r.try_get("kind")?,
                name: r.try_get("name")?,
                display: r.try_get("display")?,
                scopes: r.try_get("scopes")?,
                created_at: r.try_get("created_at")?,
                revoked_at: r.try_get("revoked_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// Revokes a key of the store (idempotent). Another store's key id is `NotFound`.
pub async fn revoke(
    db: &TenantRouter,
    topics: &Topics,
    tenant: TenantId,
    key_id: KeyId,
    traceparent: Option<String>,
) -> Result<(), ApiKeyError> {
    let mut tx = db.tenant_tx(tenant).await?;
    let revoked: Option<bool> = sqlx::query_scalar(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
         WHERE tenant_id = $1 AND key_id = $2 RETURNING revoked_at = now()",
    )
    .bind(tenant.as_uuid())
    .bind(key_id.as_uuid())
    .fetch_optional(&mut *tx)
    .await?;
    match revoked {
        None => return Err(ApiKeyError::NotFound),
        Some(true) => {
            announce(&mut tx, topics, tenant, traceparent).await?;
        }
        Some(false) => {}
    }
    tx.commit().await?;
    Ok(())
}
