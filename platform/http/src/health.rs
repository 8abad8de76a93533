//! Operational routes every service exposes: `/healthz` (the process is up), `/readyz`
//! (it can do its job: every readiness check passes) and `/metrics` (Prometheus text).

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
};
use nudge_platform_telemetry::Metrics;
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};

/// One thing a service needs before it can take traffic (a database, the tenant
/// directory having caught up, …).
pub trait ReadinessCheck: Send + Sync {
    fn name(&self) -> &'static str;
    /// `Err` explains what is missing.
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// The set of checks behind `/readyz`.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<Arc<dyn ReadinessCheck>>,
}

/// How long one check may take before it counts as failed; `/readyz` must never hang.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

impl Readiness {
    pub fn with(mut self, check: Arc<dyn ReadinessCheck>) -> Self {
        self.checks.push(check);
        self
    }

    /// Runs every check; the failures by name.
    pub async fn failures(&self) -> Vec<(&'static str, String)> {
        let mut failed = Vec::new();
        for check in &self.checks {
            let outcome = tokio::time::timeout(CHECK_TIMEOUT, check.check()).await;
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(why)) => failed.push((check.name(), why)),
                Err(_) => failed.push((check.name(), "timed out".to_owned())),
            }
        }
        failed
    }
}

#[derive(Clone)]
struct OpsState {
    readiness: Readiness,
    metrics: Metrics,
}

/// `/healthz`, `/readyz` and `/metrics` for a service, documented.
pub fn ops_router<S: Clone + Send + Sync + 'static>(readiness: Readiness, metrics: Metrics) -> OpenApiRouter<S> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics_text))
        .with_state(OpsState { readiness, metrics })
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive")))]
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// The service can do its job: every readiness check passes.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "ready"),
    (status = 503, description = "not ready; the body names the failing checks"),
))]
async fn readyz(State(state): State<OpsState>) -> Response {
    let failed = state.readiness.failures().await;
    if failed.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ready"}))).into_response()
    } else {
        let checks: serde_json::Map<String, serde_json::Value> =
            failed.into_iter().map(|(name, why)| (name.to_owned(), json!(why))).collect();
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "not_ready", "failing": checks}))).into_response()
    }
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "metrics", content_type = "application/openmetrics-text")))]
async fn metrics_text(State(state): State<OpsState>) -> Response {
    ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
        .into_response()
}
