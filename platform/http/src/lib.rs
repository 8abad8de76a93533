//! The HTTP edge shared by every Nudge service.
//!
//! # Layout
//!
//! - [`error`]: [`ApiError`], the one error shape every route answers with.
//! - [`middleware`]: the trace layer (trace id on every response, request span, metrics).
//! - [`health`]: `/healthz`, `/readyz` and `/metrics`, with [`Readiness`] checks.
//! - [`openapi`]: the `/v1/openapi.json` document built from the documented routes.
//! - [`serve`]: runs a router on a listener until shutdown is requested.
//! - [`supervise`]: background tasks whose unexpected end stops the service.

pub mod error;
pub mod health;
pub mod middleware;
pub mod openapi;
pub mod serve;
pub mod supervise;

pub use error::{ApiError, ErrorBody};
pub use health::{Readiness, ReadinessCheck, ops_router};
pub use middleware::{HttpMetrics, current_trace, trace_layer};
pub use serve::serve;
