//! The catalog lint passes on the real schema and fails, naming the object, when a
//! migration forgets a rule.

use std::str::FromStr;

use nudge_control_plane::catalog::{RUNTIME_ROLE, lint};
use nudge_test_support::TestDatabase;
use sqlx::{Connection, Executor, PgConnection, postgres::PgConnectOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lint_passes_on_the_schema_and_catches_each_forgotten_rule() -> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let mut owner = PgConnection::connect_with(&PgConnectOptions::from_str(&db.owner_url)?).await?;
    assert_eq!(lint(&mut owner, RUNTIME_ROLE).await?, vec![], "the migrated schema follows every rule");

    // A careless migration: a tenant table without RLS, one with RLS not forced, a view
    // running with its owner's rights, a unique key that spans tenants, and a grant of
    // ownership to the runtime role.
    owner
        .execute(
            "CREATE TABLE forgot (tenant_id uuid NOT NULL, email text);
             CREATE UNIQUE INDEX forgot_email ON forgot (email);
             CREATE TABLE half (tenant_id uuid NOT NULL);
             ALTER TABLE half ENABLE ROW LEVEL SECURITY;
             CREATE POLICY p ON half USING (tenant_id = nudge_current_tenant());
             CREATE VIEW tenant_names AS SELECT tenant_id, name FROM tenants;
             CREATE TABLE owned_by_app (id int);
             ALTER TABLE owned_by_app OWNER TO nudge_app;",
        )
        .await?;
    let found: Vec<(String, &str)> =
        lint(&mut owner, RUNTIME_ROLE).await?.into_iter().map(|v| (v.object, v.rule)).collect();
    let has = |object: &str, fragment: &str| found.iter().any(|(o, r)| o == object && r.contains(fragment));
    assert!(has("forgot", "not enabled"), "{found:?}");
    assert!(has("forgot", "not forced"), "{found:?}");
    assert!(has("forgot", "no policy"), "{found:?}");
    assert!(has("forgot_email", "without tenant_id"), "{found:?}");
    assert!(has("half", "not forced"), "{found:?}");
    assert!(!has("half", "not enabled"), "{found:?}");
    assert!(has("tenant_names", "security_invoker"), "{found:?}");
    assert!(has("owned_by_app", "owned by the runtime role"), "{found:?}");

    // Fixing them clears the report.
    owner
        .execute(
            "DROP TABLE forgot; ALTER TABLE half FORCE ROW LEVEL SECURITY;
             ALTER VIEW tenant_names SET (security_invoker = true); DROP TABLE owned_by_app;",
        )
        .await?;
    assert_eq!(lint(&mut owner, RUNTIME_ROLE).await?, vec![]);
    Ok(())
}
