//! Shared test harness. Everything is real: a tansu broker process per test, a fresh
//! PostgreSQL database per test, a Redis key prefix per test, and the control plane and cell
//! booted in-process on `127.0.0.1:0`, so tests run in parallel without seeing each other.
//!
//! # Layout
//!
//! - [`env`]: where the harness finds the broker binary and ONNX Runtime (set by
//!   `scripts/test`).
//! - [`broker`]: [`Broker`], a tansu process on a free port that can be killed and restarted.
//! - [`database`]: [`TestDatabase`], created and migrated per test, dropped afterwards.
//! - [`platform`]: [`Platform`], control plane + cell for one test, with client helpers.

pub mod broker;
pub mod database;
pub mod env;
pub mod platform;

pub use broker::Broker;
pub use database::TestDatabase;
pub use platform::{Platform, ShopperSocket};

/// A short random suffix for names (databases, prefixes).
pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}
