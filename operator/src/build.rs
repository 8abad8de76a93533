//! `validate` and `build` of a Cell's reconcile: pure functions from the resource (and the
//! operator's configuration) to the objects that should exist, so they are tested from
//! fixtures without an API server.
//!
//! A cell gets: a ConfigMap with its `cell.toml`; a ServiceAccount that mounts no API token
//! (cell processes never talk to Kubernetes, so they get no RBAC rules at all); per role a
//! Deployment, a Service (the pipeline's is headless, for metrics only) and a
//! PodDisruptionBudget, and a HorizontalPodAutoscaler when `maxReplicas` is set (the
//! Deployment's replica count is then the autoscaler's); two NetworkPolicies (ingest and
//! gateway take traffic only from the ingress controller's namespace, metrics only from
//! monitoring's, and the pods reach only DNS, their Kafka cluster and their own Redis); a
//! Strimzi `KafkaTopic` per cell-scope catalogue topic under the cell's prefix; a
//! ServiceMonitor. Every child carries a controller
//! ownerReference to the Cell and the cell's labels. The pods read the Redis URL from the
//! Secret the cell names and the session secrets (a list, e.g. `["…"]`) from the `secrets`
//! key of the Secret `<cell>-sessions`.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        autoscaling::v2::{
            CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
            MetricTarget, ResourceMetricSource,
        },
        core::v1::{
            ConfigMap, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, PodSpec, PodTemplateSpec, Probe,
            SecretKeySelector, Service, ServiceAccount, ServicePort, ServiceSpec,
        },
        networking::v1::NetworkPolicy,
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use kube::{
    Resource,
    api::{ApiResource, DynamicObject, GroupVersionKind},
};
use serde::Deserialize;

use crate::crd::{Cell, Role, Tier};

mod network;
mod topics;

pub use topics::platform_topics;

/// The port every cell process listens on (`http.listen`).
pub const HTTP_PORT: i32 = 8081;
/// Seconds a pod gets after SIGTERM: the cell's drain grace (5 s) and the stages' commit.
const TERMINATION_GRACE_SECONDS: i64 = 30;
/// Kafka's plain listener on a Strimzi cluster.
const KAFKA_PORT: i32 = 9092;

/// What the operator's configuration says about the platform every cell runs on.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Platform {
    /// The cell image's repository; a cell's `version` is the tag.
    pub image: String,
    /// The platform's Strimzi `Kafka` (cells with a topic prefix use it).
    pub kafka_cluster: String,
    /// The namespace it runs in.
    pub kafka_namespace: String,
    /// The prefix of the platform-wide topics (`control.*`, `usage.v1`) on that cluster.
    pub topic_prefix: String,
    /// Replicas of each topic.
    pub kafka_replicas: i32,
    /// The namespace of the ingress controller: the only source of shopper and merchant
    /// traffic to ingest and gateway pods.
    pub ingress_namespace: String,
    /// The namespace Prometheus scrapes from.
    pub monitoring_namespace: String,
    /// Whether the cluster has Strimzi's `KafkaTopic` (topics are rendered as resources) and
    /// the Prometheus operator's `ServiceMonitor`.
    pub strimzi: bool,
    pub service_monitors: bool,
    /// The platform's OpenBao (Vault API), whose Transit keys wrap the shoppers' data keys,
    /// its namespace and port (the cell pods' egress to it).
    pub vault_address: String,
    pub vault_namespace: String,
    pub vault_port: i32,
    /// The Secret, in each cell's namespace, holding the cells' vault token under `token`.
    pub vault_token_secret: String,
    /// The control plane's access-token public keys (64 hex digits each): cells verify the
    /// console's members' tokens with them. Empty: the console's analytics are unavailable.
    pub member_token_public_keys: Vec<String>,
}

impl Default for Platform {
    fn default() -> Self {
        Self {
            image: "ghcr.io/nudge/nudge-cell".to_owned(),
            kafka_cluster: "platform".to_owned(),
            kafka_namespace: "kafka".to_owned(),
            topic_prefix: String::new(),
            kafka_replicas: 3,
            ingress_namespace: "ingress-nginx".to_owned(),
            monitoring_namespace: "monitoring".to_owned(),
            strimzi: true,
            service_monitors: true,
            vault_address: "http://openbao.openbao.svc:8200".to_owned(),
            vault_namespace: "openbao".to_owned(),
            vault_port: 8200,
            vault_token_secret: "nudge-cell-vault".to_owned(),
            member_token_public_keys: Vec::new(),
        }
    }
}

