//! A real browser on the demo store: nudge.js batches events over CORS, opens the shopper
//! socket, notices the pointer leaving, and renders the reminder the cell pushes.

use std::process::Stdio;

use nudge_test_support::{Platform, env::TestEnv};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shopper_in_chromium_sees_the_reminder() -> anyhow::Result<()> {
    let env = TestEnv::load();
    let node_modules = env.node_modules.clone().ok_or_else(|| {
        anyhow::anyhow!("NUDGE_NODE_MODULES is unset: run the tests with scripts/test, which installs playwright-core")
    })?;
    anyhow::ensure!(env.chromium.exists(), "{} is missing: scripts/setup installs Chromium", env.chromium.display());

    let platform = Platform::start().await?;
    let store = TcpListener::bind("127.0.0.1:0").await?;
    let store_url = format!("http://{}", store.local_addr()?);
    let tenant = platform.sign_up_ready("Demo Outdoor Co.", &store_url).await?;
    let stop_store = CancellationToken::new();
    let demo = nudge_cli::storefront::DemoStore {
        tenant_id: tenant.tenant_id.clone(),
        publishable_key: tenant.publishable_key.clone(),
        cell_url: tenant.cell_url.clone(),
    };
    let serving = tokio::spawn(nudge_cli::storefront::serve(store, demo, stop_store.clone()));

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../web/tests/demo-store.cjs");
    let run = tokio::process::Command::new("node")
        .arg(script)
        .arg(&store_url)
        .env("NODE_PATH", &node_modules)
        .env("NUDGE_CHROMIUM", &env.chromium)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(90), run).await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .map_err(|e| anyhow::anyhow!("{e}: stdout {stdout} stderr {}", String::from_utf8_lossy(&output.stderr)))?;

    assert!(result.get("failure").is_none(), "browser run failed: {result:#}");
    assert_eq!(result["errors"], Value::Array(vec![]), "page errors: {result:#}");
    let shown = result["intervention"].as_str().unwrap_or_default();
    assert!(shown.contains("Still thinking it over?") && shown.contains("2 items"), "{result:#}");
    let log = result["log"].as_str().unwrap_or_default();
    assert!(log.contains("socket_open") && log.contains("score="), "{log}");

    stop_store.cancel();
    serving.await??;
    platform.shutdown().await
}
