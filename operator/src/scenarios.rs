//! The reconciles against the in-memory API server ([`crate::fake_api`]), asserting the
//! requests they send.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{
    Api,
    api::{ApiResource, DeleteParams},
    runtime::controller::Action,
};
use serde_json::{Value, json};

use crate::{
    build,
    config::OperatorConfig,
    controller::{Context, error_policy, reconcile_cell, reconcile_tenant},
    crd::{Cell, Tenant},
    fake_api::{FakeApi, Sent},
    lease::LeaderElection,
};

const NS: &str = "nudge";
const TENANT_ID: &str = "tnt_0123456789abcdef0123456789abcdef";

fn cell_path(name: &str) -> String {
    format!("/apis/nudge.dev/v1alpha1/namespaces/{NS}/cells/{name}")
}

fn tenant_path(name: &str) -> String {
    format!("/apis/nudge.dev/v1alpha1/namespaces/{NS}/tenants/{name}")
}

fn collection(resource: &ApiResource) -> String {
    if resource.group.is_empty() {
        format!("/api/{}/namespaces/{NS}/{}", resource.version, resource.plural)
    } else {
        format!("/apis/{}/{}/namespaces/{NS}/{}", resource.group, resource.version, resource.plural)
    }
}

fn fixture_json() -> Value {
    let cell: Value = serde_yaml::from_str(build::tests::FIXTURE).unwrap();
    let mut cell = cell;
    cell["metadata"].as_object_mut().unwrap().remove("uid");
    cell
}

fn read_cell(fake: &FakeApi, name: &str) -> Option<Arc<Cell>> {
    fake.get(&cell_path(name)).map(|v| Arc::new(serde_json::from_value(v).unwrap()))
}

fn read_tenant(fake: &FakeApi, name: &str) -> Option<Arc<Tenant>> {
    fake.get(&tenant_path(name)).map(|v| Arc::new(serde_json::from_value(v).unwrap()))
}

fn context(fake: &FakeApi) -> Arc<Context> {
    Arc::new(Context::new(fake.client(), OperatorConfig::default()))
}

fn writes(fake: &FakeApi) -> Vec<Sent> {
    fake.take_sent().into_iter().filter(Sent::is_write).collect()
}

/// The paths the built children of `cell` live at.
fn child_paths(cell: &Cell) -> BTreeSet<String> {
    let children = build::cell_children(cell, &OperatorConfig::default().platform).unwrap();
    children.objects().iter().map(|c| format!("{}/{}", collection(&c.resource), c.name())).collect()
}