/// A spec that cannot be built, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    pub field: String,
    pub problem: String,
}

pub(crate) fn invalid(field: &str, problem: &str) -> Invalid {
    Invalid { field: field.to_owned(), problem: problem.to_owned() }
}

/// The roles of a cell, by name, in a fixed order.
pub const ROLES: [&str; 3] = ["ingest", "pipeline", "gateway"];

fn role<'a>(cell: &'a Cell, name: &str) -> &'a Role {
    match name {
        "ingest" => &cell.spec.roles.ingest,
        "pipeline" => &cell.spec.roles.pipeline,
        _ => &cell.spec.roles.gateway,
    }
}

/// Whether `name` is a cell name: what the control plane accepts as a cell id (an RFC 1123
/// label of at most 40 characters, leaving room for the suffixes of child names).
pub fn is_cell_name(name: &str) -> bool {
    name.parse::<nudge_tenants::CellId>().is_ok()
}

/// Checks what the API server's schema cannot: names the cell id rules accept, replica
/// bounds, capacity, references.
pub fn validate(cell: &Cell) -> Result<(), Invalid> {
    let name = cell.metadata.name.as_deref().unwrap_or_default();
    if !is_cell_name(name) {
        return Err(invalid("metadata.name", "a cell name is 1-40 lowercase letters, digits or '-'"));
    }
    if cell.metadata.uid.is_none() {
        return Err(invalid("metadata.uid", "the cell has no uid yet (not read from the API server)"));
    }
    let spec = &cell.spec;
    if spec.version.trim().is_empty() {
        return Err(invalid("spec.version", "name the release (image tag) the cell runs"));
    }
    if spec.region.trim().is_empty() {
        return Err(invalid("spec.region", "name the region the cell runs in"));
    }
    let url_ok = spec.public_url.strip_prefix("https://").or_else(|| spec.public_url.strip_prefix("http://"));
    if !url_ok.is_some_and(|host| !host.is_empty() && !host.contains(char::is_whitespace)) {
        return Err(invalid("spec.publicUrl", "the http(s) base URL browsers reach the cell at"));
    }
    for name in ROLES {
        let r = role(cell, name);
        if r.replicas < 0 {
            return Err(invalid(&format!("spec.roles.{name}.replicas"), "must not be negative"));
        }
        if let Some(max) = r.max_replicas
            && max < r.replicas.max(1)
        {
            return Err(invalid(&format!("spec.roles.{name}.maxReplicas"), "must be at least replicas (and 1)"));
        }
        if let Some(resources) = &r.resources {
            check_resources(&format!("spec.roles.{name}.resources"), resources)?;
        }
    }
    if spec.capacity.tenants == 0 || spec.capacity.connections == 0 {
        return Err(invalid("spec.capacity", "tenants and connections must be positive"));
    }
    if spec.tier == Tier::Dedicated && spec.capacity.tenants != 1 {
        return Err(invalid("spec.capacity.tenants", "a dedicated cell holds exactly one tenant"));
    }
    match (&spec.kafka.topic_prefix, &spec.kafka.cluster) {
        (Some(_), Some(_)) => return Err(invalid("spec.kafka", "give topicPrefix or cluster, not both")),
        (None, None) => return Err(invalid("spec.kafka", "give topicPrefix or cluster")),
        (Some(prefix), None) if !valid_topic_prefix(prefix) => {
            return Err(invalid("spec.kafka.topicPrefix", "lowercase letters, digits, '-' and '.', ending in '.'"));
        }
        (None, Some(cluster)) if !is_cell_name(cluster) => {
            return Err(invalid("spec.kafka.cluster", "name a Strimzi Kafka in the cell's namespace"));
        }
        _ => {}
    }
    for (field, r) in [("spec.redis", &spec.redis), ("spec.postgres", &spec.postgres)] {
        if r.secret.trim().is_empty() || r.key.trim().is_empty() {
            return Err(invalid(&format!("{field}.secret"), "name a Secret and its key"));
        }
        if !valid_cidr(&r.cidr) {
            return Err(invalid(&format!("{field}.cidr"), "an IPv4 or IPv6 range such as 10.0.3.0/24"));
        }
        if !(1..=65535).contains(&r.port) {
            return Err(invalid(&format!("{field}.port"), "a TCP port, 1-65535"));
        }
    }
    Ok(())
}

