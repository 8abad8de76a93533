//! Plan limits: an operator sets a store's plan and overrides; its cell enforces events per
//! second and open sockets, the control plane enforces seats; other stores are unaffected.

use std::time::Duration;

use nudge_test_support::{OPERATOR_TOKEN, PASSWORD, Platform, unique_suffix};
use serde_json::{Value, json};

const ORIGIN: &str = "https://noisy.example.com";
const QUIET: &str = "https://quiet.example.com";

fn batch(n: usize, tag: &str) -> Value {
    let events: Vec<Value> =
        (0..n).map(|i| json!({"event_id": format!("{tag}-{i}"), "type": "page_view", "shopper_id": "shp_1"})).collect();
    json!({ "events": events })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cell_enforces_the_plan_and_other_stores_are_untouched() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let owner = format!("owner-{}@example.com", unique_suffix());
    let noisy = platform.sign_up_as("Noisy", &[ORIGIN], &owner).await?;
    let quiet = platform.sign_up_ready("Quiet", QUIET).await?;
    platform.wait_for_key(&noisy.publishable_key, ORIGIN).await?;

    let plan = json!({"plan": "free", "overrides": {"events_per_second": 5, "burst_events": 10, "connections": 2, "seats": 2}});
    let r: Value = platform
        .http
        .post(format!("{}/v1/admin/tenants/{}/plan", platform.control_plane_url, noisy.tenant_id))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&plan)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(r["limits"]["connections"], 2, "{r}");
    assert_eq!(r["limits"]["retention_days"], 30, "the free plan's value stays");

    // Once the cell has the new limits, a burst of 10 passes and the next batch is refused.
    let mut refused = None;
    for attempt in 0..100 {
        let r = platform.post_events(&noisy.publishable_key, Some(ORIGIN), &batch(10, &format!("a{attempt}"))).await?;
        if r.status() == 429 {
            refused = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = refused.ok_or_else(|| anyhow::anyhow!("the cell never applied the limits"))?;
    assert!(refused.headers()["retry-after"].to_str()?.parse::<u32>()? >= 1);
    let body: Value = refused.json().await?;
    assert_eq!(body["error"]["code"], "rate_limited");
    // The quiet store is not slowed by its neighbour.
    for i in 0..5 {
        let r = platform.post_events(&quiet.publishable_key, Some(QUIET), &batch(20, &format!("q{i}"))).await?;
        assert_eq!(r.status(), 202);
    }

    // Two sockets at most.
    let first = platform.connect_shopper(&noisy.publishable_key, ORIGIN, "shp_a").await?;
    let _second = platform.connect_shopper(&noisy.publishable_key, ORIGIN, "shp_b").await?;
    let third = platform
        .http
        .get(format!("{}/v1/ws?key={}&shopper_id=shp_c", platform.cell_url, noisy.publishable_key))
        .header("Origin", ORIGIN)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await?;
    assert_eq!(third.status(), 429);
    let body: Value = third.json().await?;
    assert_eq!(body["error"]["code"], "connection_limit");
    assert!(platform.connect_shopper(&quiet.publishable_key, QUIET, "shp_c").await.is_ok(), "other stores unaffected");
    drop(first);
    let mut reconnected = false;
    for _ in 0..50 {
        if platform.connect_shopper(&noisy.publishable_key, ORIGIN, "shp_c").await.is_ok() {
            reconnected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reconnected, "a closed socket frees its slot");

    // Two seats: the owner and one more.
    let tokens = platform.login(&owner, None).await?;
    let members = format!("{}/v1/tenants/{}/members", platform.control_plane_url, noisy.tenant_id);
    for (i, expected) in [(0, 201), (1, 409)] {
        let email = format!("member{i}-{}@example.com", unique_suffix());
        let r = platform
            .http
            .post(format!("{}/v1/accounts", platform.control_plane_url))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await?;
        assert_eq!(r.status(), 201);
        let r = platform
            .http
            .post(&members)
            .bearer_auth(&tokens.access_token)
            .json(&json!({"email": email, "role": "viewer"}))
            .send()
            .await?;
        assert_eq!(r.status(), expected);
        if expected == 409 {
            let body: Value = r.json().await?;
            assert_eq!(body["error"]["code"], "seat_limit");
        }
    }

    // Concurrent additions for the last seats: exactly as many succeed as there are seats,
    // the rest are told why, and none fails.
    let raise = json!({"plan": "free", "overrides": {"seats": 4}});
    let r = platform
        .http
        .post(format!("{}/v1/admin/tenants/{}/plan", platform.control_plane_url, noisy.tenant_id))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&raise)
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let mut adds = Vec::new();
    for i in 0..4 {
        let email = format!("race{i}-{}@example.com", unique_suffix());
        let r = platform
            .http
            .post(format!("{}/v1/accounts", platform.control_plane_url))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await?;
        assert_eq!(r.status(), 201);
        let request = platform
            .http
            .post(&members)
            .bearer_auth(&tokens.access_token)
            .json(&json!({"email": email, "role": "viewer"}));
        adds.push(tokio::spawn(async move { anyhow::Ok(request.send().await?.status().as_u16()) }));
    }
    let mut statuses = Vec::new();
    for add in adds {
        statuses.push(add.await??);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, vec![201, 201, 409, 409], "two seats were left");
    platform.shutdown().await
}
