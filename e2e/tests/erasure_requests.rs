//! Erasure requests end to end: a store files one for a shopper; the shopper is suppressed
//! at once, erased from PostgreSQL, the cell's Redis and the compacted `features.v1`
//! (a tombstone); their records on every topic, sealed with their data key, no longer
//! open once the key is erased, and no record names them in clear; the request completes with a receipt signed by OpenBao's Transit key
//! that checks against the published public key. Filing it again answers the same receipt;
//! another store sees nothing of it; a legal hold refuses it, naming the hold; an unknown
//! shopper gets a receipt that says nothing was found.

mod common;

use std::time::Duration;

use common::{ORIGIN, TopicRecord, browsing, contains, latest_snapshot, stream_records, verify_receipt};
use nudge_contracts::{
    ShopperId,
    proto::{features::v1::SubjectKey, sealed::v1::Sealed},
};
use nudge_data_plane_features::store::SessionKey;
use nudge_data_plane_keyring::KeyError;
use nudge_test_support::{Platform, unique_suffix};
use prost::Message as _;
use redis::AsyncCommands;
use serde_json::{Value, json};
use sqlx::{Connection, Row};

async fn file(platform: &Platform, tenant: &str, token: &str, shopper: &str) -> anyhow::Result<(u16, Value)> {
    let response = platform
        .http
        .post(format!("{}/v1/tenants/{tenant}/erasures", platform.control_plane_url))
        .bearer_auth(token)
        .json(&json!({ "shopper_id": shopper }))
        .send()
        .await?;
    Ok((response.status().as_u16(), response.json().await?))
}

async fn get(platform: &Platform, path: &str, token: &str) -> anyhow::Result<(u16, Value)> {
    let response = platform.http.get(format!("{}{path}", platform.control_plane_url)).bearer_auth(token).send().await?;
    Ok((response.status().as_u16(), response.json().await?))
}

/// Waits (at most the acceptance's 60 s) for a request to complete; the completed request.
async fn completed(platform: &Platform, tenant: &str, token: &str, request_id: &str) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, request) = get(platform, &format!("/v1/tenants/{tenant}/erasures/{request_id}"), token).await?;
        anyhow::ensure!(status == 200, "{request}");
        if request["status"] == "completed" {
            return Ok(request);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "not completed within 60 s: {request}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every Redis key under the test's prefix, and every value, that mentions `needle`.
async fn redis_hits(platform: &Platform, needle: &str) -> anyhow::Result<Vec<String>> {
    let client = redis::Client::open(platform.redis_url.as_str())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    // KEYS is fine for one test's few keys under its own prefix.
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}*", platform.redis_prefix)).query_async(&mut redis).await?;
    let mut hits = Vec::new();
    for key in keys {
        if key.contains(needle) {
            hits.push(key);
            continue;
        }
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut redis).await?;
        // Values may be binary (event-id digests, sealed records): read as bytes.
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![redis.get::<_, Option<Vec<u8>>>(&key).await?.unwrap_or_default()],
            "hash" => {
                redis.hgetall::<_, Vec<(Vec<u8>, Vec<u8>)>>(&key).await?.into_iter().flat_map(|(f, v)| [f, v]).collect()
            }
            "list" => redis.lrange(&key, 0, -1).await?,
            "set" => redis.smembers(&key).await?,
            "zset" => redis.zrange(&key, 0, -1).await?,
            _ => Vec::new(),
        };
        if values.iter().any(|v| String::from_utf8_lossy(v).contains(needle)) {
            hits.push(key);
        }
    }
    Ok(hits)
}

/// Every row of every table of the test's database whose text mentions `needle`.
async fn postgres_hits(platform: &Platform, needle: &str) -> anyhow::Result<Vec<String>> {
    let mut conn = sqlx::PgConnection::connect(&platform.db.owner_url).await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(table_name) FROM information_schema.tables
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&mut conn)
    .await?;
    let mut hits = Vec::new();
    for table in tables {
        // A row's text shows binary columns as hex: the outbox's payloads are searched below.
        let row = sqlx::query(&format!("SELECT count(*) AS n FROM {table} t WHERE t::text LIKE '%' || $1 || '%'"))
            .bind(needle)
            .fetch_one(&mut conn)
            .await?;
        if row.try_get::<i64, _>("n")? > 0 {
            hits.push(table);
        }
    }
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE position($1 IN payload) > 0")
        .bind(needle.as_bytes())
        .fetch_one(&mut conn)
        .await?;
    if outbox > 0 {
        hits.push("outbox payloads".into());
    }
    Ok(hits)
}

