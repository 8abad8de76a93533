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
//! - [`redis_server`]: [`RedisServer`], a private Redis a test may stop.
//! - [`vault`]: [`VaultServer`], an OpenBao dev server with Transit mounted.
//! - [`platform`]: [`Platform`], control plane + cell for one test, with client helpers.
//! - [`smtp`]: [`MailServer`], an aiosmtpd on a free port with the mail it received.

pub mod broker;
pub mod database;
pub mod env;
pub mod platform;
pub mod redis_server;
pub mod smtp;
pub mod stripe;
pub mod vault;

pub use broker::Broker;
pub use database::TestDatabase;
pub use platform::{CellProcess, OPERATOR_TOKEN, PASSWORD, Platform, ShopperSocket};
pub use redis_server::RedisServer;
pub use smtp::{MailServer, ReceivedMail};
pub use stripe::{LocalStripe, STRIPE_KEY};
pub use vault::VaultServer;

/// Sends the services' warnings and errors to the test's captured output, so a failing test
/// shows why (an internal error's cause is logged, not returned). Set `NUDGE_TEST_LOG` to a
/// filter such as `debug` for more.
///
/// With `NUDGE_TEST_LOG_DIR` set (`scripts/test` sets it), everything the services log at
/// `info` and above — what a deployment emits — is also written as JSON lines to a file of
/// this process there, which `scripts/scan-logs` searches for personal data and secrets.
pub fn init_test_logging() {
    use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};
    // librdkafka reports every refused connection at error level; tests kill brokers on purpose.
    // The vault client's HTTP layer logs every error answer (a 404 for a secret not set too).
    let filter =
        std::env::var("NUDGE_TEST_LOG").unwrap_or_else(|_| "warn,librdkafka=off,rdkafka=off,rustify=off".into());
    let captured = tracing_subscriber::fmt::layer().with_test_writer().with_filter(EnvFilter::new(filter));
    let file = std::env::var_os("NUDGE_TEST_LOG_DIR").and_then(|dir| {
        std::fs::create_dir_all(&dir).ok()?;
        let path = std::path::Path::new(&dir).join(format!("{}-{}.log", std::process::id(), unique_suffix()));
        let file = std::fs::File::create(path).ok()?;
        Some(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::sync::Mutex::new(file))
                .with_filter(EnvFilter::new("info,librdkafka=off,rdkafka=off,rustify=off")),
        )
    });
    let _ = tracing_subscriber::registry().with(captured).with(file).try_init();
}

/// A short random suffix for names (databases, prefixes).
pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}
