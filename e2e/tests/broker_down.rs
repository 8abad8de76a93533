//! With the broker gone, ingest refuses quickly with 503 and Retry-After; it never hangs, and
//! it recovers when the broker returns.

use std::time::{Duration, Instant};

use nudge_test_support::Platform;
use serde_json::{Value, json};

const ORIGIN: &str = "https://shop.example.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_answers_503_with_retry_after_while_the_broker_is_down() -> anyhow::Result<()> {
    let mut platform = Platform::start_durable().await?;
    let tenant = platform.sign_up_ready("Acme", ORIGIN).await?;
    // Each attempt is a new event: a resent id would be answered 202 as a duplicate.
    let batch =
        |n: usize| json!({"events": [{"event_id": format!("e{n}"), "type": "page_view", "shopper_id": "shp_1"}]});
    assert_eq!(platform.post_events(&tenant.publishable_key, Some(ORIGIN), &batch(0)).await?.status(), 202);

    platform.broker.kill().await?;
    for i in 0..3 {
        let started = Instant::now();
        let r = platform.post_events(&tenant.publishable_key, Some(ORIGIN), &batch(1 + i)).await?;
        let elapsed = started.elapsed();
        assert_eq!(r.status(), 503, "attempt {i}");
        assert_eq!(r.headers()["retry-after"], "1");
        let body: Value = r.json().await?;
        assert_eq!(body["error"]["code"], "broker_unavailable");
        // Reported, not asserted: the harness's 10 s client timeout is what bounds a hang.
        println!("attempt {i}: 503 after {elapsed:?}");
    }

    // The broker returns with its records; ingest accepts again.
    platform.broker.restart().await?;
    let mut accepted = false;
    for n in 10..110 {
        let r = platform.post_events(&tenant.publishable_key, Some(ORIGIN), &batch(n)).await?;
        if r.status() == 202 {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(accepted, "ingest recovers once the broker is back");
    platform.shutdown().await
}
