//! Under the Kubernetes provisioner the control plane's routes follow the operator: a store
//! the operator places on another cell (an operator set its `cellRef`) is routed there in
//! the database and announced to the cells; an unchanged placement writes nothing.

use std::{str::FromStr, time::Duration};

use nudge_contracts::Topics;
use nudge_control_plane::{
    Database,
    config::{KubernetesProvisionerConfig, PlacementConfig},
    placement::register_shared_cell,
    provision::{KubernetesProvisioner, tenant_resource_name},
    routing::TenantRouter,
    signup::{NewTenant, sign_up},
};
use nudge_operator::fake_api::FakeApi;
use nudge_tenants::{AllowedOrigin, Email, Password, TenantId, TenantName};
use nudge_test_support::{TestDatabase, unique_suffix};
use secrecy::SecretString;
use serde_json::json;
use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use tokio_util::sync::CancellationToken;

const NS: &str = "nudge";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_follow_where_the_operator_placed_each_store() -> anyhow::Result<()> {
    let test_db = TestDatabase::create().await?;
    let db = Database::connect_lazy(PgConnectOptions::from_str(&test_db.app_url)?, 4, Duration::from_secs(10));
    let router = std::sync::Arc::new(TenantRouter::new(db.clone(), Default::default()));
    let shared = register_shared_cell(&db, &PlacementConfig::default()).await?;
    let tenant = TenantId::new();
    let new = NewTenant {
        name: TenantName::parse("Pinned Store")?,
        allowed_origins: vec![AllowedOrigin::parse("https://pinned.example.com")?],
        owner_email: Email::parse(&format!("owner-{}@example.com", unique_suffix()))?,
        owner_password: Password::parse(nudge_test_support::PASSWORD)?,
    };
    sign_up(&db, &Topics::default(), tenant, &shared, new, None).await?;

    // What the operator reports: the store Ready on cell eu-2 (its cellRef).
    let fake = FakeApi::new();
    fake.seed(
        &format!("/apis/nudge.dev/v1alpha1/namespaces/{NS}/cells/eu-2"),
        json!({"apiVersion": "nudge.dev/v1alpha1", "kind": "Cell", "metadata": {"name": "eu-2", "namespace": NS},
            "spec": {"tier": "shared", "region": "eu-west-1", "version": "0.1.0", "publicUrl": "https://eu-2.cells.example",
                "kafka": {"topicPrefix": "eu-2."}, "redis": {"secret": "r", "cidr": "10.0.0.0/8", "port": 6379},
                "postgres": {"secret": "p", "cidr": "10.0.0.0/8", "port": 5432}, "capacity": {"tenants": 10, "connections": 1000}}}),
    );
    let name = tenant_resource_name(tenant);
    fake.seed(
        &format!("/apis/nudge.dev/v1alpha1/namespaces/{NS}/tenants/{name}"),
        json!({"apiVersion": "nudge.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": name, "namespace": NS},
            "spec": {"tenantId": tenant.to_string(), "plan": "free", "cellRef": "eu-2"},
            "status": {"cell": "eu-2", "phase": "Active", "conditions": [{"type": "Ready", "status": "True",
                "reason": "Placed", "message": "", "lastTransitionTime": "2026-11-27T00:00:00Z"}]}}),
    );
    let config = KubernetesProvisionerConfig { namespace: NS.into(), ..KubernetesProvisionerConfig::default() };
    let provisioner =
        KubernetesProvisioner::new(fake.client(), config.clone(), SecretString::from("postgres://x/{database}"));

    let stop = CancellationToken::new();
    let follow = {
        let (router, stop) = (router.clone(), stop.clone());
        tokio::spawn(async move {
            provisioner.follow_routes(&router, &Topics::default(), Duration::from_millis(50), stop).await;
        })
    };
    let mut owner = PgConnection::connect(&test_db.owner_url).await?;
    async fn route(owner: &mut PgConnection, tenant: TenantId) -> sqlx::Result<(Option<String>, Option<String>, i64)> {
        sqlx::query_as(
            "SELECT t.cell_id, c.public_url, t.revision FROM tenants t LEFT JOIN cells c USING (cell_id) WHERE t.tenant_id = $1",
        )
        .bind(tenant.as_uuid())
        .fetch_one(owner)
        .await
    }
    let mut routed = None;
    for _ in 0..100 {
        let (cell, url, revision) = route(&mut owner, tenant).await?;
        if cell.as_deref() == Some("eu-2") {
            routed = Some((url, revision));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (url, revision) = routed.ok_or_else(|| anyhow::anyhow!("the route never followed the operator"))?;
    assert_eq!(url.as_deref(), Some("https://eu-2.cells.example"));
    // Announced: the change went into the outbox for the cells.
    let announced: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE record_key = $1")
        .bind(tenant.to_string().into_bytes())
        .fetch_one(&mut owner)
        .await?;
    assert_eq!(announced, 2, "signup's announcement and the move's");
    // Further rounds see nothing new and write nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(route(&mut owner, tenant).await?.2, revision);
    stop.cancel();
    follow.await?;

    // A restarted control plane compares every placement with the database once: an
    // unchanged route is read, not written or announced again.
    let restarted = KubernetesProvisioner::new(fake.client(), config, SecretString::from("postgres://x/{database}"));
    let stop = CancellationToken::new();
    let follow = {
        let (router, stop) = (router.clone(), stop.clone());
        tokio::spawn(async move {
            restarted.follow_routes(&router, &Topics::default(), Duration::from_millis(50), stop).await;
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    follow.await?;
    assert_eq!(route(&mut owner, tenant).await?.2, revision, "no new revision");
    let announced: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE record_key = $1")
        .bind(tenant.to_string().into_bytes())
        .fetch_one(&mut owner)
        .await?;
    assert_eq!(announced, 2, "nothing announced again");
    Ok(())
}
