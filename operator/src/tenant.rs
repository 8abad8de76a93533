//! A Tenant's reconcile: validate, place, and (for isolation `dedicated`) create its Cell.
//!
//! Placement, in order: a tenant keeps the cell it was placed on while that cell exists;
//! `cellRef` pins it to a named shared cell; otherwise it goes to the shared cell (in its
//! `placement.region`, when given) with the most room left, counting the tenants already
//! placed against the cell's `capacity.tenants`. The tenant controller runs one reconcile at
//! a time, so two new tenants never both take a cell's last place. A dedicated tenant gets a
//! Cell of its own, `ded-<tenant uuid>`, owned by the Tenant, with its own topic prefix and
//! its own database (the Secret `<cell>-postgres`, which the control plane's Kubernetes
//! provisioner writes when it creates the dedicated database).

use std::{sync::Arc, time::Duration};

use kube::{
    Api, Resource, ResourceExt,
    api::{ListParams, ObjectMeta, Patch, PatchParams},
    runtime::controller::Action,
};
use nudge_tenants::TenantId;
use serde::Deserialize;

use crate::{
    apply::{self, FIELD_MANAGER},
    build::{Invalid, invalid},
    controller::{Context, Error},
    crd::{Capacity, Cell, CellSpec, DataStoreRef, KafkaRef, Roles, Tenant, TenantStatus, Tier},
    status::{self, Observed},
};

/// What a dedicated cell is made of, from the operator's configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct DedicatedTemplate {
    /// The release new dedicated cells run.
    pub version: String,
    /// The region when the tenant names none.
    pub region: String,
    pub roles: Roles,
    /// The Redis dedicated cells use.
    pub redis: DataStoreRef,
    /// Where the PostgreSQL server holding the dedicated databases is.
    pub postgres_cidr: String,
    pub postgres_port: i32,
    /// Socket capacity of a dedicated cell.
    pub connections: u64,
    /// The base URL browsers reach a dedicated cell at; `{cell}` is replaced by its name.
    pub public_url: String,
}

impl Default for DedicatedTemplate {
    fn default() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            region: "default".to_owned(),
            roles: Roles::default(),
            redis: DataStoreRef {
                secret: "dedicated-redis".to_owned(),
                key: "url".to_owned(),
                cidr: "10.0.0.0/8".to_owned(),
                port: 6379,
            },
            postgres_cidr: "10.0.0.0/8".to_owned(),
            postgres_port: 5432,
            connections: 100_000,
            public_url: "https://{cell}.cells.nudge.example".to_owned(),
        }
    }
}

/// The cell a dedicated tenant gets: `ded-` and the tenant's uuid in hex (36 characters).
pub fn dedicated_cell_name(tenant: TenantId) -> String {
    nudge_tenants::CellId::dedicated_for(tenant).as_str().to_owned()
}

/// Checks what the schema cannot; the error names the field.
pub fn validate(tenant: &Tenant) -> Result<TenantId, Invalid> {
    let spec = &tenant.spec;
    let id: TenantId = spec
        .tenant_id
        .parse()
        .map_err(|_| invalid("spec.tenantId", "a tenant id as the control plane issues it (tnt_ and 32 hex digits)"))?;
    if spec.plan().is_none() {
        let known: Vec<&str> = nudge_tenants::Plan::ALL.iter().map(|p| p.as_str()).collect();
        return Err(invalid("spec.plan", &format!("unknown plan `{}` (one of {})", spec.plan, known.join(", "))));
    }
    if let Some(days) = spec.retention_days
        && !(1..=3650).contains(&days)
    {
        return Err(invalid("spec.retentionDays", "between 1 and 3650 days"));
    }
    if spec.isolation == Tier::Dedicated && spec.cell_ref.is_some() {
        return Err(invalid("spec.cellRef", "a dedicated tenant gets a cell of its own; remove cellRef"));
    }
    if let Some(limits) = &spec.limits
        && [limits.events_per_second, limits.burst_events, limits.connections, limits.seats].contains(&Some(0))
    {
        return Err(invalid("spec.limits", "a limit of 0 would refuse everything; suspend the tenant instead"));
    }
    if tenant.metadata.uid.is_none() {
        return Err(invalid("metadata.uid", "the tenant has no uid yet (not read from the API server)"));
    }
    Ok(id)
}

