//! The platform for one test: control plane and cell in-process on port 0, against a broker,
//! a database and a Redis key prefix of the test's own.

use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use nudge_contracts::{
    control::{SessionTokens, SignupRequest, SignupResponse},
    ingest::SessionIssued,
    push::{ClientMessage, PushMessage},
};
use nudge_control_plane::ControlPlaneConfig;
use nudge_data_plane_cell::CellConfig;
use nudge_data_plane_gateway::route::{InterventionPublisher, Naming};
use secrecy::SecretString;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};
use tokio_util::sync::CancellationToken;

use crate::{Broker, TestDatabase, VaultServer, env::TestEnv, unique_suffix};

/// The password of every account the harness creates.
pub const PASSWORD: &str = "correct horse battery staple";

/// The operator token every test platform accepts, as operator `ops`.
pub const OPERATOR_TOKEN: &str = "test-operator-token-0123456789abcdef";

/// A running platform. Dropping it stops the services (cancel + abort).
pub struct Platform {
    pub broker: Broker,
    pub db: TestDatabase,
    /// The platform's vault: the control plane signs erasure receipts with a Transit key,
    /// the cell wraps shoppers' data keys with the tenants' Transit keys.
    pub vault: VaultServer,
    /// Prefix of this test's Redis keys and channels.
    pub redis_prefix: String,
    pub redis_url: String,
    pub control_plane_url: String,
    pub cell_url: String,
    pub cell_config: CellConfig,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.shutdown.cancel();
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Platform {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(Broker::start().await?, |_, _| {}).await
    }

    /// Starts against a broker that keeps its records across `kill` and `restart`.
    pub async fn start_durable() -> anyhow::Result<Self> {
        Self::start_on(Broker::start_durable().await?, |_, _| {}).await
    }

    /// [`Platform::start_durable`] with configuration adjusted by `tweak`.
    pub async fn start_durable_with(
        tweak: impl FnOnce(&mut ControlPlaneConfig, &mut CellConfig),
    ) -> anyhow::Result<Self> {
        Self::start_on(Broker::start_durable().await?, tweak).await
    }

    /// Starts with configuration adjusted by `tweak` (after the harness has filled in
    /// ports, database, broker and prefixes).
    pub async fn start_with(tweak: impl FnOnce(&mut ControlPlaneConfig, &mut CellConfig)) -> anyhow::Result<Self> {
        Self::start_on(Broker::start().await?, tweak).await
    }

