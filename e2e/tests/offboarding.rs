//! A store's offboarding end to end: its owner closes it (its traffic stops at once) and
//! may cancel during the grace period; nothing is purged before the grace period ends or
//! while a legal hold stands; then the purge erases the store whole — every Redis key of
//! it, a `features.v1` tombstone for each of its shoppers, its Transit key (so none of its
//! sealed records opens again), its keys, origins and suppression list in PostgreSQL — signs
//! a receipt, and deletes the store (its tenant record becomes a tombstone). Another store
//! on the same cell keeps everything and goes on working.

mod common;

use std::time::Duration;

use common::{ORIGIN, browsing, stream_records, verify_receipt};
use nudge_contracts::{
    ShopperId, Topic,
    proto::{features::v1::SubjectKey, sealed::v1::Sealed},
};
use nudge_data_plane_features::store::SessionKey;
use nudge_platform_vault::VaultError;
use nudge_test_support::{OPERATOR_TOKEN, Platform, unique_suffix};
use prost::Message as _;
use redis::AsyncCommands;
use serde_json::{Value, json};
use sqlx::Connection;

async fn call(request: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text)? }))
}

/// Waits (at most the acceptance's 60 s) until the store at `admin` (its admin offboarding
/// URL) is purged and deleted; where its offboarding then stands.
async fn purged(platform: &Platform, admin: &str) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = call(platform.http.get(admin).bearer_auth(OPERATOR_TOKEN)).await?;
        anyhow::ensure!(status == 200, "{body}");
        if body["state"] == "deleted" {
            return Ok(body);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "not purged within 60 s: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the shopper's session is in Redis (their events were applied).
async fn applied(platform: &Platform, tenant: &str, shopper: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(platform.redis_url.as_str())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let session = SessionKey { tenant: tenant.parse()?, shopper: ShopperId::parse(shopper)? };
    for _ in 0..400 {
        if redis.exists::<_, bool>(session.redis_key(&platform.redis_prefix)).await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the shopper's events were never applied")
}

/// The test's Redis keys that name `tenant`.
async fn keys_of(platform: &Platform, tenant: &str) -> anyhow::Result<Vec<String>> {
    let client = redis::Client::open(platform.redis_url.as_str())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}*", platform.redis_prefix)).query_async(&mut redis).await?;
    Ok(keys.into_iter().filter(|k| k.contains(tenant)).collect())
}

/// Rows of the store in the tables a purge empties.
async fn rows_of(platform: &Platform, tenant: &nudge_tenants::TenantId) -> anyhow::Result<i64> {
    let mut conn = sqlx::PgConnection::connect(&platform.db.owner_url).await?;
    let mut rows = 0;
    for table in ["api_keys", "tenant_origins", "suppressions"] {
        rows += sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {table} WHERE tenant_id = $1"))
            .bind(tenant.as_uuid())
            .fetch_one(&mut conn)
            .await?;
    }
    Ok(rows)
}

/// Records of `tenant`'s shoppers on the cell's topics: how many opened, how many did not.
async fn open_tenants_records(platform: &Platform, tenant: &str) -> anyhow::Result<(usize, usize)> {
    let keyring = platform.keyring().await?;
    let (mut opened, mut unreadable) = (0, 0);
    for (topic, key, value) in stream_records(platform).await? {
        let Some(value) = value else { continue };
        if topic.ends_with("events.dlq") {
            continue;
        }
        let Ok(key) = SubjectKey::decode(key.as_slice()) else { continue };
        if key.tenant_id != tenant {
            continue;
        }
        let sealed = Sealed::decode(value.as_slice())?;
        match keyring.open(&sealed, &sealed.schema).await {
            Ok(_) => opened += 1,
            Err(_) => unreadable += 1,
        }
    }
    Ok((opened, unreadable))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offboarded_store_is_purged_whole_after_its_grace_period_and_deleted_with_a_receipt() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let cp = platform.control_plane_url.clone();
    let (owner_a, owner_b) =
        (format!("leaving-{}@example.com", unique_suffix()), format!("staying-{}@example.com", unique_suffix()));
    let a = platform.sign_up_as("Leaving Store", &[ORIGIN], &owner_a).await?;
    let b = platform.sign_up_as("Staying Store", &[ORIGIN], &owner_b).await?;
    platform.wait_for_key(&a.publishable_key, ORIGIN).await?;
    platform.wait_for_key(&b.publishable_key, ORIGIN).await?;
    let token_a = platform.login(&owner_a, None).await?.access_token;
    let token_b = platform.login(&owner_b, None).await?.access_token;
    let tenant_a: nudge_tenants::TenantId = a.tenant_id.parse()?;

    // Both stores' shoppers browse; A has an opted-out shopper too (their id is kept).
    for (store, shopper) in [(&a, "shp_leaving_1"), (&a, "shp_leaving_2"), (&b, "shp_staying_1")] {
        let status = platform.post_events(&store.publishable_key, Some(ORIGIN), &browsing(shopper)).await?.status();
        assert_eq!(status, 202);
        applied(&platform, &store.tenant_id, shopper).await?;
    }
    let (status, _) = call(
        platform
            .http
            .post(format!("{cp}/v1/tenants/{}/suppressions", a.tenant_id))
            .bearer_auth(&token_a)
            .json(&json!({ "shopper_id": "shp_opted_out", "reason": "opt_out" })),
    )
    .await?;
    assert_eq!(status, 201);
    // A has an active campaign: the purge stops it at the cells and archives it.
    let (status, created) = call(
        platform.http.post(format!("{cp}/v1/tenants/{}/campaigns", a.tenant_id)).bearer_auth(&token_a).json(&json!({
            "name": "Leaving soon", "trigger": { "type": "exit_intent" },
            "variants": [{ "name": "a", "weight": 100, "messages": [
                { "channel": "on_site", "kind": "message", "title": "Hello", "body": "Still there?" }] }],
        })),
    )
    .await?;
    assert_eq!(status, 201, "{created}");
    let campaign = created["campaign_id"].as_str().unwrap_or_default().to_owned();
    let (status, _) = call(
        platform
            .http
            .post(format!("{cp}/v1/tenants/{}/campaigns/{campaign}/state", a.tenant_id))
            .bearer_auth(&token_a)
            .json(&json!({ "state": "active" })),
    )
    .await?;
    assert_eq!(status, 200);
    let (opened, _) = open_tenants_records(&platform, &a.tenant_id).await?;
    assert!(opened >= 6, "A's records open before the purge: {opened}");
    let keys_b = keys_of(&platform, &b.tenant_id).await?;
    assert!(!keys_b.is_empty());

    // Only the owner closes the store, with a reason and the platform's grace period.
    let offboarding = format!("{cp}/v1/tenants/{}/offboarding", a.tenant_id);
    let (status, body) = call(
        platform.http.post(&offboarding).bearer_auth(&token_a).json(&json!({ "reason": "closing", "grace_days": 0 })),
    )
    .await?;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_fields")), "{body}");
    let (status, body) =
        call(platform.http.post(&offboarding).bearer_auth(&token_b).json(&json!({ "reason": "x" }))).await?;
    assert_eq!(status, 404, "another store's owner: {body}");
    let (status, body) =
        call(platform.http.post(&offboarding).bearer_auth(&token_a).json(&json!({ "reason": "closing the shop" })))
            .await?;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["state"], "offboarding");
    let purge_after = chrono::DateTime::parse_from_rfc3339(body["purge_after"].as_str().expect("purge_after"))?;
    let days = (purge_after.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours() as f64 / 24.0;
    assert!((29.9..=30.0).contains(&days), "a 30-day grace period: {days}");
    assert!(body["requested_by"].as_str().is_some_and(|a| a.starts_with("account:")), "{body}");
    // Its traffic stops at once.
    let mut refused = false;
    for _ in 0..100 {
        if platform.post_events(&a.publishable_key, Some(ORIGIN), &browsing("shp_late")).await?.status() == 403 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "an offboarding store's events are refused");

    // During the grace period the owner can change their mind, and nothing is purged.
    let (status, body) = call(platform.http.delete(&offboarding).bearer_auth(&token_a)).await?;
    assert_eq!((status, body["state"].as_str()), (200, Some("active")), "{body}");
    assert_eq!(body["purge_after"], Value::Null);
    let (status, body) = call(platform.http.delete(&offboarding).bearer_auth(&token_a)).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("not_offboarding")), "{body}");
    let (status, _) =
        call(platform.http.post(&offboarding).bearer_auth(&token_a).json(&json!({ "reason": "closing after all" })))
            .await?;
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (_, body) = call(platform.http.get(&offboarding).bearer_auth(&token_a)).await?;
    assert_eq!((body["state"].as_str(), &body["purge"]), (Some("offboarding"), &Value::Null), "{body}");

    // A store-wide legal hold holds the purge, even once an operator shortens the grace
    // period to nothing.
    let (status, hold) = call(
        platform
            .http
            .post(format!("{cp}/v1/tenants/{}/legal-holds", a.tenant_id))
            .bearer_auth(&token_a)
            .json(&json!({ "name": "Tax audit 2026" })),
    )
    .await?;
    assert_eq!(status, 201, "{hold}");
    let admin = format!("{cp}/v1/admin/tenants/{}/offboarding", a.tenant_id);
    let (status, body) = call(
        platform
            .http
            .post(&admin)
            .bearer_auth(OPERATOR_TOKEN)
            .json(&json!({ "reason": "merchant confirmed", "grace_days": 0 })),
    )
    .await?;
    assert_eq!(status, 200, "already offboarding: its grace period stands: {body}");
    // Deleting a store directly is refused: only the purge does it.
    let (status, body) = call(
        platform
            .http
            .post(format!("{cp}/v1/admin/tenants/{}/transitions", a.tenant_id))
            .bearer_auth(OPERATOR_TOKEN)
            .json(&json!({ "to": "deleted", "reason": "skip the purge" })),
    )
    .await?;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("deleted_by_offboarding")), "{body}");
    // Cancel and offboard again through the operator, with no grace period.
    call(platform.http.delete(&offboarding).bearer_auth(&token_a)).await?;
    let (status, body) = call(
        platform
            .http
            .post(&admin)
            .bearer_auth(OPERATOR_TOKEN)
            .json(&json!({ "reason": "merchant confirmed", "grace_days": 0 })),
    )
    .await?;
    assert_eq!(status, 202, "{body}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (_, body) = call(platform.http.get(&admin).bearer_auth(OPERATOR_TOKEN)).await?;
    assert_eq!((body["state"].as_str(), &body["purge"]), (Some("offboarding"), &Value::Null), "held: {body}");
    let hold_id = hold["hold_id"].as_str().expect("a hold id");
    let (status, _) = call(
        platform.http.delete(format!("{cp}/v1/tenants/{}/legal-holds/{hold_id}", a.tenant_id)).bearer_auth(&token_a),
    )
    .await?;
    assert_eq!(status, 204);

    // Released: within the acceptance's 60 s the store is erased and deleted.
    let done = purged(&platform, &admin).await?;
    let purge = &done["purge"];
    assert_eq!((purge["scope"].as_str(), purge["status"].as_str()), (Some("tenant"), Some("completed")), "{done}");
    let step = |store: &str| purge["steps"].as_array().and_then(|s| s.iter().find(|s| s["store"] == store)).cloned();
    let cell = step("cell:shared-1").expect("the cell's step");
    assert_eq!(cell["status"], "erased", "{done}");
    assert!(cell["removed"]["redis.keys"].as_u64().is_some_and(|n| n >= 6), "{done}");
    // The two shoppers' data keys and the marker the opted-out shopper's erasure left (and a
    // key for `shp_late` if one of its events got in before the offboarding reached the cell).
    assert!(cell["removed"]["redis.data_key"].as_u64().is_some_and(|n| n >= 3), "{done}");
    assert_eq!(cell["removed"]["kafka.features.v1.tombstones"], cell["removed"]["redis.data_key"], "{done}");
    assert_eq!(step("vault").expect("the vault's step")["removed"]["transit.key"], 1, "{done}");
    let postgres = step("postgres").expect("the database's step");
    assert_eq!(postgres["removed"]["suppressions"], 1, "{done}");
    assert_eq!(postgres["removed"]["tenant_origins"], 1, "{done}");
    assert_eq!(postgres["removed"]["campaigns.archived"], 1, "{done}");

    // Nothing of A is left: no Redis key, no key or suppression row, no Transit key; its
    // records on the topics stay until their retention, and none of them opens; each of
    // its shoppers' latest snapshot is a tombstone; its tenant record is a tombstone.
    assert_eq!(keys_of(&platform, &a.tenant_id).await?, Vec::<String>::new());
    assert_eq!(rows_of(&platform, &tenant_a).await?, 0);
    let vault = nudge_platform_vault::Vault::new(&platform.cell_config.vault)?;
    let gone = vault.key_versions(&format!("nudge-tenant-{}", a.tenant_id)).await;
    assert!(matches!(gone, Err(VaultError::NotFound(_))), "A's Transit key is deleted: {gone:?}");
    assert!(vault.key_versions(&format!("nudge-tenant-{}", b.tenant_id)).await.is_ok(), "B's stays");
    let (opened, unreadable) = open_tenants_records(&platform, &a.tenant_id).await?;
    assert_eq!(opened, 0, "none of A's records opens after the purge");
    assert!(unreadable >= 6, "they are still there, unreadable: {unreadable}");
    for shopper in ["shp_leaving_1", "shp_leaving_2"] {
        let digest = nudge_contracts::subject_digest(tenant_a.as_uuid(), &ShopperId::parse(shopper)?);
        let key = SubjectKey { tenant_id: a.tenant_id.clone(), subject_digest: digest }.encode_to_vec();
        assert_eq!(common::latest_snapshot(&platform, &key).await?, Some(None), "a tombstone for {shopper}");
    }
    let tenants = common::read_to_end(&platform, &[Topic::ControlTenants]).await?;
    let latest = tenants.iter().rev().find(|(_, k, _)| k.as_slice() == a.tenant_id.as_bytes());
    assert!(latest.is_some_and(|(_, _, v)| v.is_none()), "A's tenant record is a tombstone");
    let mut forgotten = false;
    for _ in 0..100 {
        if platform.post_events(&a.publishable_key, Some(ORIGIN), &browsing("shp_late")).await?.status() == 401 {
            forgotten = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(forgotten, "the cell forgets A's key");

    // The signed receipt, readable by A's owner, lists every store.
    let request_id = purge["request_id"].as_str().expect("a request id");
    let (status, receipt) = call(
        platform
            .http
            .get(format!("{cp}/v1/tenants/{}/erasures/{request_id}/receipt", a.tenant_id))
            .bearer_auth(&token_a),
    )
    .await?;
    assert_eq!(status, 200, "{receipt}");
    verify_receipt(&platform, &receipt).await?;
    let text: Value = serde_json::from_str(receipt["receipt"].as_str().expect("text"))?;
    assert_eq!((text["scope"].as_str(), text["outcome"].as_str()), (Some("tenant"), Some("erased")), "{text}");
    let stores: Vec<&str> =
        text["stores"].as_array().expect("stores").iter().filter_map(|s| s["store"].as_str()).collect();
    assert_eq!(stores, ["cell:shared-1", "postgres", "vault", "kafka event streams"], "{text}");
    assert_eq!(text["stores"][3]["status"], "crypto_shredded", "{text}");

    // B is untouched and goes on.
    assert_eq!(keys_of(&platform, &b.tenant_id).await?.len(), keys_b.len());
    assert!(rows_of(&platform, &b.tenant_id.parse()?).await? > 0);
    assert_eq!(platform.post_events(&b.publishable_key, Some(ORIGIN), &browsing("shp_staying_2")).await?.status(), 202);
    applied(&platform, &b.tenant_id, "shp_staying_2").await?;
    let (opened, unreadable) = open_tenants_records(&platform, &b.tenant_id).await?;
    assert!(opened >= 6 && unreadable == 0, "B's records open: {opened}, {unreadable}");
    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_never_sealed_a_record_is_purged_too() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let owner = format!("quiet-{}@example.com", unique_suffix());
    let store = platform.sign_up_as("Quiet Store", &[ORIGIN], &owner).await?;
    let token = platform.login(&owner, None).await?.access_token;
    let admin = format!("{}/v1/admin/tenants/{}/offboarding", platform.control_plane_url, store.tenant_id);

    // A suspended store that cancels its offboarding is suspended again, not active.
    assert_eq!(platform.transition(&store.tenant_id, "suspended", "unpaid invoice").await?.status(), 200);
    let own = format!("{}/v1/tenants/{}/offboarding", platform.control_plane_url, store.tenant_id);
    let (status, body) =
        call(platform.http.post(&own).bearer_auth(&token).json(&json!({ "reason": "closing" }))).await?;
    assert_eq!(status, 202, "{body}");
    let (status, body) = call(platform.http.delete(&own).bearer_auth(&token)).await?;
    assert_eq!((status, body["state"].as_str()), (200, Some("suspended")), "{body}");
    let (status, body) = call(
        platform
            .http
            .post(&admin)
            .bearer_auth(OPERATOR_TOKEN)
            .json(&json!({ "reason": "never used", "grace_days": 0 })),
    )
    .await?;
    assert_eq!(status, 202, "{body}");
    let done = purged(&platform, &admin).await?;
    // No Transit key was ever made for it: nothing to delete, and the purge goes on.
    let vault = done["purge"]["steps"].as_array().and_then(|s| s.iter().find(|s| s["store"] == "vault")).cloned();
    let vault = vault.expect("the vault's step");
    assert_eq!((vault["status"].as_str(), &vault["removed"]["transit.key"]), (Some("nothing_found"), &json!(0)));
    assert_eq!(done["purge"]["status"], "completed", "{done}");
    platform.shutdown().await
}
