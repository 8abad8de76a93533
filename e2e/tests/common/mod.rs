//! Shared fixtures of the end-to-end tests.
#![allow(dead_code)] // each test binary uses a different part of the fixtures

pub mod visitor;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

/// The golden row the end-to-end session must reproduce.
pub const GOLDEN_ROW: &str = "e2e_exit_with_cart";

/// The Python onnxruntime output and features for a named golden row of the default model.
pub fn golden(name: &str) -> (Vec<f32>, f64) {
    golden_in(include_str!("../../../model/cart_abandonment/v1/golden.json"), name)
}

/// The same for the gradient-boosted trees.
pub fn golden_gbdt(name: &str) -> (Vec<f32>, f64) {
    golden_in(include_str!("../../../model/cart_abandonment_gbdt/v1/golden.json"), name)
}

fn golden_in(text: &str, name: &str) -> (Vec<f32>, f64) {
    let golden: Value = serde_json::from_str(text).expect("golden.json parses");
    let row = golden["rows"].as_array().expect("rows").iter().find(|r| r["name"] == name).expect("row exists");
    let features =
        row["features"].as_array().expect("features").iter().map(|v| v.as_f64().expect("number") as f32).collect();
    (features, row["probability"].as_f64().expect("probability"))
}

fn event(n: usize, shopper: &str, start: DateTime<Utc>, at_s: i64, kind: &str, properties: Value) -> Value {
    json!({
        "event_id": format!("{shopper}-e{n}"),
        "type": kind,
        "shopper_id": shopper,
        "occurred_at": (start + Duration::seconds(at_s)).to_rfc3339(),
        "properties": properties,
    })
}

/// A realistic session: browse, add a tent (79.00) and a stove (50.00), then move to leave.
/// Its features at the exit are exactly golden row `e2e_exit_with_cart`. The first batch is
/// the browsing; the second is the exit intent, sent alone as the snippet does.
pub fn abandoning_session(shopper: &str) -> (Value, Value) {
    let start = Utc::now() - Duration::seconds(200);
    let view = |id: &str, price: f64| json!({"product_id": id, "price": price, "currency": "EUR"});
    let add = |id: &str, price: f64| json!({"product_id": id, "price": price, "currency": "EUR", "quantity": 1});
    let browsing = vec![
        event(1, shopper, start, 0, "page_view", json!({"url": "https://shop.example.com/"})),
        event(2, shopper, start, 20, "product_view", view("tent-2p", 79.0)),
        event(3, shopper, start, 45, "page_view", json!({"url": "https://shop.example.com/tents"})),
        event(4, shopper, start, 60, "product_view", view("tent-2p", 79.0)),
        event(5, shopper, start, 80, "add_to_cart", add("tent-2p", 79.0)),
        event(6, shopper, start, 110, "page_view", json!({"url": "https://shop.example.com/stoves"})),
        event(7, shopper, start, 125, "product_view", view("stove", 50.0)),
        event(8, shopper, start, 135, "page_view", json!({"url": "https://shop.example.com/stoves/1"})),
        event(9, shopper, start, 143, "add_to_cart", add("stove", 50.0)),
    ];
    let exit = vec![event(10, shopper, start, 185, "exit_intent", json!({}))];
    (json!({ "events": browsing }), json!({ "events": exit }))
}

/// The storefront origin the helpers below send from.
pub const ORIGIN: &str = "https://shop.example.com";

/// Plays the golden session for `shoppers` shoppers (`shp_{tag}_{i}`), a few at a time;
/// the number of events sent.
pub async fn stream_sessions(
    platform: &nudge_test_support::Platform,
    key: &str,
    tag: &str,
    shoppers: usize,
) -> anyhow::Result<usize> {
    let mut sent = 0;
    for i in 0..shoppers {
        let (browsing, exit) = abandoning_session(&format!("shp_{tag}_{i}"));
        for batch in [&browsing, &exit] {
            let r = platform.post_events(key, Some(ORIGIN), batch).await?;
            anyhow::ensure!(r.status() == 202, "{}", r.text().await?);
            sent += batch["events"].as_array().map_or(0, Vec::len);
        }
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    }
    Ok(sent)
}

