//! Log output for binaries. Libraries only emit `tracing` events; only `main` calls [`init`].

use serde::{Deserialize, Serialize};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object per line, with the fields of the current spans (`trace_id`, …).
    #[default]
    Json,
    /// Human-readable lines for a terminal.
    Pretty,
}

/// Logging configuration, shared by every binary's config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter directive such as `info,nudge=debug`.
    pub filter: String,
}

impl Default for LogConfig {
    /// `info`, without the vault client's HTTP layer (`rustify`), which logs every error
    /// answer of the vault at error level — a secret not set (404) included; the platform
    /// classifies the vault's answers and logs what matters itself.
    fn default() -> Self {
        Self { format: LogFormat::Json, filter: "info,rustify=off".to_owned() }
    }
}

/// Installs the process-wide subscriber. Safe to call twice (the second call does nothing),
/// so a binary that runs several services in one process needs no coordination.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_new(&config.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.format {
        LogFormat::Json => registry
            .with(
                fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(false).with_target(true),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(fmt::layer().compact().with_target(false)).try_init(),
    };
    // Already installed (another service in this process did it): keep the first.
    drop(result);
}