/// The stored objects labelled as children of `cell`.
fn stored_children(fake: &FakeApi, cell: &str) -> Vec<(String, Value)> {
    fake.all()
        .into_iter()
        .filter(|(_, v)| v["metadata"]["labels"]["app.kubernetes.io/instance"] == cell)
        .filter(|(_, v)| v["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "nudge-operator")
        .collect()
}

/// A Deployment's status once its controller has rolled it out.
pub(crate) fn rolled_out(deployment: &Value) -> Value {
    let replicas = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
    json!({"replicas": replicas, "availableReplicas": replicas, "updatedReplicas": replicas, "observedGeneration": deployment["metadata"]["generation"]})
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == type_).unwrap()
}

#[tokio::test]
async fn creating_a_cell_applies_exactly_its_children_and_a_second_reconcile_writes_nothing() {
    let fake = FakeApi::new();
    fake.seed(&cell_path("shared-1"), fixture_json());
    let ctx = context(&fake);

    reconcile_cell(read_cell(&fake, "shared-1").unwrap(), ctx.clone()).await.unwrap();
    let sent = writes(&fake);
    // The finalizer first, guarded by the resourceVersion read.
    assert_eq!(sent[0].line(), format!("PATCH {}", cell_path("shared-1")));
    assert_eq!(sent[0].content_type, "application/merge-patch+json");
    assert_eq!(sent[0].body["metadata"]["finalizers"], json!(["nudge.dev/cleanup"]));
    assert!(sent[0].body["metadata"]["resourceVersion"].is_string());
    // Then exactly the built children, by server-side apply with our field manager.
    let cell = read_cell(&fake, "shared-1").unwrap();
    let uid = cell.metadata.uid.clone().unwrap();
    let applies = &sent[1..sent.len() - 1];
    let applied: BTreeSet<String> = applies.iter().map(|s| s.path.clone()).collect();
    assert_eq!(applied, child_paths(&cell));
    assert_eq!(applies.len(), applied.len(), "each child written once");
    for apply in applies {
        assert_eq!(apply.method, "PATCH");
        assert_eq!(apply.content_type, "application/apply-patch+yaml");
        assert!(
            apply.query.contains("fieldManager=nudge-operator") && apply.query.contains("force=true"),
            "{}",
            apply.query
        );
        let owner = &apply.body["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["kind"].as_str(), owner["uid"].as_str(), owner["controller"].as_bool()),
            (Some("Cell"), Some(uid.as_str()), Some(true))
        );
    }
    // Last, the status: nothing is available yet, and it says what it waits for.
    let last = sent.last().unwrap();
    assert_eq!(last.line(), format!("PATCH {}/status", cell_path("shared-1")));
    let status = &fake.get(&cell_path("shared-1")).unwrap()["status"];
    assert_eq!(status["phase"], "Provisioning");
    assert_eq!(status["observedGeneration"], 1);
    let progressing = condition(status, "Progressing");
    assert_eq!(progressing["status"], "True");
    assert_eq!(
        progressing["message"],
        "waiting for ingest (0/1 available), pipeline (0/1 available), gateway (0/3 available)"
    );
    assert_eq!(condition(status, "Degraded")["status"], "False");

    // Reconciling the unchanged cell again sends reads only.
    reconcile_cell(read_cell(&fake, "shared-1").unwrap(), ctx.clone()).await.unwrap();
    assert_eq!(writes(&fake).iter().map(Sent::line).collect::<Vec<_>>(), Vec::<String>::new());

    // Pods becoming available turn it Ready (one status write), then quiet again.
    for role in ["ingest", "pipeline", "gateway"] {
        let path = format!("/apis/apps/v1/namespaces/{NS}/deployments/shared-1-{role}");
        let mut deployment = fake.get(&path).unwrap();
        deployment["status"] = rolled_out(&deployment);
        fake.seed(&path, deployment);
    }
    reconcile_cell(read_cell(&fake, "shared-1").unwrap(), ctx.clone()).await.unwrap();
    let sent = writes(&fake);
    assert_eq!(sent.iter().map(Sent::line).collect::<Vec<_>>(), [format!("PATCH {}/status", cell_path("shared-1"))]);
    let status = &fake.get(&cell_path("shared-1")).unwrap()["status"];
    assert_eq!(
        (status["phase"].as_str(), condition(status, "Ready")["status"].as_str()),
        (Some("Running"), Some("True"))
    );
    reconcile_cell(read_cell(&fake, "shared-1").unwrap(), ctx).await.unwrap();
    assert!(writes(&fake).is_empty());
}

#[tokio::test]
async fn a_changed_spec_rewrites_only_what_changed_and_removes_what_is_no_longer_built() {
    let fake = FakeApi::new();
    fake.seed(&cell_path("shared-1"), fixture_json());
    let ctx = context(&fake);
    reconcile_cell(read_cell(&fake, "shared-1").unwrap(), ctx.clone()).await.unwrap();
    fake.take_sent();

    let mut cell = fake.get(&cell_path("shared-1")).unwrap();
    cell["spec"]["roles"]["gateway"]["replicas"] = json!(5);
    cell["spec"]["roles"]["ingest"].as_object_mut().unwrap().remove("maxReplicas");
    fake.seed(&cell_path("shared-1"), cell);
    reconcile_cell(read_cell(&fake, "shared-1").unwrap(), ctx).await.unwrap();
    let lines: Vec<String> = writes(&fake).iter().map(Sent::line).collect();
    assert_eq!(
        lines,
        [
            // Without its autoscaler, ingest's replica count is the spec's again.
            format!("PATCH /apis/apps/v1/namespaces/{NS}/deployments/shared-1-ingest"),
            format!("PATCH /apis/apps/v1/namespaces/{NS}/deployments/shared-1-gateway"),
            format!("DELETE /apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/shared-1-ingest"),
            format!("PATCH {}/status", cell_path("shared-1")),
        ]
    );
}

#[tokio::test]
async fn turning_an_autoscaler_on_hands_the_replica_count_over_instead_of_resetting_it() {
    let fake = FakeApi::new();
    fake.seed(&cell_path("shared-1"), fixture_json());
    let ctx = context(&fake);
    reconcile_cell(read_cell(&fake, "shared-1").unwrap(), ctx.clone()).await.unwrap();
    fake.take_sent();
    let path = format!("/apis/apps/v1/namespaces/{NS}/deployments/shared-1-gateway");
    assert_eq!(fake.get(&path).unwrap()["spec"]["replicas"], 3);

    let mut cell = fake.get(&cell_path("shared-1")).unwrap();
    cell["spec"]["roles"]["gateway"]["maxReplicas"] = json!(9);
    fake.seed(&cell_path("shared-1"), cell);
    reconcile_cell(read_cell(&fake, "shared-1").unwrap(), ctx).await.unwrap();
    let sent: Vec<Sent> = writes(&fake).into_iter().filter(|s| s.path == path).collect();
    assert_eq!(sent.len(), 2, "the handover, then the apply without a count");
    assert!(sent[0].query.contains("fieldManager=nudge-operator-handover"), "{}", sent[0].query);
    assert_eq!(sent[0].body["spec"], json!({"replicas": 3}));
    assert!(sent[1].body["spec"].get("replicas").is_none());
    let deployment = fake.get(&path).unwrap();
    assert_eq!(deployment["spec"]["replicas"], 3, "kept for the autoscaler, not reset");
    let managers: Vec<&str> = deployment["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(managers.contains(&"nudge-operator-handover"), "{managers:?}");
}

#[tokio::test]
async fn api_conflicts_and_errors_requeue_with_growing_backoff() {
    let fake = FakeApi::new();
    fake.seed(&cell_path("shared-1"), fixture_json());
    let ctx = context(&fake);
    let policy = error_policy::<Cell>("Cell");

    fake.fail("PATCH", "/deployments/shared-1-gateway", 409, 1);
    let cell = read_cell(&fake, "shared-1").unwrap();
    let error = reconcile_cell(cell.clone(), ctx.clone()).await.unwrap_err();
    assert!(error.to_string().contains("409") || error.to_string().contains("Conflict"), "{error}");
    assert_eq!(policy(cell.clone(), &error, ctx.clone()), Action::requeue(Duration::from_secs(5)));

    fake.fail("GET", "/deployments", 500, 1);
    let cell = read_cell(&fake, "shared-1").unwrap();
    let error = reconcile_cell(cell.clone(), ctx.clone()).await.unwrap_err();
    assert_eq!(policy(cell.clone(), &error, ctx.clone()), Action::requeue(Duration::from_secs(10)));
    fake.fail("GET", "/deployments", 500, 1);
    let error = reconcile_cell(read_cell(&fake, "shared-1").unwrap(), ctx.clone()).await.unwrap_err();
    assert_eq!(policy(cell.clone(), &error, ctx.clone()), Action::requeue(Duration::from_secs(20)));

    // Success resets the count; the next failure starts again at 5 s.
    reconcile_cell(read_cell(&fake, "shared-1").unwrap(), ctx.clone()).await.unwrap();
    assert_eq!(fake.names(&collection(&ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&()))).len(), 3);
    fake.fail("GET", "/tenants", 500, 1);
    let error = reconcile_cell(read_cell(&fake, "shared-1").unwrap(), ctx.clone()).await.unwrap_err();
    assert_eq!(policy(cell, &error, ctx), Action::requeue(Duration::from_secs(5)));
    assert_eq!(crate::controller::backoff(12), crate::controller::MAX_BACKOFF);
}

/// Reconciles `name` until it is gone (at most `rounds` times); the DELETEs sent, in order.
async fn reconcile_until_gone(fake: &FakeApi, ctx: &Arc<Context>, name: &str, rounds: usize) -> Vec<String> {
    let mut deletes = Vec::new();
    for _ in 0..rounds {
        let Some(cell) = read_cell(fake, name) else { return deletes };
        reconcile_cell(cell, ctx.clone()).await.unwrap();
        deletes.extend(writes(fake).into_iter().filter(|s| s.method == "DELETE").map(|s| s.path));
    }
    assert!(read_cell(fake, name).is_none(), "{name} still there after {rounds} reconciles");
    deletes
}

#[tokio::test]
async fn deleting_a_cell_cleans_up_in_order_then_drops_the_finalizer() {
    let fake = FakeApi::new();
    fake.seed(&cell_path("shared-1"), fixture_json());
    let ctx = context(&fake);
    reconcile_cell(read_cell(&fake, "shared-1").unwrap(), ctx.clone()).await.unwrap();
    let children = child_paths(&read_cell(&fake, "shared-1").unwrap());
    Api::<Cell>::namespaced(ctx.client.clone(), NS).delete("shared-1", &DeleteParams::default()).await.unwrap();
    assert!(read_cell(&fake, "shared-1").unwrap().metadata.deletion_timestamp.is_some(), "held by the finalizer");
    fake.take_sent();

    // The first cleanup step deletes the gateway and says so in the status.
    reconcile_cell(read_cell(&fake, "shared-1").unwrap(), ctx.clone()).await.unwrap();
    let sent = writes(&fake);
    assert_eq!(sent[0].line(), format!("DELETE /apis/apps/v1/namespaces/{NS}/deployments/shared-1-gateway"));
    let status = &fake.get(&cell_path("shared-1")).unwrap()["status"];
    assert_eq!(status["phase"], "Deleting");
    assert_eq!(
        condition(status, "Progressing")["message"],
        "deleting: waiting for the gateway pods to drain their sockets"
    );

    let mut deletes = vec![sent[0].path.clone()];
    deletes.extend(reconcile_until_gone(&fake, &ctx, "shared-1", 20).await);
    let deployments = format!("/apis/apps/v1/namespaces/{NS}/deployments/shared-1-");
    assert_eq!(
        deletes[..3],
        [format!("{deployments}gateway"), format!("{deployments}ingest"), format!("{deployments}pipeline")]
    );
    let topics = deletes.iter().position(|p| p.contains("/kafkatopics/")).unwrap();
    assert!(deletes[topics..].iter().all(|p| p.contains("/kafkatopics/")), "topics go last: {deletes:?}");
    assert_eq!(deletes.iter().cloned().collect::<BTreeSet<_>>(), children, "every child deleted, once");
    assert_eq!(deletes.len(), children.len());
    assert!(stored_children(&fake, "shared-1").is_empty());
}

fn tenant_json(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "nudge.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": name, "namespace": NS}, "spec": spec})
}

