//! A real browser on the demo store: nudge.js batches events over CORS, opens the shopper
//! socket, notices the pointer leaving, and renders the reminder the cell pushes — also for
//! a store that moved to a cell of its own while its page still names the old cell.

use std::{process::Stdio, time::Duration};

use nudge_test_support::{OPERATOR_TOKEN, Platform, env::TestEnv};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shopper_in_chromium_sees_the_reminder() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let store = TcpListener::bind("127.0.0.1:0").await?;
    let store_url = format!("http://{}", store.local_addr()?);
    let tenant = platform.sign_up_ready("Demo Outdoor Co.", &store_url).await?;
    let demo = nudge_cli::storefront::DemoStore {
        tenant_id: tenant.tenant_id.clone(),
        publishable_key: tenant.publishable_key.clone(),
        cell_url: tenant.cell_url.clone(),
    };
    let result = shop(store, &store_url, demo).await?;
    let shown = result["intervention"].as_str().unwrap_or_default();
    assert!(shown.contains("Still thinking it over?") && shown.contains("2 items"), "{result:#}");
    let log = result["log"].as_str().unwrap_or_default();
    assert!(log.contains("socket_open") && log.contains("score="), "{log}");
    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_still_naming_the_old_cell_follows_its_store_to_its_own_cell() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let store = TcpListener::bind("127.0.0.1:0").await?;
    let store_url = format!("http://{}", store.local_addr()?);
    let tenant = platform.sign_up_ready("Moved Outdoor Co.", &store_url).await?;
    let moved: Value = platform
        .http
        .post(format!("{}/v1/admin/tenants/{}/isolation", platform.control_plane_url, tenant.tenant_id))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"isolation": "dedicated"}))
        .timeout(Duration::from_secs(60))
        .send()
        .await?
        .json()
        .await?;
    let own_cell = moved["cell_url"].as_str().ok_or_else(|| anyhow::anyhow!("no cell in {moved}"))?.to_owned();
    // Wait until the old cell points the store's key to its own cell.
    let probe = json!({"events": [{"event_id": "probe", "type": "page_view", "shopper_id": "shp_probe"}]});
    let mut pointed = false;
    for _ in 0..200 {
        if platform.post_events(&tenant.publishable_key, Some(&store_url), &probe).await?.status() == 421 {
            pointed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(pointed, "the shared cell never pointed the moved store elsewhere");

    // The page still loads the snippet from, and sends to, the shared cell.
    let demo = nudge_cli::storefront::DemoStore {
        tenant_id: tenant.tenant_id.clone(),
        publishable_key: tenant.publishable_key.clone(),
        cell_url: platform.cell_url.clone(),
    };
    let result = shop(store, &store_url, demo).await?;
    let log = result["log"].as_str().unwrap_or_default();
    assert!(log.contains("\"type\":\"moved\"") && log.contains(&own_cell), "the snippet followed the store: {log}");
    let shown = result["intervention"].as_str().unwrap_or_default();
    assert!(shown.contains("Still thinking it over?"), "the store's own cell decided and pushed: {result:#}");
    platform.shutdown().await
}

/// Serves `demo` on `store` and runs the Chromium script against it: add to cart, leave
/// through the top of the window. The script's result.
async fn shop(store: TcpListener, store_url: &str, demo: nudge_cli::storefront::DemoStore) -> anyhow::Result<Value> {
    let env = TestEnv::load();
    let node_modules = env.node_modules.clone().ok_or_else(|| {
        anyhow::anyhow!("NUDGE_NODE_MODULES is unset: run the tests with scripts/test, which installs playwright-core")
    })?;
    anyhow::ensure!(env.chromium.exists(), "{} is missing: scripts/setup installs Chromium", env.chromium.display());
    let stop_store = CancellationToken::new();
    let serving = tokio::spawn(nudge_cli::storefront::serve(store, demo, stop_store.clone()));

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../web/tests/demo-store.cjs");
    let run = tokio::process::Command::new("node")
        .arg(script)
        .arg(store_url)
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
    stop_store.cancel();
    serving.await??;
    Ok(result)
}
