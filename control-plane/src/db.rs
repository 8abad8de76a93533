//! The connection pool and the tenant context.
//!
//! Row-level security policies compare each row's `tenant_id` with `nudge_current_tenant()`,
//! which reads the transaction-local setting `nudge.tenant_id`. That setting is made in one
//! place, the SQL function `nudge_enter_tenant` that [`ENTER_TENANT`] calls at the start of
//! every tenant transaction, whether sqlx ([`Database::enter`]) or sea-orm
//! ([`Database::enter_orm`]) opened it. It is transaction-local, so it ends with the
//! transaction and a pooled connection never carries one tenant's context into the next.

use std::time::Duration;

use nudge_tenants::{AccountId, TenantId};
use sqlx::{
    PgPool, Postgres, Transaction,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// A database operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had in time: the database is down or saturated.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    /// The tenant is being moved to another database; retry in a moment.
    #[error("the tenant is moving to another database")]
    TenantMoving,
}

impl DbError {
    /// Classifies a connection-level failure as unavailability.
    pub fn from_acquire(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => Self::Unavailable(e),
            other => Self::Query(other),
        }
    }
}

/// The statement every tenant transaction starts with, from sqlx and sea-orm alike: it sets
/// the transaction-local tenant context, holds the tenant's advisory lock shared, and says
/// whether the tenant is fenced out of this database (migration `enter_tenant`).
pub const ENTER_TENANT: &str = "SELECT nudge_enter_tenant($1, $2)";

/// The advisory-lock key of a tenant: the random half of its UUIDv7.
pub fn lock_key(tenant: TenantId) -> i64 {
    let bytes = tenant.as_uuid().into_bytes();
    let mut half = [0u8; 8];
    half.copy_from_slice(&bytes[8..]);
    i64::from_be_bytes(half)
}

/// Maps a sea-orm failure to the same errors sqlx failures map to.
pub fn orm_error(e: sea_orm::DbErr) -> DbError {
    match e {
        sea_orm::DbErr::ConnectionAcquire(_) | sea_orm::DbErr::Conn(_) => {
            DbError::Unavailable(sqlx::Error::Protocol(e.to_string()))
        }
        other => DbError::Query(sqlx::Error::Protocol(other.to_string())),
    }
}

/// The control plane's pool, connected as the runtime role.
#[derive(Clone, Debug)]
pub struct Database {
    pool: PgPool,
}

impl Database {
    /// A pool that connects lazily, so the service starts (and reports not-ready) while
    /// the database is down instead of refusing to start.
    pub fn connect_lazy(options: PgConnectOptions, max_connections: u32, acquire_timeout: Duration) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            .connect_lazy_with(options);
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A transaction acting for `tenant`: every statement in it sees and writes only that
    /// tenant's rows. For registry tables (memberships), which never move; a tenant's own
    /// rows are reached through [`crate::routing::TenantRouter::tenant_tx`].
    pub async fn tenant_tx(&self, tenant: TenantId) -> Result<Transaction<'static, Postgres>, DbError> {
        Ok(self.enter(tenant).await?.0)
    }

    /// Opens a sqlx transaction and enters `tenant` with [`ENTER_TENANT`]; whether the
    /// tenant is fenced out of this database.
    pub async fn enter(&self, tenant: TenantId) -> Result<(Transaction<'static, Postgres>, bool), DbError> {
        let mut tx = self.pool.begin().await.map_err(DbError::from_acquire)?;
        let fenced: bool =
            sqlx::query_scalar(ENTER_TENANT).bind(tenant.as_uuid()).bind(lock_key(tenant)).fetch_one(&mut *tx).await?;
        Ok((tx, fenced))
    }

    /// Opens a sea-orm transaction over the same pool and enters `tenant` with the same
    /// statement; whether the tenant is fenced out of this database.
    pub async fn enter_orm(&self, tenant: TenantId) -> Result<(sea_orm::DatabaseTransaction, bool), DbError> {
        use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};
        let orm = sea_orm::SqlxPostgresConnector::from_sqlx_postgres_pool(self.pool.clone());
        let txn = orm.begin().await.map_err(orm_error)?;
        let row = txn
            .query_one(Statement::from_sql_and_values(
                DbBackend::Postgres,
                ENTER_TENANT,
                [tenant.as_uuid().into(), lock_key(tenant).into()],
            ))
            .await
            .map_err(orm_error)?;
        let fenced = match row {
            Some(r) => r.try_get_by_index::<bool>(0).map_err(orm_error)?,
            None => return Err(DbError::Query(sqlx::Error::RowNotFound)),
        };
        Ok((txn, fenced))
    }

    /// A transaction acting for an authenticated account: it sees that account's
    /// memberships (to pick a store), and no tenant's data.
    pub async fn account_tx(&self, account: AccountId) -> Result<Transaction<'static, Postgres>, DbError> {
        let mut tx = self.pool.begin().await.map_err(DbError::from_acquire)?;
        sqlx::query("SELECT set_config('nudge.account_id', $1, true)")
            .bind(account.as_uuid().to_string())
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// A transaction with no tenant context, for platform-owned tables (cells, outbox).
    /// Tenant tables answer nothing inside it.
    pub async fn platform_tx(&self) -> Result<Transaction<'static, Postgres>, DbError> {
        self.pool.begin().await.map_err(DbError::from_acquire)
    }

    /// Whether the database answers, for readiness.
    pub async fn ping(&self) -> Result<(), DbError> {
        let mut conn = self.pool.acquire().await.map_err(DbError::from_acquire)?;
        sqlx::query("SELECT 1").execute(&mut *conn).await?;
        Ok(())
    }
}