#[tokio::test]
async fn a_cell_with_tenants_is_not_deleted_and_names_them() {
    let fake = FakeApi::new();
    fake.seed(&cell_path("shared-1"), fixture_json());
    let mut tenant = tenant_json("acme", json!({"tenantId": TENANT_ID, "plan": "growth"}));
    tenant["status"] = json!({"cell": "shared-1"});
    fake.seed(&tenant_path("acme"), tenant);
    let ctx = context(&fake);
    reconcile_cell(read_cell(&fake, "shared-1").unwrap(), ctx.clone()).await.unwrap();
    assert_eq!(fake.get(&cell_path("shared-1")).unwrap()["status"]["tenants"], 1);
    Api::<Cell>::namespaced(ctx.client.clone(), NS).delete("shared-1", &DeleteParams::default()).await.unwrap();
    fake.take_sent();

    for _ in 0..2 {
        let action = reconcile_cell(read_cell(&fake, "shared-1").unwrap(), ctx.clone()).await.unwrap();
        assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    }
    let sent = writes(&fake);
    assert_eq!(
        sent.iter().map(Sent::line).collect::<Vec<_>>(),
        [format!("PATCH {}/status", cell_path("shared-1"))],
        "status once, no deletes"
    );
    let status = &fake.get(&cell_path("shared-1")).unwrap()["status"];
    let degraded = condition(status, "Degraded");
    assert_eq!((degraded["status"].as_str(), degraded["reason"].as_str()), (Some("True"), Some("DeletionBlocked")));
    assert_eq!(degraded["message"], "deletion blocked: tenants still on this cell: acme (move or delete them first)");
    assert_eq!(stored_children(&fake, "shared-1").len(), child_paths(&read_cell(&fake, "shared-1").unwrap()).len());
}

