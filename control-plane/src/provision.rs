//! Where cells come from: the [`Provisioner`], chosen by `placement.provisioner`.
//!
//! - [`LocalProvisioner`] (`local`, the README's run command): self-service tenants go on the
//!   one shared cell of the machine; a dedicated cell is a cell process it starts here (its
//!   own port, its own topic prefix under the platform's), waits for, and stops with the
//!   control plane.
//! - [`KubernetesProvisioner`] (`kubernetes`): writes a `Tenant` resource per store and waits
//!   for the operator to place it (and, for isolation `dedicated`, to bring its `Cell` up),
//!   then reads the cell's public URL from the `Cell`.
//!
//! Either way the control plane records the result (the `cells` row and the tenant's
//! `cell_id`, announced to the cells), so the route of a tenant is the control plane's.

use std::{collections::HashMap, future::Future, pin::Pin, process::Stdio, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Resource,
    api::{Patch, PatchParams},
};
use nudge_operator::crd::{Cell as CellResource, Tenant, TenantSpec, Tier};
use nudge_tenants::{CellId, Plan, TenantId};
use secrecy::{ExposeSecret, SecretString};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    process::{Child, Command},
};

use crate::{
    config::{KubernetesProvisionerConfig, LocalProvisionerConfig},
    placement::Cell,
};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The store a cell is wanted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantRequest {
    pub tenant: TenantId,
    pub plan: Plan,
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// Asked for, not there yet; asking again continues where it was.
    #[error("the cell is still being provisioned: {0}")]
    Pending(String),
    #[error("no cell has room for another tenant: {0}")]
    NoCapacity(String),
    /// This provisioner cannot do it as configured.
    #[error("provisioning is not available: {0}")]
    Unavailable(String),
    #[error("provisioning failed: {0}")]
    Failed(String),
}

/// Places tenants on cells and brings dedicated cells up.
pub trait Provisioner: Send + Sync {
    /// `local` or `kubernetes`, for logs.
    fn kind(&self) -> &'static str;

    /// The shared cell a new self-service store goes on.
    fn shared_cell<'a>(&'a self, tenant: &'a TenantRequest) -> BoxFuture<'a, Result<Cell, ProvisionError>>;

    /// A cell of the store's own, whose data lives in `database`; returns once it takes
    /// traffic. Idempotent: asking again for the same store returns the same cell.
    fn dedicated_cell<'a>(
        &'a self,
        tenant: &'a TenantRequest,
        database: &'a str,
    ) -> BoxFuture<'a, Result<Cell, ProvisionError>>;

    /// Undoes what provisioning wrote for a store that is not going ahead (a signup that
    /// failed after placement) or is gone: its Tenant resource, its local cell process.
    fn release(&self, tenant: TenantId) -> BoxFuture<'_, Result<(), ProvisionError>>;
}

/// Cells as processes on this machine.
pub struct LocalProvisioner {
    shared: Cell,
    config: LocalProvisionerConfig,
    /// The platform's topic prefix; a dedicated cell's own topics go under
    /// `<platform prefix><cell>.`.
    platform_prefix: String,
    /// Further `NUDGE_CELL__…` settings every cell started here gets (the broker, Redis).
    cell_env: Vec<(String, String)>,
    running: tokio::sync::Mutex<HashMap<CellId, (Cell, Child)>>,
}

impl LocalProvisioner {
    pub fn new(
        shared: Cell,
        config: LocalProvisionerConfig,
        platform_prefix: String,
        cell_env: Vec<(String, String)>,
    ) -> Self {
        Self { shared, config, platform_prefix, cell_env, running: tokio::sync::Mutex::new(HashMap::new()) }
    }

