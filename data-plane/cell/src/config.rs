//! Configuration of a cell. Every default runs on one machine with no flags.

use std::{net::SocketAddr, path::PathBuf};

use nudge_data_plane_decide::RuleConfig;
use nudge_data_plane_directory::session::SessionConfig;
use nudge_data_plane_gateway::GatewayConfig;
use nudge_data_plane_ingest::IngestConfig;
use nudge_data_plane_keyring::KeyringConfig;
use nudge_platform_config::Validate;
use nudge_platform_kafka::KafkaConfig;
use nudge_platform_telemetry::LogConfig;
use nudge_platform_vault::VaultConfig;
use nudge_tenants::CellId;
use secrecy::SecretString;
use serde::Deserialize;

use nudge_data_plane_inference::BatchConfig;

use crate::{idle::IdleCartsConfig, sends::ChannelsConfig};

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CellConfig {
    /// This cell's id; tenant records for other cells are ignored.
    pub cell_id: CellId,
    /// What this process does; every role by default.
    pub roles: Roles,
    pub http: HttpConfig,
    pub kafka: KafkaConfig,
    pub redis: RedisConfig,
    pub ingest: IngestConfig,
    pub stages: StagesConfig,
    pub usage: UsageConfig,
    pub gateway: GatewayConfig,
    /// Shopper session tokens (issued by ingest, required by sockets).
    pub sessions: SessionConfig,
    pub drain: DrainConfig,
    pub inference: InferenceConfig,
    pub decide: RuleConfig,
    pub idle_carts: IdleCartsConfig,
    /// Delayed sends (campaign e-mails) and the SMTP server they go through.
    pub channels: ChannelsConfig,
    pub erasure: ErasureConfig,
    pub retention: RetentionConfig,
    /// The vault whose Transit keys wrap the shoppers' data keys.
    pub vault: VaultConfig,
    /// Shopper data keys (crypto-shredding of the records that name a shopper).
    pub keys: KeyringConfig,
    /// Members of the stores (the merchant console) reading reports with their access tokens.
    pub members: MembersConfig,
    pub log: LogConfig,
}

/// Members' access tokens, which the control plane signs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MembersConfig {
    /// The control plane's access-token public keys, 64 hex digits each (`nudge auth
    /// public-key` prints one from `auth.signing_key`); two while the signing key is
    /// rotated. Empty: members' tokens are refused and reports need a secret key.
    pub token_public_keys: Vec<String>,
}

impl Default for CellConfig {
    fn default() -> Self {
        Self {
            cell_id: CellId::default_shared(),
            roles: Roles::default(),
            http: HttpConfig::default(),
            kafka: KafkaConfig::default(),
            redis: RedisConfig::default(),
            ingest: IngestConfig::default(),
            stages: StagesConfig::default(),
            usage: UsageConfig::default(),
            gateway: GatewayConfig::default(),
            sessions: SessionConfig::default(),
            drain: DrainConfig::default(),
            inference: InferenceConfig::default(),
            decide: RuleConfig::default(),
            idle_carts: IdleCartsConfig::default(),
            channels: ChannelsConfig::default(),
            erasure: ErasureConfig::default(),
            retention: RetentionConfig::default(),
            vault: VaultConfig::default(),
            keys: KeyringConfig::default(),
            members: MembersConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// The processing stages (validator, pipeline).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StagesConfig {
    /// Consumers of `events.raw` in this process (group `validator`).
    pub validator_consumers: usize,
    /// Consumers of `events.validated` in this process (group `pipeline`).
    pub pipeline_consumers: usize,
    /// Tries of a failing record before it goes to `events.dlq`.
    pub max_attempts: u32,
    /// Pause between tries of a failing record.
    pub retry_backoff_ms: u64,
}

impl Default for StagesConfig {
    fn default() -> Self {
        Self { validator_consumers: 1, pipeline_consumers: 1, max_attempts: 5, retry_backoff_ms: 200 }
    }
}

/// The roles of one cell process; a cell may run them in separate deployments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Roles {
    /// `POST /v1/events`, `POST /v1/sessions`, the feature read API and `/nudge.js`.
    pub ingest: bool,
    /// The stages (validator, pipeline: features, scoring, decisions), idle carts, models.
    pub pipeline: bool,
    /// Shopper sockets (`/v1/ws`).
    pub gateway: bool,
}

impl Default for Roles {
    fn default() -> Self {
        Self { ingest: true, pipeline: true, gateway: true }
    }
}

/// Erasing suppressed shoppers' data.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ErasureConfig {
    /// Redis is erased twice this far apart, so an event the pipeline was applying when the
    /// suppression arrived (its outputs wait for the broker up to 5 s) leaves nothing
    /// behind; the tombstone and the report follow the second pass.
    pub settle_ms: u64,
}