    async fn start_on(
        broker: Broker,
        tweak: impl FnOnce(&mut ControlPlaneConfig, &mut CellConfig),
    ) -> anyhow::Result<Self> {
        crate::init_test_logging();
        let env = TestEnv::load();
        let (db, vault) = tokio::try_join!(TestDatabase::create(), VaultServer::start())?;
        let redis_prefix = format!("nudge-test:{}:", unique_suffix());

        let cp_listener = TcpListener::bind("127.0.0.1:0").await?;
        let cell_listener = TcpListener::bind("127.0.0.1:0").await?;
        let control_plane_url = format!("http://{}", cp_listener.local_addr()?);
        let cell_url = format!("http://{}", cell_listener.local_addr()?);

        let mut cp = ControlPlaneConfig::default();
        cp.http.listen = cp_listener.local_addr()?;
        cp.database.url = SecretString::from(db.app_url.clone());
        cp.database.owner_url = SecretString::from(db.owner_url.clone());
        cp.database.max_connections = 4;
        cp.kafka.brokers = broker.bootstrap();
        cp.outbox.poll_interval_ms = 100;
        cp.placement.shared_cell_url = cell_url.clone();
        cp.admin.tokens.insert("ops".into(), SecretString::from(OPERATOR_TOKEN));
        cp.redis.url = SecretString::from(env.redis_url.clone());
        cp.redis.prefix = format!("{redis_prefix}cp:");
        cp.vault.address = vault.address();
        cp.vault.token = SecretString::from(vault.token.clone());
        // A store whose grace period ends (an operator's `grace_days: 0`) is purged at once.
        cp.offboarding.sweep_interval_ms = 250;
        // Dedicated cells start as processes of the real cell binary.
        cp.placement.local.cell_program = env.cell_bin.clone();

        let mut cell = CellConfig::default();
        cell.http.listen = cell_listener.local_addr()?;
        cell.kafka.brokers = broker.bootstrap();
        cell.redis.url = SecretString::from(env.redis_url.clone());
        cell.redis.prefix = redis_prefix.clone();
        cell.vault.address = vault.address();
        cell.vault.token = SecretString::from(vault.token.clone());
        cell.inference.onnxruntime_library = env.onnxruntime.clone();
        // One partition keeps consumer-group start-up quick on the test broker.
        cell.kafka.partitions_override = 1;
        // Re-check sockets often, so tests see a suspension close them quickly.
        cell.gateway.ping_interval_ms = 200;
        cell.sessions.secrets =
            vec![SecretString::from(format!("test-session-secret-{}-0123456789abcdef", unique_suffix()))];
        // Tests stop platforms often; a drain needs no time for load balancers here.
        cell.drain.grace_ms = 50;
        // Nothing is in flight for long here; erasures report quickly.
        cell.erasure.settle_ms = 300;
        cp.kafka.partitions_override = 1;
        // Tests receive campaign webhooks on loopback.
        cp.campaigns.allow_loopback_webhooks = true;
        cell.channels.webhooks.allow_loopback = true;
        cell.channels.public_url = cell_url.clone();
        // Members' access tokens (the console's reports) verify on the cell.
        let signing_key = nudge_control_plane::auth::tokens::TokenKeys::generate_hex()?;
        cell.members.token_public_keys = vec![nudge_tenants::access::public_key_hex(&signing_key)?];
        cp.auth.signing_key = Some(SecretString::from(signing_key));
        tweak(&mut cp, &mut cell);

        let shutdown = CancellationToken::new();
        let cell_task = tokio::spawn(nudge_data_plane_cell::run(cell.clone(), cell_listener, shutdown.clone()));
        let cp_task = tokio::spawn(nudge_web_api::run(cp, cp_listener, shutdown.clone()));
        let mut platform = Self {
            broker,
            db,
            vault,
            redis_prefix,
            redis_url: env.redis_url.clone(),
            control_plane_url,
            cell_url,
            cell_config: cell,
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?,
            shutdown,
            tasks: vec![cell_task, cp_task],
        };
        let (cell_url, cp_url) = (platform.cell_url.clone(), platform.control_plane_url.clone());
        platform.wait_ready(&cell_url).await.context("cell never became ready")?;
        platform.wait_ready(&cp_url).await.context("control plane never became ready")?;
        Ok(platform)
    }

