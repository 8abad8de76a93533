//! Every service exposes health, readiness and metrics, and every response names its trace.

use nudge_test_support::Platform;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_expose_health_readiness_and_metrics() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let _ = platform.sign_up_ready("Acme", "https://shop.example.com").await?;
    for base in [&platform.control_plane_url, &platform.cell_url] {
        for path in ["/healthz", "/readyz", "/metrics"] {
            let r = platform.http.get(format!("{base}{path}")).send().await?;
            assert_eq!(r.status(), 200, "{base}{path}");
            assert_eq!(r.headers()["x-trace-id"].len(), 32);
        }
        let metrics = platform.http.get(format!("{base}/metrics")).send().await?.text().await?;
        assert!(metrics.contains("http_requests_total"), "{metrics}");
    }
    let cell_metrics = platform.http.get(format!("{}/metrics", platform.cell_url)).send().await?.text().await?;
    assert!(cell_metrics.contains("nudge_cell_ingest_requests_rejected"), "{cell_metrics}");

    // A caller's traceparent is continued, not replaced.
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = platform.http.get(format!("{}/healthz", platform.cell_url)).header("traceparent", parent).send().await?;
    assert_eq!(r.headers()["x-trace-id"], "4bf92f3577b34da6a3ce929d0e0e4736");

    let js = platform.http.get(format!("{}/nudge.js", platform.cell_url)).send().await?;
    assert_eq!(js.status(), 200);
    assert!(js.text().await?.contains("Nudge"));
    platform.shutdown().await
}

/// Every public route is in the service's OpenAPI document, and everything documented exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_every_route() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let expected = [
        (
            &platform.control_plane_url,
            vec![
                "/v1/tenants",
                "/v1/accounts",
                "/v1/sessions",
                "/v1/sessions/refresh",
                "/v1/sessions/logout",
                "/v1/tenants/{tenant_id}",
                "/v1/tenants/{tenant_id}/api-keys",
                "/v1/tenants/{tenant_id}/api-keys/{key_id}",
                "/v1/tenants/{tenant_id}/members",
                "/v1/tenants/{tenant_id}/members/{account_id}",
                "/v1/tenants/{tenant_id}/members/changes",
                "/v1/tenants/{tenant_id}/suppressions",
                "/v1/tenants/{tenant_id}/suppressions/{shopper_id}",
                "/v1/tenants/{tenant_id}/usage",
                "/v1/tenants/{tenant_id}/erasures",
                "/v1/tenants/{tenant_id}/erasures/{request_id}",
                "/v1/tenants/{tenant_id}/erasures/{request_id}/receipt",
                "/v1/tenants/{tenant_id}/legal-holds",
                "/v1/tenants/{tenant_id}/legal-holds/{hold_id}",
                "/v1/erasure-receipts/keys",
                "/v1/tenants/{tenant_id}/offboarding",
                "/v1/tenants/{tenant_id}/billing",
                "/v1/webhooks/stripe",
                "/v1/admin/tenants/{tenant_id}/billing/reconciliation",
                "/v1/tenants/{tenant_id}/billing/checkout",
                "/v1/tenants/{tenant_id}/campaigns",
                "/v1/tenants/{tenant_id}/campaigns/{campaign_id}",
                "/v1/tenants/{tenant_id}/campaigns/{campaign_id}/state",
                "/v1/tenants/{tenant_id}/campaigns/{campaign_id}/versions",
                "/v1/tenants/{tenant_id}/messaging-policy",
                "/v1/tenants/{tenant_id}/webhook-secret",
                "/v1/tenants/{tenant_id}/billing/plan",
                "/v1/tenants/{tenant_id}/billing/portal",
                "/v1/tenants/{tenant_id}/shoppers/{shopper_id}/export",
                "/v1/tenants/{tenant_id}/model",
                "/v1/admin/tenants/{tenant_id}/offboarding",
                "/v1/admin/tenants/{tenant_id}/erasures",
                "/v1/admin/tenants/{tenant_id}/erasures/{request_id}",
                "/v1/admin/tenants/{tenant_id}/transitions",
                "/v1/admin/tenants/{tenant_id}/audit",
                "/v1/admin/tenants/{tenant_id}/plan",
                "/v1/admin/tenants/{tenant_id}/model",
                "/v1/admin/tenants/{tenant_id}/rollout",
                "/v1/admin/tenants/{tenant_id}/rollout/promote",
                "/v1/admin/tenants/{tenant_id}/isolation",
                "/v1/admin/models",
                "/v1/admin/models/default",
                "/v1/admin/models/{version}",
                "/v1/admin/models/{version}/stages",
                "/v1/admin/models/{version}/stage",
                "/healthz",
                "/readyz",
                "/metrics",
            ],
        ),
        (
            &platform.cell_url,
            vec![
                "/v1/events",
                "/v1/sessions",
                "/v1/ws",
                "/v1/shoppers/{shopper_id}/features",
                "/v1/shoppers/{shopper_id}/export",
                "/v1/shoppers/features",
                "/v1/sends",
                "/v1/lift",
                "/v1/dry-run",
                "/v1/test-interventions",
                "/v1/announcements",
                "/v1/events/recent",
                "/v1/unsubscribe/{token}",
                "/nudge.js",
                "/healthz",
                "/readyz",
                "/metrics",
            ],
        ),
    ];
    for (base, paths) in expected {
        let doc: serde_json::Value = platform.http.get(format!("{base}/v1/openapi.json")).send().await?.json().await?;
        assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.")), Some(true));
        let documented = doc["paths"].as_object().expect("paths");
        let mut names: Vec<&str> = documented.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut want = paths.clone();
        want.sort_unstable();
        assert_eq!(names, want, "{base}");
        for (path, methods) in documented {
            for method in methods.as_object().expect("methods").keys() {
                let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())?;
                let status = platform.http.request(m, format!("{base}{path}")).send().await?.status();
                assert!(status != 404 && status != 405, "{method} {path} is documented but answers {status}");
            }
        }
    }
    platform.shutdown().await
}
