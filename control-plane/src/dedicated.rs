//! Moving a tenant from the main database to a dedicated one.
//!
//! The cutover, in order:
//! 1. **Prepare**: create the dedicated database, migrate it, run the catalog lint on it,
//!    and record it in the registry (`databases`), so its outbox relay starts.
//! 2. **Fence**: in the source database, take the tenant's advisory lock exclusively (this
//!    waits for every in-flight transaction of the tenant, which all hold it shared) and
//!    write a `tenant_fences` row. From the commit on, any transaction of the tenant that
//!    reaches the source sees the fence and goes back to the router; writes are refused with
//!    `tenant_moving` (503, retry in a second) until the flip.
//! 3. **Copy** every row of the tenant, table by table in foreign-key order, from a single
//!    snapshot of the (now frozen) source into the target, and check the counts match.
//! 4. **Flip**: record the route in the registry. Writers retrying after the fence now land
//!    in the dedicated database.
//! 5. **Purge** the tenant's rows from the source, keeping only the fence (so a replica with
//!    a stale cached route is sent on, never served stale data).
//!
//! No write is lost (nothing commits in the source after the fence; everything before it is
//! copied) and none is duplicated (the copy runs once, from one snapshot, into an empty
//! target; a write refused during the move was not committed anywhere). Records already in
//! the source's outbox are still published by its relay; new ones come from the target's.

use nudge_tenants::TenantId;
use sqlx::{Connection, Executor, PgConnection, Row, postgres::PgConnectOptions};

use crate::{
    catalog,
    db::DbError,
    routing::{TenantRouter, dedicated_name, lock_key},
};

/// Tables with a `tenant_id` that belong to the registry and never move.
const REGISTRY_TABLES: [&str; 4] = ["memberships", "membership_audit", "tenant_routes", "tenant_fences"];

#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error("no such tenant")]
    NotFound,
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Router(#[from] DbError),
    #[error(transparent)]
    Migrate(#[from] nudge_migrations::Error),
    #[error(transparent)]
    Lint(#[from] catalog::CheckError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("copy of {table} does not match: {source_rows} rows in the source, {target_rows} in the target")]
    Mismatch { table: String, source_rows: i64, target_rows: i64 },
}

/// What a move did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub database: String,
    /// Rows copied, by table.
    pub rows: Vec<(String, i64)>,
    /// False when the tenant already lived in its dedicated database.
    pub moved: bool,
}

async fn owner_conn(options: &PgConnectOptions, tenant: TenantId) -> Result<PgConnection, MoveError> {
    let mut conn = PgConnection::connect_with(options).await?;
    // Session-level context: the owner may be subject to FORCE'd row-level security.
    sqlx::query("SELECT set_config('nudge.tenant_id', $1, false)")
        .bind(tenant.as_uuid().to_string())
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

/// The tenant tables to copy, parents before children.
async fn tables_in_order(conn: &mut PgConnection) -> Result<Vec<String>, sqlx::Error> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind = 'r'
           AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id')
         ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    let tables: Vec<String> = tables.into_iter().filter(|t| !REGISTRY_TABLES.contains(&t.as_str())).collect();
    // Parents before children, by the foreign keys between them (`tenants` first: every
    // other tenant table references it).
    let references: Vec<(String, String)> = sqlx::query_as(
        "SELECT child.relname::text, parent.relname::text
         FROM pg_constraint k
         JOIN pg_class child ON child.oid = k.conrelid
         JOIN pg_class parent ON parent.oid = k.confrelid
         JOIN pg_namespace n ON n.oid = child.relnamespace
         WHERE k.contype = 'f' AND n.nspname = 'public' AND k.conrelid <> k.confrelid",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(parents_first(tables, &references))
}

/// `tables` ordered so that each comes after the tables it references (`references`:
/// (child, parent)), alphabetically among those free to go next.
fn parents_first(tables: Vec<String>, references: &[(String, String)]) -> Vec<String> {
    let mut left: std::collections::BTreeSet<String> = tables.into_iter().collect();
    let mut ordered = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let ready = left
            .iter()
            .find(|t| !references.iter().any(|(child, parent)| child == *t && parent != *t && left.contains(parent)))
            .cloned();
        // A cycle (none exists; kept safe): the rest in name order.
        let next = ready.unwrap_or_else(|| left.iter().next().cloned().unwrap_or_default());
        left.remove(&next);
        ordered.push(next);
    }
    ordered
}

/// Moves `tenant` to its dedicated database; a tenant already there is left as it is.
pub async fn move_to_dedicated(router: &TenantRouter, tenant: TenantId) -> Result<Moved, MoveError> {
    let name = dedicated_name(tenant);
    let config = router.config();
    let source_opts = config.owner_options().map_err(MoveError::Config)?;
    let target_opts = config.dedicated_owner_options(&name).map_err(MoveError::Config)?;
    if router.database_of(tenant).await?.is_some() {
        // Already moved; finish a purge an earlier attempt may have left undone.
        let mut source = owner_conn(&source_opts, tenant).await?;
        purge(&mut source, tenant).await?;
        source.close().await?;
        return Ok(Moved { database: name, rows: vec![], moved: false });
    }

    // 1. Prepare.
    let mut source = owner_conn(&source_opts, tenant).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE tenant_id = $1)")
        .bind(tenant.as_uuid())
        .fetch_one(&mut source)
        .await?;
    if !exists {
        return Err(MoveError::NotFound);
    }
    nudge_migrations::ensure_database(&target_opts).await?;
    nudge_migrations::migrate(&target_opts).await?;
    catalog::check(&target_opts).await?;
    source.execute(sqlx::query("INSERT INTO databases (name) VALUES ($1) ON CONFLICT DO NOTHING").bind(&name)).await?;
    tracing::info!(tenant_id = %tenant, database = %name, "dedicated database ready");

    // 2. Fence. A fence left by an interrupted earlier attempt is kept: this run resumes it.
    let mut fence = Connection::begin(&mut source).await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(lock_key(tenant)).execute(&mut *fence).await?;
    sqlx::query("INSERT INTO tenant_fences (tenant_id, moved_to) VALUES ($1, $2) ON CONFLICT (tenant_id) DO NOTHING")
        .bind(tenant.as_uuid())
        .bind(&name)
        .execute(&mut *fence)
        .await?;
    fence.commit().await?;
    tracing::info!(tenant_id = %tenant, "writes fenced in the main database");

    // 3 and 4. Drain, copy and flip. If any of it fails the fence is lifted again, so the
    // tenant keeps working where it was; a later attempt starts the copy afresh.
    let copied = match drain_copy_and_flip(router, tenant, &name, &mut source, &target_opts).await {
        Ok(copied) => copied,
        Err(e) => {
            tracing::error!(tenant_id = %tenant, error = %e, "move failed; lifting the fence");
            if let Err(lift) = lift_fence(&source_opts, tenant, None).await {
                tracing::error!(tenant_id = %tenant, error = %lift, "lifting the fence failed; retry the move to finish or lift it");
            }
            return Err(e);
        }
    };

    // 5. Purge the source, children first; the fence stays.
    purge(&mut source, tenant).await?;
    source.close().await?;
    tracing::info!(tenant_id = %tenant, database = %name, "tenant rows purged from the main database");
    Ok(Moved { database: name, rows: copied, moved: true })
}

