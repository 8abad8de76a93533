//! Moving a store to a dedicated database while its members keep writing: every
//! acknowledged write is there exactly once, nothing of it is left in the shared database,
//! other stores are untouched, and the store is served by a cell of its own, started by the
//! local provisioner as a process of the real cell binary (its outbox now relayed from the
//! new database, its announcements moving it off the shared cell).

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use nudge_test_support::{OPERATOR_TOKEN, Platform, unique_suffix};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};

const ORIGIN: &str = "https://big.example.com";
const WRITERS: usize = 4;
/// Writes each writer makes after the move has finished.
const AFTER_MOVE: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_moves_to_its_own_database_under_concurrent_writes() -> anyhow::Result<()> {
    let platform = Arc::new(Platform::start().await?);
    let owner = format!("owner-{}@example.com", unique_suffix());
    let big = platform.sign_up_as("Big Store", &[ORIGIN], &owner).await?;
    let other = platform.sign_up_ready("Small Store", "https://small.example.com").await?;
    platform.wait_for_key(&big.publishable_key, ORIGIN).await?;
    // A shopper on the store's page, socket open on the shared cell through the move.
    let mut shopper = platform.connect_shopper(&big.publishable_key, ORIGIN, "shp_on_page").await?;
    let tokens = platform.login(&owner, None).await?;
    let keys_url = format!("{}/v1/tenants/{}/api-keys", platform.control_plane_url, big.tenant_id);
    // A campaign, saved twice: its versions and audit reference it, so the move must copy it
    // before them.
    let campaigns_url = format!("{}/v1/tenants/{}/campaigns", platform.control_plane_url, big.tenant_id);
    let campaign = json!({
        "name": "Moved along",
        "trigger": { "type": "exit_intent" },
        "variants": [{ "name": "a", "weight": 100, "messages": [
            { "channel": "on_site", "kind": "message", "title": "Hello", "body": "Still there?" },
        ]}],
    });
    let created: Value = platform
        .http
        .post(&campaigns_url)
        .bearer_auth(&tokens.access_token)
        .json(&campaign)
        .send()
        .await?
        .json()
        .await?;
    let campaign_url = format!("{campaigns_url}/{}", created["campaign_id"].as_str().unwrap_or_default());
    let saved = platform.http.put(&campaign_url).bearer_auth(&tokens.access_token).json(&campaign).send().await?;
    assert_eq!(saved.status(), 200);

    // Writers create keys and keep the names of those acknowledged; a refusal while the
    // store moves (503 tenant_moving) is retried, as a client would.
    let moved_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (platform, url, token) = (platform.clone(), keys_url.clone(), tokens.access_token.clone());
        let moved_flag = moved_flag.clone();
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut refusals = 0;
            let mut after = 0;
            // Write until the move is over, then a few more.
            for k in 0.. {
                if moved_flag.load(std::sync::atomic::Ordering::Acquire) {
                    after += 1;
                    if after > AFTER_MOVE {
                        break;
                    }
                }
                let name = format!("w{w}-k{k}");
                loop {
                    let r = platform
                        .http
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&json!({"name": name, "scopes": ["events:write"]}))
                        .send()
                        .await?;
                    match r.status().as_u16() {
                        201 => {
                            acknowledged.push(name.clone());
                            break;
                        }
                        503 => {
                            let body: Value = r.json().await?;
                            anyhow::ensure!(body["error"]["code"] == "tenant_moving", "{body}");
                            refusals += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        other => anyhow::bail!("writer {w} got {other}: {}", r.text().await?),
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            anyhow::Ok((acknowledged, refusals))
        }));
    }

    // Move once the writers are under way.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let moved: Value = platform
        .http
        .post(format!("{}/v1/admin/tenants/{}/isolation", platform.control_plane_url, big.tenant_id))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"isolation": "dedicated"}))
        .send()
        .await?
        .json()
        .await?;
    moved_flag.store(true, std::sync::atomic::Ordering::Release);
    assert_eq!(moved["moved"], true, "{moved}");
    let database = moved["database"].as_str().unwrap_or_default().to_owned();
    assert!(database.starts_with("nudge_t_"));
    let big_uuid = big.tenant_id.trim_start_matches("tnt_").to_owned();
    assert_eq!(moved["cell_id"], format!("ded-{big_uuid}"), "{moved}");
    let dedicated_cell = moved["cell_url"].as_str().unwrap_or_default().to_owned();
    assert_ne!(dedicated_cell, platform.cell_url);

    let mut acknowledged = BTreeSet::new();
    let mut refusals = 0;
    for w in writers {
        let (names, refused) = w.await??;
        refusals += refused;
        for n in names {
            assert!(acknowledged.insert(n), "a name acknowledged twice");
        }
    }
    assert!(acknowledged.len() > WRITERS * AFTER_MOVE);
    println!("writes refused while moving: {refusals}; rows copied: {}", moved["rows"]);

    // Through the API (now served from the dedicated database): every acknowledged key, once.
    let listed: Value = platform.http.get(&keys_url).bearer_auth(&tokens.access_token).send().await?.json().await?;
    let names: Vec<String> = listed["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| k["kind"] == "secret" && k["name"] != "default")
        .map(|k| k["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    let unique: BTreeSet<String> = names.iter().cloned().collect();
    assert_eq!(names.len(), unique.len(), "no key twice");
    assert_eq!(unique, acknowledged, "no acknowledged key lost, none invented");
    let moved_campaign: Value =
        platform.http.get(&campaign_url).bearer_auth(&tokens.access_token).send().await?.json().await?;
    assert_eq!(moved_campaign["version"], 2, "the campaign and its versions moved: {moved_campaign}");

    // In the databases themselves: the dedicated one holds the store; the shared one keeps
    // only the fence, and still holds the other store.
    let owner_url =
        |db: &str| platform.db.owner_url.rsplit_once('/').map(|(base, _)| format!("{base}/{db}")).unwrap_or_default();
    let mut dedicated = PgConnection::connect(&owner_url(&database)).await?;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE kind = 'secret' AND name <> 'default'")
        .fetch_one(&mut dedicated)
        .await?;
    assert_eq!(rows as usize, acknowledged.len());
    // The writes straddle the move: some committed in the shared database before the fence,
    // some in the dedicated one after the flip.
    let mut shared_for_fence = PgConnection::connect(&platform.db.owner_url).await?;
    let fenced_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT fenced_at FROM tenant_fences WHERE replace(tenant_id::text, '-', '') = $1")
            .bind(big.tenant_id.trim_start_matches("tnt_"))
            .fetch_one(&mut shared_for_fence)
            .await?;
    let (before, after): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE created_at < $1), count(*) FILTER (WHERE created_at > $1)
         FROM api_keys WHERE kind = 'secret' AND name <> 'default'",
    )
    .bind(fenced_at)
    .fetch_one(&mut dedicated)
    .await?;
    assert!(before > 0 && after > 0, "writes before the fence ({before}) and after the flip ({after})");
    drop(shared_for_fence);
    let mut shared = PgConnection::connect(&platform.db.owner_url).await?;
    for table in ["tenants", "api_keys", "tenant_origins", "tenant_audit"] {
        let left: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE replace(tenant_id::text, '-', '') = $1"))
                .bind(&big_uuid)
                .fetch_one(&mut shared)
                .await?;
        assert_eq!(left, 0, "{table} still holds the moved store's rows");
    }
    let other_uuid = other.tenant_id.trim_start_matches("tnt_").to_owned();
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE replace(tenant_id::text, '-', '') = $1")
        .bind(&other_uuid)
        .fetch_one(&mut shared)
        .await?;
    assert_eq!(kept, 2, "the other store is untouched");
    assert!(nudge_control_plane::catalog::lint(&mut dedicated, "nudge_app").await?.is_empty());

    // The store's own cell serves it (once it has heard the announcement), the shared cell
    // no longer does but still serves the other store, and changes made in the new database
    // reach the store's cell.
    let batch = json!({"events": [{"event_id": "after-move", "type": "page_view", "shopper_id": "shp_1"}]});
    let mut served = false;
    for _ in 0..200 {
        if platform.post_events_to(&dedicated_cell, &big.publishable_key, Some(ORIGIN), &batch).await?.status() == 202 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "the dedicated cell at {dedicated_cell} serves the store");
    // The shared cell forgets the store and points its requests (an old snippet URL) to
    // the store's cell.
    let mut pointed = Value::Null;
    for _ in 0..100 {
        let response = platform.post_events(&big.publishable_key, Some(ORIGIN), &batch).await?;
        if response.status() == 421 {
            assert_eq!(response.headers()["access-control-allow-origin"], ORIGIN, "readable by the page");
            pointed = response.json().await?;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pointed["error"]["code"], "tenant_moved", "{pointed}");
    assert_eq!(pointed["error"]["details"]["cell_url"], dedicated_cell.as_str());
    // The open socket is told to go (4009) rather than refused for good (4003).
    assert_eq!(shopper.closed(Duration::from_secs(10)).await?, Some(4009));
    // The control plane serves the new route to the store's members.
    let profile: Value = platform
        .http
        .get(format!("{}/v1/tenants/{}", platform.control_plane_url, big.tenant_id))
        .bearer_auth(&tokens.access_token)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        (profile["cell_id"].as_str(), profile["cell_url"].as_str()),
        (moved["cell_id"].as_str(), Some(dedicated_cell.as_str()))
    );
    let small = json!({"events": [{"event_id": "small-1", "type": "page_view", "shopper_id": "shp_2"}]});
    let small_origin = "https://small.example.com";
    assert_eq!(platform.post_events(&other.publishable_key, Some(small_origin), &small).await?.status(), 202);
    let audit = platform.transition(&big.tenant_id, "suspended", "checking the move").await?;
    assert_eq!(audit.status(), 200);
    let mut suspended = false;
    for _ in 0..100 {
        if platform.post_events_to(&dedicated_cell, &big.publishable_key, Some(ORIGIN), &batch).await?.status() == 403 {
            suspended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(suspended, "a change made in the dedicated database reaches the cell");
    let log: Value = platform
        .http
        .get(format!("{}/v1/admin/tenants/{}/audit", platform.control_plane_url, big.tenant_id))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(log["entries"].as_array().map(Vec::len), Some(4), "the audit log moved with the store: {log}");

    // Moving again changes nothing.
    let again: Value = platform
        .http
        .post(format!("{}/v1/admin/tenants/{}/isolation", platform.control_plane_url, big.tenant_id))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"isolation": "dedicated"}))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(again["moved"], false);
    assert_eq!(again["cell_url"], dedicated_cell, "the same cell, still running");

    // Offboarded with no grace period, the store is purged: its cell erases it and is
    // stopped, what remains of it (its row, audit trails, receipt) returns to the main
    // database, and its dedicated database is dropped.
    let offboarding = format!("{}/v1/admin/tenants/{}/offboarding", platform.control_plane_url, big.tenant_id);
    let started = platform
        .http
        .post(&offboarding)
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"reason": "contract ended", "grace_days": 0}))
        .send()
        .await?;
    assert_eq!(started.status(), 202, "{}", started.text().await?);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let done = loop {
        let body: Value = platform.http.get(&offboarding).bearer_auth(OPERATOR_TOKEN).send().await?.json().await?;
        if body["state"] == "deleted" {
            break body;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "not purged within 60 s: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let steps: BTreeSet<(String, String)> = done["purge"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (s["store"].as_str().unwrap_or_default().to_owned(), s["status"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        (format!("cell:{}", moved["cell_id"].as_str().unwrap_or_default()), "erased".to_owned()),
        (format!("database:{database}"), "erased".to_owned()),
        ("postgres".to_owned(), "erased".to_owned()),
        ("vault".to_owned(), "erased".to_owned()),
    ]
    .into();
    assert_eq!(steps, expected, "{done}");
    let mut main = PgConnection::connect(&platform.db.owner_url).await?;
    let gone: bool = sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&database)
        .fetch_one(&mut main)
        .await?;
    assert!(gone, "the dedicated database is dropped");
    let (state, receipts): (String, i64) = sqlx::query_as(
        "SELECT t.state, (SELECT count(*) FROM erasure_requests r WHERE r.tenant_id = t.tenant_id AND r.receipt IS NOT NULL)
         FROM tenants t WHERE replace(t.tenant_id::text, '-', '') = $1",
    )
    .bind(&big_uuid)
    .fetch_one(&mut main)
    .await?;
    assert_eq!((state.as_str(), receipts), ("deleted", 1), "the store's row and receipt are in the main database");
    let routed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenant_routes WHERE replace(tenant_id::text, '-', '') = $1")
            .bind(&big_uuid)
            .fetch_one(&mut main)
            .await?;
    assert_eq!(routed, 0, "no route to a dropped database");
    let mut stopped = false;
    for _ in 0..100 {
        if platform.http.get(format!("{dedicated_cell}/readyz")).send().await.is_err() {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stopped, "the store's cell process is stopped");

    drop(dedicated);
    drop(shared);
    let platform = Arc::into_inner(platform).ok_or_else(|| anyhow::anyhow!("writers still hold the platform"))?;
    let admin_url =
        platform.db.owner_url.rsplit_once('/').map(|(base, _)| format!("{base}/postgres")).unwrap_or_default();
    platform.shutdown().await?;
    let mut admin = PgConnection::connect(&admin_url).await?;
    admin.execute(format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)").as_str()).await?;
    Ok(())
}