fn valid_topic_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 48
        && prefix.ends_with('.')
        && prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

fn valid_cidr(cidr: &str) -> bool {
    let Some((address, bits)) = cidr.split_once('/') else { return false };
    let Ok(bits) = bits.parse::<u8>() else { return false };
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits <= 32,
        Ok(std::net::IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

/// Requests no larger than limits, and quantities Kubernetes can parse.
fn check_resources(field: &str, resources: &k8s_openapi::api::core::v1::ResourceRequirements) -> Result<(), Invalid> {
    for (kind, quantities) in [("requests", &resources.requests), ("limits", &resources.limits)] {
        for (name, q) in quantities.iter().flatten() {
            if parse_quantity(&q.0).is_none() {
                return Err(invalid(&format!("{field}.{kind}.{name}"), &format!("`{}` is not a quantity", q.0)));
            }
        }
    }
    for (name, request) in resources.requests.iter().flatten() {
        let limit = resources.limits.as_ref().and_then(|l| l.get(name));
        if let (Some(request), Some(limit)) = (parse_quantity(&request.0), limit.and_then(|l| parse_quantity(&l.0)))
            && request > limit
        {
            return Err(invalid(&format!("{field}.requests.{name}"), "must not exceed the limit"));
        }
        if parse_quantity(&request.0).is_some_and(|v| v <= 0.0) {
            return Err(invalid(&format!("{field}.requests.{name}"), "must be positive"));
        }
    }
    Ok(())
}

/// A Kubernetes quantity (`250m`, `1.5`, `512Mi`, `2G`) as a number, or none.
pub fn parse_quantity(q: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 14] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    let (number, factor) = SUFFIXES.iter().find_map(|(s, f)| q.strip_suffix(s).map(|n| (n, *f))).unwrap_or((q, 1.0));
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+') {
        return None;
    }
    number.parse::<f64>().ok().filter(|n| n.is_finite()).map(|n| n * factor)
}

/// What should exist for a cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    pub config_map: ConfigMap,
    pub service_account: ServiceAccount,
    pub deployments: Vec<Deployment>,
    pub services: Vec<Service>,
    pub disruption_budgets: Vec<PodDisruptionBudget>,
    pub autoscalers: Vec<HorizontalPodAutoscaler>,
    pub network_policies: Vec<NetworkPolicy>,
    /// Strimzi `KafkaTopic`s (kafka.strimzi.io/v1beta2), one per cell-scope catalogue topic.
    pub kafka_topics: Vec<DynamicObject>,
    /// A Prometheus operator `ServiceMonitor` (monitoring.coreos.com/v1).
    pub service_monitor: Option<DynamicObject>,
}

/// A child ready to apply: its kind and the object.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    pub resource: ApiResource,
    pub object: DynamicObject,
}

impl Child {
    pub fn name(&self) -> &str {
        self.object.metadata.name.as_deref().unwrap_or_default()
    }
}

/// The kinds a cell's children come in, in the order a cell's deletion removes them:
/// Deployments first (gateway, ingest, pipeline: sockets drain before the events behind
/// them stop flowing), topics last.
pub fn child_kinds(platform: &Platform) -> Vec<ApiResource> {
    let mut kinds = vec![
        ApiResource::erase::<Deployment>(&()),
        ApiResource::erase::<HorizontalPodAutoscaler>(&()),
        ApiResource::erase::<PodDisruptionBudget>(&()),
        ApiResource::erase::<Service>(&()),
        ApiResource::erase::<NetworkPolicy>(&()),
        ApiResource::erase::<ConfigMap>(&()),
        ApiResource::erase::<ServiceAccount>(&()),
    ];
    if platform.service_monitors {
        kinds.push(service_monitor_resource());
    }
    if platform.strimzi {
        kinds.push(kafka_topic_resource());
    }
    kinds
}

pub fn kafka_topic_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kafka.strimzi.io", "v1beta2", "KafkaTopic"),
        "kafkatopics",
    )
}

pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

fn erase<K: Resource<DynamicType = ()> + serde::Serialize>(object: &K) -> Child {
    let value = serde_json::to_value(object).unwrap_or_default();
    let object: DynamicObject = serde_json::from_value(value).unwrap_or_else(|_| DynamicObject {
        types: None,
        metadata: object.meta().clone(),
        data: serde_json::Value::Null,
    });
    Child { resource: ApiResource::erase::<K>(&()), object }
}

