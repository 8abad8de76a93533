//! `nudge dev`: the whole platform in one process, for a developer's machine.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use nudge_contracts::control::{SignupRequest, SignupResponse};
use nudge_control_plane::ControlPlaneConfig;
use nudge_data_plane_cell::CellConfig;
use nudge_platform_config::Validate;
use nudge_platform_telemetry::{LogConfig, LogFormat};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::storefront;

/// Configuration of `nudge dev`: the two services' own sections, under the same
/// environment names they read when run alone (`NUDGE_CELL__…`, `NUDGE_CONTROL_PLANE__…`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DevConfig {
    pub control_plane: ControlPlaneConfig,
    pub cell: CellConfig,
    pub storefront: StorefrontConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StorefrontConfig {
    /// Where the demo store listens.
    pub listen: SocketAddr,
}

impl Default for StorefrontConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 8082)) }
    }
}

impl Default for DevConfig {
    fn default() -> Self {
        Self {
            control_plane: ControlPlaneConfig::default(),
            cell: CellConfig::default(),
            storefront: StorefrontConfig::default(),
            log: LogConfig { format: LogFormat::Pretty, filter: "info".into() },
        }
    }
}

impl Validate for DevConfig {
    fn validate(&self) -> Result<(), String> {
        self.control_plane.validate()?;
        self.cell.validate()
    }
}

pub async fn run(config: DevConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let owner = config.control_plane.database.owner_options().map_err(anyhow::Error::msg)?;
    nudge_migrations::ensure_database(&owner).await.context("creating the database (is PostgreSQL running?)")?;
    nudge_migrations::migrate(&owner).await?;
    nudge_control_plane::catalog::check(&owner).await?;

    let cp_listener = bind(config.control_plane.http.listen).await?;
    let cell_listener = bind(config.cell.http.listen).await?;
    let store_listener = bind(config.storefront.listen).await?;
    let cp_url = format!("http://{}", cp_listener.local_addr()?);
    let cell_url = format!("http://{}", cell_listener.local_addr()?);
    let store_url = format!("http://{}", store_listener.local_addr()?);

    let mut control_plane = config.control_plane.clone();
    control_plane.placement.shared_cell_url = cell_url.clone();
    control_plane.placement.shared_cell_id = config.cell.cell_id.clone();
    let cp = tokio::spawn(nudge_web_api::run(control_plane, cp_listener, shutdown.clone()));
    let cell = tokio::spawn(nudge_data_plane_cell::run(config.cell.clone(), cell_listener, shutdown.clone()));

    let store_port = config.storefront.listen.port();
    let tenant = sign_up_demo_store(&cp_url, &store_url, store_port).await?;
    let store = tokio::spawn(storefront::serve(store_listener, tenant.clone(), shutdown.clone()));

    println!();
    println!("  Nudge is running.");
    println!();
    println!(
        "  Demo store        {store_url}   ← open this, add to cart, then move the pointer out through the top of the window"
    );
    println!("  Cell              {cell_url}   (ingest, sockets, /nudge.js)");
    println!("  Control plane     {cp_url}   (POST /v1/tenants)");
    println!("  Metrics           {cell_url}/metrics   {cp_url}/metrics");
    println!();
    println!("  Demo tenant       {}", tenant.tenant_id);
    println!("  Publishable key   {}", tenant.publishable_key);
    println!();
    println!("  Ctrl-C stops everything.");
    println!();

    let (cp, cell, store) = tokio::join!(cp, cell, store);
    cp??;
    cell??;
    store??;
    Ok(())
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("binding {addr} (already in use?)"))
}

/// Signs up the demo store through the public API, as a merchant would.
async fn sign_up_demo_store(cp_url: &str, store_url: &str, store_port: u16) -> anyhow::Result<SignupResponse> {
    let client = reqwest::Client::new();
    let request = SignupRequest {
        name: "Demo Outdoor Co.".into(),
        allowed_origins: vec![store_url.to_owned(), format!("http://localhost:{store_port}")],
    };
    let mut last_error = None;
    for _ in 0..50 {
        match client.post(format!("{cp_url}/v1/tenants")).json(&request).send().await {
            Ok(r) if r.status().is_success() => return Ok(r.json().await?),
            Ok(r) => {
                last_error =
                    Some(anyhow::anyhow!("signup answered {}: {}", r.status(), r.text().await.unwrap_or_default()))
            }
            Err(e) => last_error = Some(e.into()),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("signup failed")))
}
