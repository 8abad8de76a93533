//! Row-level security proven against the runtime role: a policy matrix over every tenant
//! table, and a connection pool under concurrent load, errors, rollbacks and panics.

use std::{collections::HashMap, str::FromStr, sync::Arc, time::Duration};

use nudge_contracts::Topics;
use nudge_control_plane::{
    Database,
    config::PlacementConfig,
    placement::register_shared_cell,
    signup::{NewTenant, sign_up},
};
use nudge_tenants::{AllowedOrigin, Email, Password, TenantId, TenantName};
use nudge_test_support::TestDatabase;
use sqlx::{Connection, PgConnection, Postgres, Transaction, postgres::PgConnectOptions};

const RLS_VIOLATION: &str = "42501";
/// Refused for want of a grant (also SQLSTATE 42501; told apart by [`attempt`]).
const NO_GRANT: &str = "no-grant";

async fn setup(tenants: usize, pool_size: u32) -> anyhow::Result<(TestDatabase, Database, Vec<TenantId>)> {
    let test_db = TestDatabase::create().await?;
    let db = Database::connect_lazy(PgConnectOptions::from_str(&test_db.app_url)?, pool_size, Duration::from_secs(30));
    let cell = register_shared_cell(&db, &PlacementConfig::default()).await?;
    let mut ids = Vec::new();
    for i in 0..tenants {
        let new = NewTenant {
            name: TenantName::parse(&format!("Store {i}"))?,
            allowed_origins: vec![AllowedOrigin::parse(&format!("https://store{i}.example.com"))?],
            owner_email: Email::parse(&format!("owner{i}-{}@example.com", nudge_test_support::unique_suffix()))?,
            owner_password: Password::parse(nudge_test_support::PASSWORD)?,
        };
        ids.push(sign_up(&db, &Topics::default(), TenantId::new(), &cell, new, None).await?.tenant_id);
    }
    Ok((test_db, db, ids))
}

/// Tables with a `tenant_id` column, from the catalog: a new tenant table joins the matrix
/// without anyone editing this test.
async fn tenant_tables(owner: &mut PgConnection) -> anyhow::Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind = 'r'
           AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id')
         ORDER BY 1",
    )
    .fetch_all(owner)
    .await?)
}

/// Rows per (table, tenant), as the owner sees them.
async fn census(owner: &mut PgConnection, tables: &[String]) -> anyhow::Result<HashMap<(String, String), i64>> {
    let mut counts = HashMap::new();
    for t in tables {
        let rows: Vec<(String, i64)> = sqlx::query_as(&format!("SELECT tenant_id::text, count(*) FROM {t} GROUP BY 1"))
            .fetch_all(&mut *owner)
            .await?;
        for (tenant, n) in rows {
            counts.insert((t.clone(), tenant), n);
        }
    }
    Ok(counts)
}

