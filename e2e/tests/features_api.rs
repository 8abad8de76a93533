//! The feature read API: a store's server reads a shopper's features as the pipeline keeps
//! them, one or many at once, with a `features:read` key; another store's key does not see
//! them, a key without the scope is refused, and bad input gets its code.

mod common;

use std::time::Duration;

use nudge_test_support::{Platform, unique_suffix};
use serde_json::{Value, json};

const ORIGIN: &str = "https://shop.example.com";

/// A signed-up store and a secret key with `scopes`, once the cell knows the key.
async fn store_with_key(platform: &Platform, name: &str, scopes: &[&str]) -> anyhow::Result<(String, String, String)> {
    let owner = format!("owner-{}@example.com", unique_suffix());
    let store = platform.sign_up_as(name, &[ORIGIN], &owner).await?;
    platform.wait_for_key(&store.publishable_key, ORIGIN).await?;
    let secret = platform.create_secret_key(&owner, &store.tenant_id, scopes).await?;
    // The cell knows the key once it answers anything but 401.
    for _ in 0..200 {
        if get(platform, &secret, "shp_probe").await?.0 != 401 {
            return Ok((store.publishable_key, secret, store.secret_key));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the cell never accepted the new secret key")
}

async fn get(platform: &Platform, secret: &str, shopper: &str) -> anyhow::Result<(u16, Value)> {
    let r = platform
        .http
        .get(format!("{}/v1/shoppers/{shopper}/features", platform.cell_url))
        .bearer_auth(secret)
        .send()
        .await?;
    Ok((r.status().as_u16(), r.json().await.unwrap_or(Value::Null)))
}

async fn post(platform: &Platform, secret: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
    let r = platform
        .http
        .post(format!("{}/v1/shoppers/features", platform.cell_url))
        .bearer_auth(secret)
        .json(body)
        .send()
        .await?;
    Ok((r.status().as_u16(), r.json().await.unwrap_or(Value::Null)))
}

#[tokio::test]
async fn a_store_reads_its_shoppers_features_and_nobody_elses() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let (pk_a, reader_a, writer_a) = store_with_key(&platform, "Store A", &["features:read"]).await?;
    let (_, reader_b, _) = store_with_key(&platform, "Store B", &["features:read"]).await?;

    let shopper = format!("shp_{}", unique_suffix());
    let (browsing, exit) = common::abandoning_session(&shopper);
    for batch in [&browsing, &exit] {
        let r = platform.post_events(&pk_a, Some(ORIGIN), batch).await?;
        anyhow::ensure!(r.status() == 202, "{}", r.text().await?);
    }
    platform.wait_processed(10).await?;

    // The features the pipeline scored the exit with (golden row e2e_exit_with_cart), with
    // the two clocks running on to now.
    let (status, one) = get(&platform, &reader_a, &shopper).await?;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["shopper_id"], shopper.as_str());
    assert_eq!(one["feature_set"], "cart_session@1");
    let f = &one["features"];
    let expected = [
        ("cart_value", 129.0),
        ("cart_items", 2.0),
        ("page_views", 4.0),
        ("product_views", 3.0),
        ("cart_adds", 2.0),
        ("cart_removes", 0.0),
        ("checkout_started", 0.0),
        ("exit_intents", 1.0),
    ];
    for (name, value) in expected {
        assert_eq!(f[name].as_f64(), Some(value), "{name} in {one}");
    }
    assert!(f["session_seconds"].as_f64().unwrap_or(0.0) >= 185.0, "{one}");
    assert!(f["seconds_since_last_activity"].as_f64().is_some(), "{one}");
    assert!(one["as_of_ms"].as_i64() >= one["last_event_ms"].as_i64(), "{one}");

    // Batched: the shoppers with a session, and the ids without one.
    let (status, many) = post(&platform, &reader_a, &json!({"shopper_ids": [shopper, "shp_never_seen"]})).await?;
    assert_eq!(status, 200, "{many}");
    let found = many["shoppers"].as_array().cloned().unwrap_or_default();
    assert_eq!(found.len(), 1, "{many}");
    assert_eq!(found[0]["shopper_id"], shopper.as_str());
    assert_eq!(found[0]["features"]["cart_value"].as_f64(), Some(129.0));
    assert_eq!(many["not_found"], json!(["shp_never_seen"]));
    assert_eq!(get(&platform, &reader_a, "shp_never_seen").await?.0, 404);

    // Another store's key: the same shopper id is not found, one or many.
    let (status, other) = get(&platform, &reader_b, &shopper).await?;
    assert_eq!((status, other["error"]["code"].as_str()), (404, Some("shopper_not_found")), "{other}");
    let (status, other) = post(&platform, &reader_b, &json!({"shopper_ids": [shopper]})).await?;
    assert_eq!(status, 200);
    assert_eq!(other["shoppers"], json!([]), "store B sees store A's shopper: {other}");
    assert_eq!(other["not_found"], json!([shopper]));

    // Keys: without the scope, a publishable key, none.
    let (status, body) = get(&platform, &writer_a, &shopper).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("missing_scope")), "{body}");
    let (status, body) = get(&platform, &pk_a, &shopper).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("missing_key")), "{body}");

    // Bad input.
    let (status, body) = get(&platform, &reader_a, "a%20b").await?;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_shopper_id")), "{body}");
    let (status, body) = post(&platform, &reader_a, &json!({"shopper_ids": []})).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("no_shoppers")), "{body}");
    let ids: Vec<String> = (0..101).map(|i| format!("shp_{i}")).collect();
    let (status, body) = post(&platform, &reader_a, &json!({"shopper_ids": ids})).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("too_many_shoppers")), "{body}");
    let (status, body) = post(&platform, &reader_a, &json!({"shoppers": ["shp_1"]})).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("malformed_json")), "{body}");

    platform.shutdown().await
}

