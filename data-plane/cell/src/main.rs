//! A data-plane cell as its own process.

use std::path::PathBuf;

use clap::Parser;
use nudge_data_plane_cell::CellConfig;
use tokio_util::sync::CancellationToken;

/// Runs a Nudge data-plane cell: ingest, features, scoring, decisions and shopper sockets.
#[derive(Parser)]
struct Args {
    /// A TOML configuration file; `NUDGE_CELL__…` variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// The same allocator the ingest benchmark measured.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config: CellConfig =
        nudge_platform_config::load("NUDGE_CELL__", args.config.as_deref(), &serde_json::json!({}))?;
    nudge_platform_telemetry::init(&config.log);
    let listener = tokio::net::TcpListener::bind(config.http.listen).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(nudge_platform_http::serve::cancel_on_signal(shutdown.clone()));
    nudge_data_plane_cell::run(config, listener, shutdown).await
}
