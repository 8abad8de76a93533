//! The `ErasureRequest` resource: the operator's reconcile (against the in-memory Kubernetes
//! API) files it with the real control plane and follows it to its signed receipt; a second
//! reconcile files nothing new; a legal hold is written to the status, named, and not
//! retried; an invalid spec is refused naming the field; a whole store's resource starts
//! its offboarding and shows the grace period.

use std::{sync::Arc, time::Duration};

use kube::runtime::controller::Action;
use nudge_contracts::ShopperId;
use nudge_operator::{
    config::OperatorConfig,
    controller::{Context, reconcile_erasure},
    crd::ErasureRequest,
    fake_api::FakeApi,
};
use nudge_test_support::{OPERATOR_TOKEN, Platform, unique_suffix};
use serde_json::{Value, json};

const NS: &str = "nudge";
const ORIGIN: &str = "https://shop.example.com";

fn path(name: &str) -> String {
    format!("/apis/nudge.dev/v1alpha1/namespaces/{NS}/erasurerequests/{name}")
}

fn resource(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "nudge.dev/v1alpha1",
        "kind": "ErasureRequest",
        "metadata": { "name": name, "namespace": NS },
        "spec": spec,
    })
}

/// Reconciles the resource at `name` once, as the controller would, from what the fake API
/// holds now.
async fn reconcile(fake: &FakeApi, ctx: &Arc<Context>, name: &str) -> anyhow::Result<(Action, Value)> {
    let object: ErasureRequest = serde_json::from_value(fake.get(&path(name)).expect("the resource"))?;
    let action = reconcile_erasure(Arc::new(object), ctx.clone()).await?;
    Ok((action, fake.get(&path(name)).expect("the resource")["status"].clone()))
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == type_)).unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_resource_is_filed_with_the_control_plane_and_followed_to_its_receipt() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let store = platform.sign_up_ready("Resource Store", ORIGIN).await?;
    let tenant: nudge_tenants::TenantId = store.tenant_id.parse()?;
    let fake = FakeApi::new();
    let mut config = OperatorConfig::default();
    config.control_plane.url = platform.control_plane_url.clone();
    config.control_plane.token = Some(secrecy::SecretString::from(OPERATOR_TOKEN));
    let ctx = Arc::new(Context::new(fake.client(), config));

    // One shopper, named by digest.
    let shopper = format!("shp_resource_{}", unique_suffix());
    let digest = nudge_contracts::subject_digest(tenant.as_uuid(), &ShopperId::parse(&shopper)?);
    fake.seed(
        &path("dsr-1"),
        resource("dsr-1", json!({ "tenantId": store.tenant_id, "subjectDigest": digest, "reason": "DSR 1" })),
    );
    let (action, status) = reconcile(&fake, &ctx, "dsr-1").await?;
    assert_eq!(action, Action::requeue(Duration::from_secs(10)), "followed until completed: {status}");
    assert_eq!((status["scope"].as_str(), status["phase"].as_str()), (Some("shopper"), Some("InProgress")), "{status}");
    let request_id = status["requestId"].as_str().expect("the control plane's request id").to_owned();
    assert_eq!(condition(&status, "Progressing")["status"], "True", "{status}");

    // Followed until the cell reports and the receipt is signed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        let (action, status) = reconcile(&fake, &ctx, "dsr-1").await?;
        if status["phase"] == "Completed" {
            assert_eq!(action, Action::await_change());
            break status;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "not completed within 60 s: {status}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(status["requestId"], request_id.as_str(), "filed once: the same request");
    assert_eq!(condition(&status, "Ready")["status"], "True", "{status}");
    let receipt = status["receipt"].as_str().expect("where the receipt is");
    assert_eq!(receipt, format!("/v1/tenants/{}/erasures/{request_id}/receipt", store.tenant_id));
    assert!(status["stores"].as_array().is_some_and(|s| s.iter().any(|s| s["store"] == "cell:shared-1")), "{status}");
    // The control plane holds exactly one request for the subject, filed by the operator.
    let view: Value = platform
        .http
        .get(format!("{}/v1/admin/tenants/{}/erasures/{request_id}", platform.control_plane_url, store.tenant_id))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(view["requested_by"], "operator:ops", "{view}");
    let repeats = view["audit"].as_array().expect("audit").iter().filter(|a| a["action"] == "repeated").count();
    assert!(repeats >= 1, "each later reconcile asked again and got the same request: {view}");

    // A legal hold: refused, named in the status, not retried.
    let owner = format!("owner-{}@example.com", unique_suffix());
    let held = platform.sign_up_as("Held Store", &[ORIGIN], &owner).await?;
    let token = platform.login(&owner, None).await?.access_token;
    let placed = platform
        .http
        .post(format!("{}/v1/tenants/{}/legal-holds", platform.control_plane_url, held.tenant_id))
        .bearer_auth(&token)
        .json(&json!({ "name": "Litigation hold L-77" }))
        .send()
        .await?;
    assert_eq!(placed.status(), 201);
    fake.seed(
        &path("dsr-held"),
        resource("dsr-held", json!({ "tenantId": held.tenant_id, "subjectDigest": digest, "reason": "DSR 2" })),
    );
    let (action, status) = reconcile(&fake, &ctx, "dsr-held").await?;
    assert_eq!(action, Action::await_change());
    assert_eq!(status["phase"], "Refused", "{status}");
    let degraded = condition(&status, "Degraded");
    assert_eq!(
        (degraded["status"].as_str(), degraded["reason"].as_str()),
        (Some("True"), Some("RefusedByControlPlane"))
    );
    assert!(degraded["message"].as_str().is_some_and(|m| m.contains("Litigation hold L-77")), "{status}");

    // An invalid spec is refused naming the field, without calling the control plane.
    fake.seed(
        &path("dsr-bad"),
        resource("dsr-bad", json!({ "tenantId": store.tenant_id, "subjectDigest": "shp_raw_id", "reason": "x" })),
    );
    let (_, status) = reconcile(&fake, &ctx, "dsr-bad").await?;
    assert_eq!(condition(&status, "Degraded")["reason"], "InvalidSpec", "{status}");
    assert!(condition(&status, "Degraded")["message"].as_str().is_some_and(|m| m.contains("spec.subjectDigest")));

    // A person named by their e-mail address's digest in the store: filed as an erasure by
    // e-mail.
    let hash = "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514";
    let email = nudge_contracts::email_digest(tenant.as_uuid(), hash);
    fake.seed(
        &path("dsr-email"),
        resource("dsr-email", json!({ "tenantId": store.tenant_id, "emailDigest": email, "reason": "DSR 3" })),
    );
    let (_, status) = reconcile(&fake, &ctx, "dsr-email").await?;
    assert_eq!(status["scope"], "email", "{status}");
    assert!(status["requestId"].as_str().is_some_and(|id| id != request_id), "{status}");
    fake.seed(
        &path("dsr-both"),
        resource(
            "dsr-both",
            json!({ "tenantId": store.tenant_id, "emailDigest": email, "subjectDigest": digest, "reason": "x" }),
        ),
    );
    let (_, status) = reconcile(&fake, &ctx, "dsr-both").await?;
    assert_eq!(condition(&status, "Degraded")["reason"], "InvalidSpec", "{status}");
    assert!(condition(&status, "Degraded")["message"].as_str().is_some_and(|m| m.contains("spec.emailDigest")));

    // A whole store: its offboarding, in its grace period.
    let leaving = platform.sign_up_ready("Leaving Store", ORIGIN).await?;
    fake.seed(
        &path("offboard"),
        resource(
            "offboard",
            json!({ "tenantId": leaving.tenant_id, "wholeTenant": true, "graceDays": 7, "reason": "contract ended" }),
        ),
    );
    let (action, status) = reconcile(&fake, &ctx, "offboard").await?;
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    assert_eq!((status["scope"].as_str(), status["phase"].as_str()), (Some("tenant"), Some("GracePeriod")), "{status}");
    let purge_after = chrono::DateTime::parse_from_rfc3339(status["purgeAfter"].as_str().expect("purgeAfter"))?;
    let days = (purge_after.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours() / 24;
    assert_eq!(days, 6, "seven days of grace, less the moments since: {status}");
    // Asked again, the grace period stands.
    let (_, again) = reconcile(&fake, &ctx, "offboard").await?;
    assert_eq!(again["purgeAfter"], status["purgeAfter"]);
    // Cancelled during the grace period: the resource says so and does not file it again.
    let cancelled = platform.transition(&leaving.tenant_id, "active", "merchant stays").await?;
    assert_eq!(cancelled.status(), 200);
    let (action, status) = reconcile(&fake, &ctx, "offboard").await?;
    assert_eq!((action, status["phase"].as_str()), (Action::await_change(), Some("Cancelled")), "{status}");
    let view: Value = platform
        .http
        .get(format!("{}/v1/admin/tenants/{}/offboarding", platform.control_plane_url, leaving.tenant_id))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(view["state"], "active", "not offboarded again: {view}");

    // Without a token the operator says so.
    let unconfigured = Arc::new(Context::new(fake.client(), OperatorConfig::default()));
    let (_, status) = reconcile(&fake, &unconfigured, "dsr-held").await?;
    assert_eq!(condition(&status, "Degraded")["reason"], "NotConfigured", "{status}");
    platform.shutdown().await
}