/// How long the move waits for the source's outbox to publish the tenant's pending records.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits until the source's outbox has published every record about the tenant, so records
/// from the two databases' relays can never interleave out of order on a compacted topic.
async fn drain_outbox(source: &mut PgConnection, tenant: TenantId) -> Result<(), MoveError> {
    let key = tenant.to_string().into_bytes();
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    loop {
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM outbox WHERE record_key = $1 AND published_at IS NULL AND parked_at IS NULL",
        )
        .bind(&key)
        .fetch_one(&mut *source)
        .await?;
        if pending == 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(MoveError::Config(format!("{pending} outbox records of the tenant are still unpublished")));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Drains the tenant's outbox, copies its rows from one snapshot of the (fenced) source into
/// the target (emptied first, in case an earlier attempt committed a copy), then records the
/// route.
async fn drain_copy_and_flip(
    router: &TenantRouter,
    tenant: TenantId,
    name: &str,
    source: &mut PgConnection,
    target_opts: &PgConnectOptions,
) -> Result<Vec<(String, i64)>, MoveError> {
    drain_outbox(&mut *source, tenant).await?;
    let mut target = owner_conn(target_opts, tenant).await?;
    let copied = copy_rows(&mut *source, &mut target, tenant).await?;
    target.close().await?;

    // 4. Flip.
    sqlx::query("INSERT INTO tenant_routes (tenant_id, database) VALUES ($1, $2)")
        .bind(tenant.as_uuid())
        .bind(name)
        .execute(&mut *source)
        .await?;
    router.forget(tenant);
    tracing::info!(tenant_id = %tenant, database = %name, "route flipped to the dedicated database");
    Ok(copied)
}

/// For an offboarded store's purge: brings the rows of `tenant` back from its dedicated
/// database to the main one (where its row, audit trails and receipts remain once it is
/// deleted), routes it there again, and drops the dedicated database. The move in reverse:
/// fenced in the dedicated database (writes meanwhile get `tenant_moving`), its outbox
/// drained, every row copied from one snapshot, the route removed. Resumes an earlier
/// attempt: a store already routed to the main database has only its database `name`
/// dropped, if it is still there. Whether a database was dropped.
pub async fn return_and_drop(router: &TenantRouter, tenant: TenantId, name: &str) -> Result<bool, MoveError> {
    let config = router.config();
    let main_opts = config.owner_options().map_err(MoveError::Config)?;
    if router.database_of(tenant).await?.as_deref() != Some(name) {
        let mut main = owner_conn(&main_opts, tenant).await?;
        let dropped = drop_database(&mut main, name).await?;
        main.close().await?;
        return Ok(dropped);
    }
    let name = name.to_owned();
    let dedicated_opts = config.dedicated_owner_options(&name).map_err(MoveError::Config)?;

    let mut source = owner_conn(&dedicated_opts, tenant).await?;
    let mut fence = Connection::begin(&mut source).await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(lock_key(tenant)).execute(&mut *fence).await?;
    sqlx::query(
        "INSERT INTO tenant_fences (tenant_id, moved_to) VALUES ($1, 'main') ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tenant.as_uuid())
    .execute(&mut *fence)
    .await?;
    fence.commit().await?;
    // If the copy fails the fence is lifted again, so the store stays readable where it is
    // and the next attempt starts afresh.
    let copy = async {
        drain_outbox(&mut source, tenant).await?;
        let mut target = owner_conn(&main_opts, tenant).await?;
        let copied = copy_rows(&mut source, &mut target, tenant).await?;
        Ok::<_, MoveError>((target, copied))
    };
    let (mut target, copied) = match copy.await {
        Ok(done) => done,
        Err(e) => {
            if let Err(lift) = lift_fence(&dedicated_opts, tenant, None).await {
                tracing::error!(tenant_id = %tenant, error = %lift, "lifting the fence after a failed return failed; the next attempt lifts it");
            }
            return Err(e);
        }
    };
    source.close().await?;

    // The flip: the registry routes the store to the main database again, whose fence (left
    // by the move) goes.
    let mut flip = Connection::begin(&mut target).await?;
    sqlx::query("DELETE FROM tenant_routes WHERE tenant_id = $1").bind(tenant.as_uuid()).execute(&mut *flip).await?;
    sqlx::query("DELETE FROM tenant_fences WHERE tenant_id = $1").bind(tenant.as_uuid()).execute(&mut *flip).await?;
    sqlx::query(
        "DELETE FROM databases WHERE name = $1 AND NOT EXISTS (SELECT 1 FROM tenant_routes WHERE database = $1)",
    )
    .bind(&name)
    .execute(&mut *flip)
    .await?;
    flip.commit().await?;
    router.forget(tenant);
    router.forget_pool(&name);
    tracing::info!(tenant_id = %tenant, database = %name, tables = copied.len(), "store returned to the main database");

    let dropped = drop_database(&mut target, &name).await?;
    target.close().await?;
    tracing::info!(tenant_id = %tenant, database = %name, "dedicated database dropped");
    Ok(dropped)
}

/// Lifts the fence an interrupted [`return_and_drop`] left in `tenant`'s dedicated database
/// (a process that died mid-copy), so the purge can start the return again; whether there
/// was one. A move's fence (in the main database, towards the dedicated one) is not touched.
pub async fn lift_return_fence(router: &TenantRouter, tenant: TenantId) -> Result<bool, MoveError> {
    let Some(name) = router.database_of(tenant).await? else { return Ok(false) };
    let options = router.config().dedicated_owner_options(&name).map_err(MoveError::Config)?;
    lift_fence(&options, tenant, Some("main")).await
}

/// Deletes `tenant`'s fence in the database of `options` (only one towards `moved_to`, when
/// given), on a fresh connection: the one a failure happened on may be unusable. Whether
/// there was one.
async fn lift_fence(options: &PgConnectOptions, tenant: TenantId, moved_to: Option<&str>) -> Result<bool, MoveError> {
    let mut conn = owner_conn(options, tenant).await?;
    let lifted = sqlx::query("DELETE FROM tenant_fences WHERE tenant_id = $1 AND ($2::text IS NULL OR moved_to = $2)")
        .bind(tenant.as_uuid())
        .bind(moved_to)
        .execute(&mut conn)
        .await?
        .rows_affected();
    conn.close().await?;
    Ok(lifted > 0)
}

/// Drops database `name` if it exists, ending the sessions still open on it (the relay's,
/// pooled connections); whether it existed.
async fn drop_database(conn: &mut PgConnection, name: &str) -> Result<bool, MoveError> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut *conn)
        .await?;
    if exists {
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", name.replace('"', "\"\"")))
            .execute(&mut *conn)
            .await?;
    }
    Ok(exists)
}