    async fn start(&self, tenant: TenantId) -> Result<Cell, ProvisionError> {
        let Some(program) = self.config.cell_program.clone() else {
            return Err(ProvisionError::Unavailable(
                "placement.local.cell_program is not set, so no cell process can be started here".into(),
            ));
        };
        let id = CellId::dedicated_for(tenant);
        let mut running = self.running.lock().await;
        if let Some((cell, child)) = running.get_mut(&id) {
            if child.try_wait().map_err(|e| ProvisionError::Failed(e.to_string()))?.is_none() {
                return Ok(cell.clone());
            }
            tracing::warn!(cell_id = %id, "dedicated cell process had exited; starting it again");
        }
        let port = free_port().await?;
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| ProvisionError::Failed(format!("no randomness: {e}")))?;
        let mut child = Command::new(&program)
            .args(&self.config.cell_args)
            .envs(self.cell_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("NUDGE_CELL__CELL_ID", id.as_str())
            .env("NUDGE_CELL__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env("NUDGE_CELL__KAFKA__PREFIX", format!("{}{}.", self.platform_prefix, id))
            .env("NUDGE_CELL__KAFKA__PLATFORM_PREFIX", &self.platform_prefix)
            .env("NUDGE_CELL__SESSIONS__SECRETS", format!("[\"{}\"]", hex::encode(secret)))
            .env("NUDGE_CELL__DRAIN__GRACE_MS", "0")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ProvisionError::Failed(format!("starting {}: {e}", program.display())))?;
        let cell = Cell { id: id.clone(), public_url: format!("http://127.0.0.1:{port}") };
        tracing::info!(cell_id = %id, tenant_id = %tenant, url = %cell.public_url, "dedicated cell process started");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(self.config.ready_timeout_secs);
        loop {
            if let Some(status) = child.try_wait().map_err(|e| ProvisionError::Failed(e.to_string()))? {
                return Err(ProvisionError::Failed(format!("the cell process exited at start ({status})")));
            }
            if ready(port).await {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ProvisionError::Pending(format!("cell {id} is not ready yet")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        running.insert(id, (cell.clone(), child));
        Ok(cell)
    }

    /// The cells it started and still runs.
    pub async fn running(&self) -> Vec<Cell> {
        self.running.lock().await.values().map(|(c, _)| c.clone()).collect()
    }
}

async fn free_port() -> Result<u16, ProvisionError> {
    let listener =
        tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| ProvisionError::Failed(e.to_string()))?;
    Ok(listener.local_addr().map_err(|e| ProvisionError::Failed(e.to_string()))?.port())
}

/// Whether the cell on `port` answers `GET /readyz` with 200.
async fn ready(port: u16) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(b"GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"))
    };
    tokio::time::timeout(Duration::from_secs(1), attempt).await.ok().flatten().unwrap_or(false)
}

impl Provisioner for LocalProvisioner {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn shared_cell<'a>(&'a self, _tenant: &'a TenantRequest) -> BoxFuture<'a, Result<Cell, ProvisionError>> {
        Box::pin(async move { Ok(self.shared.clone()) })
    }

    fn dedicated_cell<'a>(
        &'a self,
        tenant: &'a TenantRequest,
        _database: &'a str,
    ) -> BoxFuture<'a, Result<Cell, ProvisionError>> {
        Box::pin(self.start(tenant.tenant))
    }

    fn release(&self, tenant: TenantId) -> BoxFuture<'_, Result<(), ProvisionError>> {
        Box::pin(async move {
            if let Some((cell, mut child)) = self.running.lock().await.remove(&CellId::dedicated_for(tenant)) {
                child.kill().await.map_err(|e| ProvisionError::Failed(e.to_string()))?;
                tracing::info!(cell_id = %cell.id, tenant_id = %tenant, "dedicated cell process stopped");
            }
            Ok(())
        })
    }
}

/// Tenants and dedicated cells as resources the operator reconciles.
pub struct KubernetesProvisioner {
    tenants: Api<Tenant>,
    cells: Api<CellResource>,
    secrets: Api<Secret>,
    config: KubernetesProvisionerConfig,
    /// `database.dedicated_url_template`: the URL of a dedicated database, written into the
    /// `<cell>-postgres` Secret its Cell names.
    database_url_template: SecretString,
    poll: Duration,
}

