//! Configuration of the control plane. Every default runs on one machine with no flags.

use std::{collections::BTreeMap, net::SocketAddr, str::FromStr};

use nudge_platform_config::Validate;
use nudge_platform_kafka::KafkaConfig;
use nudge_platform_telemetry::LogConfig;
use nudge_tenants::CellId;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::postgres::PgConnectOptions;

use crate::auth::AuthConfig;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct ControlPlaneConfig {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub kafka: KafkaConfig,
    pub outbox: OutboxConfig,
    pub placement: PlacementConfig,
    pub admin: AdminConfig,
    pub auth: AuthConfig,
    pub redis: RedisConfig,
    pub models: ModelsConfig,
    /// OpenBao (the Vault API): the Transit key that signs erasure receipts.
    pub vault: nudge_platform_vault::VaultConfig,
    pub erasure: ErasureConfig,
    pub offboarding: OffboardingConfig,
    pub billing: BillingConfig,
    pub campaigns: CampaignsConfig,
    pub console: ConsoleConfig,
    pub log: LogConfig,
}

/// The merchant console (`/console`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// A console session nobody uses for this long ends (it never outlives its refresh
    /// token, `auth.refresh_ttl_seconds`).
    pub session_idle_minutes: u64,
    /// The origin members' browsers reach the console at (`https://console.example.com`),
    /// when a proxy in front rewrites `Host`: a form post must come from it. Empty: from the
    /// origin the request's `Host` names.
    pub public_origin: String,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self { session_idle_minutes: 720, public_origin: String::new() }
    }
}

/// Campaigns.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct CampaignsConfig {
    /// Whether a campaign's webhook may be `http://` to a loopback address: local runs and
    /// tests only (a merchant must never make the platform call its own network).
    pub allow_loopback_webhooks: bool,
}

/// Billing through Stripe (see `crate::billing`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct BillingConfig {
    /// Stripe's API; the local run and the tests point it at a localstripe.
    pub stripe_api_url: String,
    /// Stripe's secret key (`sk_…`, from the environment:
    /// `NUDGE_CONTROL_PLANE__BILLING__STRIPE_SECRET_KEY`); billing is off while it is unset.
    pub stripe_secret_key: Option<SecretString>,
    /// The subscription item's field naming the price: `price` (Stripe's API) or `plan`
    /// (its older name, which localstripe needs).
    pub item_param: String,
    /// The Stripe price of each plan.
    pub prices: PlanPrices,
    /// Make the plans' prices in Stripe when missing: for a Stripe account the platform
    /// owns alone (the local run, the tests). In production they are made in Stripe.
    pub create_prices: bool,
    /// How often the sync looks for stores whose Stripe side does not match them.
    pub sync_interval_ms: u64,
    /// How long one call to Stripe may take.
    pub request_timeout_ms: u64,
    /// The webhook endpoint's signing secrets (`whsec_…`; several while one is rolled, from
    /// the environment: `NUDGE_CONTROL_PLANE__BILLING__WEBHOOK_SECRETS='["whsec_…"]'`); the
    /// endpoint answers 503 while there is none.
    pub webhook_secrets: Vec<SecretString>,
    /// How far from now a webhook's signature time may be, either way.
    pub webhook_tolerance_secs: i64,
    /// How failed payments grade a store.
    pub dunning: crate::webhooks::DunningPolicy,
    /// Send the ledger's usage to Stripe's meters `nudge_events`, `nudge_predictions` and
    /// `nudge_interventions` (make them in Stripe first).
    pub report_usage: bool,
    /// Where meter events go; Stripe's API (`stripe_api_url`) when unset.
    pub meter_events_url: Option<String>,
    /// How long after an hour ends its usage is sent (reports still on their way).
    pub meter_delay_secs: u64,
    /// Where Stripe's billing portal sends the merchant back to (the console's billing
    /// page).
    pub portal_return_url: String,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            stripe_api_url: "https://api.stripe.com".to_owned(),
            stripe_secret_key: None,
            item_param: "price".to_owned(),
            prices: PlanPrices::default(),
            create_prices: false,
            sync_interval_ms: 5_000,
            request_timeout_ms: 10_000,
            webhook_secrets: Vec::new(),
            webhook_tolerance_secs: 300,
            dunning: crate::webhooks::DunningPolicy::default(),
            report_usage: false,
            meter_events_url: None,
            meter_delay_secs: 600,
            portal_return_url: "http://127.0.0.1:8080/console/billing".to_owned(),
        }
    }
}

