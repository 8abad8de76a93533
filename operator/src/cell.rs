//! A Cell's reconcile: dereference → validate → build → apply → update status, and on
//! deletion the ordered cleanup.
//!
//! Nothing is written for a paused cell, and nothing but its status for an invalid one (the
//! `Degraded` condition names the field). A valid cell gets the finalizer first, then its
//! children, then a status saying what it waits for. Deleting a cell is refused while tenants
//! are placed on it (the `Degraded` condition names them); otherwise its children go in
//! order — gateway pods (sockets move to other cells' replicas), ingest, the pipeline (it
//! finishes what ingest accepted), the remaining objects, and the topics last — each step
//! waiting for the previous one to be gone, before the finalizer is removed.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, ResourceExt,
    api::{ApiResource, ListParams, Patch, PatchParams},
    runtime::controller::Action,
};

use crate::{
    apply::{self, Applied},
    build,
    controller::{Context, Error},
    crd::{Cell, CellStatus, Tenant},
    status::{self, Observed},
};

/// How often a settled cell is looked at again even without a change.
const RESYNC: Duration = Duration::from_secs(300);
/// How soon a cell waiting on something (pods, a deletion step, a blocker) is looked at again.
const WAIT: Duration = Duration::from_secs(5);
/// How soon a rolling-out cell is looked at again (Deployment changes also wake it).
const ROLLOUT: Duration = Duration::from_secs(15);

/// Tenants placed on (or pinned to) the cell and not themselves being deleted.
pub fn tenants_on(cell: &str, tenants: &[Tenant]) -> Vec<String> {
    let mut names: Vec<String> = tenants
        .iter()
        .filter(|t| t.metadata.deletion_timestamp.is_none())
        .filter(|t| {
            t.status.as_ref().and_then(|s| s.cell.as_deref()) == Some(cell) || t.spec.cell_ref.as_deref() == Some(cell)
        })
        .map(|t| t.name_any())
        .collect();
    names.sort();
    names
}

pub async fn reconcile(cell: Arc<Cell>, ctx: Arc<Context>) -> Result<Action, Error> {
    if status::paused(&cell.metadata) {
        tracing::info!(cell = %cell.name_any(), "paused: nothing written");
        return Ok(Action::await_change());
    }
    let namespace = cell.namespace().ok_or(Error::NotNamespaced)?;
    let name = cell.name_any();
    let cells: Api<Cell> = Api::namespaced(ctx.client.clone(), &namespace);

    // Dereference: the tenants placed on the cell.
    let tenants = Api::<Tenant>::namespaced(ctx.client.clone(), &namespace).list(&ListParams::default()).await?.items;
    let placed = tenants_on(&name, &tenants);

    if cell.metadata.deletion_timestamp.is_some() {
        return cleanup(&cell, &cells, &namespace, &placed, &ctx).await;
    }

    // Validate and build; an invalid spec gets its status and nothing else.
    let children = match build::cell_children(&cell, &ctx.config.platform) {
        Ok(children) => children,
        Err(invalid) => {
            tracing::warn!(cell = %name, error = %invalid, "invalid cell spec; nothing applied");
            let observed = [
                Observed::new("Ready", false, "InvalidSpec", invalid.to_string()),
                Observed::new("Progressing", false, "InvalidSpec", "fix the spec; nothing is applied until then"),
                Observed::new("Degraded", true, "InvalidSpec", invalid.to_string()),
            ];
            write_status(&cells, &cell, &observed, "Degraded", placed.len()).await?;
            return Ok(Action::await_change());
        }
    };

    if !status::has_finalizer(&cell.metadata) {
        cells
            .patch(&name, &PatchParams::default(), &Patch::Merge(status::finalizer_patch(&cell.metadata, true)))
            .await?;
    }

    // Apply.
    let kinds = build::child_kinds(&ctx.config.platform);
    let applied =
        apply::sync_children(&ctx.client, &namespace, &build::children_selector(&name), &kinds, &children.objects())
            .await?;
    if !applied.patched.is_empty() || !applied.deleted.is_empty() {
        tracing::info!(cell = %name, patched = ?applied.patched, deleted = ?applied.deleted, "children applied");
    }

    // Update status.
    let waiting = rollout_waits(&applied);
    let (observed, phase) = if waiting.is_empty() {
        (
            [
                Observed::new("Ready", true, "Available", "every role has its replicas available"),
                Observed::new("Progressing", false, "Available", ""),
                Observed::new("Degraded", false, "Available", ""),
            ],
            "Running",
        )
    } else {
        let message = format!("waiting for {}", waiting.join(", "));
        (
            [
                Observed::new("Ready", false, "RollingOut", message.clone()),
                Observed::new("Progressing", true, "RollingOut", message),
                Observed::new("Degraded", false, "RollingOut", ""),
            ],
            "Provisioning",
        )
    };
    write_status(&cells, &cell, &observed, phase, placed.len()).await?;
    Ok(Action::requeue(if waiting.is_empty() { RESYNC } else { ROLLOUT }))
}