/// Opens every sealed record of the subject with `key`: how many opened, and how many
/// were shredded (their data key gone).
async fn open_subjects_records(
    platform: &Platform,
    records: &[TopicRecord],
    key: &[u8],
) -> anyhow::Result<(usize, usize)> {
    let keyring = platform.keyring().await?;
    let (mut opened, mut shredded) = (0, 0);
    for (topic, k, value) in records {
        let Some(value) = value else { continue };
        if k.as_slice() != key || topic.ends_with("events.dlq") {
            continue;
        }
        let sealed = Sealed::decode(value.as_slice())?;
        match keyring.open(&sealed, &sealed.schema).await {
            Ok(_) => opened += 1,
            Err(KeyError::Shredded) => shredded += 1,
            Err(e) => anyhow::bail!("a record on {topic} did not open: {e}"),
        }
    }
    Ok((opened, shredded))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_request_erases_everywhere_and_answers_a_signed_receipt() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let owner = format!("owner-{}@example.com", unique_suffix());
    let store = platform.sign_up_as("Forgetting Store", &[ORIGIN], &owner).await?;
    platform.wait_for_key(&store.publishable_key, ORIGIN).await?;
    let token = platform.login(&owner, None).await?.access_token;
    let tenant: nudge_tenants::TenantId = store.tenant_id.parse()?;
    let shopper = format!("shp_forget_{}", unique_suffix());

    // The shopper browses; the pipeline keeps their session and snapshots their features.
    // These event ids contain the shopper id (a store's server may build them so): Redis
    // keeps only their digests.
    let (visit, _) = common::abandoning_session(&shopper);
    assert_eq!(platform.post_events(&store.publishable_key, Some(ORIGIN), &visit).await?.status(), 202);
    let client = redis::Client::open(platform.redis_url.as_str())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let session = SessionKey { tenant, shopper: ShopperId::parse(&shopper)? };
    let mut stored = false;
    for _ in 0..300 {
        if redis.exists::<_, bool>(session.redis_key(&platform.redis_prefix)).await? {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(stored, "the shopper's session never reached Redis");
    assert!(!redis_hits(&platform, &shopper).await?.is_empty(), "the scan finds what is there");

    // Their records on the topics are sealed: keyed by subject digest, no shopper id in
    // clear, and they open with the shopper's data key.
    let digest = nudge_contracts::subject_digest(tenant.as_uuid(), &ShopperId::parse(&shopper)?);
    let key = SubjectKey { tenant_id: store.tenant_id.clone(), subject_digest: digest.clone() }.encode_to_vec();
    let before = stream_records(&platform).await?;
    assert!(!contains(&before, shopper.as_bytes()), "no record names the shopper in clear");
    let (opened, shredded) = open_subjects_records(&platform, &before, &key).await?;
    assert!(opened >= 4 && shredded == 0, "the shopper's records open before the erasure: {opened}, {shredded}");

    let (status, request) = file(&platform, &store.tenant_id, &token, &shopper).await?;
    assert_eq!(status, 202, "{request}");
    assert_eq!(request["status"], "in_progress");
    let request_id = request["request_id"].as_str().expect("a request id").to_owned();
    assert!(request["deadline_at"].as_str().is_some_and(|d| d > request["requested_at"].as_str().unwrap_or("")));

    let done = completed(&platform, &store.tenant_id, &token, &request_id).await?;
    let steps = done["steps"].as_array().expect("steps");
    let cell_step = steps.iter().find(|s| s["store"] == "cell:shared-1").expect("the cell's step");
    assert_eq!(cell_step["status"], "erased", "{done}");
    assert_eq!(cell_step["removed"]["redis.session"], 1, "{done}");
    assert_eq!(cell_step["removed"]["redis.subject_index"], 1, "{done}");
    assert_eq!(cell_step["removed"]["redis.data_key"], 1, "{done}");
    assert_eq!(cell_step["removed"]["kafka.features.v1.tombstones"], 1, "{done}");
    assert!(steps.iter().any(|s| s["store"] == "postgres"), "{done}");
    let actions: Vec<&str> =
        done["audit"].as_array().expect("audit").iter().filter_map(|a| a["action"].as_str()).collect();
    assert_eq!(actions, ["requested", "store_finished", "completed"], "{done}");

    // Nowhere a trace of the shopper: Redis, PostgreSQL, and the latest features snapshot
    // is a tombstone.
    assert_eq!(redis_hits(&platform, &shopper).await?, Vec::<String>::new());
    assert_eq!(postgres_hits(&platform, &shopper).await?, Vec::<String>::new());
    assert_eq!(done["subject_digest"], digest.as_str());
    assert_eq!(latest_snapshot(&platform, &key).await?, Some(None), "a tombstone is the shopper's latest snapshot");
    // The event streams still hold their records (a topic is not erased record by record),
    // but none of them opens any more: crypto-shredded.
    let after = stream_records(&platform).await?;
    assert!(!contains(&after, shopper.as_bytes()), "no record names the shopper in clear");
    let (opened, shredded) = open_subjects_records(&platform, &after, &key).await?;
    assert_eq!(opened, 0, "no record of the shopper opens after the erasure");
    assert!(shredded >= 4, "their records are still there, unreadable: {shredded}");
    // A process that has not heard of the erasure (this keyring's directory is empty)
    // cannot make the shopper a new key: the erased key's marker stands in its way.
    let late = platform.keyring().await?.seal(tenant, &digest, "nudge.events.v1.Event", b"late").await;
    assert!(matches!(late, Err(KeyError::Shredded)), "no new key for an erased shopper: {late:?}");

    // The receipt: every store with its status, signed; it checks against the public key.
    let receipt_path = format!("/v1/tenants/{}/erasures/{request_id}/receipt", store.tenant_id);
    let (status, receipt) = get(&platform, &receipt_path, &token).await?;
    assert_eq!(status, 200, "{receipt}");
    verify_receipt(&platform, &receipt).await?;
    let body: Value = serde_json::from_str(receipt["receipt"].as_str().expect("text"))?;
    assert_eq!(body["outcome"], "erased");
    assert_eq!(body["request_id"], request_id.as_str());
    let stores: Vec<&str> =
        body["stores"].as_array().expect("stores").iter().filter_map(|s| s["store"].as_str()).collect();
    assert_eq!(stores, ["cell:shared-1", "postgres", "kafka event streams"], "{body}");
    assert_eq!(body["stores"][2]["status"], "crypto_shredded", "{body}");
    assert!(!receipt["receipt"].as_str().unwrap_or_default().contains(&shopper), "the receipt names no shopper id");

    // Filing it again: the same request and the same receipt.
    let (status, again) = file(&platform, &store.tenant_id, &token, &shopper).await?;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["request_id"], request_id.as_str());
    assert_eq!(get(&platform, &receipt_path, &token).await?.1, receipt);

    // New events for them are dropped: a later shopper's event is applied, theirs is not.
    assert_eq!(platform.post_events(&store.publishable_key, Some(ORIGIN), &browsing(&shopper)).await?.status(), 202);
    let marker = SessionKey { tenant, shopper: ShopperId::parse("shp_marker")? };
    assert_eq!(
        platform.post_events(&store.publishable_key, Some(ORIGIN), &browsing("shp_marker")).await?.status(),
        202
    );
    let mut worked_past = false;
    for _ in 0..300 {
        if redis.exists::<_, bool>(marker.redis_key(&platform.redis_prefix)).await? {
            worked_past = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(worked_past, "the marker's events were never applied");
    assert_eq!(redis_hits(&platform, &shopper).await?, Vec::<String>::new(), "nothing new for an erased shopper");
    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_requests_are_the_stores_own_and_legal_holds_refuse_them() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let (owner_a, owner_b) =
        (format!("a-{}@example.com", unique_suffix()), format!("b-{}@example.com", unique_suffix()));
    let a = platform.sign_up_as("Store A", &[ORIGIN], &owner_a).await?;
    let b = platform.sign_up_as("Store B", &["https://b.example.com"], &owner_b).await?;
    platform.wait_for_key(&a.publishable_key, ORIGIN).await?;
    let token_a = platform.login(&owner_a, None).await?.access_token;
    let token_b = platform.login(&owner_b, None).await?.access_token;

    // A shopper store A never saw: the receipt says nothing was found.
    let (status, request) = file(&platform, &a.tenant_id, &token_a, "shp_unknown").await?;
    assert_eq!(status, 202, "{request}");
    let request_id = request["request_id"].as_str().expect("id").to_owned();
    let done = completed(&platform, &a.tenant_id, &token_a, &request_id).await?;
    assert!(done["steps"].as_array().expect("steps").iter().all(|s| s["status"] == "nothing_found"), "{done}");
    let (_, receipt) =
        get(&platform, &format!("/v1/tenants/{}/erasures/{request_id}/receipt", a.tenant_id), &token_a).await?;
    let body: Value = serde_json::from_str(receipt["receipt"].as_str().expect("text"))?;
    assert_eq!(body["outcome"], "nothing_found");
    verify_receipt(&platform, &receipt).await?;

    // Store B: A's request is not there, under A's id or its own.
    for path in [
        format!("/v1/tenants/{}/erasures/{request_id}", a.tenant_id),
        format!("/v1/tenants/{}/erasures/{request_id}", b.tenant_id),
        format!("/v1/tenants/{}/erasures/{request_id}/receipt", b.tenant_id),
    ] {
        let (status, body) = get(&platform, &path, &token_b).await?;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let (status, _) = file(&platform, &a.tenant_id, &token_b, "shp_unknown").await?;
    assert_eq!(status, 404, "B cannot file for A");
    let (_, list) = get(&platform, &format!("/v1/tenants/{}/erasures", b.tenant_id), &token_b).await?;
    assert_eq!(list["items"], json!([]));

    // A legal hold on a shopper refuses their erasure, naming it; released, it goes ahead.
    let hold: Value = platform
        .http
        .post(format!("{}/v1/tenants/{}/legal-holds", platform.control_plane_url, a.tenant_id))
        .bearer_auth(&token_a)
        .json(&json!({ "name": "Case 2026-114 chargeback dispute", "shopper_id": "shp_held" }))
        .send()
        .await?
        .json()
        .await?;
    let hold_id = hold["hold_id"].as_str().expect("a hold id").to_owned();
    let (status, refused) = file(&platform, &a.tenant_id, &token_a, "shp_held").await?;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "legal_hold");
    assert_eq!(refused["error"]["details"]["name"], "Case 2026-114 chargeback dispute");
    assert_eq!(refused["error"]["details"]["hold_id"], hold_id.as_str());
    let (status, _) = file(&platform, &a.tenant_id, &token_a, "shp_other").await?;
    assert_eq!(status, 202, "the hold covers its shopper only");
    let released = platform
        .http
        .delete(format!("{}/v1/tenants/{}/legal-holds/{hold_id}", platform.control_plane_url, a.tenant_id))
        .bearer_auth(&token_a)
        .send()
        .await?;
    assert_eq!(released.status(), 204);
    let (status, request) = file(&platform, &a.tenant_id, &token_a, "shp_held").await?;
    assert_eq!(status, 202, "{request}");
    // Store B cannot see or release A's holds.
    let (status, _) = get(&platform, &format!("/v1/tenants/{}/legal-holds", a.tenant_id), &token_b).await?;
    assert_eq!(status, 404);
    let foreign = platform
        .http
        .delete(format!("{}/v1/tenants/{}/legal-holds/{hold_id}", platform.control_plane_url, b.tenant_id))
        .bearer_auth(&token_b)
        .send()
        .await?;
    assert_eq!(foreign.status(), 404, "another store's hold is not found");

    // An access request: what the control plane keeps about the shopper — their
    // suppression (the id no longer kept), the erasure request, the hold that named them —
    // and where the cell's part is. Another store gets 404.
    let export = format!("/v1/tenants/{}/shoppers/shp_held/export", a.tenant_id);
    let (status, records) = get(&platform, &export, &token_a).await?;
    assert_eq!(status, 200, "{records}");
    assert_eq!(records["suppression"]["reason"], "erasure", "{records}");
    assert_eq!(records["suppression"]["shopper_id"], Value::Null, "{records}");
    assert_eq!(records["erasure_requests"].as_array().map(Vec::len), Some(1), "{records}");
    assert_eq!(records["legal_holds"][0]["hold_id"], hold_id.as_str(), "{records}");
    assert!(records["cell_export"].as_str().is_some_and(|c| c.contains("/v1/shoppers/shp_held/export")), "{records}");
    assert_eq!(get(&platform, &export, &token_b).await?.0, 404);

    // A shopper who had opted out: the suppression list held their id; the erasure removes it
    // and keeps only the digest.
    let opted = platform
        .http
        .post(format!("{}/v1/tenants/{}/suppressions", platform.control_plane_url, a.tenant_id))
        .bearer_auth(&token_a)
        .json(&json!({ "shopper_id": "shp_opted_out", "reason": "opt_out" }))
        .send()
        .await?;
    assert_eq!(opted.status(), 201);
    assert_eq!(postgres_hits(&platform, "shp_opted_out").await?, ["suppressions"]);
    let (status, request) = file(&platform, &a.tenant_id, &token_a, "shp_opted_out").await?;
    assert_eq!(status, 202, "{request}");
    let postgres = request["steps"].as_array().expect("steps").iter().find(|s| s["store"] == "postgres").cloned();
    let postgres = postgres.expect("the postgres step");
    assert_eq!(postgres["status"], "erased", "{request}");
    assert_eq!(postgres["removed"]["suppressions.shopper_id"], 1, "{request}");
    assert_eq!(postgres_hits(&platform, "shp_opted_out").await?, Vec::<String>::new());
    let (_, list) = get(&platform, &format!("/v1/tenants/{}/suppressions", a.tenant_id), &token_a).await?;
    let erased = list["items"].as_array().expect("items").iter().find(|i| i["reason"] == "erasure").cloned();
    assert_eq!(erased.expect("the erased shopper's suppression")["shopper_id"], Value::Null);
    platform.shutdown().await
}

/// A shopper's events: browsing, then logging in with the e-mail address hashed to `email`.
fn identified(shopper: &str, email: &str) -> Value {
    let mut visit = browsing(shopper);
    let identify = json!({
        "event_id": uuid::Uuid::new_v4().to_string(),
        "type": "identify",
        "shopper_id": shopper,
        "occurred_at": chrono::Utc::now().to_rfc3339(),
        "properties": { "customer_ref": "customer-1", "email_sha256": email },
    });
    visit["events"].as_array_mut().expect("events").push(identify);
    visit
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_by_email_hash_erases_every_shopper_identified_with_it_but_the_held() -> anyhow::Result<()> {
    use sha2::{Digest, Sha256};
    let platform = Platform::start().await?;
    let owner = format!("owner-{}@example.com", unique_suffix());
    let store = platform.sign_up_as("Email Store", &[ORIGIN], &owner).await?;
    platform.wait_for_key(&store.publishable_key, ORIGIN).await?;
    let token = platform.login(&owner, None).await?.access_token;
    let tenant: nudge_tenants::TenantId = store.tenant_id.parse()?;
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let email = hex(&Sha256::digest(b"ada@example.com"));
    let other_email = hex(&Sha256::digest(b"grace@example.com"));
    let suffix = unique_suffix();
    // Ada on her laptop and her phone, and on a third device under a legal hold; Grace.
    let (laptop, phone, held, grace) = (
        format!("shp_laptop_{suffix}"),
        format!("shp_phone_{suffix}"),
        format!("shp_held_{suffix}"),
        format!("shp_grace_{suffix}"),
    );
    for (shopper, address) in [(&laptop, &email), (&phone, &email), (&held, &email), (&grace, &other_email)] {
        let posted = platform.post_events(&store.publishable_key, Some(ORIGIN), &identified(shopper, address)).await?;
        assert_eq!(posted.status(), 202);
    }
    let digest = |shopper: &str| -> anyhow::Result<String> {
        Ok(nudge_contracts::subject_digest(tenant.as_uuid(), &ShopperId::parse(shopper)?))
    };
    let index = nudge_data_plane_features::store::email_key(
        &platform.redis_prefix,
        tenant,
        &nudge_contracts::email_digest(tenant.as_uuid(), &email),
    );
    let client = redis::Client::open(platform.redis_url.as_str())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let mut linked = 0;
    for _ in 0..300 {
        linked = redis.scard::<_, usize>(&index).await?;
        if linked == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(linked == 3, "the address should lead to three shoppers, not {linked}");
    // Nudge keeps the store's hash nowhere: only its digest in this store.
    assert_eq!(redis_hits(&platform, &email).await?, Vec::<String>::new());
    let hold: Value = platform
        .http
        .post(format!("{}/v1/tenants/{}/legal-holds", platform.control_plane_url, store.tenant_id))
        .bearer_auth(&token)
        .json(&json!({ "name": "Case 2026-200 fraud review", "shopper_id": held }))
        .send()
        .await?
        .json()
        .await?;

    // Filed by the hash (in capitals, as some systems print it).
    let file_email = |hash: String| {
        platform
            .http
            .post(format!("{}/v1/tenants/{}/erasures", platform.control_plane_url, store.tenant_id))
            .bearer_auth(&token)
            .json(&json!({ "email_sha256": hash }))
            .send()
    };
    let response = file_email(email.to_ascii_uppercase()).await?;
    assert_eq!(response.status(), 202);
    let request: Value = response.json().await?;
    assert_eq!(request["scope"], "email", "{request}");
    assert_eq!(request["subject_digest"], nudge_contracts::email_digest(tenant.as_uuid(), &email).as_str());
    let request_id = request["request_id"].as_str().expect("a request id").to_owned();
    let done = completed(&platform, &store.tenant_id, &token, &request_id).await?;
    let steps = done["steps"].as_array().expect("steps");
    let cell = steps.iter().find(|s| s["store"] == "cell:shared-1").expect("the cell's step");
    let mut erased = vec![digest(&laptop)?, digest(&phone)?];
    erased.sort();
    let mut found: Vec<String> =
        cell["subjects"].as_array().expect("subjects").iter().filter_map(|s| s.as_str().map(str::to_owned)).collect();
    found.sort();
    assert_eq!(found, erased, "{done}");
    assert_eq!(cell["held_subjects"], json!([digest(&held)?]), "{done}");
    assert_eq!(cell["removed"]["redis.session"], 2, "{done}");
    assert_eq!(cell["removed"]["redis.data_key"], 2, "{done}");
    assert_eq!(cell["removed"]["kafka.features.v1.tombstones"], 2, "{done}");
    assert_eq!(cell["removed"]["redis.email_index"], 2, "one link each: {done}");
    assert!(steps.iter().any(|s| s["store"] == "postgres" && s["status"] != "pending"), "{done}");

    // The two devices are gone from Redis; the held one and Grace are not. Both erased
    // shoppers are suppressed from now on, and their snapshots are tombstones.
    assert_eq!(redis_hits(&platform, &laptop).await?, Vec::<String>::new());
    assert_eq!(redis_hits(&platform, &phone).await?, Vec::<String>::new());
    assert!(!redis_hits(&platform, &held).await?.is_empty(), "a held shopper is kept");
    assert!(!redis_hits(&platform, &grace).await?.is_empty(), "another address's shopper is kept");
    let (_, list) = get(&platform, &format!("/v1/tenants/{}/suppressions", store.tenant_id), &token).await?;
    let suppressed: Vec<&str> =
        list["items"].as_array().expect("items").iter().filter_map(|i| i["subject_digest"].as_str()).collect();
    for shopper in [&laptop, &phone] {
        assert!(suppressed.contains(&digest(shopper)?.as_str()), "{shopper} is suppressed: {list}");
        let key = SubjectKey { tenant_id: store.tenant_id.clone(), subject_digest: digest(shopper)? }.encode_to_vec();
        assert_eq!(latest_snapshot(&platform, &key).await?, Some(None), "a tombstone for {shopper}");
    }
    assert!(!suppressed.contains(&digest(&held)?.as_str()), "the held shopper is not suppressed");
    assert_eq!(suppressed.len(), 2, "the address is not listed as a shopper: {list}");

    // The receipt names the shoppers erased and the one kept, with its hold; no shopper id
    // and no hash of the address.
    let receipt_path = format!("/v1/tenants/{}/erasures/{request_id}/receipt", store.tenant_id);
    let (status, receipt) = get(&platform, &receipt_path, &token).await?;
    assert_eq!(status, 200, "{receipt}");
    verify_receipt(&platform, &receipt).await?;
    let text = receipt["receipt"].as_str().expect("text");
    let body: Value = serde_json::from_str(text)?;
    assert_eq!((body["scope"].as_str(), body["outcome"].as_str()), (Some("email"), Some("erased")), "{body}");
    assert_eq!(body["subjects_erased"], json!(erased), "{body}");
    assert_eq!(body["subjects_held"][0]["subject_digest"], digest(&held)?.as_str(), "{body}");
    assert_eq!(body["subjects_held"][0]["hold"], "Case 2026-200 fraud review", "{body}");
    assert_eq!(body["subjects_held"][0]["hold_id"], hold["hold_id"], "{body}");
    for secret in [&laptop, &phone, &held, &email] {
        assert!(!text.contains(secret.as_str()), "the receipt holds {secret}");
    }

    // Filing it again (in lowercase): the same request.
    let again = file_email(email.clone()).await?;
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await?["request_id"], request_id.as_str());

    // A new device logging in with the erased address is not linked to it: the identify is
    // dropped at ingest (its browsing is not; it is no one's).
    let newcomer = format!("shp_new_{suffix}");
    assert_eq!(
        platform.post_events(&store.publishable_key, Some(ORIGIN), &identified(&newcomer, &email)).await?.status(),
        202
    );
    let session = SessionKey { tenant, shopper: ShopperId::parse(&newcomer)? };
    let mut applied = false;
    for _ in 0..300 {
        if redis.exists::<_, bool>(session.redis_key(&platform.redis_prefix)).await? {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(applied, "the newcomer's browsing was never applied");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(redis.smembers::<_, Vec<String>>(&index).await?, vec![digest(&held)?], "only the held shopper stays");

    // Once the hold is released, the shopper it kept is erased by the digest the receipt
    // names.
    let hold_id = hold["hold_id"].as_str().expect("a hold id");
    let released = platform
        .http
        .delete(format!("{}/v1/tenants/{}/legal-holds/{hold_id}", platform.control_plane_url, store.tenant_id))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(released.status(), 204);
    let response = platform
        .http
        .post(format!("{}/v1/tenants/{}/erasures", platform.control_plane_url, store.tenant_id))
        .bearer_auth(&token)
        .json(&json!({ "subject_digest": digest(&held)? }))
        .send()
        .await?;
    assert_eq!(response.status(), 202);
    let request: Value = response.json().await?;
    let done = completed(&platform, &store.tenant_id, &token, request["request_id"].as_str().expect("id")).await?;
    let cell = done["steps"].as_array().expect("steps").iter().find(|s| s["store"] == "cell:shared-1").cloned();
    assert_eq!(cell.expect("the cell's step")["status"], "erased", "{done}");
    assert_eq!(redis_hits(&platform, &held).await?, Vec::<String>::new());

    // A hold on the whole store refuses an erasure by e-mail, naming it; another store
    // cannot file for this one.
    let store_hold = platform
        .http
        .post(format!("{}/v1/tenants/{}/legal-holds", platform.control_plane_url, store.tenant_id))
        .bearer_auth(&token)
        .json(&json!({ "name": "Regulator inquiry R-9" }))
        .send()
        .await?;
    assert_eq!(store_hold.status(), 201);
    let refused = file_email(other_email.clone()).await?;
    assert_eq!(refused.status(), 409);
    assert_eq!(refused.json::<Value>().await?["error"]["details"]["name"], "Regulator inquiry R-9");
    let other_owner = format!("other-{}@example.com", unique_suffix());
    platform.sign_up_as("Other Store", &["https://other.example.com"], &other_owner).await?;
    let other_token = platform.login(&other_owner, None).await?.access_token;
    let foreign = platform
        .http
        .post(format!("{}/v1/tenants/{}/erasures", platform.control_plane_url, store.tenant_id))
        .bearer_auth(&other_token)
        .json(&json!({ "email_sha256": other_email }))
        .send()
        .await?;
    assert_eq!(foreign.status(), 404);

    // Bad hashes are refused with the field named.
    for bad in [json!({ "email_sha256": "ada@example.com" }), json!({ "email_sha256": email, "shopper_id": "shp_x" })] {
        let response = platform
            .http
            .post(format!("{}/v1/tenants/{}/erasures", platform.control_plane_url, store.tenant_id))
            .bearer_auth(&token)
            .json(&bad)
            .send()
            .await?;
        assert_eq!(response.status(), 422, "{bad}");
        assert_eq!(response.json::<Value>().await?["error"]["code"], "invalid_fields");
    }
    platform.shutdown().await
}
