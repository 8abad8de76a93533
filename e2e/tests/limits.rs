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
    let token = platform.session_token(&noisy.publishable_key, ORIGIN, "shp_c").await?;
    let query = format!("key={}&token={token}", noisy.publishable_key);
    let third = platform.upgrade_request(&platform.cell_url, &query, ORIGIN).await?;
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

/// Sends `batches_per_second` batches of ten for `seconds`; answers (accepted, refused with
/// 429, anything else).
async fn stream(
    platform: &Platform,
    key: &str,
    origin: &str,
    tag: &str,
    batches_per_second: u64,
    seconds: u64,
) -> anyhow::Result<(u64, u64, u64)> {
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / batches_per_second));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut ok, mut limited, mut other) = (0, 0, 0);
    for i in 0..batches_per_second * seconds {
        tick.tick().await;
        let r = platform.post_events(key, Some(origin), &batch(10, &format!("{tag}-{i}"))).await?;
        match r.status().as_u16() {
            202 => ok += 1,
            429 => {
                anyhow::ensure!(r.headers().contains_key("retry-after"), "429 without Retry-After");
                limited += 1;
            }
            s => {
                println!("{tag}: unexpected {s}: {}", r.text().await?);
                other += 1;
            }
        }
    }
    Ok((ok, limited, other))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_at_ten_times_its_limit_is_refused_while_its_neighbours_carry_on() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let noisy = platform.sign_up_ready("Noisy", ORIGIN).await?;
    let neighbours = [
        platform.sign_up_ready("Quiet 1", "https://quiet1.example.com").await?,
        platform.sign_up_ready("Quiet 2", "https://quiet2.example.com").await?,
        platform.sign_up_ready("Quiet 3", "https://quiet3.example.com").await?,
    ];
    // Every store may send 100 events a second (bursts of 100).
    for store in std::iter::once(&noisy).chain(&neighbours) {
        let plan = json!({"plan": "free", "overrides": {"events_per_second": 100, "burst_events": 100}});
        let r = platform
            .http
            .post(format!("{}/v1/admin/tenants/{}/plan", platform.control_plane_url, store.tenant_id))
            .bearer_auth(OPERATOR_TOKEN)
            .json(&plan)
            .send()
            .await?;
        assert_eq!(r.status(), 200);
    }
    // Wait until the cell enforces the noisy store's limit.
    let mut applied = false;
    for attempt in 0..100 {
        let r =
            platform.post_events(&noisy.publishable_key, Some(ORIGIN), &batch(100, &format!("warm{attempt}"))).await?;
        if r.status() == 429 {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(applied, "the cell never applied the limit");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The noisy store sends 1,000 events a second (ten times its limit) for 6 s; each
    // neighbour sends 50 a second, half its limit.
    let seconds = 6;
    // Four senders of 25 batches a second, so slow answers cannot thin the noisy stream.
    let noisy_run = futures_util::future::join_all((0..4).map(|s| {
        let tag = format!("noisy{s}");
        let key = noisy.publishable_key.clone();
        let platform = &platform;
        async move { stream(platform, &key, ORIGIN, &tag, 25, seconds).await }
    }));
    let quiet_runs = futures_util::future::join_all(neighbours.iter().enumerate().map(|(i, store)| {
        let origin = format!("https://quiet{}.example.com", i + 1);
        let tag = format!("quiet{i}");
        let platform = &platform;
        async move { stream(platform, &store.publishable_key, &origin, &tag, 5, seconds).await }
    }));
    let (noisy_result, quiet_results) = tokio::join!(noisy_run, quiet_runs);
    let (mut ok, mut limited, mut other) = (0, 0, 0);
    for result in noisy_result {
        let (o, l, x) = result?;
        (ok, limited, other) = (ok + o, limited + l, other + x);
    }
    println!("noisy store: {ok} accepted, {limited} refused with 429, {other} other");
    assert!(limited > 0, "the noisy store was refused");
    assert_eq!(other, 0, "the noisy store got only 202 or 429");
    // It gets its limit's worth (one burst and 100 events a second), never more.
    let allowed_events = 100 + 100 * seconds;
    assert!(ok * 10 <= allowed_events + 10, "the noisy store got {ok} batches of 10 through");
    for (i, result) in quiet_results.into_iter().enumerate() {
        let (ok, limited, other) = result?;
        let total = ok + limited + other;
        println!("neighbour {i}: {ok} of {total} accepted");
        // At least 99.9 %: with 30 requests each, that is every one.
        assert!(ok * 1000 >= total * 999, "neighbour {i}: {ok} of {total} accepted");
    }
    platform.shutdown().await
}
