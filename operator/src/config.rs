//! The operator's configuration: `--config operator.toml`, then `NUDGE_OPERATOR__…`
//! variables (`NUDGE_OPERATOR__PLATFORM__IMAGE=…`).

use nudge_platform_config::Validate;
use nudge_platform_telemetry::{LogConfig, LogFormat};
use serde::Deserialize;

use crate::{build::Platform, tenant::DedicatedTemplate};

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct OperatorConfig {
    /// The namespace whose Cells and Tenants the operator manages; all namespaces when unset.
    pub namespace: Option<String>,
    pub platform: Platform,
    pub dedicated: DedicatedTemplate,
    pub leader: LeaderConfig,
    /// Where `ErasureRequest`s are filed.
    pub control_plane: ControlPlaneConfig,
    pub log: LogConfig,
}

/// The control plane's admin API, which `ErasureRequest`s are filed with.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ControlPlaneConfig {
    /// Its base URL inside the cluster.
    pub url: String,
    /// An operator token the control plane accepts (its `admin.tokens`); erasure resources
    /// are refused with `NotConfigured` without one. Set it from a Secret:
    /// `NUDGE_OPERATOR__CONTROL_PLANE__TOKEN`.
    pub token: Option<secrecy::SecretString>,
    /// How long one call may take.
    pub timeout_ms: u64,
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        Self { url: "http://nudge-control-plane.nudge-system.svc".into(), token: None, timeout_ms: 5000 }
    }
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            namespace: None,
            platform: Platform::default(),
            dedicated: DedicatedTemplate::default(),
            leader: LeaderConfig::default(),
            control_plane: ControlPlaneConfig::default(),
            log: LogConfig { format: LogFormat::Json, filter: "info".into() },
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LeaderConfig {
    /// The Lease replicas compete for.
    pub lease: String,
    /// Its namespace (the operator's own).
    pub namespace: String,
    /// How long a Lease lasts without renewal.
    pub duration_secs: u64,
    /// This replica's name in the Lease; the pod name (`POD_NAME`) or the host name when unset.
    pub identity: Option<String>,
}

impl Default for LeaderConfig {
    fn default() -> Self {
        Self { lease: "nudge-operator".into(), namespace: "nudge-system".into(), duration_secs: 15, identity: None }
    }
}

impl LeaderConfig {
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("nudge-operator-{}", std::process::id()))
    }
}

impl Validate for OperatorConfig {
    fn validate(&self) -> Result<(), String> {
        if self.platform.image.trim().is_empty() {
            return Err("platform.image must name the cell image's repository".into());
        }
        if self
            .platform
            .member_token_public_keys
            .iter()
            .any(|k| k.len() != 64 || !k.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err("platform.member_token_public_keys: each is 64 hex digits (`nudge auth public-key`)".into());
        }
        if self.platform.kafka_replicas < 1 {
            return Err("platform.kafka_replicas must be at least 1".into());
        }
        if self.leader.duration_secs < 3 {
            return Err("leader.duration_secs must be at least 3".into());
        }
        if !(self.control_plane.url.starts_with("http://") || self.control_plane.url.starts_with("https://")) {
            return Err("control_plane.url must be an http(s) URL".into());
        }
        if self.control_plane.timeout_ms == 0 {
            return Err("control_plane.timeout_ms must be positive".into());
        }
        if self.dedicated.version.trim().is_empty() {
            return Err("dedicated.version must name the release dedicated cells run".into());
        }
        Ok(())
    }
}
