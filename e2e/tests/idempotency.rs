//! `Idempotency-Key` on event batches, with Stripe's semantics: the same key and body replay
//! the first answer, the same key with another body is refused, concurrent requests with one
//! key run once, servers must send a key, and keys belong to one tenant.

use std::time::{Duration, Instant};

use nudge_test_support::{Platform, unique_suffix};
use redis::AsyncCommands;
use serde_json::{Value, json};

const ORIGIN_A: &str = "https://a.example.com";
const ORIGIN_B: &str = "https://b.example.com";

/// A store with a secret key its server can use at the cell.
async fn store_with_secret(platform: &Platform, name: &str, origin: &str) -> anyhow::Result<(String, String, String)> {
    let owner = format!("owner-{}@example.com", unique_suffix());
    let store = platform.sign_up_as(name, &[origin], &owner).await?;
    platform.wait_for_key(&store.publishable_key, origin).await?;
    let secret = platform.create_secret_key(&owner, &store.tenant_id, &["events:write"]).await?;
    // Wait until the cell knows the key: a batch without events is then refused as empty.
    for _ in 0..200 {
        let r = post(platform, &secret, Some(&unique_suffix()), &json!({"events": []})).await?;
        if r.0 == 422 {
            return Ok((store.tenant_id.to_string(), store.publishable_key, secret));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the cell never accepted the new secret key")
}

/// Status, whether the answer is a replay, and the body.
async fn post(
    platform: &Platform,
    secret: &str,
    key: Option<&str>,
    body: &Value,
) -> anyhow::Result<(u16, bool, Value)> {
    let mut request = platform.http.post(format!("{}/v1/events", platform.cell_url)).bearer_auth(secret).json(body);
    if let Some(k) = key {
        request = request.header("Idempotency-Key", k);
    }
    let r = request.send().await?;
    let status = r.status().as_u16();
    let replayed = r.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
    if status == 409 {
        anyhow::ensure!(r.headers().contains_key("retry-after"), "409 without Retry-After");
    }
    Ok((status, replayed, r.json().await.unwrap_or(Value::Null)))
}

fn batch(ids: &[&str]) -> Value {
    let events: Vec<Value> =
        ids.iter().map(|id| json!({"event_id": id, "type": "page_view", "shopper_id": "shp_1"})).collect();
    json!({ "events": events })
}

/// Waits until the tenant's applied events reach `want` (and a little longer, to see any
/// excess), then answers how many were applied.
async fn applied(platform: &Platform, tenant: &str, want: u64) -> anyhow::Result<u64> {
    let client = redis::Client::open(platform.redis_url.as_str())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let key = format!("{}t:{tenant}:effects", platform.redis_prefix);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: Option<u64> = redis.hget(&key, "events").await?;
        let n = n.unwrap_or(0);
        if n >= want || Instant::now() > deadline {
            // Anything applied twice would show up by now: the stages are idle otherwise.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let n: Option<u64> = redis.hget(&key, "events").await?;
            return Ok(n.unwrap_or(0));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_replay_refuse_and_serialise_per_tenant() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let (tenant_a, _, secret_a) = store_with_secret(&platform, "Store A", ORIGIN_A).await?;
    let (tenant_b, _, secret_b) = store_with_secret(&platform, "Store B", ORIGIN_B).await?;

    // Same key and body twenty times: the first runs, the other nineteen replay its answer.
    let key = format!("order-{}", unique_suffix());
    let first_batch = batch(&["a-1", "a-2", "a-3"]);
    let first = post(&platform, &secret_a, Some(&key), &first_batch).await?;
    assert_eq!((first.0, first.1), (202, false), "{:?}", first.2);
    for _ in 0..19 {
        let again = post(&platform, &secret_a, Some(&key), &first_batch).await?;
        assert_eq!((again.0, again.1), (202, true), "a replay: {:?}", again.2);
        assert_eq!(again.2, first.2, "the replay is the first answer");
    }

    // Same key, another body: refused, and nothing of it accepted.
    let other = post(&platform, &secret_a, Some(&key), &batch(&["a-4"])).await?;
    assert_eq!(other.0, 422);
    assert_eq!(other.2["error"]["code"], "idempotency_key_reused");

    // A server without a key: refused before anything is accepted.
    let keyless = post(&platform, &secret_a, None, &batch(&["a-5"])).await?;
    assert_eq!(keyless.0, 400);
    assert_eq!(keyless.2["error"]["code"], "idempotency_key_required");

    // Fifty at once with one fresh key: one runs; the others are told it is running (409) or,
    // arriving after it finished, get its answer.
    let key = format!("burst-{}", unique_suffix());
    let burst_batch = batch(&["a-6", "a-7"]);
    let answers =
        futures_util::future::join_all((0..50).map(|_| post(&platform, &secret_a, Some(&key), &burst_batch))).await;
    let (mut executed, mut in_use, mut replays) = (0, 0, 0);
    for answer in answers {
        match answer? {
            (202, false, _) => executed += 1,
            (202, true, _) => replays += 1,
            (409, _, body) => {
                assert_eq!(body["error"]["code"], "idempotency_key_in_use");
                in_use += 1;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    println!("50 concurrent requests with one key: {executed} ran, {in_use} got 409, {replays} replayed");
    assert_eq!(executed, 1, "exactly one of the concurrent requests ran");
    assert_eq!(in_use + replays, 49);

    // The same key in another tenant is another key: it runs there, with its own body.
    let shared = post(&platform, &secret_b, Some(&key), &batch(&["b-1"])).await?;
    assert_eq!((shared.0, shared.1), (202, false), "{:?}", shared.2);
    let shared_again = post(&platform, &secret_b, Some(&key), &batch(&["b-1"])).await?;
    assert_eq!((shared_again.0, shared_again.1), (202, true));

    // Effects: store A's five accepted events once each (a-4 and a-5 were never accepted),
    // store B's one.
    assert_eq!(applied(&platform, &tenant_a, 5).await?, 5, "store A: each accepted event applied once");
    assert_eq!(applied(&platform, &tenant_b, 1).await?, 1, "store B: its one event applied once");
    platform.shutdown().await
}