/// The Stripe price id of each plan.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct PlanPrices {
    pub free: String,
    pub growth: String,
    pub enterprise: String,
}

impl Default for PlanPrices {
    fn default() -> Self {
        Self {
            free: "nudge-free-monthly".to_owned(),
            growth: "nudge-growth-monthly".to_owned(),
            enterprise: "nudge-enterprise-monthly".to_owned(),
        }
    }
}

impl PlanPrices {
    pub fn of(&self, plan: nudge_tenants::Plan) -> &str {
        match plan {
            nudge_tenants::Plan::Free => &self.free,
            nudge_tenants::Plan::Growth => &self.growth,
            nudge_tenants::Plan::Enterprise => &self.enterprise,
        }
    }
}

/// Stores that leave.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct OffboardingConfig {
    /// Days between a store's offboarding and its purge, during which its owner can cancel
    /// and export; an operator may give a store a shorter one.
    pub grace_days: u32,
    /// How often the purge sweep looks for stores whose grace period has ended.
    pub sweep_interval_ms: u64,
    /// A store's Transit key is this followed by its id: the cells' `keys.transit_key_prefix`.
    pub tenant_key_prefix: String,
}

impl Default for OffboardingConfig {
    fn default() -> Self {
        Self { grace_days: 30, sweep_interval_ms: 60_000, tenant_key_prefix: "nudge-tenant-".to_owned() }
    }
}

/// Erasure requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ErasureConfig {
    /// The Transit signing key (ed25519) of receipts; created at start when missing.
    pub receipt_key: String,
}

impl Default for ErasureConfig {
    fn default() -> Self {
        Self { receipt_key: "nudge-erasure-receipts".to_owned() }
    }
}

/// The model registry.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct ModelsConfig {
    /// `libonnxruntime.so`, which checks uploaded artifacts; `ORT_DYLIB_PATH` when unset.
    /// Without it uploads answer 503 and everything else works.
    pub onnxruntime_library: Option<std::path::PathBuf>,
}

/// Redis, where refresh-token sessions live.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RedisConfig {
    pub url: SecretString,
    /// Prepended to every key.
    pub prefix: String,
    /// How long one command may take before it counts as failed.
    pub response_timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: SecretString::from("redis://127.0.0.1:6379/"),
            prefix: "nudge:cp:".to_owned(),
            response_timeout_ms: 1_000,
        }
    }
}

/// The platform operators' API (`/v1/admin/…`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct AdminConfig {
    /// Operator name → bearer token. The name is what the audit log records. Empty (the
    /// default) disables the admin API.
    pub tokens: BTreeMap<String, SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Where the public API listens.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 8080)) }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DatabaseConfig {
    /// Runtime connection, as `nudge_app` (no ownership, no BYPASSRLS).
    pub url: SecretString,
    /// Owner connection used only to create the database and apply migrations.
    pub owner_url: SecretString,
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before answering 503.
    pub acquire_timeout_ms: u64,
    /// Runtime connection to a dedicated database; `{database}` is replaced by its name.
    pub dedicated_url_template: SecretString,
    /// Owner connection to a dedicated database (creating, migrating, moving a tenant in).
    pub dedicated_owner_url_template: SecretString,
    /// Pool size per dedicated database.
    pub dedicated_max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: SecretString::from("postgres://nudge_app@127.0.0.1:5432/nudge"),
            owner_url: SecretString::from("postgres://postgres@127.0.0.1:5432/nudge"),
            max_connections: 10,
            acquire_timeout_ms: 2_000,
            dedicated_url_template: SecretString::from("postgres://nudge_app@127.0.0.1:5432/{database}"),
            dedicated_owner_url_template: SecretString::from("postgres://postgres@127.0.0.1:5432/{database}"),
            dedicated_max_connections: 4,
        }
    }
}