#[tokio::test]
async fn a_paused_resource_gets_no_writes() {
    let fake = FakeApi::new();
    let mut cell = fixture_json();
    cell["metadata"]["annotations"] = json!({"nudge.dev/paused": "true"});
    fake.seed(&cell_path("shared-1"), cell);
    let mut tenant =
        tenant_json("acme", json!({"tenantId": TENANT_ID, "plan": "enterprise", "isolation": "dedicated"}));
    tenant["metadata"]["annotations"] = json!({"nudge.dev/paused": "true"});
    fake.seed(&tenant_path("acme"), tenant);
    let ctx = context(&fake);
    assert_eq!(
        reconcile_cell(read_cell(&fake, "shared-1").unwrap(), ctx.clone()).await.unwrap(),
        Action::await_change()
    );
    assert_eq!(
        reconcile_tenant(read_tenant(&fake, "acme").unwrap(), ctx.clone()).await.unwrap(),
        Action::await_change()
    );
    assert_eq!(fake.take_sent().len(), 0, "not even a read");
    assert!(stored_children(&fake, "shared-1").is_empty());
}

#[tokio::test]
async fn an_invalid_spec_is_degraded_naming_the_field_and_nothing_is_applied() {
    let fake = FakeApi::new();
    let mut cell = fixture_json();
    cell["spec"]["roles"]["gateway"]["resources"] = json!({"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}});
    fake.seed(&cell_path("shared-1"), cell);
    fake.seed(&tenant_path("acme"), tenant_json("acme", json!({"tenantId": TENANT_ID, "plan": "platinum"})));
    fake.seed(&tenant_path("bad-id"), tenant_json("bad-id", json!({"tenantId": "acme", "plan": "free"})));
    let ctx = context(&fake);

    reconcile_cell(read_cell(&fake, "shared-1").unwrap(), ctx.clone()).await.unwrap();
    reconcile_tenant(read_tenant(&fake, "acme").unwrap(), ctx.clone()).await.unwrap();
    reconcile_tenant(read_tenant(&fake, "bad-id").unwrap(), ctx.clone()).await.unwrap();
    let lines: Vec<String> = writes(&fake).iter().map(Sent::line).collect();
    assert_eq!(
        lines,
        [
            format!("PATCH {}/status", cell_path("shared-1")),
            format!("PATCH {}/status", tenant_path("acme")),
            format!("PATCH {}/status", tenant_path("bad-id")),
        ],
        "status only: no finalizer, no children"
    );
    let degraded = |path: String| condition(&fake.get(&path).unwrap()["status"], "Degraded").clone();
    let cell = degraded(cell_path("shared-1"));
    assert_eq!((cell["status"].as_str(), cell["reason"].as_str()), (Some("True"), Some("InvalidSpec")));
    assert_eq!(cell["message"], "spec.roles.gateway.resources.requests.memory: must not exceed the limit");
    assert_eq!(
        degraded(tenant_path("acme"))["message"],
        "spec.plan: unknown plan `platinum` (one of free, growth, enterprise)"
    );
    assert!(degraded(tenant_path("bad-id"))["message"].as_str().unwrap().starts_with("spec.tenantId: "));
    assert!(stored_children(&fake, "shared-1").is_empty());
}

#[tokio::test]
async fn a_dedicated_tenant_gets_a_cell_of_its_own_which_goes_with_it() {
    let fake = FakeApi::new();
    fake.seed(&tenant_path("acme"), tenant_json("acme", json!({"tenantId": TENANT_ID, "plan": "enterprise", "isolation": "dedicated", "placement": {"region": "eu-west-1"}})));
    let ctx = context(&fake);
    reconcile_tenant(read_tenant(&fake, "acme").unwrap(), ctx.clone()).await.unwrap();
    let cell_name = "ded-0123456789abcdef0123456789abcdef";
    let lines: Vec<String> = writes(&fake).iter().map(Sent::line).collect();
    assert_eq!(
        lines,
        [
            format!("PATCH {}", tenant_path("acme")),
            format!("PATCH {}", cell_path(cell_name)),
            format!("PATCH {}/status", tenant_path("acme"))
        ]
    );
    let cell = read_cell(&fake, cell_name).unwrap();
    assert_eq!(cell.spec.tier, crate::crd::Tier::Dedicated);
    assert_eq!(cell.spec.region, "eu-west-1");
    assert_eq!(cell.spec.capacity.tenants, 1);
    assert_eq!(cell.spec.kafka.topic_prefix.as_deref(), Some("ded-0123456789abcdef0123456789abcdef."));
    assert_eq!(cell.spec.postgres.secret, format!("{cell_name}-postgres"), "its own database");
    assert_eq!(cell.spec.public_url, format!("https://{cell_name}.cells.nudge.example"));
    let owner = &cell.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Tenant", "acme"));
    let status = fake.get(&tenant_path("acme")).unwrap()["status"].clone();
    assert_eq!((status["cell"].as_str(), status["phase"].as_str()), (Some(cell_name), Some("Placing")));
    assert_eq!(
        condition(&status, "Progressing")["message"],
        format!("placed on cell {cell_name}; waiting for it to be ready")
    );

    // The cell reconciles like any other: its children, under its own topic prefix.
    reconcile_cell(cell.clone(), ctx.clone()).await.unwrap();
    let topics = stored_children(&fake, cell_name).into_iter().filter(|(p, _)| p.contains("/kafkatopics/")).count();
    let cell_scope =
        nudge_contracts::topics::catalogue().iter().filter(|t| t.scope == nudge_contracts::topics::Scope::Cell);
    assert_eq!(topics, cell_scope.count());
    assert!(
        fake.names(&format!("/apis/kafka.strimzi.io/v1beta2/namespaces/{NS}/kafkatopics"))
            .iter()
            .all(|t| t.starts_with(cell_name))
    );
    // A second tenant reconcile writes nothing.
    fake.take_sent();
    reconcile_tenant(read_tenant(&fake, "acme").unwrap(), ctx.clone()).await.unwrap();
    assert!(writes(&fake).is_empty());

    // Deleting the tenant deletes its cell (which is not blocked by a tenant that is going).
    Api::<Tenant>::namespaced(ctx.client.clone(), NS).delete("acme", &DeleteParams::default()).await.unwrap();
    reconcile_tenant(read_tenant(&fake, "acme").unwrap(), ctx.clone()).await.unwrap();
    assert!(read_cell(&fake, cell_name).unwrap().metadata.deletion_timestamp.is_some());
    let status = fake.get(&tenant_path("acme")).unwrap()["status"].clone();
    assert_eq!(
        condition(&status, "Progressing")["message"],
        format!("deleting: waiting for dedicated cell {cell_name} to be removed")
    );
    reconcile_until_gone(&fake, &ctx, cell_name, 20).await;
    reconcile_tenant(read_tenant(&fake, "acme").unwrap(), ctx.clone()).await.unwrap();
    assert!(read_tenant(&fake, "acme").is_none(), "finalizer removed once the cell is gone");
}

fn shared_cell(name: &str, region: &str, tenants: u32) -> Value {
    let mut cell = fixture_json();
    cell["metadata"]["name"] = json!(name);
    cell["spec"]["region"] = json!(region);
    cell["spec"]["capacity"]["tenants"] = json!(tenants);
    cell["status"] = json!({"conditions": [{"type": "Ready", "status": "True", "reason": "Available", "message": "", "lastTransitionTime": "2026-11-27T00:00:00Z"}]});
    cell
}

#[tokio::test]
async fn shared_tenants_land_on_a_cell_with_room_in_their_region() {
    let fake = FakeApi::new();
    fake.seed(&cell_path("eu-1"), shared_cell("eu-1", "eu-west-1", 1));
    fake.seed(&cell_path("eu-2"), shared_cell("eu-2", "eu-west-1", 2));
    fake.seed(&cell_path("us-1"), shared_cell("us-1", "us-east-1", 100));
    let ctx = context(&fake);
    let eu = |name: &str| {
        tenant_json(name, json!({"tenantId": TENANT_ID, "plan": "free", "placement": {"region": "eu-west-1"}}))
    };
    for name in ["t1", "t2", "t3", "t4"] {
        fake.seed(&tenant_path(name), eu(name));
        reconcile_tenant(read_tenant(&fake, name).unwrap(), ctx.clone()).await.unwrap();
    }
    let cell_of = |name: &str| fake.get(&tenant_path(name)).unwrap()["status"]["cell"].clone();
    // Emptiest first (ties by name): eu-1, eu-2, then eu-2 again; then both are full.
    assert_eq!([cell_of("t1"), cell_of("t2"), cell_of("t3")], [json!("eu-1"), json!("eu-2"), json!("eu-2")]);
    assert_eq!(cell_of("t4"), Value::Null);
    let t4 = fake.get(&tenant_path("t4")).unwrap()["status"].clone();
    let degraded = condition(&t4, "Degraded");
    assert_eq!(degraded["reason"], "NoCapacity");
    assert_eq!(
        degraded["message"],
        "placement: no shared cell in region eu-west-1 has room for another tenant (2 full); add a Cell or raise a capacity"
    );
    assert_eq!(fake.get(&tenant_path("t1")).unwrap()["status"]["phase"], "Active");
    // Placement is sticky: a reconcile keeps the cell even when another has more room now.
    fake.seed(&cell_path("eu-3"), shared_cell("eu-3", "eu-west-1", 50));
    reconcile_tenant(read_tenant(&fake, "t2").unwrap(), ctx.clone()).await.unwrap();
    assert_eq!(cell_of("t2"), json!("eu-2"));
    // A cellRef to a missing cell names the field.
    fake.seed(
        &tenant_path("pinned"),
        tenant_json("pinned", json!({"tenantId": TENANT_ID, "plan": "free", "cellRef": "nowhere"})),
    );
    reconcile_tenant(read_tenant(&fake, "pinned").unwrap(), ctx).await.unwrap();
    let pinned = fake.get(&tenant_path("pinned")).unwrap()["status"].clone();
    assert_eq!(condition(&pinned, "Degraded")["message"], "spec.cellRef: no Cell named `nowhere` in this namespace");
}

#[tokio::test]
async fn one_replica_leads_until_its_lease_expires() {
    let fake = FakeApi::new();
    let client = fake.client();
    let api = || Api::namespaced(client.clone(), "nudge-system");
    let a = LeaderElection::new(api(), "nudge-operator", "operator-a", Duration::from_secs(15));
    let b = LeaderElection::new(api(), "nudge-operator", "operator-b", Duration::from_secs(15));
    let t0 = Timestamp::now();
    let at = |s: i64| t0 + SignedDuration::from_secs(s);
    assert!(a.try_acquire(t0).await.unwrap(), "the first to create the lease leads");
    assert!(!b.try_acquire(t0).await.unwrap());
    assert!(a.try_acquire(at(5)).await.unwrap(), "the leader renews");
    // B measures a term from when it saw the Lease change, on its own clock: the renewal at
    // +5 is first seen at +10, so the Lease is A's until +25 whatever A's clock said.
    assert!(!b.try_acquire(at(10)).await.unwrap());
    assert!(!b.try_acquire(at(24)).await.unwrap(), "not expired: unchanged for 14 s only");
    assert!(b.try_acquire(at(26)).await.unwrap(), "expired: taken over");
    assert!(!a.try_acquire(at(27)).await.unwrap(), "the old leader is out");
    let lease = fake.get("/apis/coordination.k8s.io/v1/namespaces/nudge-system/leases/nudge-operator").unwrap();
    assert_eq!(
        (lease["spec"]["holderIdentity"].as_str(), lease["spec"]["leaseTransitions"].as_i64()),
        (Some("operator-b"), Some(1))
    );
    // Of two replicas racing for an expired lease, the second write carries a stale
    // resourceVersion and loses.
    fake.fail("PUT", "/leases/nudge-operator", 409, 1);
    assert!(!a.try_acquire(at(60)).await.unwrap());
    // Release hands it over at once.
    b.release().await.unwrap();
    assert!(a.try_acquire(at(61)).await.unwrap());
}

mod property {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Replicas(usize, i32),
        MaxReplicas(usize, Option<i32>),
        Prefix(u8),
        Version(u8),
        DeleteAndRecreate,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..3usize, 0..5i32).prop_map(|(r, n)| Op::Replicas(r, n)),
            (0..3usize, proptest::option::of(5..9i32)).prop_map(|(r, n)| Op::MaxReplicas(r, n)),
            (0..3u8).prop_map(Op::Prefix),
            (0..3u8).prop_map(Op::Version),
            Just(Op::DeleteAndRecreate),
        ]
    }

    const ROLES: [&str; 3] = ["ingest", "pipeline", "gateway"];

    /// After every change the stored children are exactly the built ones, every one owned by
    /// the current cell, each Deployment with the spec's replicas.
    async fn check(fake: &FakeApi) -> Result<(), TestCaseError> {
        let cell = read_cell(fake, "shared-1").unwrap();
        let uid = cell.metadata.uid.clone().unwrap();
        let stored = stored_children(fake, "shared-1");
        let paths: BTreeSet<String> = stored.iter().map(|(p, _)| p.clone()).collect();
        prop_assert_eq!(paths, child_paths(&cell));
        for (path, object) in &stored {
            let owners = object["metadata"]["ownerReferences"].as_array().cloned().unwrap_or_default();
            prop_assert_eq!(owners.len(), 1, "{}", path);
            prop_assert_eq!(owners[0]["uid"].as_str(), Some(uid.as_str()), "{}", path);
        }
        let spec = serde_json::to_value(&cell.spec.roles).unwrap();
        for role in ROLES {
            let deployment = fake.get(&format!("/apis/apps/v1/namespaces/{NS}/deployments/shared-1-{role}")).unwrap();
            // An autoscaled role's count is its autoscaler's (the operator hands over what it
            // had written, or never wrote one); otherwise it is the spec's.
            if spec[role]["maxReplicas"].is_null() {
                prop_assert_eq!(&deployment["spec"]["replicas"], &spec[role]["replicas"], "{}", role);
            }
        }
        Ok(())
    }

    async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let fake = FakeApi::new();
        fake.seed(&cell_path("shared-1"), fixture_json());
        let ctx = context(&fake);
        reconcile_cell(read_cell(&fake, "shared-1").unwrap(), ctx.clone()).await.unwrap();
        check(&fake).await?;
        for op in ops {
            let mut cell = fake.get(&cell_path("shared-1")).unwrap();
            let roles = &mut cell["spec"]["roles"];
            match op {
                Op::Replicas(r, n) => roles[ROLES[r]]["replicas"] = json!(n),
                Op::MaxReplicas(r, Some(n)) => roles[ROLES[r]]["maxReplicas"] = json!(n),
                Op::MaxReplicas(r, None) => {
                    roles[ROLES[r]].as_object_mut().unwrap().remove("maxReplicas");
                }
                Op::Prefix(p) => cell["spec"]["kafka"]["topicPrefix"] = json!(format!("cell-{p}.")),
                Op::Version(v) => cell["spec"]["version"] = json!(format!("0.{v}.0")),
                Op::DeleteAndRecreate => {
                    Api::<Cell>::namespaced(ctx.client.clone(), NS)
                        .delete("shared-1", &DeleteParams::default())
                        .await
                        .unwrap();
                    reconcile_until_gone(&fake, &ctx, "shared-1", 30).await;
                    prop_assert!(stored_children(&fake, "shared-1").is_empty());
                    cell = fixture_json();
                }
            }
            fake.seed(&cell_path("shared-1"), cell);
            reconcile_cell(read_cell(&fake, "shared-1").unwrap(), ctx.clone()).await.unwrap();
            check(&fake).await?;
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn children_match_the_spec_after_any_sequence_of_changes(ops in proptest::collection::vec(op(), 1..10)) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(run(ops))?;
        }
    }
}
