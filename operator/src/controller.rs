//! The controllers: one each for Cells, Tenants and ErasureRequests, run by the elected leader.

use std::{collections::HashMap, sync::Arc, sync::Mutex, time::Duration};

use futures_util::StreamExt;
use k8s_openapi::api::{apps::v1::Deployment, coordination::v1::Lease};
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        Controller,
        controller::{Action, Config as ControllerConfig},
        reflector::ObjectRef,
        watcher,
    },
};
use tokio_util::sync::CancellationToken;

use crate::{
    cell,
    config::OperatorConfig,
    crd::{Cell, ErasureRequest, Tenant},
    erasure,
    lease::LeaderElection,
    tenant,
};

/// What every reconcile gets.
pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    /// Where erasure requests are filed; `None` without an operator token.
    pub control_plane: Option<crate::erasure::ControlPlane>,
    /// Consecutive failures per object, for the backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, config: OperatorConfig) -> Self {
        let control_plane = crate::erasure::ControlPlane::new(&config.control_plane).unwrap_or_else(|e| {
            tracing::error!(error = %e, "the control plane's client could not be built; erasure resources wait");
            None
        });
        Self { client, config, control_plane, failures: Mutex::new(HashMap::new()) }
    }

    fn failed(&self, key: String) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    fn succeeded(&self, key: &str) {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the resource has no namespace")]
    NotNamespaced,
    #[error("control plane: {0}")]
    ControlPlane(String),
}

/// The first retry after a failure; each further failure doubles it, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How long to wait after the `n`th consecutive failure.
pub fn backoff(n: u32) -> Duration {
    FIRST_BACKOFF.saturating_mul(1u32 << n.saturating_sub(1).min(16)).min(MAX_BACKOFF)
}

fn key<K: ResourceExt>(kind: &str, object: &K) -> String {
    format!("{kind}/{}/{}", object.namespace().unwrap_or_default(), object.name_any())
}

/// Requeues a failed reconcile with exponential backoff per object (5 s, 10 s, … 5 min).
pub fn error_policy<K: ResourceExt>(kind: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |object, error, ctx| {
        let n = ctx.failed(key(kind, object.as_ref()));
        let wait = backoff(n);
        tracing::warn!(kind, name = %object.name_any(), error = %error, attempt = n, retry_in_s = wait.as_secs(), "reconcile failed");
        Action::requeue(wait)
    }
}

pub async fn reconcile_cell(cell: Arc<Cell>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = key("Cell", cell.as_ref());
    let action = cell::reconcile(cell, ctx.clone()).await?;
    ctx.succeeded(&key);
    Ok(action)
}

pub async fn reconcile_tenant(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = key("Tenant", tenant.as_ref());
    let action = tenant::reconcile(tenant, ctx.clone()).await?;
    ctx.succeeded(&key);
    Ok(action)
}

pub async fn reconcile_erasure(er: Arc<ErasureRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = key("ErasureRequest", er.as_ref());
    let action = erasure::reconcile(er, ctx.clone()).await?;
    ctx.succeeded(&key);
    Ok(action)
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs both controllers while this replica holds the operator lease; returns when
/// `shutdown` fires (releasing the lease) or with an error when the lease is lost.
pub async fn run(client: Client, config: OperatorConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let election = LeaderElection::new(
        Api::<Lease>::namespaced(client.clone(), &config.leader.namespace),
        config.leader.lease.clone(),
        config.leader.identity(),
        Duration::from_secs(config.leader.duration_secs),
    );
    tracing::info!(identity = %election.identity(), "waiting to lead");
    tokio::select! {
        acquired = election.acquire() => acquired?,
        () = shutdown.cancelled() => return Ok(()),
    }
    tracing::info!(identity = %election.identity(), "leading: reconciling cells and tenants");

    let namespace = config.namespace.clone();
    let ctx = Arc::new(Context::new(client.clone(), config));
    let managed = watcher::Config::default().labels("app.kubernetes.io/managed-by=nudge-operator");
    let stop = shutdown.child_token();

    let cells = Controller::new(api::<Cell>(&client, namespace.as_deref()), watcher::Config::default())
        .owns(api::<Deployment>(&client, namespace.as_deref()), managed.clone())
        // A tenant placed on (or leaving) a cell changes the cell's count and blockers.
        .watches(api::<Tenant>(&client, namespace.as_deref()), watcher::Config::default(), |t: Tenant| {
            let ns = t.namespace().unwrap_or_default();
            // The cell it is on and the cell it is pinned to (a move in progress).
            let cells = [t.status.and_then(|s| s.cell), t.spec.cell_ref];
            let mut cells: Vec<String> = cells.into_iter().flatten().collect();
            cells.dedup();
            cells.into_iter().map(move |c| ObjectRef::<Cell>::new(&c).within(&ns)).collect::<Vec<_>>()
        })
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(reconcile_cell, error_policy::<Cell>("Cell"), ctx.clone())
        .for_each(|_| async {});
    let tenants = Controller::new(api::<Tenant>(&client, namespace.as_deref()), watcher::Config::default())
        // One at a time: two new tenants never both take a cell's last place.
        .with_config(ControllerConfig::default().concurrency(1))
        // A dedicated cell's readiness is its tenant's.
        .watches(api::<Cell>(&client, namespace.as_deref()), managed, |c: Cell| {
            let ns = c.namespace().unwrap_or_default();
            c.labels().get("nudge.dev/tenant").map(|t| ObjectRef::<Tenant>::new(t).within(&ns))
        })
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(reconcile_tenant, error_policy::<Tenant>("Tenant"), ctx.clone())
        .for_each(|_| async {});
    let erasures = Controller::new(api::<ErasureRequest>(&client, namespace.as_deref()), watcher::Config::default())
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(reconcile_erasure, error_policy::<ErasureRequest>("ErasureRequest"), ctx)
        .for_each(|_| async {});

    let outcome = tokio::select! {
        _ = async { tokio::join!(cells, tenants, erasures) } => Ok(()),
        () = election.hold() => {
            stop.cancel();
            Err(anyhow::anyhow!("lost the operator lease; exiting so only one replica reconciles"))
        }
    };
    if outcome.is_ok()
        && let Err(e) = election.release().await
    {
        tracing::warn!(error = %e, "releasing the operator lease failed; a follower waits it out");
    }
    outcome
}