impl DatabaseConfig {
    pub fn runtime_options(&self) -> Result<PgConnectOptions, String> {
        PgConnectOptions::from_str(self.url.expose_secret()).map_err(|e| format!("database.url: {e}"))
    }

    pub fn owner_options(&self) -> Result<PgConnectOptions, String> {
        PgConnectOptions::from_str(self.owner_url.expose_secret()).map_err(|e| format!("database.owner_url: {e}"))
    }

    /// Runtime options for the dedicated database `name`.
    pub fn dedicated_options(&self, name: &str) -> Result<PgConnectOptions, String> {
        let url = self.dedicated_url_template.expose_secret().replace("{database}", name);
        PgConnectOptions::from_str(&url).map_err(|e| format!("database.dedicated_url_template: {e}"))
    }

    /// Owner options for the dedicated database `name`.
    pub fn dedicated_owner_options(&self, name: &str) -> Result<PgConnectOptions, String> {
        let url = self.dedicated_owner_url_template.expose_secret().replace("{database}", name);
        PgConnectOptions::from_str(&url).map_err(|e| format!("database.dedicated_owner_url_template: {e}"))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct OutboxConfig {
    /// How often the relay looks for rows when nothing woke it.
    pub poll_interval_ms: u64,
    /// Rows published per round trip.
    pub batch_size: i64,
    /// How long published rows stay in the table before the relay deletes them.
    pub keep_published_hours: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self { poll_interval_ms: 500, batch_size: 200, keep_published_hours: 24 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PlacementConfig {
    /// Where cells come from: `local` (processes on this machine) or `kubernetes` (Tenant
    /// and Cell resources the operator provisions).
    pub provisioner: ProvisionerKind,
    /// Local: the shared cell self-service tenants are placed on.
    pub shared_cell_id: CellId,
    /// Local: base URL browsers use to reach that cell.
    pub shared_cell_url: String,
    pub local: LocalProvisionerConfig,
    pub kubernetes: KubernetesProvisionerConfig,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        Self {
            provisioner: ProvisionerKind::Local,
            shared_cell_id: CellId::default_shared(),
            shared_cell_url: "http://127.0.0.1:8081".to_owned(),
            local: LocalProvisionerConfig::default(),
            kubernetes: KubernetesProvisionerConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProvisionerKind {
    Local,
    Kubernetes,
}

/// Dedicated cells as processes on this machine.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LocalProvisionerConfig {
    /// The program that runs a cell (`nudge-cell`, or `nudge` with `cell_args = ["cell"]`);
    /// without one, dedicated cells cannot be started here (503 `provisioning_unavailable`).
    pub cell_program: Option<std::path::PathBuf>,
    pub cell_args: Vec<String>,
    /// How long a new cell process may take to answer `/readyz`.
    pub ready_timeout_secs: u64,
}

impl Default for LocalProvisionerConfig {
    fn default() -> Self {
        Self { cell_program: None, cell_args: Vec::new(), ready_timeout_secs: 60 }
    }
}

/// Tenants and dedicated cells as resources for the operator.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct KubernetesProvisionerConfig {
    /// The namespace of the Tenant and Cell resources.
    pub namespace: String,
    /// How long signup waits for the operator to place a new tenant.
    pub placement_timeout_secs: u64,
    /// How long a move to a dedicated cell waits for the cell to be ready before answering
    /// 503 `cell_provisioning` (the request can be repeated; it picks up where it was).
    pub dedicated_timeout_secs: u64,
}

impl Default for KubernetesProvisionerConfig {
    fn default() -> Self {
        Self { namespace: "nudge".to_owned(), placement_timeout_secs: 20, dedicated_timeout_secs: 120 }
    }
}

impl Validate for ControlPlaneConfig {
    fn validate(&self) -> Result<(), String> {
        self.database.runtime_options()?;
        self.database.owner_options()?;
        for template in [&self.database.dedicated_url_template, &self.database.dedicated_owner_url_template] {
            if !template.expose_secret().contains("{database}") {
                return Err("database.dedicated_*_url_template must contain {database}".into());
            }
        }
        self.database.dedicated_options("nudge_t_00000000000000000000000000000000")?;
        self.database.dedicated_owner_options("nudge_t_00000000000000000000000000000000")?;
        if self.database.max_connections == 0 {
            return Err("database.max_connections must be at least 1".into());
        }
        for (name, token) in &self.admin.tokens {
            if token.expose_secret().len() < 32 {
                return Err(format!("admin.tokens.{name} must be at least 32 characters"));
            }
        }
        self.auth.validate()?;
        if self.console.session_idle_minutes == 0 || self.console.session_idle_minutes > 7 * 24 * 60 {
            return Err("console.session_idle_minutes must be between 1 and 10080 (a week)".into());
        }
        let origin = &self.console.public_origin;
        let host = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
        if !origin.is_empty() && !host.is_some_and(|h| !h.is_empty() && !h.trim_end_matches('/').contains('/')) {
            return Err("console.public_origin must be a scheme and host, such as https://console.example.com".into());
        }
        if self.outbox.batch_size <= 0 {
            return Err("outbox.batch_size must be positive".into());
        }
        if !self.placement.shared_cell_url.starts_with("http") {
            return Err("placement.shared_cell_url must be an http(s) URL".into());
        }
        if self.placement.kubernetes.namespace.trim().is_empty() {
            return Err("placement.kubernetes.namespace must name the namespace of the Tenant resources".into());
        }
        self.vault.validate()?;
        if self.offboarding.grace_days > 90 {
            return Err("offboarding.grace_days must be at most 90".into());
        }
        if self.offboarding.sweep_interval_ms == 0 {
            return Err("offboarding.sweep_interval_ms must be positive".into());
        }
        if self.offboarding.tenant_key_prefix.trim().is_empty() {
            return Err("offboarding.tenant_key_prefix must name the stores' Transit keys".into());
        }
        if !matches!(self.billing.item_param.as_str(), "price" | "plan") {
            return Err("billing.item_param must be `price` or `plan`".into());
        }
        if !self.billing.stripe_api_url.starts_with("http") {
            return Err("billing.stripe_api_url must be an http(s) URL".into());
        }
        if self.billing.sync_interval_ms == 0 || self.billing.request_timeout_ms == 0 {
            return Err("billing.sync_interval_ms and billing.request_timeout_ms must be positive".into());
        }
        self.billing.dunning.validate()?;
        if !self.billing.portal_return_url.starts_with("http") {
            return Err("billing.portal_return_url must be an http(s) URL".into());
        }
        if !(1..=3600).contains(&self.billing.webhook_tolerance_secs) {
            return Err("billing.webhook_tolerance_secs must be 1-3600".into());
        }
        for plan in nudge_tenants::Plan::ALL {
            let price = self.billing.prices.of(plan);
            if price.trim().is_empty() || price.len() > 255 {
                return Err(format!("billing.prices.{} must name a Stripe price", plan.as_str()));
            }
        }
        if self.erasure.receipt_key.trim().is_empty() {
            return Err("erasure.receipt_key must name a Transit key".into());
        }
        self.kafka.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_origin_is_a_scheme_and_a_host() {
        let with = |origin: &str| {
            let mut config = ControlPlaneConfig::default();
            config.console.public_origin = origin.to_owned();
            config.validate()
        };
        assert_eq!(with(""), Ok(()), "unset: the Host header decides");
        assert_eq!(with("https://console.example.com"), Ok(()));
        assert_eq!(with("http://127.0.0.1:8080/"), Ok(()));
        for bad in ["console.example.com", "https://", "https://console.example.com/console", "ftp://x"] {
            assert!(with(bad).is_err(), "{bad}");
        }
    }
}
