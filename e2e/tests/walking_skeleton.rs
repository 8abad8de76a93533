//! A shopper's event becomes an on-site intervention, through every real component.

mod common;

use std::time::Duration;

use nudge_contracts::push::PushMessage;
use nudge_test_support::Platform;
use redis::AsyncCommands;

use common::{GOLDEN_ROW, abandoning_session, golden};

const ORIGIN: &str = "https://shop.example.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoning_shopper_receives_a_reminder_scored_like_python() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let tenant = platform.sign_up_ready("Acme Outdoor", ORIGIN).await?;
    assert_eq!(tenant.state, "active");
    assert!(tenant.secret_key.starts_with("sk_"));

    let shopper = "shp_e2e_1";
    let mut socket = platform.connect_shopper(&tenant.publishable_key, ORIGIN, shopper).await?;

    let (browsing, exit) = abandoning_session(shopper);
    let r = platform.post_events(&tenant.publishable_key, Some(ORIGIN), &browsing).await?;
    assert_eq!(r.status(), 202, "{}", r.text().await?);
    let r = platform.post_events(&tenant.publishable_key, Some(ORIGIN), &exit).await?;
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["access-control-allow-origin"], ORIGIN);
    let trace_id = r.headers()["x-trace-id"].to_str()?.to_owned();
    let body: serde_json::Value = r.json().await?;
    assert_eq!(body["accepted"], 1);

    let message = socket.next_message(Duration::from_secs(30)).await?.expect("an intervention arrives");
    let PushMessage::Intervention(iv) = message else { panic!("expected an intervention, got {message:?}") };
    assert_eq!(iv.kind, "cart_reminder");
    assert_eq!(iv.cause_event_id, format!("{shopper}-e10"));
    assert_eq!(iv.model_version, "cart_abandonment@1");
    assert_eq!(iv.trace_id, trace_id, "the trace of the request reaches the pushed message");
    assert!(iv.intervention_id.starts_with("itv_"));

    let (features, probability) = golden(GOLDEN_ROW);
    assert!((iv.score - probability).abs() <= 1e-5, "score {} differs from Python onnxruntime {probability}", iv.score);

    // The online store holds the features the model scored.
    let client = redis::Client::open(platform.redis_url.as_str())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let key = format!("{}t:{}:session:{shopper}", platform.redis_prefix, tenant.tenant_id);
    let cart_value: i64 = redis.hget(&key, "cart_value_minor").await?;
    let cart_items: i64 = redis.hget(&key, "cart_items").await?;
    assert_eq!((cart_value as f32 / 100.0, cart_items as f32), (features[0], features[1]));

    // One reminder per cooldown: a second exit intent earns nothing more.
    let again = serde_json::json!({"events": [{
        "event_id": format!("{shopper}-e11"), "type": "exit_intent", "shopper_id": shopper,
    }]});
    assert_eq!(platform.post_events(&tenant.publishable_key, Some(ORIGIN), &again).await?.status(), 202);
    platform.wait_processed(11).await?;
    assert!(socket.next_message(Duration::from_millis(200)).await?.is_none(), "no second reminder");

    platform.shutdown().await
}
