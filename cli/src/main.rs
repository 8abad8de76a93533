//! `nudge`: one command for every way of running the platform.

use nudge_cli::{dev, listen};

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use nudge_control_plane::ControlPlaneConfig;
use nudge_data_plane_cell::CellConfig;
use tokio_util::sync::CancellationToken;

/// Nudge: real-time cart recovery for online stores.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// A TOML configuration file for the chosen command (environment variables override it).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane, one shared cell and a demo storefront on this machine, and
    /// print the URLs to open. Expects PostgreSQL, Redis and the broker running
    /// (`scripts/dev` starts them).
    Dev,
    /// Run the control plane (public API + outbox relay). Env: NUDGE_CONTROL_PLANE__….
    ControlPlane,
    /// Run a data-plane cell (ingest, features, scoring, decisions, sockets). Env: NUDGE_CELL__….
    Cell,
    /// Create the control-plane database if needed and apply migrations as the owner role.
    Migrate,
    /// The dead-letter queue (events.dlq).
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// The Kafka topic catalogue (deploy/kafka/topics.toml).
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Authentication helpers.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// GDPR erasure helpers.
    Erasure {
        #[command(subcommand)]
        command: ErasureCommand,
    },
    /// Open a shopper's WebSocket on a cell and print what arrives (interventions).
    Listen {
        /// The cell's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8081")]
        cell: String,
        /// The store's publishable key (`pk_…`).
        #[arg(long)]
        key: String,
        /// An origin the store allows (the socket is refused from any other).
        #[arg(long, default_value = "http://127.0.0.1:8082")]
        origin: String,
        /// The shopper id the events are sent with.
        #[arg(long)]
        shopper: String,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Send every record not replayed before back to the topic it came from, after the
    /// cause was fixed; then exit. Uses the cell's configuration (NUDGE_CELL__KAFKA__…).
    Replay,
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Print docs/topics.md as rendered from the catalogue.
    Render,
}

#[derive(Subcommand)]
enum ErasureCommand {
    /// Print a shopper's subject digest within a tenant (`--shopper`), or an e-mail address's
    /// digest within it (`--email-sha256`, the SHA-256 of the trimmed, lowercased address):
    /// what an `ErasureRequest` resource or the admin API takes instead of the shopper id or
    /// the hash, so neither is written anywhere.
    Digest {
        #[arg(long)]
        tenant: nudge_tenants::TenantId,
        #[arg(long, required_unless_present = "email_sha256", conflicts_with = "email_sha256")]
        shopper: Option<String>,
        #[arg(long)]
        email_sha256: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Print a new PASETO v4 secret key for `auth.signing_key` (keep it secret).
    Keygen,
    /// Print the public key of the control plane's `auth.signing_key` (from its configuration),
    /// for the cells' `members.token_public_keys`.
    PublicKey,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let no_flags = serde_json::json!({});
    let shutdown = CancellationToken::new();
    match cli.command {
        Command::Dev => {
            let config: dev::DevConfig = nudge_platform_config::load("NUDGE_", cli.config.as_deref(), &no_flags)?;
            nudge_platform_telemetry::init(&config.log);
            tokio::spawn(nudge_platform_http::serve::cancel_on_signal(shutdown.clone()));
            dev::run(config, shutdown).await
        }
        Command::ControlPlane => {
            let config: ControlPlaneConfig =
                nudge_platform_config::load("NUDGE_CONTROL_PLANE__", cli.config.as_deref(), &no_flags)?;
            nudge_platform_telemetry::init(&config.log);
            let listener = tokio::net::TcpListener::bind(config.http.listen)
                .await
                .with_context(|| format!("binding {}", config.http.listen))?;
            tokio::spawn(nudge_platform_http::serve::cancel_on_signal(shutdown.clone()));
            nudge_web_api::run(config, listener, shutdown).await
        }
        Command::Cell => {
            let config: CellConfig = nudge_platform_config::load("NUDGE_CELL__", cli.config.as_deref(), &no_flags)?;
            nudge_platform_telemetry::init(&config.log);
            let listener = tokio::net::TcpListener::bind(config.http.listen)
                .await
                .with_context(|| format!("binding {}", config.http.listen))?;
            tokio::spawn(nudge_platform_http::serve::cancel_on_signal(shutdown.clone()));
            nudge_data_plane_cell::run(config, listener, shutdown).await
        }
        Command::Dlq { command: DlqCommand::Replay } => {
            let config: CellConfig = nudge_platform_config::load("NUDGE_CELL__", cli.config.as_deref(), &no_flags)?;
            nudge_platform_telemetry::init(&config.log);
            let report = nudge_platform_kafka::dlq::replay(&config.kafka).await?;
            for (topic, n) in &report.replayed {
                println!("replayed {n} records to {topic}");
            }
            println!("skipped {} records without a known original topic", report.skipped);
            Ok(())
        }
        Command::Topics { command: TopicsCommand::Render } => {
            print!("{}", nudge_contracts::topics::render_markdown());
            Ok(())
        }
        Command::Auth { command: AuthCommand::Keygen } => {
            println!("{}", nudge_control_plane::auth::tokens::TokenKeys::generate_hex()?);
            Ok(())
        }
        Command::Auth { command: AuthCommand::PublicKey } => {
            let config: ControlPlaneConfig =
                nudge_platform_config::load("NUDGE_CONTROL_PLANE__", cli.config.as_deref(), &no_flags)?;
            let secret = config.auth.signing_key.as_ref().ok_or_else(|| {
                anyhow::anyhow!("auth.signing_key is not set (NUDGE_CONTROL_PLANE__AUTH__SIGNING_KEY)")
            })?;
            println!("{}", nudge_tenants::access::public_key_hex(secrecy::ExposeSecret::expose_secret(secret))?);
            Ok(())
        }
        Command::Erasure { command: ErasureCommand::Digest { tenant, shopper, email_sha256 } } => {
            match (shopper, email_sha256) {
                (Some(shopper), _) => {
                    let shopper = nudge_contracts::ShopperId::parse(&shopper)?;
                    println!("{}", nudge_contracts::subject_digest(tenant.as_uuid(), &shopper));
                }
                (None, Some(hash)) => {
                    let hash = hash.trim().to_ascii_lowercase();
                    anyhow::ensure!(
                        nudge_contracts::is_sha256_hex(&hash),
                        "--email-sha256 must be the SHA-256 of the trimmed, lowercased address (64 hex digits)"
                    );
                    println!("{}", nudge_contracts::email_digest(tenant.as_uuid(), &hash));
                }
                (None, None) => anyhow::bail!("give --shopper or --email-sha256"),
            }
            Ok(())
        }
        Command::Listen { cell, key, origin, shopper } => {
            tokio::spawn(nudge_platform_http::serve::cancel_on_signal(shutdown.clone()));
            listen::run(&cell, &key, &origin, &shopper, shutdown).await
        }
        Command::Migrate => {
            let config: ControlPlaneConfig =
                nudge_platform_config::load("NUDGE_CONTROL_PLANE__", cli.config.as_deref(), &no_flags)?;
            nudge_platform_telemetry::init(&config.log);
            let owner = config.database.owner_options().map_err(anyhow::Error::msg)?;
            nudge_migrations::ensure_database(&owner).await?;
            nudge_migrations::migrate(&owner).await?;
            nudge_control_plane::catalog::check(&owner).await?;
            tracing::info!("migrations applied; tenant-isolation rules hold");
            Ok(())
        }
    }
}