/// The dedicated Cell of a tenant, owned by it.
pub fn dedicated_cell(tenant: &Tenant, id: TenantId, template: &DedicatedTemplate) -> Result<Cell, Invalid> {
    let name = dedicated_cell_name(id);
    let owner = tenant.controller_owner_ref(&()).ok_or_else(|| invalid("metadata.uid", "the tenant has no uid yet"))?;
    let region = tenant.spec.placement.as_ref().and_then(|p| p.region.clone()).unwrap_or(template.region.clone());
    let mut cell = Cell::new(
        &name,
        CellSpec {
            tier: Tier::Dedicated,
            region,
            public_url: template.public_url.replace("{cell}", &name),
            version: template.version.clone(),
            roles: template.roles.clone(),
            kafka: KafkaRef { topic_prefix: Some(format!("{name}.")), cluster: None },
            redis: template.redis.clone(),
            postgres: DataStoreRef {
                secret: format!("{name}-postgres"),
                key: "url".to_owned(),
                cidr: template.postgres_cidr.clone(),
                port: template.postgres_port,
            },
            capacity: Capacity {
                tenants: 1,
                connections: tenant
                    .spec
                    .limits
                    .as_ref()
                    .and_then(|l| l.connections)
                    .map_or(template.connections, u64::from),
            },
        },
    );
    cell.metadata = ObjectMeta {
        name: Some(name),
        namespace: tenant.metadata.namespace.clone(),
        labels: Some(
            [
                ("app.kubernetes.io/managed-by".to_owned(), "nudge-operator".to_owned()),
                ("nudge.dev/tenant".to_owned(), tenant.name_any()),
            ]
            .into(),
        ),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    };
    Ok(cell)
}

fn ready(cell: &Cell) -> bool {
    cell.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn usable(cell: &Cell) -> bool {
    cell.metadata.deletion_timestamp.is_none() && cell.spec.tier == Tier::Shared && !status::paused(&cell.metadata)
}

/// Chooses the shared cell for `tenant` among `cells`, given where the other tenants are.
pub fn place(tenant: &Tenant, cells: &[Cell], tenants: &[Tenant]) -> Result<String, Invalid> {
    let me = tenant.name_any();
    let load = |cell: &str| {
        tenants
            .iter()
            .filter(|t| t.name_any() != me)
            .filter(|t| t.status.as_ref().and_then(|s| s.cell.as_deref()) == Some(cell))
            .count() as u64
    };
    if let Some(named) = &tenant.spec.cell_ref {
        let Some(cell) = cells.iter().find(|c| &c.name_any() == named) else {
            return Err(invalid("spec.cellRef", &format!("no Cell named `{named}` in this namespace")));
        };
        if cell.spec.tier != Tier::Shared {
            return Err(invalid("spec.cellRef", &format!("`{named}` is a dedicated cell")));
        }
        return Ok(named.clone());
    }
    let current = tenant.status.as_ref().and_then(|s| s.cell.clone());
    if let Some(current) = current
        && cells.iter().any(|c| c.name_any() == current && c.metadata.deletion_timestamp.is_none())
    {
        return Ok(current);
    }
    let region = tenant.spec.placement.as_ref().and_then(|p| p.region.as_deref());
    let candidates: Vec<&Cell> =
        cells.iter().filter(|c| usable(c) && region.is_none_or(|r| c.spec.region == r)).collect();
    let chosen = candidates
        .iter()
        .filter(|c| load(&c.name_any()) < u64::from(c.spec.capacity.tenants))
        // The most room left, as a share of capacity; ties by name, so placement is stable.
        .min_by(|a, b| {
            let share = |c: &Cell| load(&c.name_any()) as f64 / f64::from(c.spec.capacity.tenants);
            share(a).total_cmp(&share(b)).then_with(|| a.name_any().cmp(&b.name_any()))
        });
    match chosen {
        Some(cell) => Ok(cell.name_any()),
        None => {
            let place = region.map_or("any region".to_owned(), |r| format!("region {r}"));
            Err(invalid(
                "placement",
                &format!(
                    "no shared cell in {place} has room for another tenant ({} full); add a Cell or raise a capacity",
                    candidates.len()
                ),
            ))
        }
    }
}

pub async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    if status::paused(&tenant.metadata) {
        tracing::info!(tenant = %tenant.name_any(), "paused: nothing written");
        return Ok(Action::await_change());
    }
    let namespace = tenant.namespace().ok_or(Error::NotNamespaced)?;
    let tenants_api: Api<Tenant> = Api::namespaced(ctx.client.clone(), &namespace);
    let cells_api: Api<Cell> = Api::namespaced(ctx.client.clone(), &namespace);

    if tenant.metadata.deletion_timestamp.is_some() {
        return cleanup(&tenant, &tenants_api, &cells_api).await;
    }

    let id = match validate(&tenant) {
        Ok(id) => id,
        Err(invalid) => {
            tracing::warn!(tenant = %tenant.name_any(), error = %invalid, "invalid tenant spec; nothing applied");
            write_status(&tenants_api, &tenant, &degraded("InvalidSpec", &invalid), "Invalid", None).await?;
            return Ok(Action::await_change());
        }
    };

    // Dereference: the cells and where the other tenants are.
    let cells = cells_api.list(&ListParams::default()).await?.items;
    let cell_name = if tenant.spec.isolation == Tier::Dedicated {
        let cell = match dedicated_cell(&tenant, id, &ctx.config.dedicated) {
            Ok(cell) => cell,
            Err(invalid) => {
                write_status(&tenants_api, &tenant, &degraded("InvalidSpec", &invalid), "Invalid", None).await?;
                return Ok(Action::await_change());
            }
        };
        ensure_finalizer(&tenants_api, &tenant).await?;
        let name = cell.name_any();
        let existing = cells.iter().find(|c| c.name_any() == name);
        let want = serde_json::to_value(&cell).unwrap_or_default();
        let current = existing.map(|c| serde_json::to_value(c).unwrap_or_default());
        if !current.is_some_and(|have| apply::contains(&have, &want)) {
            cells_api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&cell)).await?;
            tracing::info!(tenant = %tenant.name_any(), cell = %name, "dedicated cell applied");
        }
        name
    } else {
        let tenants = tenants_api.list(&ListParams::default()).await?.items;
        match place(&tenant, &cells, &tenants) {
            Ok(name) => {
                ensure_finalizer(&tenants_api, &tenant).await?;
                name
            }
            Err(invalid) => {
                let reason = if invalid.field == "placement" { "NoCapacity" } else { "InvalidSpec" };
                write_status(&tenants_api, &tenant, &degraded(reason, &invalid), "Placing", None).await?;
                return Ok(Action::requeue(Duration::from_secs(60)));
            }
        }
    };

    let cell_ready = cells.iter().find(|c| c.name_any() == cell_name).is_some_and(ready);
    let phase = if tenant.spec.suspended { "Suspended" } else { "Active" };
    let observed = if cell_ready {
        let note = if tenant.spec.suspended { "suspended: its cell refuses its traffic" } else { "serving" };
        [
            Observed::new("Ready", true, "Placed", format!("on cell {cell_name}, {note}")),
            Observed::new("Progressing", false, "Placed", ""),
            Observed::new("Degraded", false, "Placed", ""),
        ]
    } else {
        let message = format!("placed on cell {cell_name}; waiting for it to be ready");
        [
            Observed::new("Ready", false, "CellNotReady", message.clone()),
            Observed::new("Progressing", true, "CellNotReady", message),
            Observed::new("Degraded", false, "CellNotReady", ""),
        ]
    };
    write_status(&tenants_api, &tenant, &observed, if cell_ready { phase } else { "Placing" }, Some(cell_name)).await?;
    Ok(Action::requeue(Duration::from_secs(if cell_ready { 300 } else { 15 })))
}

