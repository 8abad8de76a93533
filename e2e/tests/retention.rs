//! Retention under a controlled clock: the cell's sweep, run with a time a month and a year
//! ahead, expires each store's silent shoppers on that store's own retention (free: 30
//! days; enterprise: 365) — a tombstone on `features.v1` and nothing left in the last-seen
//! set, and their data keys deleted — and leaves the other store's alone; every Redis key of a store expires within its
//! retention by itself.

mod common;

use std::time::Duration;

use common::{ORIGIN, browsing, latest_snapshot};
use nudge_contracts::{ShopperId, Topic, proto::features::v1::SubjectKey, subject_digest};
use nudge_data_plane_cell::retention::Retention;
use nudge_data_plane_directory::Directory;
use nudge_data_plane_features::store::last_seen_key;
use nudge_test_support::{OPERATOR_TOKEN, Platform, unique_suffix};
use prost::Message as _;
use redis::AsyncCommands;
use serde_json::json;

const DAY_MS: i64 = 24 * 3600 * 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_expires_each_stores_shoppers_on_its_own_policy() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let free = platform.sign_up_ready("Free Store", ORIGIN).await?;
    let paid = platform.sign_up("Enterprise Store", &["https://paid.example.com"]).await?;
    let plan = |tenant: &str, body: serde_json::Value| {
        platform
            .http
            .post(format!("{}/v1/admin/tenants/{tenant}/plan", platform.control_plane_url))
            .bearer_auth(OPERATOR_TOKEN)
            .json(&body)
            .send()
    };
    assert_eq!(plan(&paid.tenant_id, json!({"plan": "enterprise"})).await?.status(), 200);
    let too_short = plan(&free.tenant_id, json!({"plan": "free", "overrides": {"retention_days": 1}})).await?;
    assert_eq!(too_short.status(), 422, "retention below the event topics' week is refused");
    platform.wait_for_key(&paid.publishable_key, "https://paid.example.com").await?;

    let (a, b) =
        (free.tenant_id.parse::<nudge_tenants::TenantId>()?, paid.tenant_id.parse::<nudge_tenants::TenantId>()?);
    let shoppers = [
        (a, free.publishable_key.as_str(), ORIGIN, format!("shp_a1_{}", unique_suffix())),
        (a, free.publishable_key.as_str(), ORIGIN, format!("shp_a2_{}", unique_suffix())),
        (b, paid.publishable_key.as_str(), "https://paid.example.com", format!("shp_b1_{}", unique_suffix())),
    ];
    for (_, key, origin, shopper) in &shoppers {
        assert_eq!(platform.post_events(key, Some(origin), &browsing(shopper)).await?.status(), 202);
    }
    let client = redis::Client::open(platform.redis_url.as_str())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let (seen_a, seen_b) = (last_seen_key(&platform.redis_prefix, a), last_seen_key(&platform.redis_prefix, b));
    let mut seen = false;
    for _ in 0..300 {
        if redis.zcard::<_, u64>(&seen_a).await? == 2 && redis.zcard::<_, u64>(&seen_b).await? == 1 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(seen, "the pipeline never noted the shoppers as seen");

    // The cell's view of the stores, from the real tenant topic.
    let kafka = platform.cell_config.kafka.clone();
    let directory = std::sync::Arc::new(Directory::new(platform.cell_config.cell_id.clone()));
    let stop = tokio_util::sync::CancellationToken::new();
    let follower = tokio::spawn(nudge_data_plane_directory::follow(directory.clone(), kafka.clone(), stop.clone()));
    let mut policies = Vec::new();
    for _ in 0..300 {
        policies = directory.retention();
        policies.sort();
        let mut want = vec![(a, 30), (b, 365)];
        want.sort();
        if policies == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut want = vec![(a, 30u32), (b, 365u32)];
    want.sort();
    assert_eq!(policies, want, "each store's retention reaches the cell");

    let retention = Retention {
        redis: client.get_connection_manager().await?,
        keyring: platform.keyring().await?,
        prefix: platform.redis_prefix.clone(),
        producer: nudge_platform_kafka::SharedProducer::new(&kafka, "test-retention")?,
        features_topic: kafka.topics().name(Topic::Features),
        // One at a time, so a sweep takes several rounds.
        batch: 1,
    };
    let now = chrono::Utc::now().timestamp_millis();
    assert!(retention.sweep(&directory, now).await?.expired.is_empty(), "nothing is past retention today");
    assert!(retention.sweep(&directory, now + 29 * DAY_MS).await?.expired.is_empty());

    // Each shopper has a data key their records on the topics are sealed with.
    let keys_conn = redis.clone();
    let data_keys = |tenant: nudge_tenants::TenantId| {
        let pattern = format!("{}t:{tenant}:dek:*", platform.redis_prefix);
        let mut redis = keys_conn.clone();
        async move { redis::cmd("KEYS").arg(pattern).query_async::<Vec<String>>(&mut redis).await }
    };
    assert_eq!((data_keys(a).await?.len(), data_keys(b).await?.len()), (2, 1));

    // A month on: the free store's shoppers expire, the enterprise store's stay; the expired
    // shoppers' data keys go with them, so what the topics still hold of them is unreadable.
    let swept = retention.sweep(&directory, now + 31 * DAY_MS).await?;
    assert_eq!(swept.expired, [(a, 2)]);
    assert_eq!(redis.zcard::<_, u64>(&seen_a).await?, 0);
    assert_eq!(redis.zcard::<_, u64>(&seen_b).await?, 1);
    assert_eq!((data_keys(a).await?.len(), data_keys(b).await?.len()), (0, 1));
    let key_of = |tenant: nudge_tenants::TenantId, shopper: &str| {
        SubjectKey {
            tenant_id: tenant.to_string(),
            subject_digest: subject_digest(tenant.as_uuid(), &ShopperId::parse(shopper).expect("a shopper id")),
        }
        .encode_to_vec()
    };
    for (tenant, _, _, shopper) in &shoppers[..2] {
        assert_eq!(latest_snapshot(&platform, &key_of(*tenant, shopper)).await?, Some(None), "{shopper}: a tombstone");
    }
    let (_, _, _, kept) = &shoppers[2];
    assert!(
        matches!(latest_snapshot(&platform, &key_of(b, kept)).await?, Some(Some(_))),
        "the enterprise store's shopper keeps their snapshot"
    );

    // Nothing of the free store in Redis outlives its retention: every key expires by itself
    // within it (its per-store event counter holds no shopper data).
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}*t:{a}:*", platform.redis_prefix)).query_async(&mut redis).await?;
    assert!(!keys.is_empty(), "the free store has keys to check");
    for key in &keys {
        if key.ends_with(":effects") {
            continue;
        }
        let ttl: i64 = redis.ttl(key).await?;
        assert!(ttl > 0 && ttl <= 30 * 24 * 3600, "{key} expires within the store's retention (TTL {ttl} s)");
    }

    // A year on, the enterprise store's too.
    let swept = retention.sweep(&directory, now + 366 * DAY_MS).await?;
    assert_eq!(swept.expired, [(b, 1)]);
    assert!(data_keys(b).await?.is_empty());
    assert!(matches!(latest_snapshot(&platform, &key_of(b, kept)).await?, Some(None)));
    stop.cancel();
    follower.await??;
    platform.shutdown().await
}
