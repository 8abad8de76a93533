//! The per-tenant connection router: the same repository code reaches a tenant's rows
//! whether they live in the main database or in a dedicated one.
//!
//! [`TenantRouter::tenant_tx`] finds the tenant's database (the main one unless the
//! registry's `tenant_routes` says otherwise), opens a transaction there with the tenant
//! context set, and takes the tenant's advisory lock in shared mode. A tenant being moved out
//! of a database is *fenced* there (see `dedicated`): the mover takes the same lock
//! exclusively, so it waits for in-flight transactions and none starts meanwhile; a
//! transaction that then finds the fence drops its cached route and goes where the tenant
//! now lives, or answers [`DbError::TenantMoving`] while the copy is still running.

use std::{
    collections::HashMap,
    sync::{PoisonError, RwLock},
    time::Duration,
};

use nudge_tenants::TenantId;
use sqlx::{Postgres, Transaction};

use crate::{
    config::DatabaseConfig,
    db::{Database, DbError},
};

pub use crate::db::lock_key;

/// The name of a tenant's dedicated database.
pub fn dedicated_name(tenant: TenantId) -> String {
    format!("nudge_t_{}", tenant.as_uuid().simple())
}

/// Routes tenant transactions to the tenant's database.
pub struct TenantRouter {
    main: Database,
    config: DatabaseConfig,
    /// Tenant → dedicated database name (`None`: the main database).
    routes: RwLock<HashMap<TenantId, Option<String>>>,
    pools: RwLock<HashMap<String, Database>>,
}

impl std::fmt::Debug for TenantRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantRouter").finish_non_exhaustive()
    }
}

impl TenantRouter {
    pub fn new(main: Database, config: DatabaseConfig) -> Self {
        Self { main, config, routes: RwLock::default(), pools: RwLock::default() }
    }

    /// The main database, which is also the registry (accounts, memberships, routes).
    pub fn registry(&self) -> &Database {
        &self.main
    }

    pub fn config(&self) -> &DatabaseConfig {
        &self.config
    }

    /// The runtime pool of dedicated database `name` (connecting lazily).
    pub fn pool_for(&self, name: &str) -> Result<Database, DbError> {
        if let Some(db) = self.pools.read().unwrap_or_else(PoisonError::into_inner).get(name) {
            return Ok(db.clone());
        }
        let options =
            self.config.dedicated_options(name).map_err(|e| DbError::Query(sqlx::Error::Configuration(e.into())))?;
        let db = Database::connect_lazy(
            options,
            self.config.dedicated_max_connections,
            Duration::from_millis(self.config.acquire_timeout_ms),
        );
        let mut pools = self.pools.write().unwrap_or_else(PoisonError::into_inner);
        Ok(pools.entry(name.to_owned()).or_insert(db).clone())
    }

    /// Where `tenant` lives now, from the cache or the registry.
    async fn route(&self, tenant: TenantId) -> Result<Database, DbError> {
        let cached = self.routes.read().unwrap_or_else(PoisonError::into_inner).get(&tenant).cloned();
        let name = match cached {
            Some(name) => name,
            None => {
                let mut tx = self.main.tenant_tx(tenant).await?;
                let name: Option<String> =
                    sqlx::query_scalar("SELECT database FROM tenant_routes WHERE tenant_id = $1")
                        .bind(tenant.as_uuid())
                        .fetch_optional(&mut *tx)
                        .await?;
                tx.commit().await?;
                self.routes.write().unwrap_or_else(PoisonError::into_inner).insert(tenant, name.clone());
                name
            }
        };
        match name {
            None => Ok(self.main.clone()),
            Some(name) => self.pool_for(&name),
        }
    }

    /// Forgets `tenant`'s cached route and the pool it led to, whose database is gone.
    fn forget_stale(&self, tenant: TenantId) {
        let stale = self.routes.write().unwrap_or_else(PoisonError::into_inner).remove(&tenant).flatten();
        if let Some(name) = stale {
            self.forget_pool(&name);
        }
    }

    /// Closes and forgets the pool of dedicated database `name` (dropped).
    pub fn forget_pool(&self, name: &str) {
        if let Some(db) = self.pools.write().unwrap_or_else(PoisonError::into_inner).remove(name) {
            tokio::spawn(async move { db.pool().close().await });
        }
    }

    /// Drops the cached route of `tenant` (it moved).
    pub fn forget(&self, tenant: TenantId) {
        self.routes.write().unwrap_or_else(PoisonError::into_inner).remove(&tenant);
    }

