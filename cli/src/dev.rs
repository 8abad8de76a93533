//! `nudge dev`: the whole platform in one process, for a developer's machine.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use nudge_contracts::control::{ApiKeyList, LoginRequest, SessionTokens, SignupRequest, SignupResponse};
use nudge_control_plane::ControlPlaneConfig;
use nudge_data_plane_cell::CellConfig;
use nudge_platform_config::Validate;
use nudge_platform_telemetry::{LogConfig, LogFormat};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::storefront::{self, DemoStore};

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
            cell: CellConfig {
                // One process on a developer's machine: no load balancer needs time to notice
                // a drain, so Ctrl-C stops at once.
                drain: nudge_data_plane_cell::config::DrainConfig { grace_ms: 0 },
                ..CellConfig::default()
            },
            storefront: StorefrontConfig::default(),
            log: LogConfig { format: LogFormat::Pretty, filter: "info,rustify=off".into() },
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
    if control_plane.placement.local.cell_program.is_none() {
        // Dedicated cells (POST /v1/admin/tenants/{id}/isolation) run as `nudge cell`
        // processes of this very binary.
        control_plane.placement.local.cell_program = std::env::current_exe().ok();
        control_plane.placement.local.cell_args = vec!["cell".to_owned()];
    }
    let mut cell = config.cell.clone();
    // The console reads reports from the cell with members' access tokens: the cell verifies
    // them with the control plane's public key.
    let signing_key = match &control_plane.auth.signing_key {
        Some(key) => key.expose_secret().to_owned(),
        None => {
            let key = nudge_control_plane::auth::tokens::TokenKeys::generate_hex()?;
            control_plane.auth.signing_key = Some(SecretString::from(key.clone()));
            key
        }
    };
    if cell.members.token_public_keys.is_empty() {
        cell.members.token_public_keys = vec![nudge_tenants::access::public_key_hex(&signing_key)?];
    }
    let cp = tokio::spawn(nudge_web_api::run(control_plane, cp_listener, shutdown.clone()));
    if std::env::var_os("NUDGE_CELL__DRAIN__GRACE_MS").is_none() {
        // The default above is lost when any NUDGE_CELL__ variable is set (scripts/dev sets
        // the broker): the section is then read whole, with the cell's own defaults.
        cell.drain.grace_ms = 0;
    }
    if cell.sessions.secrets.is_empty() {
        // One process holds every socket here, so a secret of its own is enough; a real
        // deployment shares one across the cell's replicas (sessions.secrets).
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness for the session secret: {e}"))?;
        cell.sessions.secrets = vec![SecretString::from(hex::encode(secret))];
        tracing::info!("sessions.secrets unset: this run signs shopper session tokens with a random secret");
    }
    let cell = tokio::spawn(nudge_data_plane_cell::run(cell, cell_listener, shutdown.clone()));

    let store_port = config.storefront.listen.port();
    let tenant = sign_up_demo_store(&cp_url, &cell_url, &store_url, store_port).await?;
    let store = tokio::spawn(storefront::serve(store_listener, tenant.clone(), shutdown.clone()));

    println!();
    println!("  Nudge is running.");
    println!();
    println!(
        "  Demo store        {store_url}   ← open this, add to cart, then move the pointer out through the top of the window"
    );
    println!("  Cell              {cell_url}   (ingest, sockets, /nudge.js)");
    println!("  Console           {cp_url}/console   (sign up a store, or sign in as the demo owner below)");
    println!("  Control plane     {cp_url}   (POST /v1/tenants)");
    println!("  Metrics           {cell_url}/metrics   {cp_url}/metrics");
    println!();
    println!("  Demo tenant       {}", tenant.tenant_id);
    println!("  Publishable key   {}", tenant.publishable_key);
    println!("  Owner sign-in     {DEMO_EMAIL} / {DEMO_PASSWORD}   (console, or POST {cp_url}/v1/sessions)");
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

/// The demo store's owner, to sign in to the API with.
pub const DEMO_EMAIL: &str = "owner@demo-store.example";
pub const DEMO_PASSWORD: &str = "demo store password";

/// Signs up the demo store through the public API, as a merchant would; on later runs
/// (the database keeps it) signs in as its owner and reads its publishable key instead.
async fn sign_up_demo_store(
    cp_url: &str,
    cell_url: &str,
    store_url: &str,
    store_port: u16,
) -> anyhow::Result<DemoStore> {
    let client = reqwest::Client::new();
    let request = SignupRequest {
        name: "Demo Outdoor Co.".into(),
        allowed_origins: vec![store_url.to_owned(), format!("http://localhost:{store_port}")],
        email: DEMO_EMAIL.into(),
        password: DEMO_PASSWORD.into(),
    };
    let mut last_error = None;
    for _ in 0..50 {
        match client.post(format!("{cp_url}/v1/tenants")).json(&request).send().await {
            Ok(r) if r.status().is_success() => {
                let created: SignupResponse = r.json().await?;
                return Ok(DemoStore {
                    tenant_id: created.tenant_id,
                    publishable_key: created.publishable_key,
                    cell_url: created.cell_url,
                });
            }
            Ok(r) if r.status() == reqwest::StatusCode::CONFLICT => {
                return existing_demo_store(&client, cp_url, cell_url).await;
            }
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

async fn existing_demo_store(client: &reqwest::Client, cp_url: &str, cell_url: &str) -> anyhow::Result<DemoStore> {
    let login = LoginRequest { email: DEMO_EMAIL.into(), password: DEMO_PASSWORD.into(), tenant_id: None };
    let r = client.post(format!("{cp_url}/v1/sessions")).json(&login).send().await?;
    anyhow::ensure!(r.status().is_success(), "signing in to the demo store answered {}", r.status());
    let session: SessionTokens = r.json().await?;
    let keys: ApiKeyList = client
        .get(format!("{cp_url}/v1/tenants/{}/api-keys", session.tenant_id))
        .bearer_auth(&session.access_token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let key = keys
        .items
        .into_iter()
        .find(|k| k.kind == "publishable" && k.revoked_at.is_none())
        .ok_or_else(|| anyhow::anyhow!("the demo store has no live publishable key"))?;
    Ok(DemoStore { tenant_id: session.tenant_id, publishable_key: key.display, cell_url: cell_url.to_owned() })
}
