//! What the load is sent to: the cell's ingest route (with the broker out of the loop, or
//! with the real Kafka sink), a trivial axum handler, and a bare rdkafka producer.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::{Router, http::StatusCode, middleware::from_fn_with_state, routing::post};
use bytes::Bytes;
use nudge_contracts::{
    Topic,
    headers::{EVENT_V1, SEALED_V1},
    proto::{
        control::v1::{Limits, TenantConfig, TenantState},
        events::v1::{Event, PageView, event::Payload},
        features::v1::SubjectKey,
        sealed::v1::Sealed,
    },
};
use nudge_data_plane_directory::{
    Directory,
    session::{SessionConfig, SessionSigner},
};
use nudge_data_plane_ingest::{
    IngestConfig, IngestState,
    dedup::RedisDedup,
    limits::RateLimiter,
    routes::IngestMetrics,
    sink::{EventSink, SinkFuture},
    usage::UsageCounters,
};
use nudge_data_plane_keyring::{Keyring, KeyringConfig};
use nudge_platform_http::middleware::{HttpMetrics, trace_layer};
use nudge_platform_kafka::{KafkaConfig, headers::HeaderValues};
use nudge_platform_telemetry::{Metrics, TraceContext};
use nudge_tenants::{CellId, PublishableKey, TenantId};
use prost::Message;
use rdkafka::producer::FutureRecord;
use tokio::process::{Child, Command};

use crate::load::Outcome;

pub const ORIGIN: &str = "https://bench.example.com";

/// Takes every batch at once: the ingest path without the broker.
pub struct NullSink;

impl EventSink for NullSink {
    fn publish(
        &self,
        _records: Vec<nudge_data_plane_ingest::sink::EventRecord>,
        _: Option<TraceContext>,
    ) -> SinkFuture<'_> {
        Box::pin(async { Ok(()) })
    }
}

/// A store on the benchmark's cell, with limits no load here reaches.
pub struct Store {
    pub tenant: TenantId,
    pub key: PublishableKey,
}

/// A directory holding one new active store allowed `connections` open sockets.
pub fn directory(connections: u32) -> anyhow::Result<(Arc<Directory>, Store)> {
    directory_for(Store { tenant: TenantId::new(), key: PublishableKey::generate()? }, connections)
}

/// A directory holding `store`, active, allowed `connections` open sockets.
pub fn directory_for(store: Store, connections: u32) -> anyhow::Result<(Arc<Directory>, Store)> {
    let cell = CellId::default_shared();
    let directory = Directory::new(cell.clone());
    let config = TenantConfig {
        tenant_id: store.tenant.to_string(),
        state: TenantState::Active as i32,
        cell_id: cell.to_string(),
        publishable_keys: vec![store.key.to_string()],
        allowed_origins: vec![ORIGIN.into()],
        revision: 1,
        updated_at_ms: 0,
        server_keys: vec![],
        limits: Some(Limits {
            plan: "enterprise".into(),
            events_per_second: u32::MAX,
            burst_events: u32::MAX,
            connections,
            retention_days: 30,
        }),
        ..TenantConfig::default()
    };
    directory.apply(store.tenant.to_string().as_bytes(), Some(&config.encode_to_vec()))?;
    directory.mark_caught_up();
    Ok((Arc::new(directory), store))
}

async fn serve(router: Router) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(addr)
}

/// Signs session tokens in benchmarks (nothing outside the run trusts them).
pub const BENCH_SESSION_SECRET: &str = "bench-session-secret-0123456789abcdef0123";

/// The cell's ingest route as the cell mounts it (with its tracing and metrics layer):
/// authorisation, validation, rate limit, event-id dedup in Redis, sealing with the
/// shoppers' data keys (wrapped by `vault`), then `sink`.
pub async fn ingest(
    sink: Arc<dyn EventSink>,
    redis: redis::aio::ConnectionManager,
    vault: &Vault,
    prefix: &str,
) -> anyhow::Result<(SocketAddr, Store)> {
    let (directory, store) = directory(1000)?;
    let metrics = Metrics::new("bench");
    let keyring = Keyring::new(
        nudge_platform_vault::Vault::new(&vault.config())?,
        directory.clone(),
        redis.clone(),
        prefix.to_owned(),
        KeyringConfig::default(),
        &metrics,
    );
    let state = IngestState {
        directory,
        limiter: Arc::new(RateLimiter::default()),
        dedup: Arc::new(RedisDedup::new(redis, prefix.to_owned())),
        usage: Arc::new(UsageCounters::default()),
        sink,
        keyring: Arc::new(keyring),
        config: IngestConfig { max_batch_events: 1000, ..IngestConfig::default() },
        metrics: IngestMetrics::register(&metrics),
        sessions: Arc::new(SessionSigner::new(&SessionConfig {
            secrets: vec![BENCH_SESSION_SECRET.into()],
            ..SessionConfig::default()
        })?),
    };
    let (router, _) = nudge_data_plane_ingest::router().with_state(state).split_for_parts();
    let router = router.layer(from_fn_with_state(HttpMetrics::register(&metrics), trace_layer));
    Ok((serve(router).await?, store))
}