    /// The name of the database `tenant` lives in (`None`: the main one).
    pub async fn database_of(&self, tenant: TenantId) -> Result<Option<String>, DbError> {
        self.route(tenant).await?;
        Ok(self.routes.read().unwrap_or_else(PoisonError::into_inner).get(&tenant).cloned().flatten())
    }

    /// A sqlx transaction acting for `tenant`, in the database it lives in.
    pub async fn tenant_tx(&self, tenant: TenantId) -> Result<Transaction<'static, Postgres>, DbError> {
        for _ in 0..2 {
            let (tx, fenced) = match self.route(tenant).await?.enter(tenant).await {
                Ok(entered) => entered,
                // A dedicated database dropped by another replica (an offboarded store
                // returned to the main one): the cached route is stale.
                Err(e) if is_missing_database(&e) => {
                    self.forget_stale(tenant);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if !fenced {
                return Ok(tx);
            }
            // Moved away (or moving): ask the registry again.
            drop(tx);
            self.forget(tenant);
        }
        Err(DbError::TenantMoving)
    }

    /// A sea-orm transaction acting for `tenant`, in the database it lives in: the same
    /// routing, the same entry statement, the same fence.
    pub async fn tenant_orm_tx(&self, tenant: TenantId) -> Result<sea_orm::DatabaseTransaction, DbError> {
        for _ in 0..2 {
            let (txn, fenced) = match self.route(tenant).await?.enter_orm(tenant).await {
                Ok(entered) => entered,
                Err(e) if is_missing_database(&e) => {
                    self.forget_stale(tenant);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if !fenced {
                return Ok(txn);
            }
            drop(txn);
            self.forget(tenant);
        }
        Err(DbError::TenantMoving)
    }

    /// Every dedicated database the registry knows, for the outbox relays.
    pub async fn dedicated_databases(&self) -> Result<Vec<String>, DbError> {
        let mut tx = self.main.platform_tx().await?;
        let names = sqlx::query_scalar("SELECT name FROM databases ORDER BY name").fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(names)
    }

    /// The tenant ids `sql` (a `SECURITY DEFINER` function's `SELECT`, with `arg` as `$1`)
    /// answers in every database, each once, for a sweep over all stores. The main database
    /// must answer; a dedicated one that cannot is logged and passed by (its stores wait for
    /// the next sweep), so it holds up no other's.
    pub async fn tenants_everywhere(&self, sql: &str, arg: SweepArg<'_>) -> Result<Vec<TenantId>, DbError> {
        let mut found = Vec::new();
        let mut databases = vec![None];
        databases.extend(self.dedicated_databases().await?.into_iter().map(Some));
        for database in databases {
            let listed = async {
                let db = match &database {
                    None => self.main.clone(),
                    Some(name) => self.pool_for(name)?,
                };
                let mut tx = db.platform_tx().await?;
                let query = sqlx::query_scalar::<_, uuid::Uuid>(sql);
                let query = match arg {
                    SweepArg::None => query,
                    SweepArg::At(at) => query.bind(at),
                    SweepArg::Text(text) => query.bind(text),
                };
                let ids = query.fetch_all(&mut *tx).await?;
                tx.commit().await?;
                Ok::<_, DbError>(ids)
            };
            match listed.await {
                Ok(ids) => found.extend(ids.into_iter().map(TenantId::from_uuid)),
                Err(e) if database.is_none() => return Err(e),
                Err(e) => {
                    tracing::warn!(database = database.as_deref().unwrap_or_default(), error = %e, "a sweep could not list the stores of a dedicated database");
                }
            }
        }
        // A store left in a database it moved out of (an interrupted move) is listed there too.
        let mut seen = std::collections::HashSet::new();
        found.retain(|t| seen.insert(*t));
        Ok(found)
    }
}

/// The argument of a [`TenantRouter::tenants_everywhere`] query.
#[derive(Debug, Clone, Copy)]
pub enum SweepArg<'a> {
    None,
    At(chrono::DateTime<chrono::Utc>),
    Text(&'a str),
}

/// Whether `e` says the database connected to does not exist (SQLSTATE 3D000).
fn is_missing_database(e: &DbError) -> bool {
    match e {
        DbError::Query(sqlx::Error::Database(db)) | DbError::Unavailable(sqlx::Error::Database(db)) => {
            db.code().as_deref() == Some("3D000")
        }
        _ => false,
    }
}