/// The first `want` records of `topic`, decoded.
pub async fn read_all<M: prost::Message + Default>(
    platform: &nudge_test_support::Platform,
    topic: nudge_contracts::Topic,
    want: usize,
) -> anyhow::Result<Vec<M>> {
    use rdkafka::{Message as _, consumer::Consumer as _};
    let config = &platform.cell_config.kafka;
    let reader: rdkafka::consumer::StreamConsumer =
        nudge_platform_kafka::reader_consumer(config, &format!("test-{}", nudge_test_support::unique_suffix()))?;
    reader.subscribe(&[config.topics().name(topic).as_str()])?;
    // Every record naming a shopper is sealed with their data key.
    use prost::Message as _;
    let keyring = platform.keyring().await?;
    let schema = match topic {
        nudge_contracts::Topic::Predictions => nudge_contracts::headers::PREDICTION_V1,
        nudge_contracts::Topic::Features => nudge_contracts::headers::FEATURES_V1,
        nudge_contracts::Topic::InterventionCommands => nudge_contracts::headers::INTERVENTION_V1,
        _ => nudge_contracts::headers::EVENT_V1,
    };
    let mut out = Vec::new();
    while out.len() < want {
        let m = tokio::time::timeout(std::time::Duration::from_secs(30), reader.recv()).await??;
        let sealed = nudge_contracts::proto::sealed::v1::Sealed::decode(m.payload().unwrap_or_default())?;
        out.push(keyring.open_message::<M>(&sealed, schema.name).await?);
    }
    Ok(out)
}

/// A counter or gauge of the cell's `/metrics` (0 when absent).
pub async fn cell_metric(platform: &nudge_test_support::Platform, name: &str) -> anyhow::Result<f64> {
    let text = platform.http.get(format!("{}/metrics", platform.cell_url)).send().await?.text().await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0))
}

/// Plays the golden session for a new shopper and returns the model and score of the
/// intervention it gets.
pub async fn reminder(platform: &nudge_test_support::Platform, key: &str) -> anyhow::Result<(String, f64)> {
    use nudge_contracts::push::PushMessage;
    let shopper = format!("shp_{}", nudge_test_support::unique_suffix());
    let mut socket = platform.connect_shopper(key, ORIGIN, &shopper).await?;
    let (browsing, exit) = abandoning_session(&shopper);
    for batch in [&browsing, &exit] {
        let r = platform.post_events(key, Some(ORIGIN), batch).await?;
        anyhow::ensure!(r.status() == 202, "{}", r.text().await?);
    }
    let message = socket.next_message(std::time::Duration::from_secs(30)).await?.expect("an intervention arrives");
    let PushMessage::Intervention(iv) = message else { anyhow::bail!("expected an intervention, got {message:?}") };
    Ok((iv.model_version, iv.score))
}

/// A browsing session whose event ids do not contain the shopper id.
pub fn browsing(shopper: &str) -> serde_json::Value {
    let now = chrono::Utc::now();
    let events: Vec<serde_json::Value> = (0..3)
        .map(|i| {
            json!({
                "event_id": uuid::Uuid::new_v4().to_string(),
                "type": if i == 2 { "add_to_cart" } else { "product_view" },
                "shopper_id": shopper,
                "occurred_at": (now - chrono::Duration::seconds(30 - i)).to_rfc3339(),
                "properties": {"product_id": "tent-2p", "price": 79.0, "currency": "EUR", "quantity": 1},
            })
        })
        .collect();
    json!({ "events": events })
}

/// The latest `features.v1` record of `key`: `Some(None)` for a tombstone.
pub async fn latest_snapshot(
    platform: &nudge_test_support::Platform,
    key: &[u8],
) -> anyhow::Result<Option<Option<Vec<u8>>>> {
    let config = &platform.cell_config.kafka;
    use rdkafka::{Message as _, consumer::Consumer as _};
    let reader: rdkafka::consumer::StreamConsumer =
        nudge_platform_kafka::reader_consumer(config, &format!("test-{}", nudge_test_support::unique_suffix()))?;
    reader.subscribe(&[config.topics().name(nudge_contracts::Topic::Features).as_str()])?;
    let mut latest = None;
    // Read until the topic has been quiet for a while.
    while let Ok(message) = tokio::time::timeout(std::time::Duration::from_secs(3), reader.recv()).await {
        let message = message?;
        if message.key() == Some(key) {
            latest = Some(message.payload().map(<[u8]>::to_vec));
        }
    }
    Ok(latest)
}

/// A record read back from a topic: its topic, key and value (none for a tombstone).
#[allow(dead_code)]
pub type TopicRecord = (String, Vec<u8>, Option<Vec<u8>>);

