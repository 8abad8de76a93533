//! The broker dies (kill -9) in the middle of a stream from eight stores and comes back:
//! every event ingest acknowledged has its effect applied exactly once, client retries
//! included, and during the outage ingest answers 503 with Retry-After instead of hanging.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use nudge_test_support::{OPERATOR_TOKEN, Platform};
use redis::AsyncCommands;
use serde_json::{Value, json};

const TENANTS: usize = 8;
const BATCH: usize = 250;
/// An answer slower than this is a hang (the acknowledgement timeout is 3 s).
const HANG: Duration = Duration::from_secs(20);

/// Events in the stream: `NUDGE_FAULT_EVENTS`, 5,000 by default. The local broker keeps
/// its log in SQLite and each write scans more of it as it grows: past roughly 40,000
/// records across its topics (10,000 events with their validated copies, features and
/// predictions) it falls behind the acknowledgement timeouts and the run can stall past
/// the test's bound. 5,000 events pass in about a minute on two cores; against a faster
/// broker, raise it.
fn events_total() -> usize {
    std::env::var("NUDGE_FAULT_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000)
}

fn origin(t: usize) -> String {
    format!("https://store{t}.example.com")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_event_is_lost_or_applied_twice_when_the_broker_dies() -> anyhow::Result<()> {
    let total = events_total();
    let mut platform = Platform::start_durable_with(|_, cell| {
        cell.stages.validator_consumers = 2;
        cell.stages.pipeline_consumers = 2;
        cell.kafka.partitions_override = 4;
        // The local broker stores in SQLite and takes a few thousand records a second: give
        // it time to acknowledge, and keep no more waiting than it can take in a few seconds.
        cell.ingest.ack_timeout_ms = 3_000;
        cell.ingest.max_queued_records = 2_000;
        // A slow produce request is waited for, not abandoned and sent again.
        cell.kafka.request_timeout_ms = 30_000;
        cell.kafka.message_timeout_ms = 60_000;
    })
    .await?;
    let mut stores = Vec::new();
    for t in 0..TENANTS {
        let store = platform.sign_up_ready(&format!("Store {t}"), &origin(t)).await?;
        // Enough headroom that rate limits play no part here.
        let r = platform
            .http
            .post(format!("{}/v1/admin/tenants/{}/plan", platform.control_plane_url, store.tenant_id))
            .bearer_auth(OPERATOR_TOKEN)
            .json(&json!({"plan": "enterprise", "overrides": {"events_per_second": 10_000_000, "burst_events": 10_000_000}}))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 200);
        stores.push(store);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let acked: Arc<Mutex<HashMap<usize, HashSet<String>>>> = Arc::default();
    let (refused, sent_batches) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let per_tenant = total / TENANTS;
    let started = Instant::now();
    let mut senders = Vec::new();
    for (t, store) in stores.iter().enumerate() {
        let (http, url, key) =
            (platform.http.clone(), format!("{}/v1/events", platform.cell_url), store.publishable_key.clone());
        let (acked, refused, sent_batches) = (acked.clone(), refused.clone(), sent_batches.clone());
        senders.push(tokio::spawn(async move {
            let mut previous: Option<Value> = None;
            for b in 0..per_tenant.div_ceil(BATCH) {
                let ids: Vec<String> = (b * BATCH..((b + 1) * BATCH).min(per_tenant)).map(|i| format!("t{t}-e{i}")).collect();
                let events: Vec<Value> = ids
                    .iter()
                    .map(|id| json!({"event_id": id, "type": "page_view", "shopper_id": format!("shp_{}", id.len() % 50)}))
                    .collect();
                let batch = json!({ "events": events });
                // About 5 % of batches are sent twice, as a client does after a lost answer.
                let mut sends = vec![&batch];
                if b % 20 == 7
                    && let Some(p) = previous.as_ref()
                {
                    sends.push(p);
                }
                for body in sends {
                    loop {
                        // Never hangs: every answer comes well within this bound, outage or not.
                        let send = http.post(&url).bearer_auth(&key).header("Origin", origin(t)).json(body).send();
                        let r = tokio::time::timeout(HANG, send).await.map_err(|_| anyhow::anyhow!("ingest hung"))??;
                        sent_batches.fetch_add(1, Ordering::Relaxed);
                        match r.status().as_u16() {
                            202 => {
                                let ids_sent = body["events"].as_array().into_iter().flatten().filter_map(|e| e["event_id"].as_str());
                                acked.lock().unwrap_or_else(|e| e.into_inner()).entry(t).or_default().extend(ids_sent.map(str::to_owned));
                                break;
                            }
                            503 => {
                                anyhow::ensure!(r.headers().contains_key("retry-after"), "503 without Retry-After");
                                refused.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                            other => anyhow::bail!("store {t} got {other}: {}", r.text().await?),
                        }
                    }
                }
                previous = Some(batch);
            }
            anyhow::Ok(())
        }));
    }

    // Kill the broker once a share of the stream is in, keep it down about 10 s, restart it.
    let mut waited = 0;
    while acked.lock().map(|a| a.values().map(HashSet::len).sum::<usize>()).unwrap_or(0) < total / 3 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
        if waited % 40 == 0 {
            let n = acked.lock().map(|a| a.values().map(HashSet::len).sum::<usize>()).unwrap_or(0);
            println!("acknowledged so far: {n} after {:?}", started.elapsed());
        }
    }
    platform.broker.kill().await?;
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    platform.broker.restart().await?;
    println!("broker down for {:?}", killed_at.elapsed());
    for s in senders {
        while !s.is_finished() {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let n = acked.lock().map(|a| a.values().map(HashSet::len).sum::<usize>()).unwrap_or(0);
            println!(
                "acknowledged so far: {n}, sends {}, refused {}",
                sent_batches.load(Ordering::Relaxed),
                refused.load(Ordering::Relaxed)
            );
        }
        s.await??;
    }
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    let acked_total: usize = acked.values().map(HashSet::len).sum();
    println!(
        "acknowledged {acked_total} distinct events in {:?}; {} batch sends, {} refused with 503",
        started.elapsed(),
        sent_batches.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed)
    );
    assert_eq!(acked_total, total, "every event was eventually acknowledged");
    assert!(refused.load(Ordering::Relaxed) > 0, "the outage was seen by the senders");

    // Every acknowledged event has its effect, once: the per-store effect counters equal the
    // acknowledged events exactly (a duplicate effect would push one above).
    let client = redis::Client::open(platform.redis_url.as_str())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let mut applied = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        for (t, store) in stores.iter().enumerate() {
            let key = format!("{}t:{}:effects", platform.redis_prefix, store.tenant_id);
            let n: Option<u64> = redis.hget(&key, "events").await?;
            applied.insert(t, n.unwrap_or(0) as usize);
        }
        let done = (0..TENANTS).all(|t| applied[&t] >= acked.get(&t).map(HashSet::len).unwrap_or(0));
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("effects applied by store: {applied:?} in {:?}", started.elapsed());
    for t in 0..TENANTS {
        assert_eq!(applied[&t], acked[&t].len(), "store {t}: effects equal acknowledged events");
    }
    platform.shutdown().await
}