/// Roles whose Deployment has not rolled out yet, as `gateway (1/3 available)`.
fn rollout_waits(applied: &Applied) -> Vec<String> {
    applied
        .current
        .iter()
        .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == "Deployment"))
        .filter_map(|o| {
            let deployment: Deployment = serde_json::from_value(serde_json::to_value(o).ok()?).ok()?;
            let want = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let status = deployment.status.unwrap_or_default();
            // As `kubectl rollout status` decides: the controller has seen the spec, every
            // wanted replica is updated and available, and no old replica is left.
            let seen = status.observed_generation >= deployment.metadata.generation;
            let updated = status.updated_replicas.unwrap_or(0);
            let available = status.available_replicas.unwrap_or(0);
            let done = seen && updated >= want && available >= want && status.replicas.unwrap_or(0) <= updated;
            let role = deployment.metadata.labels.as_ref()?.get("nudge.dev/role")?.clone();
            (!done).then(|| format!("{role} ({}/{want} available)", available.min(updated)))
        })
        .collect()
}

async fn write_status(
    cells: &Api<Cell>,
    cell: &Cell,
    observed: &[Observed],
    phase: &str,
    tenants: usize,
) -> Result<(), Error> {
    let previous = cell.status.clone().unwrap_or_default();
    let next = CellStatus {
        conditions: status::conditions(&previous.conditions, observed, cell.metadata.generation),
        observed_generation: cell.metadata.generation,
        phase: Some(phase.to_owned()),
        tenants: u32::try_from(tenants).unwrap_or(u32::MAX),
    };
    if next != previous {
        cells
            .patch_status(
                &cell.name_any(),
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": next })),
            )
            .await?;
    }
    Ok(())
}

/// One step of a cell's deletion: what goes, and how the status names it while it waits.
struct Step {
    describe: &'static str,
    kind: ApiResource,
    only: Option<String>,
}

fn cleanup_steps(name: &str, ctx: &Context) -> Vec<Step> {
    let deployment = ApiResource::erase::<Deployment>(&());
    let mut steps: Vec<Step> = ["gateway", "ingest", "pipeline"]
        .into_iter()
        .map(|role| Step {
            describe: match role {
                "gateway" => "the gateway pods to drain their sockets",
                "ingest" => "the ingest pods to stop",
                _ => "the pipeline pods to finish",
            },
            kind: deployment.clone(),
            only: Some(format!("{name}-{role}")),
        })
        .collect();
    let kinds = build::child_kinds(&ctx.config.platform);
    let topics = build::kafka_topic_resource();
    for kind in kinds.iter().filter(|k| **k != topics) {
        steps.push(Step { describe: "the cell's remaining objects to be removed", kind: kind.clone(), only: None });
    }
    if kinds.contains(&topics) {
        steps.push(Step { describe: "the cell's Kafka topics to be deleted", kind: topics, only: None });
    }
    steps
}

async fn cleanup(
    cell: &Cell,
    cells: &Api<Cell>,
    namespace: &str,
    placed: &[String],
    ctx: &Context,
) -> Result<Action, Error> {
    if !status::has_finalizer(&cell.metadata) {
        return Ok(Action::await_change());
    }
    let name = cell.name_any();
    if !placed.is_empty() {
        let message =
            format!("deletion blocked: tenants still on this cell: {} (move or delete them first)", placed.join(", "));
        tracing::warn!(cell = %name, blockers = ?placed, "cell deletion blocked by its tenants");
        let observed = [
            Observed::new("Ready", false, "DeletionBlocked", message.clone()),
            Observed::new("Progressing", false, "DeletionBlocked", message.clone()),
            Observed::new("Degraded", true, "DeletionBlocked", message),
        ];
        write_status(cells, cell, &observed, "Deleting", placed.len()).await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    let selector = build::children_selector(&name);
    for step in cleanup_steps(&name, ctx) {
        let remaining =
            apply::delete_children(&ctx.client, namespace, &selector, &step.kind, step.only.as_deref()).await?;
        if remaining > 0 {
            let message = format!("deleting: waiting for {}", step.describe);
            tracing::info!(cell = %name, step = step.describe, "cell cleanup waiting");
            let observed = [
                Observed::new("Ready", false, "Deleting", message.clone()),
                Observed::new("Progressing", true, "Deleting", message),
                Observed::new("Degraded", false, "Deleting", ""),
            ];
            write_status(cells, cell, &observed, "Deleting", 0).await?;
            return Ok(Action::requeue(WAIT));
        }
    }
    cells.patch(&name, &PatchParams::default(), &Patch::Merge(status::finalizer_patch(&cell.metadata, false))).await?;
    tracing::info!(cell = %name, "cell cleaned up; finalizer removed");
    Ok(Action::await_change())
}
