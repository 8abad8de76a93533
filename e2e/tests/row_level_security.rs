//! Row-level security, seen from the runtime role: with no tenant context nothing is
//! visible; with a tenant's context only that tenant's rows are; the runtime role owns
//! nothing and cannot bypass the policies.

use nudge_test_support::Platform;
use sqlx::{Connection, PgConnection, Row};

const TENANT_TABLES: [&str; 3] = ["tenants", "api_keys", "tenant_origins"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_rows_are_visible_only_under_their_own_context() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let a = platform.sign_up("Store A", &["https://a.example.com"]).await?;
    let b = platform.sign_up("Store B", &["https://b.example.com", "https://www.b.example.com"]).await?;
    let uuid = |id: &str| id.trim_start_matches("tnt_").to_owned();

    let mut app = PgConnection::connect(&platform.db.app_url).await?;
    let role = sqlx::query("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        .fetch_one(&mut app)
        .await?;
    assert!(!role.get::<bool, _>(0) && !role.get::<bool, _>(1), "runtime role is neither superuser nor BYPASSRLS");
    for table in TENANT_TABLES {
        let owned: bool = sqlx::query_scalar("SELECT tableowner = current_user FROM pg_tables WHERE tablename = $1")
            .bind(table)
            .fetch_one(&mut app)
            .await?;
        assert!(!owned, "{table} is not owned by the runtime role");
        let forced: bool =
            sqlx::query_scalar("SELECT relrowsecurity AND relforcerowsecurity FROM pg_class WHERE relname = $1")
                .bind(table)
                .fetch_one(&mut app)
                .await?;
        assert!(forced, "{table} has row-level security enabled and forced");

        // No context: fail closed.
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(&mut app).await?;
        assert_eq!(n, 0, "{table} without a tenant context shows nothing");
    }

    for (me, other, origins) in [(&a, &b, 1i64), (&b, &a, 2)] {
        let mut tx = app.begin().await?;
        sqlx::query("SELECT set_config('nudge.tenant_id', $1, true)")
            .bind(uuid(&me.tenant_id))
            .execute(&mut *tx)
            .await?;
        let seen: Vec<String> = sqlx::query_scalar("SELECT DISTINCT replace(tenant_id::text, '-', '') FROM api_keys")
            .fetch_all(&mut *tx)
            .await?;
        assert_eq!(seen, vec![uuid(&me.tenant_id)]);
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_origins").fetch_one(&mut *tx).await?;
        assert_eq!(n, origins);
        // Writing a row for the other tenant is refused by the policy's WITH CHECK.
        let forged =
            sqlx::query("INSERT INTO tenant_origins (tenant_id, origin) VALUES ($1::uuid, 'https://evil.example')")
                .bind(uuid(&other.tenant_id))
                .execute(&mut *tx)
                .await;
        assert!(forged.is_err(), "inserting another tenant's row must fail");
        tx.rollback().await?;

        // The context ended with the transaction: the connection is back to seeing nothing.
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants").fetch_one(&mut app).await?;
        assert_eq!(n, 0);
    }

    // Secret keys are stored as hashes only.
    let mut owner = PgConnection::connect(&platform.db.owner_url).await?;
    let stored: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT secret_hash FROM api_keys WHERE kind = 'secret'").fetch_all(&mut owner).await?;
    assert_eq!(stored.len(), 2);
    for hash in &stored {
        assert_eq!(hash.len(), 32);
        assert!(!String::from_utf8_lossy(hash).contains(&a.secret_key[3..]));
    }
    platform.shutdown().await
}