    /// Starts another process of this platform's cell (same cell id, topics, Redis prefix
    /// and session secrets) on its own port, configured by `tweak` (e.g. its roles), and
    /// waits until it is ready.
    pub async fn start_cell_process(&self, tweak: impl FnOnce(&mut CellConfig)) -> anyhow::Result<CellProcess> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut config = self.cell_config.clone();
        config.http.listen = listener.local_addr()?;
        tweak(&mut config);
        let url = format!("http://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(nudge_data_plane_cell::run(config, listener, shutdown.clone()));
        let mut last = String::new();
        for _ in 0..300 {
            anyhow::ensure!(!task.is_finished(), "the cell process stopped during start-up: {:?}", task.await);
            match self.http.get(format!("{url}/readyz")).send().await {
                Ok(r) if r.status().is_success() => return Ok(CellProcess { url, shutdown, task: Some(task) }),
                Ok(r) => last = r.text().await.unwrap_or_default(),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("{url}/readyz never answered 200; last: {last}")
    }

    /// A keyring over this platform's vault and the cell's Redis prefix, as the cell's, for
    /// reading what the cell sealed. Opening does not refresh a data key's expiry.
    pub async fn keyring(&self) -> anyhow::Result<std::sync::Arc<nudge_data_plane_keyring::Keyring>> {
        let redis = redis::Client::open(self.redis_url.as_str())?.get_connection_manager().await?;
        let vault = nudge_platform_vault::Vault::new(&self.cell_config.vault)?;
        let directory =
            std::sync::Arc::new(nudge_data_plane_directory::Directory::new(self.cell_config.cell_id.clone()));
        Ok(std::sync::Arc::new(nudge_data_plane_keyring::Keyring::new(
            vault,
            directory,
            redis,
            self.redis_prefix.clone(),
            self.cell_config.keys.clone(),
            &nudge_platform_telemetry::Metrics::new("test"),
        )))
    }

    /// Publishes interventions as the cell's pipeline does.
    pub async fn intervention_publisher(&self) -> anyhow::Result<InterventionPublisher> {
        // Generous timeouts: tests share two cores with everything else they start.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_connection_timeout(Some(Duration::from_secs(10)));
        let redis = redis::Client::open(self.redis_url.as_str())?.get_connection_manager_with_config(config).await?;
        Ok(InterventionPublisher::new(
            redis,
            Naming::new(&self.redis_prefix, &self.cell_config.cell_id),
            self.cell_config.gateway.history.clone(),
        ))
    }

    async fn wait_ready(&mut self, base: &str) -> anyhow::Result<()> {
        let mut last = String::new();
        for _ in 0..300 {
            if let Some(i) = self.tasks.iter().position(|t| t.is_finished()) {
                let outcome = self.tasks.remove(i).await;
                anyhow::bail!("a service stopped during start-up: {outcome:?}");
            }
            match self.http.get(format!("{base}/readyz")).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = r.text().await.unwrap_or_default(),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("{base}/readyz never answered 200; last: {last}")
    }

    /// Stops the services, waits for them to finish, and deletes the test's Redis keys.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        for t in self.tasks.drain(..) {
            tokio::time::timeout(Duration::from_secs(10), t).await.context("service did not stop")???;
        }
        let client = redis::Client::open(self.redis_url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let keys: Vec<String> = {
            let mut iter: redis::AsyncIter<'_, String> =
                redis::AsyncCommands::scan_match(&mut conn, format!("{}*", self.redis_prefix)).await?;
            let mut keys = Vec::new();
            while let Some(k) = futures_util::StreamExt::next(&mut iter).await {
                keys.push(k?);
            }
            keys
        };
        if !keys.is_empty() {
            redis::AsyncCommands::del::<_, ()>(&mut conn, keys).await?;
        }
        Ok(())
    }

    /// Signs up a store allowed on `origins`, owned by a fresh account (password [`PASSWORD`]).
    pub async fn sign_up(&self, name: &str, origins: &[&str]) -> anyhow::Result<SignupResponse> {
        let slug: String = name.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_lowercase();
        self.sign_up_as(name, origins, &format!("owner-{slug}-{}@example.com", unique_suffix())).await
    }

    /// Signs up a store owned by `email` (password [`PASSWORD`]).
    pub async fn sign_up_as(&self, name: &str, origins: &[&str], email: &str) -> anyhow::Result<SignupResponse> {
        let request = SignupRequest {
            name: name.into(),
            allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
            email: email.into(),
            password: PASSWORD.into(),
        };
        let response = self.http.post(format!("{}/v1/tenants", self.control_plane_url)).json(&request).send().await?;
        anyhow::ensure!(response.status() == 201, "signup answered {}: {}", response.status(), response.text().await?);
        Ok(response.json().await?)
    }

    /// Signs up a store and waits until the cell knows its key.
    pub async fn sign_up_ready(&self, name: &str, origin: &str) -> anyhow::Result<SignupResponse> {
        let tenant = self.sign_up(name, &[origin]).await?;
        self.wait_for_key(&tenant.publishable_key, origin).await?;
        Ok(tenant)
    }

    /// Waits until the cell accepts `key` from `origin` (an empty batch then answers 422).
    pub async fn wait_for_key(&self, key: &str, origin: &str) -> anyhow::Result<()> {
        for _ in 0..200 {
            let r = self.post_events(key, Some(origin), &serde_json::json!({"events": []})).await?;
            if r.status() == 422 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the cell never learned key {key}")
    }

    /// Signs in as `email` (with [`PASSWORD`]); the session's tokens.
    pub async fn login(&self, email: &str, tenant: Option<&str>) -> anyhow::Result<SessionTokens> {
        let body = serde_json::json!({"email": email, "password": PASSWORD, "tenant_id": tenant});
        let r = self.http.post(format!("{}/v1/sessions", self.control_plane_url)).json(&body).send().await?;
        anyhow::ensure!(r.status() == 200, "login answered {}: {}", r.status(), r.text().await?);
        Ok(r.json().await?)
    }

    /// Creates a secret key with `scopes` for `tenant` as its owner `owner_email`; the key
    /// (the cell learns of it within moments: the caller waits in its own way).
    pub async fn create_secret_key(&self, owner_email: &str, tenant: &str, scopes: &[&str]) -> anyhow::Result<String> {
        let tokens = self.login(owner_email, None).await?;
        let created: serde_json::Value = self
            .http
            .post(format!("{}/v1/tenants/{tenant}/api-keys", self.control_plane_url))
            .bearer_auth(&tokens.access_token)
            .json(&serde_json::json!({"name": "server", "scopes": scopes}))
            .send()
            .await?
            .json()
            .await?;
        let secret = created["secret_key"].as_str().unwrap_or_default().to_owned();
        anyhow::ensure!(secret.starts_with("sk_"), "no secret key in {created}");
        Ok(secret)
    }

    /// Waits until the cell's pipeline has processed at least `events` events in all, so a
    /// test can assert that something did *not* happen as a result of them.
    pub async fn wait_processed(&self, events: u64) -> anyhow::Result<()> {
        let mut seen = 0;
        for _ in 0..300 {
            let text = self.http.get(format!("{}/metrics", self.cell_url)).send().await?.text().await?;
            seen = text
                .lines()
                .find_map(|l| l.strip_prefix("nudge_cell_pipeline_events_processed_total "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0) as u64;
            if seen >= events {
                // The decision for the last event may still be on its way to the socket.
                tokio::time::sleep(Duration::from_millis(300)).await;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the pipeline processed {seen} events, expected {events}")
    }

    /// `POST /v1/admin/tenants/{tenant}/transitions` as operator `ops`.
    pub async fn transition(&self, tenant: &str, to: &str, reason: &str) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .http
            .post(format!("{}/v1/admin/tenants/{tenant}/transitions", self.control_plane_url))
            .bearer_auth(OPERATOR_TOKEN)
            .json(&serde_json::json!({"to": to, "reason": reason}))
            .send()
            .await?)
    }

    /// `POST /v1/events` with a publishable key and an optional Origin.
    pub async fn post_events(
        &self,
        key: &str,
        origin: Option<&str>,
        body: &serde_json::Value,
    ) -> anyhow::Result<reqwest::Response> {
        self.post_events_to(&self.cell_url, key, origin, body).await
    }

    /// [`Platform::post_events`] to the cell at `cell_url` (a store's dedicated cell).
    pub async fn post_events_to(
        &self,
        cell_url: &str,
        key: &str,
        origin: Option<&str>,
        body: &serde_json::Value,
    ) -> anyhow::Result<reqwest::Response> {
        let mut request = self.http.post(format!("{cell_url}/v1/events")).bearer_auth(key).json(body);
        if let Some(o) = origin {
            request = request.header("Origin", o);
        }
        Ok(request.send().await?)
    }

    /// A session token for `shopper`, as the snippet gets one (`POST /v1/sessions`).
    pub async fn session_token(&self, key: &str, origin: &str, shopper: &str) -> anyhow::Result<String> {
        let response = self
            .http
            .post(format!("{}/v1/sessions", self.cell_url))
            .bearer_auth(key)
            .header("Origin", origin)
            .json(&serde_json::json!({ "shopper_id": shopper }))
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 201,
            "POST /v1/sessions: {} {}",
            response.status(),
            response.text().await?
        );
        Ok(response.json::<SessionIssued>().await?.token)
    }

    /// A WebSocket upgrade request to `{base}/v1/ws?{query}` from `origin`, sent as plain HTTP,
    /// so a refusal's status and error body can be read.
    pub async fn upgrade_request(&self, base: &str, query: &str, origin: &str) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .http
            .get(format!("{base}/v1/ws?{query}"))
            .header("Origin", origin)
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
            .await?)
    }

    /// Opens a shopper socket with a fresh session token; fails with the HTTP status when
    /// the upgrade is refused.
    pub async fn connect_shopper(&self, key: &str, origin: &str, shopper: &str) -> anyhow::Result<ShopperSocket> {
        Ok(self.connect_shopper_at(&self.cell_url, key, origin, shopper, None).await?.0)
    }

    /// Opens a shopper socket on the gateway at `base` with a fresh session token (from this
    /// platform's cell), resuming after `last_id`; with the number of interventions replayed.
    pub async fn connect_shopper_at(
        &self,
        base: &str,
        key: &str,
        origin: &str,
        shopper: &str,
        last_id: Option<&str>,
    ) -> anyhow::Result<(ShopperSocket, usize)> {
        let token = self.session_token(key, origin, shopper).await?;
        let resume = last_id.map(|id| format!("&last_id={id}")).unwrap_or_default();
        let query = format!("key={key}&token={token}{resume}");
        // Another process of the cell may not have read the tenant's key yet: 401 for a
        // moment, as for a browser on a just-created store.
        let mut attempts = 0;
        let mut socket = loop {
            match ShopperSocket::open(base, &query, origin).await {
                Err(e) if attempts < 100 && e.to_string().contains("401") => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => break other?,
            }
        };
        let replaying = socket.ready().await?;
        Ok((socket, replaying))
    }
}

/// Another process of the platform's cell. Dropping it stops it at once.
pub struct CellProcess {
    pub url: String,
    /// Cancelling it is what SIGTERM does to a cell: drain, then stop.
    pub shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl CellProcess {
    /// Drains and stops the process, as on SIGTERM; its outcome.
    pub async fn terminate(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => {
                tokio::time::timeout(Duration::from_secs(30), task).await.context("the cell did not stop")??
            }
            None => Ok(()),
        }
    }
}

impl Drop for CellProcess {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// A shopper's WebSocket, as a browser holds it./// A shopper's WebSocket, as a browser holds it.
pub struct ShopperSocket {
    ws: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
}

impl ShopperSocket {
    /// Opens `/v1/ws?{query}` on `base` from `origin`, reading nothing yet.
    pub async fn open(base: &str, query: &str, origin: &str) -> anyhow::Result<Self> {
        let url = format!("{}/v1/ws?{query}", base.replacen("http", "ws", 1));
        let mut request = url.into_client_request()?;
        request.headers_mut().insert("Origin", HeaderValue::from_str(origin)?);
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Self { ws })
    }