/// A handler that reads the body and answers 202: the floor any ingest path stands on.
pub async fn trivial() -> anyhow::Result<SocketAddr> {
    async fn accept(_body: Bytes) -> (StatusCode, &'static str) {
        (StatusCode::ACCEPTED, r#"{"accepted":true}"#)
    }
    serve(Router::new().route("/v1/events", post(accept))).await
}

/// A tansu broker in memory on a free port, stopped when dropped.
pub struct Broker {
    pub bootstrap: String,
    child: Child,
}

impl Broker {
    pub async fn start() -> anyhow::Result<Self> {
        let bin = std::env::var_os("NUDGE_TANSU_BIN")
            .map(PathBuf::from)
            .context("NUDGE_TANSU_BIN is not set (run scripts/bench)")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(Self { bootstrap: format!("127.0.0.1:{port}"), child });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        anyhow::bail!("tansu did not start")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// An OpenBao dev server (`NUDGE_BAO_BIN`, in memory) with Transit mounted: the vault whose
/// keys wrap the data keys ingest seals events with.
pub struct Vault {
    port: u16,
    child: Child,
}

const BENCH_VAULT_TOKEN: &str = "bench-root-token";

impl Vault {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

impl Vault {
    pub async fn start() -> anyhow::Result<Self> {
        let bin = std::env::var_os("NUDGE_BAO_BIN")
            .map(PathBuf::from)
            .context("NUDGE_BAO_BIN is not set (run scripts/bench)")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(&bin)
            .args(["server", "-dev", &format!("-dev-root-token-id={BENCH_VAULT_TOKEN}")])
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .env("BAO_LOG_LEVEL", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let vault = Self { port, child };
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        for _ in 0..400 {
            let mounted = http
                .post(format!("http://127.0.0.1:{port}/v1/sys/mounts/transit"))
                .header("X-Vault-Token", BENCH_VAULT_TOKEN)
                .json(&serde_json::json!({ "type": "transit" }))
                .send()
                .await;
            if mounted.is_ok_and(|r| r.status().is_success()) {
                return Ok(vault);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        anyhow::bail!("OpenBao did not start")
    }

    pub fn config(&self) -> nudge_platform_vault::VaultConfig {
        nudge_platform_vault::VaultConfig {
            address: format!("http://127.0.0.1:{}", self.port),
            token: BENCH_VAULT_TOKEN.to_owned().into(),
            ..nudge_platform_vault::VaultConfig::default()
        }
    }
}

/// The records ingest would write for request `seq` of `worker`: the same keys and headers,
/// built without HTTP; the values are the events unsealed (about 45 bytes shorter).
fn records(tenant: TenantId, worker: usize, seq: u64, batch: usize) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let now = chrono::Utc::now().timestamp_millis();
    (0..batch)
        .map(|i| {
            let shopper = crate::ingest::shopper(worker, seq, i);
            let digest = nudge_contracts::ShopperId::parse(&shopper)
                .map(|s| nudge_contracts::subject_digest(tenant.as_uuid(), &s))
                .unwrap_or_default();
            let key = SubjectKey { tenant_id: tenant.to_string(), subject_digest: digest.clone() };
            let event = Event {
                tenant_id: tenant.to_string(),
                event_id: crate::ingest::event_id("bare", worker, seq, i),
                shopper_id: shopper,
                occurred_at_ms: now,
                received_at_ms: now,
                payload: Some(Payload::PageView(PageView::default())),
                time_zone: String::new(),
            };
            // What ingest writes is the event sealed in a `Sealed` envelope; the bare
            // producer sends one of the same size (a random nonce and tag around the
            // event's bytes) without encrypting, which is the ingest path's own work.
            let mut nonce = vec![0u8; 12];
            let mut tag = [0u8; 16];
            nudge_platform_telemetry::random::fill(&mut nonce)?;
            nudge_platform_telemetry::random::fill(&mut tag)?;
            let mut ciphertext = event.encode_to_vec();
            ciphertext.extend_from_slice(&tag);
            let sealed = Sealed {
                tenant_id: tenant.to_string(),
                subject_digest: digest,
                schema: EVENT_V1.name.to_owned(),
                nonce,
                ciphertext,
            };
            Ok((key.encode_to_vec(), sealed.encode_to_vec()))
        })
        .collect()
}

/// A bare rdkafka producer (the platform's producer settings) writing what ingest would
/// write, `batch` records at a time from `workers` tasks, each waiting for its
/// acknowledgements like an ingest request does.
pub async fn bare_producer(
    kafka: &KafkaConfig,
    workers: usize,
    batch: usize,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let producer = nudge_platform_kafka::producer(kafka, "bench-bare")?;
    let topic = kafka.topics().name(Topic::EventsRaw);
    let tenant = TenantId::new();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (producer, topic) = (producer.clone(), topic.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Outcome::default();
            let mut seq = 0;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let batch_records = records(tenant, worker, seq, batch)?;
                seq += 1;
                // A trace per batch, as each ingest request starts one.
                let headers = HeaderValues::new(SEALED_V1, Some(&TraceContext::new_root()));
                let mut deliveries = Vec::with_capacity(batch);
                for (key, value) in &batch_records {
                    let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic)
                        .key(key.as_slice())
                        .payload(value.as_slice())
                        .headers(headers.headers());
                    deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
                }
                let acks = futures_util::future::join_all(deliveries).await;
                out.requests += 1;
                if acks.iter().all(|a| matches!(a, Ok(Ok(_)))) {
                    out.events += batch as u64;
                } else {
                    out.failures += 1;
                }
                out.latencies_us.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            anyhow::Ok(out)
        }));
    }
    let mut total = Outcome::default();
    for t in tasks {
        let o = t.await??;
        total.requests += o.requests;
        total.events += o.events;
        total.failures += o.failures;
        total.latencies_us.extend(o.latencies_us);
    }
    total.seconds = started.elapsed().as_secs_f64();
    Ok(total)
}
