//! The control plane as its own process.

use std::path::PathBuf;

use clap::Parser;
use nudge_control_plane::ControlPlaneConfig;
use tokio_util::sync::CancellationToken;

/// Runs the Nudge control plane: public API and outbox relay.
#[derive(Parser)]
struct Args {
    /// A TOML configuration file; `NUDGE_CONTROL_PLANE__…` variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config: ControlPlaneConfig =
        nudge_platform_config::load("NUDGE_CONTROL_PLANE__", args.config.as_deref(), &serde_json::json!({}))?;
    nudge_platform_telemetry::init(&config.log);
    let listener = tokio::net::TcpListener::bind(config.http.listen).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(nudge_platform_http::serve::cancel_on_signal(shutdown.clone()));
    nudge_web_api::run(config, listener, shutdown).await
}
