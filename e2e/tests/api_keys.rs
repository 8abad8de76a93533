//! Secret API keys: created by an admin, usable by the store's server at the cell, and
//! refused there within seconds of being revoked.

use std::time::{Duration, Instant};

use nudge_test_support::{Platform, unique_suffix};
use serde_json::{Value, json};

const ORIGIN: &str = "https://shop.example.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_server_key_stops_working_at_the_cell_within_seconds() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let owner = format!("owner-{}@example.com", unique_suffix());
    let store = platform.sign_up_as("Acme", &[ORIGIN], &owner).await?;
    platform.wait_for_key(&store.publishable_key, ORIGIN).await?;
    let tokens = platform.login(&owner, None).await?;
    let keys = format!("{}/v1/tenants/{}/api-keys", platform.control_plane_url, store.tenant_id);

    let created: Value = platform
        .http
        .post(&keys)
        .bearer_auth(&tokens.access_token)
        .json(&json!({"name": "checkout server", "scopes": ["events:write"]}))
        .send()
        .await?
        .json()
        .await?;
    let secret = created["secret_key"].as_str().unwrap_or_default().to_owned();
    let key_id = created["key"]["key_id"].as_str().unwrap_or_default().to_owned();
    assert!(secret.starts_with("sk_") && key_id.starts_with("key_"), "{created}");

    // The list shows the key, never the secret.
    let listed = platform.http.get(&keys).bearer_auth(&tokens.access_token).send().await?.text().await?;
    assert!(listed.contains(&key_id) && !listed.contains(&secret[3..]), "{listed}");

    // From a server: no Origin, the secret key decides.
    let batch = json!({"events": [{"event_id": "srv-1", "type": "purchase", "shopper_id": "shp_1",
        "properties": {"order_id": "o-1", "value": 129.0, "currency": "EUR"}}]});
    // Servers must name each request: a fresh Idempotency-Key per try here, since each try
    // is meant to run.
    let post = |key: &str| {
        platform
            .http
            .post(format!("{}/v1/events", platform.cell_url))
            .bearer_auth(key)
            .header("Idempotency-Key", unique_suffix())
            .json(&batch)
            .send()
    };
    let mut status = 0;
    for _ in 0..100 {
        status = post(&secret).await?.status().as_u16();
        if status == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 202, "the cell learns the new key");

    let revoked_at = Instant::now();
    let r = platform.http.delete(format!("{keys}/{key_id}")).bearer_auth(&tokens.access_token).send().await?;
    assert_eq!(r.status(), 204);
    loop {
        let r = post(&secret).await?;
        if r.status() == 401 {
            let body: Value = r.json().await?;
            assert_eq!(body["error"]["code"], "invalid_key");
            break;
        }
        assert!(revoked_at.elapsed() < Duration::from_secs(5), "still accepted 5 s after revocation");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("revocation took effect at the cell after {:?}", revoked_at.elapsed());
    // Revoking again is harmless; an unknown key is 404.
    assert_eq!(
        platform.http.delete(format!("{keys}/{key_id}")).bearer_auth(&tokens.access_token).send().await?.status(),
        204
    );
    let unknown = format!("{keys}/key_0190f3c28a1b7c3d9e4f5a6b7c8d9e0f");
    assert_eq!(platform.http.delete(unknown).bearer_auth(&tokens.access_token).send().await?.status(), 404);

    // A key without the scope is refused with a code saying so.
    let bad = platform
        .http
        .post(&keys)
        .bearer_auth(&tokens.access_token)
        .json(&json!({"name": "x", "scopes": ["everything"]}))
        .send()
        .await?;
    assert_eq!(bad.status(), 422);
    platform.shutdown().await
}
