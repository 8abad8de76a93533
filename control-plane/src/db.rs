//! The connection pool and the tenant context.
//!
//! Row-level security policies compare each row's `tenant_id` with `nudge_current_tenant()`,
//! which reads the transaction-local setting `nudge.tenant_id`. [`Database::tenant_tx`] is
//! the only place that setting is made, always with `is_local = true`, so it ends with the
//! transaction and a pooled connection never carries one tenant's context into the next
//! request.

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
    /// tenant's rows.
    pub async fn tenant_tx(&self, tenant: TenantId) -> Result<Transaction<'static, Postgres>, DbError> {
        let mut tx = self.pool.begin().await.map_err(DbError::from_acquire)?;
        sqlx::query("SELECT set_config('nudge.tenant_id', $1, true)")
            .bind(tenant.as_uuid().to_string())
            .execute(&mut *tx)
            .await?;
        Ok(tx)
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
