//! Tenant isolation at the cell's edge: a publishable key acts only for its own tenant.

mod common;

use std::time::Duration;

use nudge_contracts::push::PushMessage;
use nudge_test_support::Platform;
use serde_json::Value;

use common::abandoning_session;

const ORIGIN_A: &str = "https://a-store.example.com";
const ORIGIN_B: &str = "https://b-store.example.com";

async fn code(r: reqwest::Response) -> anyhow::Result<(u16, String)> {
    let status = r.status().as_u16();
    let body: Value = r.json().await?;
    Ok((status, body["error"]["code"].as_str().unwrap_or_default().to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_key_can_neither_send_as_nor_listen_to_a_tenant() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let a = platform.sign_up_ready("Store A", ORIGIN_A).await?;
    let b = platform.sign_up_ready("Store B", ORIGIN_B).await?;
    let shopper = "shp_shared_id";

    // B's key from A's site: refused, whatever the body says.
    let (browsing, exit) = abandoning_session(shopper);
    let r = platform.post_events(&b.publishable_key, Some(ORIGIN_A), &browsing).await?;
    assert_eq!(code(r).await?, (403, "origin_not_allowed".into()));

    // B's key cannot open a socket from A's site either.
    let refused = platform.connect_shopper(&b.publishable_key, ORIGIN_A, shopper).await;
    assert!(refused.is_err(), "a socket with B's key from A's origin must be refused");

    // Both stores have a shopper with the same id, each listening with its own key.
    let mut socket_a = platform.connect_shopper(&a.publishable_key, ORIGIN_A, shopper).await?;
    let mut socket_b = platform.connect_shopper(&b.publishable_key, ORIGIN_B, shopper).await?;

    // B's shopper abandons: only B's socket hears about it, although the shopper id (and the
    // tenant id that B could put in a body) would name A's shopper.
    let mut forged = browsing.clone();
    for e in forged["events"].as_array_mut().into_iter().flatten() {
        e["tenant_id"] = Value::String(a.tenant_id.clone());
    }
    assert_eq!(platform.post_events(&b.publishable_key, Some(ORIGIN_B), &forged).await?.status(), 202);
    assert_eq!(platform.post_events(&b.publishable_key, Some(ORIGIN_B), &exit).await?.status(), 202);

    let message = socket_b.next_message(Duration::from_secs(30)).await?.expect("B's shopper is reminded");
    assert!(matches!(message, PushMessage::Intervention(_)));
    platform.wait_processed(10).await?;
    assert!(socket_a.next_message(Duration::from_millis(200)).await?.is_none(), "A's shopper hears nothing of B's");

    // A's session was never touched by B's events: A's own exit earns nothing, its cart is empty.
    let (_, exit_a) = abandoning_session(shopper);
    assert_eq!(platform.post_events(&a.publishable_key, Some(ORIGIN_A), &exit_a).await?.status(), 202);
    platform.wait_processed(11).await?;
    assert!(socket_a.next_message(Duration::from_millis(200)).await?.is_none());

    platform.shutdown().await
}