    /// Reads the `ready` message; how many interventions are about to be replayed.
    pub async fn ready(&mut self) -> anyhow::Result<usize> {
        match self.next_message(Duration::from_secs(5)).await? {
            Some(PushMessage::Ready { replaying, .. }) => Ok(replaying),
            other => anyhow::bail!("expected a ready message, got {other:?}"),
        }
    }

    /// Acknowledges an intervention, as the snippet does once it is shown.
    pub async fn ack(&mut self, intervention_id: &str) -> anyhow::Result<()> {
        let ack = serde_json::to_string(&ClientMessage::Ack { intervention_id: intervention_id.to_owned() })?;
        self.ws.send(Message::Text(ack.into())).await?;
        Ok(())
    }

    /// Sends a raw frame.
    pub async fn send(&mut self, message: Message) -> anyhow::Result<()> {
        self.ws.send(message).await?;
        Ok(())
    }

    /// The close code and reason the server closes with, within `wait`.
    pub async fn close_frame(&mut self, wait: Duration) -> anyhow::Result<Option<(u16, String)>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => anyhow::bail!("the socket stayed open"),
                Ok(None) | Ok(Some(Err(_))) => return Ok(None),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Ok(frame.map(|f| (f.code.into(), f.reason.to_string())));
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Waits for the server to close the socket; its close code.
    pub async fn closed(&mut self, wait: Duration) -> anyhow::Result<Option<u16>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => anyhow::bail!("the socket stayed open"),
                Ok(None) => return Ok(None),
                Ok(Some(Err(_))) => return Ok(None),
                Ok(Some(Ok(Message::Close(frame)))) => return Ok(frame.map(|f| f.code.into())),
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// The next message, or `None` when none arrives within `wait`.
    pub async fn next_message(&mut self, wait: Duration) -> anyhow::Result<Option<PushMessage>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Ok(None),
                Ok(None) => anyhow::bail!("socket closed"),
                Ok(Some(frame)) => frame?,
            };
            if let Message::Text(text) = frame {
                return Ok(Some(serde_json::from_str(&text)?));
            }
        }
    }
}
