//! `validate` and `build` of a Cell's reconcile: pure functions from the resource to the
//! objects that should exist, so they are tested from fixtures without an API server.
//!
//! Built so far: a ConfigMap with the cell's configuration, a ServiceAccount, and per role a
//! Deployment, a PodDisruptionBudget and (when `maxReplicas` is set) a HorizontalPodAutoscaler,
//! plus Services for the roles that take traffic (ingest, gateway). Every child carries a
//! controller ownerReference to the Cell and the cell's labels. The pods read the Redis URL
//! from the Secret the cell names and the session secrets (a list, e.g. `["…"]`) from the
//! `secrets` key of the Secret `<cell>-sessions`. Not built yet: the broker address (operator
//! configuration), NetworkPolicy, RBAC rules, Strimzi `KafkaTopic`s, the ServiceMonitor.

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
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use kube::Resource;

use crate::crd::{Cell, Role, Tier};

/// The port every cell process listens on (`http.listen`).
pub const HTTP_PORT: i32 = 8081;
/// Seconds a pod gets after SIGTERM: the cell's drain grace (5 s) and the stages' commit.
const TERMINATION_GRACE_SECONDS: i64 = 30;

/// A spec that cannot be built, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    pub field: String,
    pub problem: String,
}

fn invalid(field: &str, problem: &str) -> Invalid {
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

/// Checks what the API server's schema cannot: names the cell id rules accept, replica
/// bounds, capacity, references.
pub fn validate(cell: &Cell) -> Result<(), Invalid> {
    let name = cell.metadata.name.as_deref().unwrap_or_default();
    let label_ok = !name.is_empty()
        && name.len() <= 40
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !label_ok {
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
    }
    if spec.capacity.tenants == 0 || spec.capacity.connections == 0 {
        return Err(invalid("spec.capacity", "tenants and connections must be positive"));
    }
    if spec.tier == Tier::Dedicated && spec.capacity.tenants != 1 {
        return Err(invalid("spec.capacity.tenants", "a dedicated cell holds exactly one tenant"));
    }
    if spec.kafka.topic_prefix.is_some() && spec.kafka.cluster.is_some() {
        return Err(invalid("spec.kafka", "give topicPrefix or cluster, not both"));
    }
    for (field, r) in [("spec.redis.secret", &spec.redis), ("spec.postgres.secret", &spec.postgres)] {
        if r.secret.trim().is_empty() || r.key.trim().is_empty() {
            return Err(invalid(field, "name a Secret and its key"));
        }
    }
    Ok(())
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
}

impl Children {
    /// Every child's metadata, for checks that hold for all of them.
    pub fn metadata(&self) -> Vec<&ObjectMeta> {
        let mut all = vec![&self.config_map.metadata, &self.service_account.metadata];
        all.extend(self.deployments.iter().map(|d| &d.metadata));
        all.extend(self.services.iter().map(|s| &s.metadata));
        all.extend(self.disruption_budgets.iter().map(|p| &p.metadata));
        all.extend(self.autoscalers.iter().map(|h| &h.metadata));
        all
    }
}

fn labels(cell: &str, role: Option<&str>) -> BTreeMap<String, String> {
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

/// The cell's configuration file, as `nudge cell --config` reads it.
fn cell_toml(cell: &Cell, name: &str) -> String {
    let prefix = cell.spec.kafka.topic_prefix.clone().unwrap_or_default();
    format!(
        "# Written by nudge-operator from Cell {name}; edits are overwritten.\ncell_id = \"{name}\"\n\n[http]\nlisten = \"0.0.0.0:{HTTP_PORT}\"\n\n[kafka]\nprefix = \"{prefix}\"\n\n[log]\nformat = \"json\"\n"
    )
}

/// The objects a valid cell needs, each owned by it. `image` is the repository of the cell
/// image (`ghcr.io/…/nudge-cell`); the tag is the cell's version.
pub fn cell_children(cell: &Cell, image: &str) -> Result<Children, Invalid> {
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
            image: Some(format!("{image}:{}", cell.spec.version)),
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
                replicas: Some(role.replicas),
                selector: selector.clone(),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels(&name, Some(role_name))),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![container],
                        service_account_name: Some(account.clone()),
                        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        });
        if role_name != "pipeline" {
            services.push(Service {
                metadata: meta(object.clone(), Some(role_name)),
                spec: Some(ServiceSpec {
                    selector: Some(labels(&name, Some(role_name))),
                    ports: Some(vec![ServicePort {
                        name: Some("http".to_owned()),
                        port: 80,
                        target_port: Some(IntOrString::String("http".to_owned())),
                        ..ServicePort::default()
                    }]),
                    ..ServiceSpec::default()
                }),
                ..Service::default()
            });
        }
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
    Ok(Children {
        config_map: ConfigMap {
            metadata: meta(config_name, None),
            data: Some(BTreeMap::from([("cell.toml".to_owned(), cell_toml(cell, &name))])),
            ..ConfigMap::default()
        },
        service_account: ServiceAccount { metadata: meta(account, None), ..ServiceAccount::default() },
        deployments,
        services,
        disruption_budgets,
        autoscalers,
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
mod tests {
    use super::*;

    const FIXTURE: &str = r#"
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
  roles:
    ingest: { replicas: 2, maxReplicas: 6 }
    pipeline: { replicas: 1 }
    gateway: { replicas: 3 }
  kafka: { topicPrefix: "shared-1." }
  redis: { secret: shared-1-redis }
  postgres: { secret: platform-postgres }
  capacity: { tenants: 500, connections: 200000 }
"#;

    fn fixture() -> Cell {
        serde_yaml::from_str(FIXTURE).unwrap()
    }

    #[test]
    fn a_cell_gets_a_deployment_per_role_and_every_child_is_owned() {
        let cell = fixture();
        let children = cell_children(&cell, "registry.example/nudge-cell").unwrap();
        let names: Vec<_> = children.deployments.iter().map(|d| d.metadata.name.clone().unwrap()).collect();
        assert_eq!(names, ["shared-1-ingest", "shared-1-pipeline", "shared-1-gateway"]);
        let replicas: Vec<_> = children.deployments.iter().map(|d| d.spec.as_ref().unwrap().replicas).collect();
        assert_eq!(replicas, [Some(2), Some(1), Some(3)]);
        assert_eq!(children.services.len(), 2, "ingest and gateway take traffic; the pipeline does not");
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
    }

    #[test]
    fn building_twice_gives_the_same_children() {
        let cell = fixture();
        assert_eq!(cell_children(&cell, "img").unwrap(), cell_children(&cell, "img").unwrap());
    }

    #[test]
    fn an_invalid_spec_names_its_field_and_builds_nothing() {
        type Break = fn(&mut Cell);
        let cases: [(&str, Break); 7] = [
            ("metadata.name", |c| c.metadata.name = Some("Shared_1".into())),
            ("spec.version", |c| c.spec.version = " ".into()),
            ("spec.roles.gateway.replicas", |c| c.spec.roles.gateway.replicas = -1),
            ("spec.roles.ingest.maxReplicas", |c| c.spec.roles.ingest.max_replicas = Some(1)),
            ("spec.capacity", |c| c.spec.capacity.connections = 0),
            ("spec.capacity.tenants", |c| c.spec.tier = Tier::Dedicated),
            ("spec.kafka", |c| c.spec.kafka.cluster = Some("own".into())),
        ];
        for (field, break_it) in cases {
            let mut cell = fixture();
            break_it(&mut cell);
            let error = cell_children(&cell, "img").unwrap_err();
            assert_eq!(error.field, field, "{error}");
        }
    }
}