impl Children {
    /// Every child's metadata, for checks that hold for all of them.
    pub fn metadata(&self) -> Vec<&ObjectMeta> {
        let mut all = vec![&self.config_map.metadata, &self.service_account.metadata];
        all.extend(self.network_policies.iter().map(|p| &p.metadata));
        all.extend(self.deployments.iter().map(|d| &d.metadata));
        all.extend(self.services.iter().map(|s| &s.metadata));
        all.extend(self.disruption_budgets.iter().map(|p| &p.metadata));
        all.extend(self.autoscalers.iter().map(|h| &h.metadata));
        all.extend(self.kafka_topics.iter().map(|t| &t.metadata));
        all.extend(self.service_monitor.iter().map(|m| &m.metadata));
        all
    }

    /// All children as objects to apply.
    pub fn objects(&self) -> Vec<Child> {
        let mut all = vec![erase(&self.config_map), erase(&self.service_account)];
        all.extend(self.deployments.iter().map(erase));
        all.extend(self.services.iter().map(erase));
        all.extend(self.disruption_budgets.iter().map(erase));
        all.extend(self.autoscalers.iter().map(erase));
        all.extend(self.network_policies.iter().map(erase));
        all.extend(self.kafka_topics.iter().map(|t| Child { resource: kafka_topic_resource(), object: t.clone() }));
        all.extend(
            self.service_monitor.iter().map(|m| Child { resource: service_monitor_resource(), object: m.clone() }),
        );
        all
    }
}

/// The labels of a cell's children; `app.kubernetes.io/instance` selects them all.
pub fn labels(cell: &str, role: Option<&str>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "nudge-cell".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), cell.to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), "nudge-operator".to_owned()),
    ]);
    if let Some(role) = role {
        l.insert("nudge.dev/role".to_owned(), role.to_owned());
    }
    l
}

/// The label selector that finds every child of a cell.
pub fn children_selector(cell: &str) -> String {
    format!("app.kubernetes.io/instance={cell},app.kubernetes.io/managed-by=nudge-operator")
}

/// The broker bootstrap address of the cell's Kafka (Strimzi's `<cluster>-kafka-bootstrap`
/// Service) and the Strimzi cluster its topics belong to.
fn kafka_of(cell: &Cell, platform: &Platform) -> (String, String, Option<String>) {
    match &cell.spec.kafka.cluster {
        Some(own) => (format!("{own}-kafka-bootstrap:{KAFKA_PORT}"), own.clone(), cell.metadata.namespace.clone()),
        None => (
            format!("{}-kafka-bootstrap.{}.svc:{KAFKA_PORT}", platform.kafka_cluster, platform.kafka_namespace),
            platform.kafka_cluster.clone(),
            Some(platform.kafka_namespace.clone()),
        ),
    }
}

/// The cell's configuration file, as `nudge cell --config` reads it. A cell with a topic
/// prefix reads the platform-wide topics under the platform's prefix; a cell on a cluster
/// of its own finds them there (mirrored in by the platform, see docs/operations.md).
fn cell_toml(cell: &Cell, name: &str, brokers: &str, platform: &Platform) -> String {
    let (prefix, platform_prefix) = match &cell.spec.kafka.topic_prefix {
        Some(prefix) => (prefix.clone(), format!("platform_prefix = \"{}\"\n", platform.topic_prefix)),
        None => (String::new(), String::new()),
    };
    // Hex digits only (the cell refuses anything else at start), so quoting is safe.
    let keys: Vec<String> = platform.member_token_public_keys.iter().map(|k| format!("\"{}\"", k.trim())).collect();
    let keys = keys.join(", ");
    format!(
        "# Written by nudge-operator from Cell {name}; edits are overwritten.\ncell_id = \"{name}\"\n\n[http]\nlisten = \"0.0.0.0:{HTTP_PORT}\"\n\n[kafka]\nbrokers = \"{brokers}\"\nprefix = \"{prefix}\"\n{platform_prefix}\n[members]\ntoken_public_keys = [{keys}]\n\n[log]\nformat = \"json\"\n"
    )
}

