//! Telemetry set up once per binary.
//!
//! # Layout
//!
//! - [`logging`]: [`init`] installs JSON (or human) logs; spans carry `trace_id`, so every
//!   line logged while handling a request or record names its trace.
//! - [`trace`]: [`TraceContext`], the W3C `traceparent` carried over HTTP, Kafka record
//!   headers, Redis pub/sub and WebSocket messages.
//! - [`metrics`]: [`Metrics`], a Prometheus registry owned by the service (never global).
//! - [`random`]: random bytes for trace and span ids without a system call each.

pub mod logging;
pub mod metrics;
pub mod random;
pub mod trace;

pub use logging::{LogConfig, LogFormat, init};
pub use metrics::Metrics;
pub use trace::TraceContext;