impl Default for ErasureConfig {
    fn default() -> Self {
        Self { settle_ms: 15_000 }
    }
}

/// Expiring shoppers past their store's retention (their `features.v1` snapshot).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RetentionConfig {
    /// How often the pipeline process sweeps.
    pub interval_ms: u64,
    /// Shoppers expired per round trip.
    pub batch: usize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { interval_ms: 3_600_000, batch: 500 }
    }
}

/// What happens between SIGTERM and exit.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DrainConfig {
    /// After SIGTERM the cell reports not ready, closes every socket with 1012 and refuses
    /// new ones, yet keeps serving requests this long (for load balancers to notice) before
    /// it stops; the stages then commit what they have done.
    pub grace_ms: u64,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self { grace_ms: 5_000 }
    }
}

/// Usage reports to `usage.v1`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UsageConfig {
    pub interval_ms: u64,
    /// How often a gateway samples the sockets it holds per tenant, at instants aligned to
    /// the wall clock (multiples of this interval), so every gateway samples the same
    /// instants and the control plane adds them up into a store's connections.
    pub connection_sample_ms: u64,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self { interval_ms: 10_000, connection_sample_ms: 60_000 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Where ingest, sockets and the operational routes listen.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 8081)) }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RedisConfig {
    pub url: SecretString,
    /// Prepended to every key and channel (isolates environments and tests).
    pub prefix: String,
    /// How long one command may take before it counts as failed.
    pub response_timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: SecretString::from("redis://127.0.0.1:6379/"),
            prefix: "nudge:".to_owned(),
            response_timeout_ms: 1_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct InferenceConfig {
    /// `libonnxruntime.so`; `ORT_DYLIB_PATH` when unset.
    pub onnxruntime_library: Option<PathBuf>,
    /// An ONNX artifact to use instead of the bundled model (needs `model_sha256`).
    pub model_path: Option<PathBuf>,
    pub model_sha256: Option<String>,
    pub model_version: Option<String>,
    /// Micro-batching of concurrent scores.
    pub batching: BatchConfig,
}

impl Validate for CellConfig {
    fn validate(&self) -> Result<(), String> {
        self.kafka.validate()?;
        self.vault.validate()?;
        nudge_tenants::access::AccessVerifier::from_hex(&self.members.token_public_keys)
            .map_err(|e| format!("members.token_public_keys: {e}"))?;
        self.keys.validate()?;
        // A process that wrapped a data key just before a rotation stores it within a vault
        // and a Redis call; older versions are retired only well after that.
        if self.keys.retire_after_ms < self.vault.timeout_ms + self.redis.response_timeout_ms + 1000 {
            return Err("keys.retire_after_ms must exceed vault.timeout_ms + redis.response_timeout_ms by 1 s".into());
        }
        if self.inference.model_path.is_some()
            && (self.inference.model_sha256.is_none() || self.inference.model_version.is_none())
        {
            return Err("inference.model_path needs inference.model_sha256 and inference.model_version".into());
        }
        if self.ingest.max_batch_events == 0 || self.ingest.max_body_bytes == 0 || self.ingest.max_queued_records == 0 {
            return Err("ingest limits must be positive".into());
        }
        if self.stages.validator_consumers == 0 || self.stages.pipeline_consumers == 0 || self.stages.max_attempts == 0
        {
            return Err("stages: consumers and max_attempts must be at least 1".into());
        }
        if self.usage.interval_ms == 0 {
            return Err("usage.interval_ms must be positive".into());
        }
        if self.inference.batching.max_rows == 0 {
            return Err("inference.batching.max_rows must be at least 1".into());
        }
        if self.idle_carts.after_ms == 0 || self.idle_carts.scan_interval_ms == 0 || self.idle_carts.batch == 0 {
            return Err("idle_carts: after_ms, scan_interval_ms and batch must be positive".into());
        }
        self.channels.validate()?;
        if !(self.roles.ingest || self.roles.pipeline || self.roles.gateway) {
            return Err("roles: enable at least one of ingest, pipeline, gateway".into());
        }
        if self.gateway.history.max_per_shopper == 0 || self.gateway.history.ttl_ms == 0 {
            return Err("gateway.history: max_per_shopper and ttl_ms must be positive".into());
        }
        if !(0.0..=1.0).contains(&self.decide.threshold) {
            return Err("decide.threshold must be within [0, 1]".into());
        }
        Ok(())
    }
}