/// The Tenant resource of a store: its id with `-` for `_` (a Kubernetes name).
pub fn tenant_resource_name(tenant: TenantId) -> String {
    tenant.to_string().replace('_', "-")
}

const FIELD_MANAGER: &str = "nudge-control-plane";

fn kube_error(e: kube::Error) -> ProvisionError {
    ProvisionError::Failed(format!("kubernetes API: {e}"))
}

impl KubernetesProvisioner {
    pub fn new(client: kube::Client, config: KubernetesProvisionerConfig, database_url_template: SecretString) -> Self {
        Self {
            tenants: Api::namespaced(client.clone(), &config.namespace),
            cells: Api::namespaced(client.clone(), &config.namespace),
            secrets: Api::namespaced(client, &config.namespace),
            config,
            database_url_template,
            poll: Duration::from_millis(250),
        }
    }

    /// How often it looks at a Tenant while waiting (tests shorten it).
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    async fn apply_tenant(&self, request: &TenantRequest, isolation: Tier) -> Result<Tenant, ProvisionError> {
        let name = tenant_resource_name(request.tenant);
        let tenant = Tenant::new(
            &name,
            TenantSpec {
                tenant_id: request.tenant.to_string(),
                plan: request.plan.as_str().to_owned(),
                isolation,
                cell_ref: None,
                placement: None,
                limits: None,
                retention_days: None,
                suspended: false,
            },
        );
        self.tenants
            .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&tenant))
            .await
            .map_err(kube_error)
    }

    /// Waits until the operator has reconciled the Tenant as written (its `observedGeneration`
    /// at least `generation`) and placed it — on `expect` when given, Ready when `ready`;
    /// then the cell.
    async fn wait(
        &self,
        name: &str,
        generation: Option<i64>,
        expect: Option<&str>,
        ready: bool,
        timeout: Duration,
    ) -> Result<Cell, ProvisionError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let tenant = self.tenants.get(name).await.map_err(kube_error)?;
            let status = tenant.status.unwrap_or_default();
            let condition = |type_: &str| status.conditions.iter().find(|c| c.type_ == type_).cloned();
            let is_ready = condition("Ready").is_some_and(|c| c.status == "True");
            let current = status.observed_generation >= generation;
            if let Some(cell) = &status.cell
                && current
                && expect.is_none_or(|e| e == cell)
                && (!ready || is_ready)
            {
                let resource = self.cells.get(cell).await.map_err(kube_error)?;
                let id: CellId = cell.parse().map_err(|_| ProvisionError::Failed(format!("bad cell name {cell}")))?;
                return Ok(Cell { id, public_url: resource.spec.public_url });
            }
            if tokio::time::Instant::now() > deadline {
                return Err(match condition("Degraded").filter(|c| c.status == "True") {
                    Some(c) if c.reason == "NoCapacity" => ProvisionError::NoCapacity(c.message),
                    Some(c) => ProvisionError::Failed(c.message),
                    None => ProvisionError::Pending(
                        condition("Progressing")
                            .map_or_else(|| format!("Tenant {name} is not placed yet"), |c| c.message),
                    ),
                });
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}

/// A tenant's placement as the operator reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub tenant: TenantId,
    pub cell: Cell,
    pub isolation: &'static str,
}

