//! The control plane's schema: SQL files in `migrations/sql`, embedded at build time and
//! applied by the owner role. Services connect as `nudge_app`, which owns nothing and is
//! subject to row-level security.
//!
//! # Layout
//!
//! Everything is in this file: [`ensure_database`] creates the database when missing, and
//! [`migrate`] applies pending migrations.

use sqlx::{Connection, Executor, PgConnection, migrate::Migrator, postgres::PgConnectOptions};

static MIGRATOR: Migrator = sqlx::migrate!("./sql");

/// Creating or migrating the database failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting as the owner role: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("creating database {name}: {source}")]
    CreateDatabase { name: String, source: sqlx::Error },
    #[error("applying migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Creates the database `options` names when it does not exist, connecting to the
/// `postgres` maintenance database with the same credentials.
pub async fn ensure_database(options: &PgConnectOptions) -> Result<(), Error> {
    let name = options.get_database().unwrap_or("postgres").to_owned();
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres")).await.map_err(Error::Connect)?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .map_err(Error::Connect)?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match admin.execute(format!("CREATE DATABASE {quoted}").as_str()).await {
            Ok(_) => tracing::info!(database = %name, "database created"),
            // Another process created it between the check and here.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(source) => return Err(Error::CreateDatabase { name, source }),
        }
    }
    admin.close().await.map_err(Error::Connect)?;
    Ok(())
}

/// Applies every pending migration as the owner role.
pub async fn migrate(owner: &PgConnectOptions) -> Result<(), Error> {
    let mut conn = PgConnection::connect_with(owner).await.map_err(Error::Connect)?;
    // `run_direct` takes the connection itself; `run` goes through `Acquire`, whose future
    // is not provably `Send` inside generic callers (an API handler moving a tenant).
    MIGRATOR.run_direct(&mut conn).await?;
    conn.close().await.map_err(Error::Connect)?;
    Ok(())
}
