//! The control plane's logic, persistence and workers (its HTTP face is `nudge-web-api`).
//!
//! # Layout
//!
//! - [`config`]: [`ControlPlaneConfig`], loaded in layers by the binaries.
//! - [`db`]: the connection pool and [`db::Database::tenant_tx`], the one way to open a
//!   transaction that acts for a tenant under row-level security.
//! - [`placement`]: which cell a new tenant goes to; registers the shared cell.
//! - [`signup`]: self-service signup: tenant, keys, origins and the announcement to its cell,
//!   in one transaction.
//! - [`outbox`]: the relay that publishes committed outbox rows to Kafka.

pub mod config;
pub mod db;
pub mod outbox;
pub mod placement;
pub mod signup;

pub use config::ControlPlaneConfig;
pub use db::Database;
