//! A PostgreSQL database per test.

use std::str::FromStr;

use sqlx::{Connection, Executor, PgConnection, postgres::PgConnectOptions};

use crate::{env::TestEnv, unique_suffix};

/// A freshly created and migrated database, dropped when the value is dropped.
pub struct TestDatabase {
    pub name: String,
    /// As the owner role (migrations, test inspection).
    pub owner_url: String,
    /// As the runtime role `nudge_app`.
    pub app_url: String,
    admin_url: String,
}

impl TestDatabase {
    pub async fn create() -> anyhow::Result<Self> {
        let env = TestEnv::load();
        let name = format!("nudge_test_{}", unique_suffix());
        let base = env.postgres_owner_url.trim_end_matches('/').to_owned();
        let owner_url = format!("{base}/{name}");
        let owner = PgConnectOptions::from_str(&owner_url)?;
        nudge_migrations::ensure_database(&owner).await?;
        nudge_migrations::migrate(&owner).await?;
        nudge_control_plane::catalog::check(&owner).await?;
        let app = owner.clone().username("nudge_app");
        let app_url = format!("postgres://nudge_app@{}:{}/{name}", app.get_host(), app.get_port());
        Ok(Self { name, owner_url, app_url, admin_url: format!("{base}/postgres") })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside async context; a short-lived runtime on its own thread does the
        // cleanup. A failure only leaves a stray test database behind.
        let (done, finished) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&admin_url).await {
                    let _ = conn.execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str()).await;
                    let _ = conn.close().await;
                }
            });
            let _ = done.send(());
        });
        // Bounded: a stuck cleanup must not hang the test run (a stray database is harmless).
        let _ = finished.recv_timeout(std::time::Duration::from_secs(15));
    }
}