fn degraded(reason: &'static str, invalid: &Invalid) -> [Observed; 3] {
    [
        Observed::new("Ready", false, reason, invalid.to_string()),
        Observed::new("Progressing", false, reason, "nothing is applied until this is fixed"),
        Observed::new("Degraded", true, reason, invalid.to_string()),
    ]
}

async fn ensure_finalizer(api: &Api<Tenant>, tenant: &Tenant) -> Result<(), Error> {
    if !status::has_finalizer(&tenant.metadata) {
        api.patch(
            &tenant.name_any(),
            &PatchParams::default(),
            &Patch::Merge(status::finalizer_patch(&tenant.metadata, true)),
        )
        .await?;
    }
    Ok(())
}

async fn write_status(
    api: &Api<Tenant>,
    tenant: &Tenant,
    observed: &[Observed],
    phase: &str,
    cell: Option<String>,
) -> Result<(), Error> {
    let previous = tenant.status.clone().unwrap_or_default();
    let next = TenantStatus {
        conditions: status::conditions(&previous.conditions, observed, tenant.metadata.generation),
        observed_generation: tenant.metadata.generation,
        phase: Some(phase.to_owned()),
        cell: cell.or(previous.cell.clone()),
    };
    if next != previous {
        api.patch_status(
            &tenant.name_any(),
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": next })),
        )
        .await?;
    }
    Ok(())
}

/// A deleted tenant's dedicated cell goes first (its own finalizer runs the cell's ordered
/// cleanup); then the tenant's finalizer is removed. A shared tenant has nothing to clean
/// up here: its data is erased by the control plane's offboarding.
async fn cleanup(tenant: &Tenant, tenants_api: &Api<Tenant>, cells_api: &Api<Cell>) -> Result<Action, Error> {
    if !status::has_finalizer(&tenant.metadata) {
        return Ok(Action::await_change());
    }
    if tenant.spec.isolation == Tier::Dedicated
        && let Ok(id) = tenant.spec.tenant_id.parse::<TenantId>()
    {
        let name = dedicated_cell_name(id);
        if let Some(cell) = cells_api.get_opt(&name).await? {
            if cell.metadata.deletion_timestamp.is_none() {
                cells_api.delete(&name, &Default::default()).await?;
            }
            let message = format!("deleting: waiting for dedicated cell {name} to be removed");
            let observed = [
                Observed::new("Ready", false, "Deleting", message.clone()),
                Observed::new("Progressing", true, "Deleting", message),
                Observed::new("Degraded", false, "Deleting", ""),
            ];
            write_status(tenants_api, tenant, &observed, "Deleting", None).await?;
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
    }
    tenants_api
        .patch(
            &tenant.name_any(),
            &PatchParams::default(),
            &Patch::Merge(status::finalizer_patch(&tenant.metadata, false)),
        )
        .await?;
    tracing::info!(tenant = %tenant.name_any(), "tenant cleaned up; finalizer removed");
    Ok(Action::await_change())
}