/// The objects a valid cell needs, each owned by it.
pub fn cell_children(cell: &Cell, platform: &Platform) -> Result<Children, Invalid> {
    validate(cell)?;
    let name = cell.metadata.name.clone().unwrap_or_default();
    let namespace = cell.metadata.namespace.clone();
    let owner: OwnerReference =
        cell.controller_owner_ref(&()).ok_or_else(|| invalid("metadata.uid", "the cell has no uid yet"))?;
    let meta = |object: String, role: Option<&str>| ObjectMeta {
        name: Some(object),
        namespace: namespace.clone(),
        labels: Some(labels(&name, role)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    };
    let config_name = format!("{name}-config");
    let account = format!("{name}-cell");
    let (brokers, kafka_cluster, kafka_namespace) = kafka_of(cell, platform);

    let mut deployments = Vec::new();
    let mut services = Vec::new();
    let mut disruption_budgets = Vec::new();
    let mut autoscalers = Vec::new();
    for role_name in ROLES {
        let role = role(cell, role_name);
        let object = format!("{name}-{role_name}");
        let selector = LabelSelector { match_labels: Some(labels(&name, Some(role_name))), ..LabelSelector::default() };
        let mut env: Vec<EnvVar> = ROLES
            .iter()
            .map(|r| EnvVar {
                name: format!("NUDGE_CELL__ROLES__{}", r.to_uppercase()),
                value: Some((*r == role_name).to_string()),
                ..EnvVar::default()
            })
            .collect();
        env.push(secret_env("NUDGE_CELL__REDIS__URL", &cell.spec.redis.secret, &cell.spec.redis.key));
        env.push(secret_env("NUDGE_CELL__SESSIONS__SECRETS", &format!("{name}-sessions"), "secrets"));
        env.push(EnvVar {
            name: "NUDGE_CELL__VAULT__ADDRESS".to_owned(),
            value: Some(platform.vault_address.clone()),
            ..EnvVar::default()
        });
        env.push(secret_env("NUDGE_CELL__VAULT__TOKEN", &platform.vault_token_secret, "token"));
        let probe = |path: &str| Probe {
            http_get: Some(HTTPGetAction {
                path: Some(path.to_owned()),
                port: IntOrString::Int(HTTP_PORT),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(5),
            ..Probe::default()
        };
        let container = Container {
            name: "cell".to_owned(),
            image: Some(format!("{}:{}", platform.image, cell.spec.version)),
            args: Some(vec!["--config".to_owned(), "/etc/nudge/cell.toml".to_owned()]),
            env: Some(env),
            ports: Some(vec![ContainerPort {
                name: Some("http".to_owned()),
                container_port: HTTP_PORT,
                ..ContainerPort::default()
            }]),
            readiness_probe: Some(probe("/readyz")),
            liveness_probe: Some(probe("/healthz")),
            resources: role.resources.clone(),
            ..Container::default()
        };
        deployments.push(Deployment {
            metadata: meta(object.clone(), Some(role_name)),
            spec: Some(DeploymentSpec {
                // With an autoscaler the count is the autoscaler's: writing it here would
                // undo every scale-up at the next reconcile.
                replicas: role.max_replicas.is_none().then_some(role.replicas),
                selector: selector.clone(),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels(&name, Some(role_name))),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![container],
                        service_account_name: Some(account.clone()),
                        automount_service_account_token: Some(false),
                        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        });
        services.push(Service {
            metadata: meta(object.clone(), Some(role_name)),
            spec: Some(ServiceSpec {
                selector: Some(labels(&name, Some(role_name))),
                // The pipeline takes no traffic: its Service only lets Prometheus find it.
                cluster_ip: (role_name == "pipeline").then(|| "None".to_owned()),
                ports: Some(vec![ServicePort {
                    name: Some("http".to_owned()),
                    port: if role_name == "pipeline" { HTTP_PORT } else { 80 },
                    target_port: Some(IntOrString::String("http".to_owned())),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        });
        disruption_budgets.push(PodDisruptionBudget {
            metadata: meta(object.clone(), Some(role_name)),
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(1)),
                selector: Some(selector),
                ..PodDisruptionBudgetSpec::default()
            }),
            ..PodDisruptionBudget::default()
        });
        if let Some(max) = role.max_replicas {
            autoscalers.push(HorizontalPodAutoscaler {
                metadata: meta(object.clone(), Some(role_name)),
                spec: Some(HorizontalPodAutoscalerSpec {
                    scale_target_ref: CrossVersionObjectReference {
                        api_version: Some("apps/v1".to_owned()),
                        kind: "Deployment".to_owned(),
                        name: object.clone(),
                    },
                    min_replicas: Some(role.replicas.max(1)),
                    max_replicas: max,
                    metrics: Some(vec![MetricSpec {
                        type_: "Resource".to_owned(),
                        resource: Some(ResourceMetricSource {
                            name: "cpu".to_owned(),
                            target: MetricTarget {
                                type_: "Utilization".to_owned(),
                                average_utilization: Some(70),
                                ..MetricTarget::default()
                            },
                        }),
                        ..MetricSpec::default()
                    }]),
                    ..HorizontalPodAutoscalerSpec::default()
                }),
                ..HorizontalPodAutoscaler::default()
            });
        }
    }
    let network_policies =
        network::network_policies(cell, &name, platform, &kafka_cluster, kafka_namespace.as_deref(), &meta);
    let kafka_topics =
        if platform.strimzi { topics::kafka_topics(cell, platform, &kafka_cluster, &meta) } else { Vec::new() };
    let service_monitor = platform.service_monitors.then(|| DynamicObject {
        types: Some(kube::api::TypeMeta {
            api_version: "monitoring.coreos.com/v1".into(),
            kind: "ServiceMonitor".into(),
        }),
        metadata: meta(name.clone(), None),
        data: serde_json::json!({
            "spec": {
                "selector": { "matchLabels": labels(&name, None) },
                "endpoints": [{ "port": "http", "path": "/metrics", "interval": "15s" }],
            }
        }),
    });
    Ok(Children {
        config_map: ConfigMap {
            metadata: meta(config_name, None),
            data: Some(BTreeMap::from([("cell.toml".to_owned(), cell_toml(cell, &name, &brokers, platform))])),
            ..ConfigMap::default()
        },
        service_account: ServiceAccount {
            metadata: meta(account, None),
            automount_service_account_token: Some(false),
            ..ServiceAccount::default()
        },
        deployments,
        services,
        disruption_budgets,
        autoscalers,
        network_policies,
        kafka_topics,
        service_monitor,
    })
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const FIXTURE: &str = r#"
apiVersion: nudge.dev/v1alpha1
kind: Cell
metadata:
  name: shared-1
  namespace: nudge
  uid: 5f0c0a4e-7d44-4c1d-9a55-0e6f1d2c3b4a
spec:
  tier: shared
  region: eu-west-1
  version: "0.1.0"
  publicUrl: https://shared-1.cells.nudge.example
  roles:
    ingest: { replicas: 2, maxReplicas: 6 }
    pipeline: { replicas: 1 }
    gateway: { replicas: 3 }
  kafka: { topicPrefix: "shared-1." }
  redis: { secret: shared-1-redis, cidr: 10.0.3.0/24, port: 6379 }
  postgres: { secret: platform-postgres, cidr: 10.0.4.10/32, port: 5432 }
  capacity: { tenants: 500, connections: 200000 }
"#;

    pub(crate) fn fixture() -> Cell {
        serde_yaml::from_str(FIXTURE).unwrap()
    }

    fn platform() -> Platform {
        Platform { image: "registry.example/nudge-cell".into(), ..Platform::default() }
    }

    #[test]
    fn a_cell_gets_a_deployment_per_role_and_every_child_is_owned() {
        let cell = fixture();
        let children = cell_children(&cell, &platform()).unwrap();
        let names: Vec<_> = children.deployments.iter().map(|d| d.metadata.name.clone().unwrap()).collect();
        assert_eq!(names, ["shared-1-ingest", "shared-1-pipeline", "shared-1-gateway"]);
        let replicas: Vec<_> = children.deployments.iter().map(|d| d.spec.as_ref().unwrap().replicas).collect();
        assert_eq!(replicas, [None, Some(1), Some(3)], "ingest's count is its autoscaler's");
        assert_eq!(children.services.len(), 3);
        let pipeline = children.services[1].spec.as_ref().unwrap();
        assert_eq!(
            pipeline.cluster_ip.as_deref(),
            Some("None"),
            "the pipeline takes no traffic: headless, for metrics"
        );
        assert_eq!(children.autoscalers.len(), 1, "only ingest has maxReplicas");
        assert_eq!(children.disruption_budgets.len(), 3);
        for meta in children.metadata() {
            let owners = meta.owner_references.as_ref().unwrap();
            assert_eq!(owners.len(), 1, "{:?}", meta.name);
            assert_eq!((owners[0].kind.as_str(), owners[0].name.as_str()), ("Cell", "shared-1"));
            assert_eq!(owners[0].controller, Some(true));
            assert_eq!(meta.namespace.as_deref(), Some("nudge"));
        }
        // Each Deployment runs one role of the cell binary, with the image of the cell's version.
        let gateway = &children.deployments[2].spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
        assert_eq!(gateway.image.as_deref(), Some("registry.example/nudge-cell:0.1.0"));
        let env: Vec<(String, Option<String>)> =
            gateway.env.iter().flatten().map(|e| (e.name.clone(), e.value.clone())).collect();
        assert!(env.contains(&("NUDGE_CELL__ROLES__GATEWAY".into(), Some("true".into()))));
        assert!(env.contains(&("NUDGE_CELL__ROLES__INGEST".into(), Some("false".into()))));
        let toml = &children.config_map.data.as_ref().unwrap()["cell.toml"];
        assert!(toml.contains("cell_id = \"shared-1\"") && toml.contains("prefix = \"shared-1.\""));
        assert!(toml.contains("brokers = \"platform-kafka-bootstrap.kafka.svc:9092\""), "{toml}");
        assert!(toml.contains("platform_prefix = \"\""), "control topics under the platform's prefix: {toml}");
        // Cell pods never call the Kubernetes API: no token is mounted.
        assert_eq!(children.service_account.automount_service_account_token, Some(false));
    }

    #[test]
    fn the_config_map_is_a_configuration_the_cell_reads() {
        let children = cell_children(&fixture(), &platform()).unwrap();
        let toml = &children.config_map.data.as_ref().unwrap()["cell.toml"];
        let config: nudge_data_plane_cell::CellConfig = ::toml::from_str(toml).unwrap();
        assert_eq!(config.cell_id.as_str(), "shared-1");
        assert!(config.members.token_public_keys.is_empty());
        let key = "ab".repeat(32);
        let with_key = Platform { member_token_public_keys: vec![key.clone()], ..platform() };
        let children = cell_children(&fixture(), &with_key).unwrap();
        let keyed: nudge_data_plane_cell::CellConfig =
            ::toml::from_str(&children.config_map.data.as_ref().unwrap()["cell.toml"]).unwrap();
        assert_eq!(keyed.members.token_public_keys, vec![key], "cells verify members' tokens");
        assert_eq!(config.http.listen.port(), u16::try_from(HTTP_PORT).unwrap());
        let topics = config.kafka.topics();
        assert_eq!(topics.name(nudge_contracts::Topic::EventsRaw), "shared-1.events.raw");
        assert_eq!(topics.name(nudge_contracts::Topic::ControlTenants), "control.tenants.v1");
    }

    #[test]
    fn topics_come_from_the_catalogue_under_the_cells_prefix() {
        let children = cell_children(&fixture(), &platform()).unwrap();
        let catalogue: Vec<_> = nudge_contracts::topics::catalogue()
            .iter()
            .filter(|t| t.scope == nudge_contracts::topics::Scope::Cell)
            .collect();
        assert_eq!(children.kafka_topics.len(), catalogue.len());
        assert!(!catalogue.iter().any(|t| t.name.starts_with("control.")), "the platform's, not a cell's");
        for (topic, spec) in children.kafka_topics.iter().zip(&catalogue) {
            assert_eq!(topic.data["spec"]["topicName"], format!("shared-1.{}", spec.name));
            assert_eq!(topic.data["spec"]["partitions"], spec.partitions);
            assert_eq!(topic.data["spec"]["config"]["cleanup.policy"], spec.cleanup.as_str());
            assert_eq!(topic.metadata.labels.as_ref().unwrap()["strimzi.io/cluster"], "platform");
        }
        let mut own = fixture();
        own.spec.kafka = crate::crd::KafkaRef { topic_prefix: None, cluster: Some("acme-kafka".into()) };
        let children = cell_children(&own, &platform()).unwrap();
        assert_eq!(children.kafka_topics[0].data["spec"]["topicName"], catalogue[0].name);
        let toml = &children.config_map.data.as_ref().unwrap()["cell.toml"];
        assert!(toml.contains("brokers = \"acme-kafka-kafka-bootstrap:9092\""), "{toml}");
    }

    #[test]
    fn the_network_policies_admit_ingress_and_monitoring_and_reach_only_the_cells_stores() {
        let children = cell_children(&fixture(), &platform()).unwrap();
        let [all, traffic] = &children.network_policies[..] else { panic!("two policies") };
        // Traffic: only ingest and gateway pods, only from the ingress controller's namespace
        // (a namespace selector alone: the ingress controller's pods, whatever their labels).
        let traffic = traffic.spec.as_ref().unwrap();
        let roles = traffic.pod_selector.as_ref().unwrap().match_expressions.as_ref().unwrap();
        assert_eq!(roles[0].values.as_deref(), Some(&["ingest".to_owned(), "gateway".to_owned()][..]));
        let from = &traffic.ingress.as_ref().unwrap()[0].from.as_ref().unwrap()[0];
        assert!(
            from.pod_selector.is_none(),
            "a pod selector here would mean pods of the ingress namespace with cell labels"
        );
        let namespace = from.namespace_selector.as_ref().unwrap().match_labels.as_ref().unwrap();
        assert_eq!(namespace["kubernetes.io/metadata.name"], "ingress-nginx");
        // Every pod: scraped from monitoring; reaches DNS, Kafka, its own Redis and OpenBao only.
        let all = all.spec.as_ref().unwrap();
        assert_eq!(all.policy_types.as_deref(), Some(&["Ingress".to_owned(), "Egress".to_owned()][..]));
        let egress = all.egress.as_ref().unwrap();
        let cidrs: Vec<&str> = egress
            .iter()
            .flat_map(|rule| rule.to.iter().flatten())
            .filter_map(|peer| peer.ip_block.as_ref().map(|b| b.cidr.as_str()))
            .collect();
        assert_eq!(cidrs, ["10.0.3.0/24"], "its own Redis, nothing else by address");
        assert_eq!(egress.len(), 4, "DNS, Kafka, Redis, OpenBao");
    }

    fn resources(name: &str, request: &str, limit: &str) -> k8s_openapi::api::core::v1::ResourceRequirements {
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        k8s_openapi::api::core::v1::ResourceRequirements {
            requests: Some(BTreeMap::from([(name.to_owned(), Quantity(request.to_owned()))])),
            limits: Some(BTreeMap::from([(name.to_owned(), Quantity(limit.to_owned()))])),
            ..Default::default()
        }
    }

    #[test]
    fn quantities_parse_as_kubernetes_writes_them() {
        assert_eq!(parse_quantity("250m"), Some(0.25));
        assert_eq!(parse_quantity("512Mi"), Some(536_870_912.0));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1.5G"), Some(1.5e9));
        assert_eq!(parse_quantity("lots"), None);
        assert_eq!(parse_quantity("Mi"), None);
    }

    #[test]
    fn building_twice_gives_the_same_children() {
        let cell = fixture();
        assert_eq!(cell_children(&cell, &platform()).unwrap(), cell_children(&cell, &platform()).unwrap());
    }

    #[test]
    fn an_invalid_spec_names_its_field_and_builds_nothing() {
        type Break = fn(&mut Cell);
        let cases: [(&str, Break); 13] = [
            ("spec.publicUrl", |c| c.spec.public_url = "shared-1.example".into()),
            ("metadata.name", |c| c.metadata.name = Some("Shared_1".into())),
            ("spec.version", |c| c.spec.version = " ".into()),
            ("spec.roles.gateway.replicas", |c| c.spec.roles.gateway.replicas = -1),
            ("spec.roles.ingest.maxReplicas", |c| c.spec.roles.ingest.max_replicas = Some(1)),
            ("spec.capacity", |c| c.spec.capacity.connections = 0),
            ("spec.capacity.tenants", |c| c.spec.tier = Tier::Dedicated),
            ("spec.kafka", |c| c.spec.kafka.cluster = Some("own".into())),
            ("spec.kafka.topicPrefix", |c| c.spec.kafka.topic_prefix = Some("Shared".into())),
            ("spec.redis.cidr", |c| c.spec.redis.cidr = "10.0.3.0".into()),
            ("spec.postgres.port", |c| c.spec.postgres.port = 0),
            ("spec.roles.pipeline.resources.requests.cpu", |c| {
                c.spec.roles.pipeline.resources = Some(resources("cpu", "4", "2"));
            }),
            ("spec.roles.gateway.resources.limits.memory", |c| {
                c.spec.roles.gateway.resources = Some(resources("memory", "1Gi", "lots"));
            }),
        ];
        for (field, break_it) in cases {
            let mut cell = fixture();
            break_it(&mut cell);
            let error = cell_children(&cell, &platform()).unwrap_err();
            assert_eq!(error.field, field, "{error}");
        }
    }
}