#[tokio::test]
async fn a_feature_whose_stored_field_is_missing_takes_its_default_and_is_counted() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let owner = format!("owner-{}@example.com", unique_suffix());
    let store = platform.sign_up_as("Missing", &[ORIGIN], &owner).await?;
    platform.wait_for_key(&store.publishable_key, ORIGIN).await?;
    let reader = platform.create_secret_key(&owner, &store.tenant_id, &["features:read"]).await?;

    let shopper = format!("shp_{}", unique_suffix());
    let (browsing, exit) = common::abandoning_session(&shopper);
    let r = platform.post_events(&store.publishable_key, Some(ORIGIN), &browsing).await?;
    anyhow::ensure!(r.status() == 202, "{}", r.text().await?);
    let browsed = browsing["events"].as_array().map_or(0, Vec::len) as u64;
    platform.wait_processed(browsed).await?;
    assert_eq!(common::cell_metric(&platform, "nudge_cell_pipeline_features_defaulted_total").await?, 0.0);

    // The stored session loses a field (as a session written by an older layout would).
    let mut redis = redis::Client::open(platform.redis_url.as_str())?.get_multiplexed_async_connection().await?;
    let key = format!("{}t:{}:session:{shopper}", platform.redis_prefix, store.tenant_id);
    let removed: i64 = redis::cmd("HDEL").arg(&key).arg("first_seen_ms").query_async(&mut redis).await?;
    assert_eq!(removed, 1, "the session is stored under {key}");

    // Read: the visit's length takes its declared default (without the start, a visit
    // would otherwise count from 1970), the features from fields still stored are as before.
    let (status, body) = get(&platform, &reader, &shopper).await?;
    assert_eq!(status, 200, "{body}");
    let default = nudge_data_plane_features::definitions::CART_SESSION
        .features
        .iter()
        .find(|f| f.name == "session_seconds")
        .map(|f| f64::from(f.default));
    assert_eq!(body["features"]["session_seconds"].as_f64(), default, "{body}");
    assert_eq!(body["features"]["page_views"].as_f64(), Some(4.0), "{body}");

    // Scoring the next events counts each defaulted feature once per event.
    let r = platform.post_events(&store.publishable_key, Some(ORIGIN), &exit).await?;
    anyhow::ensure!(r.status() == 202, "{}", r.text().await?);
    platform.wait_processed(browsed + exit["events"].as_array().map_or(0, Vec::len) as u64).await?;
    assert!(common::cell_metric(&platform, "nudge_cell_pipeline_features_defaulted_total").await? >= 1.0);

    platform.shutdown().await
}
