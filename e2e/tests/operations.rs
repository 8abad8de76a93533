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
