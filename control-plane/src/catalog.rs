//! The catalog lint: checks, against the live database, the rules tenant isolation rests on.
//!
//! 1. Every table with a `tenant_id` column has row-level security enabled **and forced**,
//!    and at least one policy.
//! 2. The runtime role is not a superuser, cannot bypass RLS, and owns nothing.
//! 3. Every view runs with the caller's rights (`security_invoker`), so it cannot become a
//!    window onto rows the caller's policies hide.
//! 4. Every unique index of a tenant table includes `tenant_id`, so a duplicate-key error
//!    never reveals that another tenant has a value.
//!
//! `nudge migrate` runs it after migrating and fails when a migration broke a rule; the
//! test suite runs it too.

use sqlx::{PgConnection, Row};

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The table, view, index or role concerned.
    pub object: String,
    pub rule: &'static str,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.object, self.rule)
    }
}

/// Checks the `public` schema and `runtime_role`; every violation found.
pub async fn lint(conn: &mut PgConnection, runtime_role: &str) -> Result<Vec<Violation>, sqlx::Error> {
    let mut violations = Vec::new();
    let v = |object: String, rule: &'static str| Violation { object, rule };

    let tables = sqlx::query(
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
           AND EXISTS (SELECT 1 FROM pg_attribute a
                       WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
         ORDER BY c.relname",
    )
    .fetch_all(&mut *conn)
    .await?;
    for t in &tables {
        let name: String = t.try_get("relname")?;
        if !t.try_get::<bool, _>("relrowsecurity")? {
            violations.push(v(name.clone(), "has tenant_id but row-level security is not enabled"));
        }
        if !t.try_get::<bool, _>("relforcerowsecurity")? {
            violations.push(v(name.clone(), "has tenant_id but row-level security is not forced"));
        }
        if t.try_get::<i64, _>("policies")? == 0 {
            violations.push(v(name, "has tenant_id but no policy"));
        }
    }

    let role = sqlx::query("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1")
        .bind(runtime_role)
        .fetch_optional(&mut *conn)
        .await?;
    match role {
        None => violations.push(v(runtime_role.to_owned(), "runtime role does not exist")),
        Some(r) => {
            if r.try_get::<bool, _>("rolsuper")? {
                violations.push(v(runtime_role.to_owned(), "runtime role is a superuser"));
            }
            if r.try_get::<bool, _>("rolbypassrls")? {
                violations.push(v(runtime_role.to_owned(), "runtime role bypasses row-level security"));
            }
        }
    }
    let owned: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) = $1 ORDER BY c.relname",
    )
    .bind(runtime_role)
    .fetch_all(&mut *conn)
    .await?;
    for name in owned {
        violations.push(v(name, "owned by the runtime role (owners can disable row-level security)"));
    }

    let views: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm')
           AND NOT coalesce('security_invoker=true' = ANY (c.reloptions)
                            OR 'security_invoker=on' = ANY (c.reloptions), false)
         ORDER BY c.relname",
    )
    .fetch_all(&mut *conn)
    .await?;
    for name in views {
        violations.push(v(name, "view is not security_invoker"));
    }

    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT i.relname FROM pg_index x
         JOIN pg_class i ON i.oid = x.indexrelid
         JOIN pg_class t ON t.oid = x.indrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         WHERE n.nspname = 'public' AND x.indisunique
           AND EXISTS (SELECT 1 FROM pg_attribute a
                       WHERE a.attrelid = t.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
           AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                           WHERE a.attrelid = t.oid AND a.attname = 'tenant_id'
                             AND a.attnum = ANY (x.indkey))
         ORDER BY i.relname",
    )
    .fetch_all(&mut *conn)
    .await?;
    for name in indexes {
        violations.push(v(name, "unique index of a tenant table without tenant_id"));
    }
    Ok(violations)
}

/// The role services connect as; migrations grant it what it needs and nothing more.
pub const RUNTIME_ROLE: &str = "nudge_app";

/// The lint found broken rules, or could not run.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("the database breaks tenant-isolation rules:\n  {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Violations(Vec<Violation>),
    #[error("running the catalog lint: {0}")]
    Db(#[from] sqlx::Error),
}

/// Runs [`lint`] over a fresh connection and fails on any violation.
pub async fn check(options: &sqlx::postgres::PgConnectOptions) -> Result<(), CheckError> {
    use sqlx::Connection;
    let mut conn = PgConnection::connect_with(options).await?;
    let violations = lint(&mut conn, RUNTIME_ROLE).await?;
    conn.close().await?;
    if violations.is_empty() { Ok(()) } else { Err(CheckError::Violations(violations)) }
}
