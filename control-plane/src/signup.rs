//! Self-service signup.
//!
//! One transaction creates the tenant (acting as that tenant under row-level security), its
//! publishable and secret keys, its allowed origins, and the outbox record that tells its
//! cell, with the lifecycle steps in the audit log. Either all of it happens or none; the
//! relay publishes the record after commit.

use chrono::{DateTime, Utc};
use nudge_tenants::{
    AccountId, Actor, AllowedOrigin, Email, KeyError, Password, PublishableKey, Role, SecretKey, TenantId, TenantName,
    TenantState,
};
use uuid::Uuid;

use crate::{
    accounts::{self, AccountError},
    announce::announce,
    auth::passwords::{self, PasswordHashError},
    db::{Database, DbError},
    lifecycle,
    placement::Cell,
};

/// The most origins one tenant may allow.
pub const MAX_ORIGINS: usize = 20;

/// A validated signup.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub name: TenantName,
    pub allowed_origins: Vec<AllowedOrigin>,
    /// The store's first member, its owner.
    pub owner_email: Email,
    pub owner_password: Password,
}

/// What signup created. The secret key exists in clear only in this value.
#[derive(Debug)]
pub struct SignedUp {
    pub tenant_id: TenantId,
    pub name: TenantName,
    pub state: TenantState,
    pub cell: Cell,
    pub publishable_key: PublishableKey,
    pub secret_key: SecretKey,
    pub allowed_origins: Vec<AllowedOrigin>,
    pub owner: AccountId,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum SignupError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Account(#[from] AccountError),
}

impl From<sqlx::Error> for SignupError {
    fn from(e: sqlx::Error) -> Self {
        match AccountError::from(e) {
            AccountError::Db(db) => Self::Db(db),
            other => Self::Account(other),
        }
    }
}

impl From<PasswordHashError> for SignupError {
    fn from(e: PasswordHashError) -> Self {
        Self::Account(AccountError::Hash(e))
    }
}

/// Creates the tenant `tenant_id` (a fresh id the provisioner has placed) on `cell`.
/// Placement on a shared cell needs nothing provisioned, so the tenant passes
/// `pending → provisioning → active` inside the transaction and its cell learns it as active.
pub async fn sign_up(
    db: &Database,
    topics: &nudge_contracts::Topics,
    tenant_id: TenantId,
    cell: &Cell,
    new: NewTenant,
    traceparent: Option<String>,
) -> Result<SignedUp, SignupError> {
    let publishable_key = PublishableKey::generate()?;
    let secret_key = SecretKey::generate()?;
    // Nothing to provision on a shared cell: the tenant is active once the transaction commits.
    let state = TenantState::Active;

    // Slow by design; done before the transaction holds a connection.
    let password_hash = passwords::hash(&new.owner_password).await?;
    let mut tx = db.tenant_tx(tenant_id).await?;
    let created_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO tenants (tenant_id, name, state, isolation, cell_id, revision)
         VALUES ($1, $2, $3, 'shared', $4, $5) RETURNING created_at",
    )
    .bind(tenant_id.as_uuid())
    .bind(new.name.as_str())
    .bind(state.as_str())
    .bind(cell.id.as_str())
    .bind(1_i64)
    .fetch_one(&mut *tx)
    .await?;

    sqlx::query(
        "INSERT INTO api_keys (tenant_id, key_id, kind, publishable_key, visible_prefix)
         VALUES ($1, $2, 'publishable', $3, $4)",
    )
    .bind(tenant_id.as_uuid())
    .bind(Uuid::now_v7())
    .bind(publishable_key.as_str())
    .bind(&publishable_key.as_str()[..11])
    .execute(&mut *tx)
    .await?;

    sqlx::query(
        "INSERT INTO api_keys (tenant_id, key_id, kind, secret_hash, visible_prefix, name, scopes)
         VALUES ($1, $2, 'secret', $3, $4, 'default', ARRAY['events:write'])",
    )
    .bind(tenant_id.as_uuid())
    .bind(Uuid::now_v7())
    .bind(secret_key.hash().as_bytes().as_slice())
    .bind(secret_key.visible_prefix())
    .execute(&mut *tx)
    .await?;

    let origins: Vec<String> = new.allowed_origins.iter().map(|o| o.as_str().to_owned()).collect();
    sqlx::query("INSERT INTO tenant_origins (tenant_id, origin) SELECT $1, unnest($2::text[])")
        .bind(tenant_id.as_uuid())
        .bind(&origins)
        .execute(&mut *tx)
        .await?;

    let mut from = None;
    for to in [TenantState::Pending, TenantState::Provisioning, TenantState::Active] {
        lifecycle::record(
            &mut tx,
            tenant_id,
            &Actor::System("signup"),
            from,
            to,
            "self-service signup on a shared cell",
        )
        .await?;
        from = Some(to);
    }
    let owner = accounts::create(&mut tx, &new.owner_email, &password_hash).await?;
    accounts::add_membership(&mut tx, tenant_id, owner, Role::Owner).await?;
    announce(&mut tx, topics, tenant_id, traceparent).await?;
    tx.commit().await?;

    tracing::info!(tenant_id = %tenant_id, cell_id = %cell.id, "tenant signed up");
    Ok(SignedUp {
        tenant_id,
        name: new.name,
        state,
        cell: cell.clone(),
        publishable_key,
        secret_key,
        allowed_origins: new.allowed_origins,
        owner,
        created_at,
    })
}
