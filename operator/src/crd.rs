//! The custom resources platform operators work with: `Cell` (a data-plane cell and its
//! roles) and `Tenant` (a store, its plan and where it runs).
//!
//! Both are namespaced, in the `nudge` category (`kubectl get nudge`), with a status of
//! `conditions` (`Ready`, `Progressing`, `Degraded`) and `observedGeneration`, and printer
//! columns for what an operator looks at first. The YAML in `deploy/crds/` is generated
//! from these types ([`crate::render`]); a test fails when the two drift apart.

use k8s_openapi::{api::core::v1::ResourceRequirements, apimachinery::pkg::apis::meta::v1::Condition};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of Nudge's resources.
pub const GROUP: &str = "nudge.dev";
/// On a Cell or Tenant, `"true"` stops the operator from writing anything for it (children,
/// status, finalizers) until it is removed.
pub const PAUSE_ANNOTATION: &str = "nudge.dev/paused";
/// The finalizer that holds a Cell or Tenant until its ordered cleanup is done.
pub const FINALIZER: &str = "nudge.dev/cleanup";

/// A data-plane cell: ingest, pipeline and gateway deployments for a set of tenants, with
/// the data stores they use.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "nudge.dev",
    version = "v1alpha1",
    kind = "Cell",
    namespaced,
    shortname = "cell",
    category = "nudge",
    status = "CellStatus",
    printcolumn = r#"{"name": "Tier", "type": "string", "jsonPath": ".spec.tier"}"#,
    printcolumn = r#"{"name": "Region", "type": "string", "jsonPath": ".spec.region"}"#,
    printcolumn = r#"{"name": "Tenants", "type": "integer", "jsonPath": ".status.tenants"}"#,
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CellSpec {
    /// `shared` (self-service tenants are placed on it while it has capacity) or `dedicated`
    /// (one tenant's).
    pub tier: Tier,
    /// Where the cell runs, as placement constraints name it (`eu-west-1`).
    pub region: String,
    /// The Nudge release the cell's images run (an image tag).
    pub version: String,
    /// The base URL browsers reach the cell's ingest and gateway at (the ingress routes it);
    /// the control plane hands it to the cell's tenants as their route.
    pub public_url: String,
    /// Replicas and resources per role.
    #[serde(default)]
    pub roles: Roles,
    /// Kafka: a topic prefix on the platform's cluster, or a cluster of the cell's own.
    pub kafka: KafkaRef,
    /// The cell's Redis (sessions, histories, pub/sub).
    pub redis: DataStoreRef,
    /// The database of the cell's tenants: the platform's shared one, or a dedicated one.
    /// Recorded for placement and offboarding; cell processes do not connect to it (they
    /// hear everything they need on Kafka), so the NetworkPolicy opens no way to it.
    pub postgres: DataStoreRef,
    /// How much the cell takes before placement stops choosing it.
    pub capacity: Capacity,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Tier {
    Shared,
    Dedicated,
}

/// A cell's roles, each its own Deployment.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Roles {
    #[serde(default)]
    pub ingest: Role,
    #[serde(default)]
    pub pipeline: Role,
    #[serde(default)]
    pub gateway: Role,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    /// Replicas when no autoscaler is set, and the autoscaler's floor.
    #[serde(default = "one")]
    pub replicas: i32,
    /// The autoscaler's ceiling; none for a fixed count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<i32>,
    /// Requests and limits of each pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

fn one() -> i32 {
    1
}

impl Default for Role {
    fn default() -> Self {
        Self { replicas: 1, max_replicas: None, resources: None }
    }
}

/// Where a cell's topics live.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaRef {
    /// Prepended to every topic of the cell on the platform's cluster (`cell-acme.`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_prefix: Option<String>,
    /// A Strimzi `Kafka` of the cell's own, by name, instead of the platform's cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// A data store of the cell: where its URL is kept, and where it is on the network (the
/// cell's NetworkPolicy lets its pods reach this and nothing else).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataStoreRef {
    /// The Secret holding the URL, in the cell's namespace.
    pub secret: String,
    /// The key holding the URL.
    #[serde(default = "url_key")]
    pub key: String,
    /// The address range the store is reached at (`10.0.3.0/24`, or a single `/32`).
    pub cidr: String,
    /// Its port.
    pub port: i32,
}

fn url_key() -> String {
    "url".to_owned()
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Capacity {
    /// Most tenants placed on the cell.
    pub tenants: u32,
    /// Most shopper sockets across the cell's gateways.
    pub connections: u64,
}

/// What the operator last did with a cell.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CellStatus {
    /// `Ready`, `Progressing` and `Degraded`, each with the reason and a message naming
    /// what it waits for or what is wrong.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Provisioning`, `Running`, `Degraded`, `Deleting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Tenants placed on the cell.
    #[serde(default)]
    pub tenants: u32,
}

