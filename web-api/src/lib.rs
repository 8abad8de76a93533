//! The control plane's HTTP face and the function that runs the whole control plane.
//!
//! # Layout
//!
//! - [`run`]: serves the API on a listener and runs the outbox relay until shutdown.
//! - [`state`]: [`AppState`], what every handler can reach.
//! - [`routes`]: one module per resource, each exporting `router()`.

pub mod routes;
pub mod state;

use std::{sync::Arc, time::Duration};

use axum::middleware::from_fn_with_state;
use nudge_control_plane::{ControlPlaneConfig, Database, outbox::Relay, placement::register_shared_cell};
use nudge_platform_http::{HttpMetrics, Readiness, ReadinessCheck, openapi, ops_router, serve, trace_layer};
use nudge_platform_telemetry::Metrics;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;

use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use state::AdminTokens;
pub use state::AppState;

/// Runs the control plane (API + outbox relay) on `listener` until `shutdown` is cancelled.
/// The database must be migrated (see `nudge migrate`).
pub async fn run(config: ControlPlaneConfig, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let db = Database::connect_lazy(
        config.database.runtime_options().map_err(anyhow::Error::msg)?,
        config.database.max_connections,
        Duration::from_millis(config.database.acquire_timeout_ms),
    );
    let cell = register_shared_cell(&db, &config.placement).await?;

    nudge_platform_kafka::ensure_topics(&config.kafka, &[nudge_contracts::Topic::ControlTenants]).await?;
    let relay = Relay::new(
        db.clone(),
        &config.kafka,
        config.outbox.batch_size,
        Duration::from_millis(config.outbox.poll_interval_ms),
    )?;
    let outbox_wake = relay.waker();

    let metrics = Metrics::new("control_plane");
    let http_metrics = HttpMetrics::register(&metrics);
    let readiness = Readiness::default().with(Arc::new(DatabaseReady(db.clone())));
    let admin_tokens = AdminTokens(Arc::new(
        config
            .admin
            .tokens
            .iter()
            .map(|(name, token)| (name.clone(), Sha256::digest(token.expose_secret().as_bytes()).into()))
            .collect(),
    ));
    let state = AppState { db, topics: config.kafka.topics(), shared_cell: cell, outbox_wake, admin_tokens };

    let (router, _) = openapi::with_document(
        OpenApiRouter::new().merge(routes::router()).with_state(state).merge(ops_router(readiness, metrics)),
        "Nudge control plane",
        "Self-service signup and the management API of Nudge.",
    );
    let router = router.layer(from_fn_with_state(http_metrics, trace_layer));

    tracing::info!(addr = %listener.local_addr()?, "control plane listening");
    let relay_task = tokio::spawn(relay.run(shutdown.clone()));
    serve(listener, router, shutdown.clone()).await?;
    shutdown.cancel();
    relay_task.await?;
    Ok(())
}

struct DatabaseReady(Database);

impl ReadinessCheck for DatabaseReady {
    fn name(&self) -> &'static str {
        "database"
    }

    fn check(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move { self.0.ping().await.map_err(|e| e.to_string()) })
    }
}
