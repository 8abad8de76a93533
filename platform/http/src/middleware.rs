//! The trace layer: every request runs inside a span carrying its trace id, every response
//! carries `x-trace-id` and `traceparent`, and request counts and latencies are recorded.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use http::HeaderValue;
use nudge_platform_telemetry::{Metrics, TraceContext};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
};
use tracing::Instrument;

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// The trace of the request being handled, when called from within one.
pub fn current_trace() -> Option<TraceContext> {
    CURRENT.try_with(|c| *c).ok()
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteOnly {
    route: String,
}

/// HTTP request metrics for one service.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<RouteLabels, Counter>,
    latency: Family<RouteOnly, Histogram>,
}

impl HttpMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let requests = Family::<RouteLabels, Counter>::default();
        let latency = Family::<RouteOnly, Histogram>::new_with_constructor(|| {
            Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
        });
        let mut registry = metrics.registry();
        registry.register("http_requests", "HTTP requests by route and status", requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency", latency.clone());
        Self { requests, latency }
    }
}

/// axum middleware; install with `axum::middleware::from_fn_with_state(metrics, trace_layer)`.
pub async fn trace_layer(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let trace = TraceContext::from_header_or_new(request.headers().get("traceparent").and_then(|v| v.to_str().ok()));
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let span = tracing::info_span!("http", trace_id = %trace.trace_id(), %method, %route);

    let mut response = CURRENT.scope(trace, next.run(request).instrument(span.clone())).await;

    let status = response.status().as_u16();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&trace.trace_id()) {
        headers.insert("x-trace-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&trace.to_header()) {
        headers.insert("traceparent", v);
    }
    let elapsed = started.elapsed().as_secs_f64();
    metrics.requests.get_or_create(&RouteLabels { method, route: route.clone(), status }).inc();
    metrics.latency.get_or_create(&RouteOnly { route }).observe(elapsed);
    if status >= 500 {
        span.in_scope(|| tracing::warn!(status, elapsed_ms = elapsed * 1e3, "request failed"));
    }
    response
}