/// A store on the platform: its plan, its isolation and the cell it runs on.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "nudge.dev",
    version = "v1alpha1",
    kind = "Tenant",
    namespaced,
    shortname = "tn",
    category = "nudge",
    status = "TenantStatus",
    printcolumn = r#"{"name": "Cell", "type": "string", "jsonPath": ".status.cell"}"#,
    printcolumn = r#"{"name": "Plan", "type": "string", "jsonPath": ".spec.plan"}"#,
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// The control plane's id of the store (`tnt_…`).
    pub tenant_id: String,
    /// `free`, `growth` or `enterprise`. Checked by the operator against the control plane's
    /// plans (an unknown one is refused with a `Degraded` condition naming `spec.plan`).
    pub plan: String,
    /// `shared` (placed on a shared cell with capacity) or `dedicated` (a cell of its own).
    #[serde(default = "shared")]
    pub isolation: Tier,
    /// A cell to run on, by name; when absent, placement chooses one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell_ref: Option<String>,
    /// Constraints placement honours when choosing a cell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// Overrides of the plan's limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitOverrides>,
    /// Days shopper data is kept; the plan's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    /// A suspended store's traffic is refused at its cell.
    #[serde(default)]
    pub suspended: bool,
}

fn shared() -> Tier {
    Tier::Shared
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Only cells in this region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_events: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seats: Option<u32>,
}

/// What the operator last did with a tenant.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Placing`, `Active`, `Suspended`, `Deleting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The cell the tenant runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<String>,
}

impl TenantSpec {
    /// The plan, when it is one the control plane knows.
    pub fn plan(&self) -> Option<nudge_tenants::Plan> {
        nudge_tenants::Plan::parse(&self.plan)
    }

    /// The spec's limits as the control plane records them (retention is its own field here).
    pub fn limit_overrides(&self) -> nudge_tenants::LimitOverrides {
        let limits = self.limits.clone().unwrap_or_default();
        nudge_tenants::LimitOverrides {
            events_per_second: limits.events_per_second,
            burst_events: limits.burst_events,
            connections: limits.connections,
            retention_days: self.retention_days,
            seats: limits.seats,
        }
    }
}

/// An erasure a platform operator asks for with `kubectl`: one shopper of a store, named by
/// subject digest (`nudge erasure digest`; a shopper id never goes into a resource), or the
/// whole store (its offboarding: a grace period, then its purge). The operator files it with
/// the control plane, which tracks, carries out and signs it; the status mirrors it.
/// Deleting the resource undoes nothing.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "nudge.dev",
    version = "v1alpha1",
    kind = "ErasureRequest",
    namespaced,
    shortname = "er",
    category = "nudge",
    status = "ErasureRequestStatus",
    printcolumn = r#"{"name": "Tenant", "type": "string", "jsonPath": ".spec.tenantId"}"#,
    printcolumn = r#"{"name": "Scope", "type": "string", "jsonPath": ".status.scope"}"#,
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}"#,
    printcolumn = r#"{"name": "Request", "type": "string", "jsonPath": ".status.requestId"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ErasureRequestSpec {
    /// The store (`tnt_…`).
    pub tenant_id: String,
    /// The shopper's subject digest (64 lowercase hex digits); absent with `wholeTenant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_digest: Option<String>,
    /// Or: an e-mail address's digest in the store (64 lowercase hex digits; `nudge erasure
    /// digest --tenant <uuid> --email-sha256 <hash>`), to erase every shopper the store
    /// identified with it. The address's hash, the same in every store, never goes into
    /// the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_digest: Option<String>,
    /// Erase the whole store: its offboarding.
    #[serde(default)]
    pub whole_tenant: bool,
    /// With `wholeTenant`: days before the purge (0-90); the platform's grace period when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_days: Option<u32>,
    /// Why, for the store's audit log (1-1000 characters).
    pub reason: String,
}

/// The erasure as the control plane tracks it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErasureRequestStatus {
    /// `Ready` (completed), `Progressing`, `Degraded` (refused, or the control plane
    /// unreachable), each with a reason and a message.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `InProgress`, `GracePeriod` (a store's offboarding before its purge), `Completed`,
    /// `Refused` (a legal hold, an unknown store, an invalid spec), `Cancelled` (the store's
    /// offboarding was cancelled during its grace period; not filed again until the spec
    /// changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// `shopper` or `tenant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The control plane's erasure request (for a store: its purge, once started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Every store the request erases from, with its status (`pending`, `erased`,
    /// `nothing_found`).
    #[serde(default)]
    pub stores: Vec<ErasedStore>,
    /// A store's offboarding: when its purge starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// Where the signed receipt is, on the control plane's API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErasedStore {
    pub store: String,
    pub status: String,
}