/// Runs `sql` in a savepoint: rows affected, or the SQLSTATE it failed with. A refusal by a
/// row-level security policy and a refusal for want of a grant share SQLSTATE 42501; the
/// code returned for the first is [`RLS_VIOLATION`], for the second [`NO_GRANT`].
async fn attempt(tx: &mut Transaction<'static, Postgres>, sql: &str, bind: Option<&str>) -> Result<u64, String> {
    let mut sp = tx.begin().await.map_err(|e| e.to_string())?;
    let mut q = sqlx::query(sql);
    if let Some(b) = bind {
        q = q.bind(b);
    }
    let outcome = q.execute(&mut *sp).await;
    let _ = sp.rollback().await;
    match outcome {
        Ok(r) => Ok(r.rows_affected()),
        Err(sqlx::Error::Database(e)) => {
            let code = e.code().map(|c| c.into_owned()).unwrap_or_default();
            if code == RLS_VIOLATION && e.message().contains("permission denied") {
                Err(NO_GRANT.into())
            } else {
                Err(code)
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_matrix_three_tenants_every_table_every_verb() -> anyhow::Result<()> {
    let (test_db, db, tenants) = setup(3, 4).await?;
    let mut owner = PgConnection::connect(&test_db.owner_url).await?;
    let tables = tenant_tables(&mut owner).await?;
    assert!(tables.len() >= 4, "{tables:?}");

    // The sea-orm path (same pool, same entry statement): only the tenant's own rows.
    let router = nudge_control_plane::routing::TenantRouter::new(db.clone(), Default::default());
    for &me in &tenants {
        let seen = nudge_control_plane::origins::visible(&router, me).await?;
        assert!(!seen.is_empty(), "the ORM path sees the tenant's own origins");
        assert!(seen.iter().all(|(t, _)| *t == me.as_uuid()), "the ORM path shows another tenant's rows: {seen:?}");
    }

    // Registry tables get rows of every tenant too, so their SELECT checks can fail.
    sqlx::query("INSERT INTO databases (name) VALUES ('nudge_t_00000000000000000000000000000000')")
        .execute(&mut owner)
        .await?;
    for &t in &tenants {
        sqlx::query(
            "INSERT INTO tenant_routes (tenant_id, database) VALUES ($1, 'nudge_t_00000000000000000000000000000000')",
        )
        .bind(t.as_uuid())
        .execute(&mut owner)
        .await?;
        sqlx::query(
            "INSERT INTO tenant_fences (tenant_id, moved_to) VALUES ($1, 'nudge_t_00000000000000000000000000000000')",
        )
        .bind(t.as_uuid())
        .execute(&mut owner)
        .await?;
    }
    // And privacy and billing tables: a suppression, a legal hold, an erasure request with a
    // step and an audit line, a billing account and an hour of usage per tenant.
    for &t in &tenants {
        let request = uuid::Uuid::new_v4();
        for statement in [
            "INSERT INTO suppressions (tenant_id, subject_digest, shopper_id, reason)
             SELECT $1, repeat('a', 64), 'shp_matrix', 'opt_out' WHERE $2::uuid IS NOT NULL",
            "INSERT INTO legal_holds (tenant_id, hold_id, name, placed_by) VALUES ($1, $2, 'a hold', 'test')",
            "INSERT INTO erasure_requests (tenant_id, request_id, scope, subject_digest, requested_by, deadline_at, status)
             VALUES ($1, $2, 'shopper', repeat('b', 64), 'test', now(), 'in_progress')",
            "INSERT INTO erasure_steps (tenant_id, request_id, store, status) VALUES ($1, $2, 'postgres', 'pending')",
            "INSERT INTO erasure_audit (tenant_id, request_id, actor, action) VALUES ($1, $2, 'test', 'requested')",
            "INSERT INTO billing_accounts (tenant_id, stripe_customer_id) SELECT $1, 'cus_' || $2::text",
            "INSERT INTO billing_checkouts (tenant_id, session_id, plan, requested_by)
             SELECT $1, 'cs_' || $2::text, 'growth', 'test'",
            "INSERT INTO usage_ledger (tenant_id, hour, meter, quantity)
             SELECT $1, date_trunc('hour', now()), 'events', 1 WHERE $2::uuid IS NOT NULL",
            "INSERT INTO connection_samples (tenant_id, at, connections)
             SELECT $1, date_trunc('minute', now()), 3 WHERE $2::uuid IS NOT NULL",
            "INSERT INTO campaigns (tenant_id, campaign_id) VALUES ($1, $2)",
            "INSERT INTO campaign_versions (tenant_id, campaign_id, version, spec, saved_by) VALUES ($1, $2, 1, '{}', 'test')",
            "INSERT INTO campaign_audit (tenant_id, campaign_id, actor, action, version) VALUES ($1, $2, 'test', 'created', 1)",
            "INSERT INTO messaging_policies (tenant_id, policy, updated_by) SELECT $1, '{}', 'test' WHERE $2::uuid IS NOT NULL",
        ] {
            sqlx::query(statement).bind(t.as_uuid()).bind(request).execute(&mut owner).await?;
        }
    }
    let before = census(&mut owner, &tables).await?;
    // Which verbs the runtime role is granted per table: where it is, the refusal must come
    // from the policy (the matrix proves RLS, not just the grants).
    let mut granted = HashMap::new();
    for t in &tables {
        for privilege in ["INSERT", "UPDATE"] {
            let has: bool = sqlx::query_scalar("SELECT has_table_privilege('nudge_app', $1, $2)")
                .bind(t)
                .bind(privilege)
                .fetch_one(&mut owner)
                .await?;
            granted.insert((t.clone(), privilege), has);
        }
    }
    assert!(granted.values().filter(|g| **g).count() >= 6, "most tenant tables are writable, so RLS is what refuses");

    // One real row of each tenant per table, to forge inserts with.
    let mut samples: HashMap<(String, TenantId), String> = HashMap::new();
    for t in &tables {
        for &tenant in &tenants {
            let row: Option<String> =
                sqlx::query_scalar(&format!("SELECT row_to_json(x)::text FROM {t} x WHERE tenant_id = $1 LIMIT 1"))
                    .bind(tenant.as_uuid())
                    .fetch_optional(&mut owner)
                    .await?;
            // A table the tenant has no rows in yet gets a row naming only the tenant: the
            // policy refuses it before any other constraint is looked at.
            let row = row.unwrap_or_else(|| format!("{{\"tenant_id\": \"{}\"}}", tenant.as_uuid()));
            samples.insert((t.clone(), tenant), row);
        }
    }

    for &me in &tenants {
        let mut tx = db.tenant_tx(me).await?;
        let me_text = me.as_uuid().to_string();
        for t in &tables {
            let (foreign, total): (i64, i64) =
                sqlx::query_as(&format!("SELECT count(*) FILTER (WHERE tenant_id <> $1::uuid), count(*) FROM {t}"))
                    .bind(&me_text)
                    .fetch_one(&mut *tx)
                    .await?;
            assert_eq!(foreign, 0, "{t}: SELECT shows another tenant's rows");
            assert_eq!(
                total,
                before.get(&(t.clone(), me_text.clone())).copied().unwrap_or(0),
                "{t}: SELECT shows all of my rows"
            );

            for verb in [
                format!("UPDATE {t} SET tenant_id = tenant_id WHERE tenant_id <> $1::uuid"),
                format!("DELETE FROM {t} WHERE tenant_id <> $1::uuid"),
            ] {
                match attempt(&mut tx, &verb, Some(&me_text)).await {
                    // The policy hides the foreign rows: nothing to change.
                    Ok(n) => assert_eq!(n, 0, "{verb}: changed another tenant's rows"),
                    Err(code) => assert_eq!(code, NO_GRANT, "{verb}: only a missing grant may refuse it"),
                }
            }
            for &other in tenants.iter().filter(|&&o| o != me) {
                // WITH CHECK refuses a row for another tenant, whether inserted or moved there.
                let forged = format!(
                    "INSERT INTO {t} OVERRIDING SYSTEM VALUE SELECT * FROM json_populate_record(NULL::{t}, $1::json)"
                );
                assert_eq!(
                    attempt(&mut tx, &forged, Some(&samples[&(t.clone(), other)])).await,
                    Err(refusal(&granted, t, "INSERT").into()),
                    "{t}: INSERT of another tenant's row"
                );
                let moved = format!("UPDATE {t} SET tenant_id = '{}'::uuid", other.as_uuid());
                assert_eq!(
                    attempt(&mut tx, &moved, None).await,
                    Err(refusal(&granted, t, "UPDATE").into()),
                    "{t}: UPDATE to another tenant"
                );
            }
        }
        tx.rollback().await?;
    }

    // No context: nothing visible, nothing writable.
    let mut tx = db.platform_tx().await?;
    for t in &tables {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {t}")).fetch_one(&mut *tx).await?;
        assert_eq!(n, 0, "{t}: visible without a tenant context");
        for verb in [format!("UPDATE {t} SET tenant_id = tenant_id"), format!("DELETE FROM {t}")] {
            match attempt(&mut tx, &verb, None).await {
                Ok(n) => assert_eq!(n, 0, "{verb} without context"),
                Err(code) => assert_eq!(code, NO_GRANT, "{verb}: only a missing grant may refuse it"),
            }
        }
        let insert =
            format!("INSERT INTO {t} OVERRIDING SYSTEM VALUE SELECT * FROM json_populate_record(NULL::{t}, $1::json)");
        assert_eq!(
            attempt(&mut tx, &insert, Some(&samples[&(t.clone(), tenants[0])])).await,
            Err(refusal(&granted, t, "INSERT").into()),
            "{t}: INSERT without context"
        );
    }
    tx.rollback().await?;

    assert_eq!(census(&mut owner, &tables).await?, before, "nothing changed anywhere");
    Ok(())
}

/// The refusal expected for `privilege` on `table`: the policy's where the role has the
/// grant, the grant's where it does not.
fn refusal(granted: &HashMap<(String, &str), bool>, table: &str, privilege: &'static str) -> &'static str {
    if granted.get(&(table.to_owned(), privilege)).copied().unwrap_or(false) { RLS_VIOLATION } else { NO_GRANT }
}

#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Read,
    FailMidway,
    RollBack,
    Panic,
    NoContext,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_pool_under_errors_and_panics_never_leaks_a_tenant() -> anyhow::Result<()> {
    let (_test_db, db, tenants) = setup(10, 4).await?;
    let tenants = Arc::new(tenants);
    let behaviours =
        [Behaviour::Read, Behaviour::FailMidway, Behaviour::RollBack, Behaviour::Panic, Behaviour::NoContext];

    // Quiet the expected panics; the test counts them through the join handles.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut tasks = Vec::new();
    for i in 0..400 {
        let (db, tenants) = (db.clone(), tenants.clone());
        // The first 200 mix every behaviour; the second 200 are plain reads that follow them
        // on the same four connections.
        let behaviour = if i < 200 { behaviours[i % behaviours.len()] } else { Behaviour::Read };
        tasks.push(tokio::spawn(async move {
            let me = tenants[i % tenants.len()];
            let mut tx = match behaviour {
                Behaviour::NoContext => db.platform_tx().await?,
                _ => db.tenant_tx(me).await?,
            };
            let mut seen: Vec<uuid::Uuid> = sqlx::query_scalar(
                "SELECT tenant_id FROM tenants UNION ALL SELECT tenant_id FROM api_keys
                 UNION ALL SELECT tenant_id FROM tenant_origins UNION ALL SELECT tenant_id FROM tenant_audit",
            )
            .fetch_all(&mut *tx)
            .await?;
            match behaviour {
                Behaviour::Read => tx.commit().await?,
                Behaviour::FailMidway => {
                    let failed = sqlx::query("SELECT 1/0").execute(&mut *tx).await;
                    anyhow::ensure!(failed.is_err(), "division by zero must fail");
                    // Dropped: the aborted transaction is rolled back when the connection is reused.
                }
                Behaviour::RollBack => tx.rollback().await?,
                Behaviour::Panic => {
                    tokio::task::yield_now().await;
                    panic!("task {i} panics mid-transaction");
                }
                Behaviour::NoContext => {
                    anyhow::ensure!(seen.is_empty(), "rows visible without a tenant context");
                    seen.clear();
                }
            }
            let foreign = seen.iter().filter(|t| **t != me.as_uuid()).count();
            let own = seen.len() - foreign;
            anyhow::Ok((foreign, own, behaviour))
        }));
    }
    let mut foreign_total = 0;
    let mut panics = 0;
    let mut reads_with_rows = 0;
    for t in tasks {
        match t.await {
            Ok(Ok((foreign, own, _))) => {
                foreign_total += foreign;
                if own > 0 {
                    reads_with_rows += 1;
                }
            }
            Ok(Err(e)) => anyhow::bail!("a task failed: {e:#}"),
            Err(join) if join.is_panic() => panics += 1,
            Err(join) => anyhow::bail!("a task was cancelled: {join}"),
        }
    }
    std::panic::set_hook(hook);
    assert_eq!(foreign_total, 0, "rows of another tenant were visible");
    assert_eq!(panics, 40, "every planned panic happened");
    assert!(reads_with_rows >= 280, "reads saw their own rows ({reads_with_rows})");
    Ok(())
}