/// Every record of the cell's `topics` as of now: each partition read up to the high
/// watermark it had when this was called (at most a minute in all), then on until the
/// topics are quiet for a moment (the local broker reports a batch's first offset as the
/// high watermark, so the rest of the last batch follows).
#[allow(dead_code)]
pub async fn read_to_end(
    platform: &nudge_test_support::Platform,
    topics: &[nudge_contracts::Topic],
) -> anyhow::Result<Vec<TopicRecord>> {
    use rdkafka::{Message as _, consumer::Consumer as _};
    let config = &platform.cell_config.kafka;
    let reader: rdkafka::consumer::StreamConsumer =
        nudge_platform_kafka::reader_consumer(config, &format!("test-{}", nudge_test_support::unique_suffix()))?;
    let names: Vec<String> = topics.iter().map(|t| config.topics().name(*t)).collect();
    let timeout = std::time::Duration::from_secs(10);
    let mut open = std::collections::HashMap::new();
    for name in &names {
        let metadata = reader.fetch_metadata(Some(name), timeout)?;
        for topic in metadata.topics() {
            for partition in topic.partitions() {
                let (low, high) = reader.fetch_watermarks(name, partition.id(), timeout)?;
                if high > low {
                    open.insert((name.clone(), partition.id()), high);
                }
            }
        }
    }
    reader.subscribe(&names.iter().map(String::as_str).collect::<Vec<_>>())?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut records = Vec::new();
    while !open.is_empty() {
        let message = tokio::time::timeout_at(deadline, reader.recv())
            .await
            .map_err(|_| anyhow::anyhow!("topics not read to their end within a minute: {open:?} left"))??;
        let at = (message.topic().to_owned(), message.partition());
        if open.get(&at).is_some_and(|high| message.offset() + 1 >= *high) {
            open.remove(&at);
        }
        records.push((
            message.topic().to_owned(),
            message.key().unwrap_or_default().to_vec(),
            message.payload().map(<[u8]>::to_vec),
        ));
    }
    while let Ok(message) = tokio::time::timeout(std::time::Duration::from_millis(1500), reader.recv()).await {
        let message = message?;
        records.push((
            message.topic().to_owned(),
            message.key().unwrap_or_default().to_vec(),
            message.payload().map(<[u8]>::to_vec),
        ));
    }
    Ok(records)
}

/// Checks the receipt's signature against the published public key of its version.
#[allow(dead_code)]
pub async fn verify_receipt(
    platform: &nudge_test_support::Platform,
    receipt: &serde_json::Value,
) -> anyhow::Result<()> {
    use base64::Engine as _;
    let keys: serde_json::Value = platform
        .http
        .get(format!("{}/v1/erasure-receipts/keys", platform.control_plane_url))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(keys["algorithm"], "ed25519");
    let version = receipt["key_version"].as_u64().expect("a key version").to_string();
    let public = base64::engine::general_purpose::STANDARD
        .decode(keys["public_keys"][&version].as_str().expect("the version's public key"))?;
    let signature = nudge_platform_vault::signature_bytes(receipt["signature"].as_str().expect("a signature"))
        .expect("a vault signature");
    let text = receipt["receipt"].as_str().expect("the receipt text");
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public)
        .verify(text.as_bytes(), &signature)
        .map_err(|_| anyhow::anyhow!("the receipt's signature does not verify"))?;
    let mut tampered = text.replace("\"erased\"", "\"nothing_found\"");
    tampered.push(' ');
    assert!(
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public)
            .verify(tampered.as_bytes(), &signature)
            .is_err(),
        "an altered receipt does not verify"
    );
    Ok(())
}

/// Whether any record's key or value contains `needle`.
#[allow(dead_code)]
pub fn contains(records: &[TopicRecord], needle: &[u8]) -> bool {
    let has = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    records.iter().any(|(_, k, v)| has(k) || v.as_deref().is_some_and(has))
}

/// Every record on the cell's topics that hold shopper records, as of now.
#[allow(dead_code)]
pub async fn stream_records(platform: &nudge_test_support::Platform) -> anyhow::Result<Vec<TopicRecord>> {
    read_to_end(
        platform,
        &[
            nudge_contracts::Topic::EventsRaw,
            nudge_contracts::Topic::EventsValidated,
            nudge_contracts::Topic::EventsDlq,
            nudge_contracts::Topic::Features,
            nudge_contracts::Topic::Predictions,
            nudge_contracts::Topic::InterventionCommands,
        ],
    )
    .await
}