impl KubernetesProvisioner {
    /// Every Ready Tenant with the cell it is on (one LIST of Tenants, one of Cells).
    pub async fn placements(&self) -> Result<Vec<Placed>, ProvisionError> {
        let cells = self.cells.list(&Default::default()).await.map_err(kube_error)?.items;
        let tenants = self.tenants.list(&Default::default()).await.map_err(kube_error)?.items;
        let mut placed = Vec::new();
        for tenant in tenants {
            let status = tenant.status.unwrap_or_default();
            let ready = status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
            let (Some(cell), true, Ok(id)) = (status.cell, ready, tenant.spec.tenant_id.parse::<TenantId>()) else {
                continue;
            };
            let Some(resource) = cells.iter().find(|c| c.metadata.name.as_deref() == Some(cell.as_str())) else {
                continue;
            };
            let Ok(cell_id) = cell.parse::<CellId>() else { continue };
            let isolation = if tenant.spec.isolation == Tier::Dedicated { "dedicated" } else { "shared" };
            placed.push(Placed {
                tenant: id,
                cell: Cell { id: cell_id, public_url: resource.spec.public_url.clone() },
                isolation,
            });
        }
        Ok(placed)
    }

    /// Keeps the control plane's routes equal to where the operator placed each tenant (a
    /// Tenant given another `cellRef`, a cell's changed URL): every `every`, the placements
    /// that changed since the last look are recorded and announced. The first look compares
    /// every tenant with the database (reads only where nothing changed).
    pub async fn follow_routes(
        &self,
        router: &crate::routing::TenantRouter,
        topics: &nudge_contracts::Topics,
        every: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut seen: HashMap<TenantId, Placed> = HashMap::new();
        loop {
            match self.placements().await {
                Ok(placed) => {
                    for p in placed {
                        if seen.get(&p.tenant) == Some(&p) {
                            continue;
                        }
                        match crate::placement::route_to(router, topics, p.tenant, &p.cell, p.isolation, None).await {
                            Ok(_) => {
                                seen.insert(p.tenant, p);
                            }
                            Err(e) => {
                                tracing::warn!(tenant_id = %p.tenant, error = %e, "recording a route failed; retrying")
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading placements from Kubernetes failed; retrying"),
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

impl Provisioner for KubernetesProvisioner {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn shared_cell<'a>(&'a self, tenant: &'a TenantRequest) -> BoxFuture<'a, Result<Cell, ProvisionError>> {
        Box::pin(async move {
            let written = self.apply_tenant(tenant, Tier::Shared).await?;
            let name = tenant_resource_name(tenant.tenant);
            let timeout = Duration::from_secs(self.config.placement_timeout_secs);
            self.wait(&name, written.metadata.generation, None, false, timeout).await
        })
    }

    fn dedicated_cell<'a>(
        &'a self,
        tenant: &'a TenantRequest,
        database: &'a str,
    ) -> BoxFuture<'a, Result<Cell, ProvisionError>> {
        Box::pin(async move {
            let cell = CellId::dedicated_for(tenant.tenant);
            let written = self.apply_tenant(tenant, Tier::Dedicated).await?;
            // The database's URL, owned by the Tenant: it goes when the store does.
            let owner = written
                .controller_owner_ref(&())
                .ok_or_else(|| ProvisionError::Failed("the Tenant came back without a uid".into()))?;
            let secret = serde_json::json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": format!("{cell}-postgres"),
                    "labels": { "app.kubernetes.io/managed-by": FIELD_MANAGER, "nudge.dev/tenant": tenant_resource_name(tenant.tenant) },
                    "ownerReferences": [owner],
                },
                "stringData": {
                    "url": self.database_url_template.expose_secret().replace("{database}", database),
                    "database": database,
                },
            });
            self.secrets
                .patch(&format!("{cell}-postgres"), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&secret))
                .await
                .map_err(kube_error)?;
            let name = tenant_resource_name(tenant.tenant);
            let timeout = Duration::from_secs(self.config.dedicated_timeout_secs);
            self.wait(&name, written.metadata.generation, Some(cell.as_str()), true, timeout).await
        })
    }

    fn release(&self, tenant: TenantId) -> BoxFuture<'_, Result<(), ProvisionError>> {
        Box::pin(async move {
            // The operator's finalizer on the Tenant takes its dedicated cell down first.
            match self.tenants.delete(&tenant_resource_name(tenant), &Default::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                Err(e) => Err(kube_error(e)),
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use nudge_operator::{
        config::OperatorConfig,
        controller::{Context, reconcile_cell, reconcile_tenant},
        fake_api::FakeApi,
    };
    use serde_json::json;

    use super::*;

    const NS: &str = "nudge";

    fn cells_path(name: &str) -> String {
        format!("/apis/nudge.dev/v1alpha1/namespaces/{NS}/cells/{name}")
    }

    fn tenants_path(name: &str) -> String {
        format!("/apis/nudge.dev/v1alpha1/namespaces/{NS}/tenants/{name}")
    }

    fn provisioner(fake: &FakeApi, timeout_secs: u64) -> KubernetesProvisioner {
        let config = KubernetesProvisionerConfig {
            namespace: NS.into(),
            placement_timeout_secs: timeout_secs,
            dedicated_timeout_secs: timeout_secs,
        };
        KubernetesProvisioner::new(fake.client(), config, SecretString::from("postgres://cell@db/{database}"))
            .with_poll(Duration::from_millis(20))
    }

    /// Plays the operator: reconciles every Tenant and Cell in the fake, over and over.
    fn operator(fake: &FakeApi) -> tokio::task::JoinHandle<()> {
        let fake = fake.clone();
        tokio::spawn(async move {
            let ctx = Arc::new(Context::new(fake.client(), OperatorConfig::default()));
            loop {
                for (path, object) in fake.all() {
                    if path.contains("/tenants/") {
                        let tenant: Tenant = serde_json::from_value(object).unwrap();
                        let _ = reconcile_tenant(Arc::new(tenant), ctx.clone()).await;
                    } else if path.contains("/cells/") {
                        let cell: CellResource = serde_json::from_value(object).unwrap();
                        let _ = reconcile_cell(Arc::new(cell), ctx.clone()).await;
                    }
                }
                // Pods come up: every Deployment has its replicas.
                for (path, mut object) in fake.all() {
                    if path.contains("/deployments/") && object["status"].is_null() {
                        let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
                        object["status"] = json!({
                            "replicas": replicas,
                            "availableReplicas": replicas,
                            "updatedReplicas": replicas,
                            "observedGeneration": object["metadata"]["generation"],
                        });
                        fake.seed(&path, object);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    }

    fn shared_cell(name: &str) -> serde_json::Value {
        json!({
            "apiVersion": "nudge.dev/v1alpha1", "kind": "Cell",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "tier": "shared", "region": "eu-west-1", "version": "0.1.0",
                "publicUrl": format!("https://{name}.cells.example"),
                "kafka": {"topicPrefix": format!("{name}.")},
                "redis": {"secret": "redis", "cidr": "10.0.3.0/24", "port": 6379},
                "postgres": {"secret": "platform-postgres", "cidr": "10.0.4.0/24", "port": 5432},
                "capacity": {"tenants": 10, "connections": 100000},
            }
        })
    }

    #[tokio::test]
    async fn a_signup_writes_a_tenant_and_gets_the_cell_the_operator_placed_it_on() {
        let fake = FakeApi::new();
        fake.seed(&cells_path("shared-eu"), shared_cell("shared-eu"));
        let operator = operator(&fake);
        let tenant = TenantId::new();
        let request = TenantRequest { tenant, plan: Plan::Growth };
        let cell = provisioner(&fake, 10).shared_cell(&request).await.unwrap();
        assert_eq!((cell.id.as_str(), cell.public_url.as_str()), ("shared-eu", "https://shared-eu.cells.example"));
        let name = tenant_resource_name(tenant);
        let written = fake.get(&tenants_path(&name)).unwrap();
        assert_eq!(written["spec"]["tenantId"], tenant.to_string());
        assert_eq!(
            (written["spec"]["plan"].as_str(), written["spec"]["isolation"].as_str()),
            (Some("growth"), Some("shared"))
        );
        operator.abort();
    }

    #[tokio::test]
    async fn a_dedicated_cell_is_a_tenant_resource_the_operator_brings_up() {
        let fake = FakeApi::new();
        let operator = operator(&fake);
        let tenant = TenantId::new();
        let request = TenantRequest { tenant, plan: Plan::Enterprise };
        let cell = provisioner(&fake, 10).dedicated_cell(&request, "nudge_t_abc").await.unwrap();
        assert_eq!(cell.id, CellId::dedicated_for(tenant));
        assert_eq!(cell.public_url, format!("https://{}.cells.nudge.example", cell.id));
        let secret = fake.get(&format!("/api/v1/namespaces/{NS}/secrets/{}-postgres", cell.id)).unwrap();
        assert_eq!(secret["stringData"]["url"], "postgres://cell@db/nudge_t_abc");
        assert_eq!(secret["metadata"]["ownerReferences"][0]["kind"], "Tenant", "goes with the store");
        let resource = fake.get(&cells_path(cell.id.as_str())).unwrap();
        assert_eq!(resource["spec"]["tier"], "dedicated");
        assert_eq!(resource["status"]["phase"], "Running");
        operator.abort();
    }

    #[tokio::test]
    async fn placements_are_the_ready_tenants_and_their_cells_urls() {
        let fake = FakeApi::new();
        fake.seed(&cells_path("shared-eu"), shared_cell("shared-eu"));
        let operator = operator(&fake);
        let provisioner = provisioner(&fake, 10);
        let first = TenantId::new();
        provisioner.shared_cell(&TenantRequest { tenant: first, plan: Plan::Free }).await.unwrap();
        let placed = provisioner.placements().await.unwrap();
        assert_eq!(placed.len(), 1);
        assert_eq!((placed[0].tenant, placed[0].cell.id.as_str(), placed[0].isolation), (first, "shared-eu", "shared"));
        // A Tenant pinned elsewhere by an operator shows up on its new cell.
        fake.seed(&cells_path("shared-eu-2"), shared_cell("shared-eu-2"));
        let path = tenants_path(&tenant_resource_name(first));
        let mut tenant = fake.get(&path).unwrap();
        tenant["spec"]["cellRef"] = json!("shared-eu-2");
        fake.seed(&path, tenant);
        let mut moved = false;
        for _ in 0..200 {
            let placed = provisioner.placements().await.unwrap();
            if placed.first().is_some_and(|p| p.cell.public_url == "https://shared-eu-2.cells.example") {
                moved = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(moved, "the new placement is reported");
        operator.abort();
    }

    #[tokio::test]
    async fn a_shared_store_moved_to_dedicated_gets_its_own_cell_not_its_old_one() {
        let fake = FakeApi::new();
        fake.seed(&cells_path("shared-eu"), shared_cell("shared-eu"));
        let operator = operator(&fake);
        let provisioner = provisioner(&fake, 10);
        let request = TenantRequest { tenant: TenantId::new(), plan: Plan::Enterprise };
        assert_eq!(provisioner.shared_cell(&request).await.unwrap().id.as_str(), "shared-eu");
        let cell = provisioner.dedicated_cell(&request, "nudge_t_abc").await.unwrap();
        assert_eq!(cell.id, CellId::dedicated_for(request.tenant));
        operator.abort();
    }

    #[tokio::test]
    async fn no_room_is_reported_as_such() {
        let fake = FakeApi::new();
        let operator = operator(&fake);
        let request = TenantRequest { tenant: TenantId::new(), plan: Plan::Free };
        let error = provisioner(&fake, 1).shared_cell(&request).await.unwrap_err();
        assert!(matches!(error, ProvisionError::NoCapacity(ref m) if m.contains("no shared cell")), "{error}");
        operator.abort();
    }
}
