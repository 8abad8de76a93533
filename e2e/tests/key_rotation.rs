//! Transit key rotation with rewrap under load: while a store's shoppers keep sending events
//! (new shoppers among them, so data keys are being made during the rotation), the vault
//! rotates the store's key encryption key twice. The cell rewraps every stored data key with
//! the latest version and retires the older versions; every event is processed, nothing
//! fails to decrypt, and afterwards a process with nothing in memory opens every record the
//! cell sealed — which needs every data key to unwrap under the latest version alone.
//! Another store on the same cell keeps its key and versions as they were.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use common::{ORIGIN, browsing, cell_metric, read_to_end};
use nudge_contracts::{Topic, proto::sealed::v1::Sealed};
use nudge_platform_vault::{Vault, ciphertext_version};
use nudge_test_support::{Platform, unique_suffix};
use prost::Message as _;

/// Waits until the store's Transit key has only `version` left to decrypt with: the cell
/// rewrapped every data key and retired the older versions.
async fn retired_below(vault: &Vault, name: &str, version: u64) -> anyhow::Result<()> {
    for _ in 0..600 {
        let versions = vault.key_versions(name).await?;
        if versions.min_decryption >= version {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the cell never retired the versions below {version} of {name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_a_stores_key_under_load_loses_nothing_and_fails_no_decryption() -> anyhow::Result<()> {
    let platform = Platform::start_with(|_, cell| {
        cell.keys.rewrap_interval_ms = 200;
        // The least the cell accepts: a vault and a Redis call, and a second.
        cell.keys.retire_after_ms = cell.vault.timeout_ms + cell.redis.response_timeout_ms + 1_000;
    })
    .await?;
    let store = platform.sign_up_ready("Rotating Store", ORIGIN).await?;
    let transit_key = format!("{}{}", platform.cell_config.keys.transit_key_prefix, store.tenant_id);
    let vault = Vault::new(&platform.cell_config.vault)?;
    // Another store on the same cell, whose key is not rotated: its shopper's data key is
    // left as it is.
    let other = platform.sign_up_ready("Steady Store", "https://steady.example.com").await?;
    let other_shopper = format!("shp_steady_{}", unique_suffix());
    let steady = platform
        .post_events(&other.publishable_key, Some("https://steady.example.com"), &browsing(&other_shopper))
        .await?;
    assert_eq!(steady.status(), 202);

    // The load: a batch every 100 ms (under the free plan's rate), every third from a new
    // shopper, the rest from a pool of returning ones.
    let accepted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (platform_key, accepted, stop) = (store.publishable_key.clone(), accepted.clone(), stop.clone());
        let http = platform.http.clone();
        let url = format!("{}/v1/events", platform.cell_url);
        let run = unique_suffix();
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Acquire) {
                let shopper = if i.is_multiple_of(3) {
                    format!("shp_new_{run}_{i}")
                } else {
                    format!("shp_pool_{run}_{}", i % 20)
                };
                let sent = http
                    .post(&url)
                    .bearer_auth(&platform_key)
                    .header("Origin", ORIGIN)
                    .json(&browsing(&shopper))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 202 => {
                        accepted.fetch_add(3, Ordering::AcqRel);
                    }
                    // Over the plan's rate, or the broker behind on a loaded machine: retried.
                    // A refusal for want of data keys would be the rotation's fault.
                    Ok(r) if r.status() == 429 => {}
                    Ok(r) if r.status() == 503 => {
                        let body = r.text().await.unwrap_or_default();
                        anyhow::ensure!(!body.contains("keys_unavailable"), "refused for want of data keys: {body}");
                    }
                    Ok(r) => anyhow::bail!("ingest answered {}: {}", r.status(), r.text().await.unwrap_or_default()),
                    Err(e) => anyhow::bail!("ingest unreachable: {e}"),
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(())
        })
    };

    // The first data keys exist (version 1), then the vault rotates, twice, under the load.
    let mut started = false;
    for _ in 0..400 {
        if accepted.load(Ordering::Acquire) >= 30 {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(started, "the load never got going");
    assert_eq!(vault.key_versions(&transit_key).await?.latest, 1);
    vault.rotate(&transit_key).await?;
    retired_below(&vault, &transit_key, 2).await?;
    vault.rotate(&transit_key).await?;
    retired_below(&vault, &transit_key, 3).await?;
    // Keep the load on a moment past the last retirement.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop.store(true, Ordering::Release);
    load.await??;

    // Every accepted event was processed, and nothing failed to decrypt or went to the DLQ.
    let sent = accepted.load(Ordering::Acquire);
    // With the other store's three events.
    platform.wait_processed(sent + 3).await?;
    assert_eq!(cell_metric(&platform, "nudge_cell_keyring_decrypt_errors_total").await?, 0.0);
    assert!(cell_metric(&platform, "nudge_cell_keyring_data_keys_rewrapped_total").await? > 0.0);

    // Every stored data key is wrapped with version 3.
    let client = redis::Client::open(platform.redis_url.as_str())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}t:{}:dek:*", platform.redis_prefix, store.tenant_id))
        .query_async(&mut redis)
        .await?;
    assert!(keys.len() > 10, "new shoppers got data keys during the load: {}", keys.len());
    let wrapped: Vec<String> = redis::cmd("MGET").arg(&keys).query_async(&mut redis).await?;
    assert!(wrapped.iter().all(|w| ciphertext_version(w) == Some(3)), "every data key is on version 3");
    let other_keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}t:{}:dek:*", platform.redis_prefix, other.tenant_id))
        .query_async(&mut redis)
        .await?;
    let other_wrapped: Vec<String> = redis::cmd("MGET").arg(&other_keys).query_async(&mut redis).await?;
    assert_eq!(other_wrapped.len(), 1);
    assert!(other_wrapped.iter().all(|w| ciphertext_version(w) == Some(1)), "the other store's key is untouched");
    let other_key = format!("{}{}", platform.cell_config.keys.transit_key_prefix, other.tenant_id);
    assert_eq!(vault.key_versions(&other_key).await?.min_decryption, 1);

    // A process with an empty cache opens every record the cell sealed: each of its data
    // keys unwraps under version 3 alone.
    let records = read_to_end(
        &platform,
        &[Topic::EventsRaw, Topic::EventsValidated, Topic::Features, Topic::Predictions, Topic::EventsDlq],
    )
    .await?;
    let keyring = platform.keyring().await?;
    let (mut opened, mut dead) = (0u64, 0u64);
    for (topic, _, value) in &records {
        if topic.ends_with("events.dlq") {
            dead += 1;
            continue;
        }
        let Some(value) = value else { continue };
        let sealed = Sealed::decode(value.as_slice())?;
        keyring.open(&sealed, &sealed.schema).await?;
        opened += 1;
    }
    assert_eq!(dead, 0, "nothing went to the DLQ");
    // Each event: raw, validated, a snapshot and a prediction.
    let mut per_topic = std::collections::BTreeMap::new();
    for (topic, _, _) in &records {
        *per_topic.entry(topic.clone()).or_insert(0u64) += 1;
    }
    assert!(opened >= 4 * (sent + 3), "opened {opened} records for {sent} events: {per_topic:?}");
    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_vault_down_known_shoppers_go_on_and_new_ones_get_a_fast_503() -> anyhow::Result<()> {
    let mut platform = Platform::start().await?;
    let store = platform.sign_up_ready("Vaultless Store", ORIGIN).await?;
    let known = format!("shp_known_{}", unique_suffix());
    let key = store.publishable_key.as_str();
    assert_eq!(platform.post_events(key, Some(ORIGIN), &browsing(&known)).await?.status(), 202);
    platform.wait_processed(3).await?;

    platform.vault.stop().await?;
    // A shopper whose data key the cell holds in memory: accepted and processed.
    assert_eq!(platform.post_events(key, Some(ORIGIN), &browsing(&known)).await?.status(), 202);
    platform.wait_processed(6).await?;
    // A new shopper needs a new data key, which needs the vault: refused at once, to retry.
    let started = std::time::Instant::now();
    let refused = platform.post_events(key, Some(ORIGIN), &browsing(&format!("shp_new_{}", unique_suffix()))).await?;
    let elapsed = started.elapsed();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let body: serde_json::Value = refused.json().await?;
    assert_eq!(body["error"]["code"], "keys_unavailable", "{body}");
    println!("refused in {elapsed:?} with the vault down");
    assert_eq!(cell_metric(&platform, "nudge_cell_keyring_decrypt_errors_total").await?, 0.0);
    platform.shutdown().await
}