/// Copies every row of `tenant` from one snapshot of `source` into `target` (emptied of the
/// tenant's rows first, in case an earlier attempt committed a copy), with the platform rows
/// they refer to, checking the counts; rows copied per table.
async fn copy_rows(
    source: &mut PgConnection,
    target: &mut PgConnection,
    tenant: TenantId,
) -> Result<Vec<(String, i64)>, MoveError> {
    let tables = tables_in_order(&mut *source).await?;
    let mut read = Connection::begin(&mut *source).await?;
    read.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").await?;
    let mut write = Connection::begin(&mut *target).await?;
    // An earlier attempt may have committed a copy and failed before the flip: start clean.
    write.execute("SET LOCAL nudge.purge_moved_tenant = 'on'").await?;
    for table in tables.iter().rev() {
        sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
            .bind(tenant.as_uuid())
            .execute(&mut *write)
            .await?;
    }

    // The platform rows the tenant's rows refer to (its cell).
    let cells: Vec<String> = sqlx::query_scalar(
        "SELECT row_to_json(c)::text FROM cells c WHERE cell_id = (SELECT cell_id FROM tenants WHERE tenant_id = $1)",
    )
    .bind(tenant.as_uuid())
    .fetch_all(&mut *read)
    .await?;
    for cell in &cells {
        sqlx::query(
            "INSERT INTO cells SELECT * FROM json_populate_record(NULL::cells, $1::json) ON CONFLICT DO NOTHING",
        )
        .bind(cell)
        .execute(&mut *write)
        .await?;
    }

    let mut copied = Vec::new();
    for table in &tables {
        let rows: Vec<String> =
            sqlx::query_scalar(&format!("SELECT row_to_json(t)::text FROM {table} t WHERE tenant_id = $1"))
                .bind(tenant.as_uuid())
                .fetch_all(&mut *read)
                .await?;
        for row in &rows {
            sqlx::query(&format!(
                "INSERT INTO {table} OVERRIDING SYSTEM VALUE SELECT * FROM json_populate_record(NULL::{table}, $1::json)"
            ))
            .bind(row)
            .execute(&mut *write)
            .await?;
        }
        let target_rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE tenant_id = $1"))
            .bind(tenant.as_uuid())
            .fetch_one(&mut *write)
            .await?;
        if target_rows != rows.len() as i64 {
            return Err(MoveError::Mismatch { table: table.clone(), source_rows: rows.len() as i64, target_rows });
        }
        copied.push((table.clone(), target_rows));
    }

    // Identity columns continue after the copied values.
    let identities = sqlx::query(
        "SELECT c.relname AS tbl, a.attname AS col FROM pg_attribute a
         JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND a.attidentity <> '' AND NOT a.attisdropped",
    )
    .fetch_all(&mut *write)
    .await?;
    for identity in identities {
        let (tbl, col): (String, String) = (identity.try_get("tbl")?, identity.try_get("col")?);
        sqlx::query(&format!(
            "SELECT setval(pg_get_serial_sequence('{tbl}', '{col}'), greatest((SELECT max({col}) FROM {tbl}), 1))"
        ))
        .execute(&mut *write)
        .await?;
    }
    write.commit().await?;
    read.commit().await?;

    Ok(copied)
}

/// Deletes a moved tenant's rows from the main database, children first; the fence stays.
async fn purge(source: &mut PgConnection, tenant: TenantId) -> Result<(), MoveError> {
    let tables = tables_in_order(&mut *source).await?;
    let mut purge = Connection::begin(&mut *source).await?;
    purge.execute("SET LOCAL nudge.purge_moved_tenant = 'on'").await?;
    for table in tables.iter().rev() {
        sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
            .bind(tenant.as_uuid())
            .execute(&mut *purge)
            .await?;
    }
    purge.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_copied_before_their_children() {
        let tables = ["campaign_audit", "campaign_versions", "campaigns", "keys", "tenants"].map(String::from).to_vec();
        let references = [
            ("campaign_audit", "campaigns"),
            ("campaign_versions", "campaigns"),
            ("campaigns", "tenants"),
            ("campaign_audit", "tenants"),
            ("keys", "tenants"),
            ("registry_only", "cells"),
        ]
        .map(|(c, p)| (c.to_owned(), p.to_owned()));
        assert_eq!(
            parents_first(tables, &references),
            ["tenants", "campaigns", "campaign_audit", "campaign_versions", "keys"].map(String::from).to_vec()
        );
    }
}
