//! Server-side abandonment detection: a cart left alone is found idle once, by the cell;
//! a bought cart, a browse without a cart and a shopper still active are not; clients
//! cannot claim abandonment themselves.

use std::time::Duration;

use nudge_test_support::{Platform, unique_suffix};
use redis::AsyncCommands;
use serde_json::{Value, json};

const ORIGIN: &str = "https://idle.example.com";
const AFTER_MS: u64 = 1_500;

fn event(shopper: &str, n: usize, kind: &str, properties: Value) -> Value {
    json!({"event_id": format!("{shopper}-{n}"), "type": kind, "shopper_id": shopper, "properties": properties})
}

fn add(shopper: &str, n: usize) -> Value {
    event(shopper, n, "add_to_cart", json!({"product_id": "tent", "price": 79.0, "currency": "EUR", "quantity": 1}))
}

async fn carts_idle(platform: &Platform) -> anyhow::Result<u64> {
    let text = platform.http.get(format!("{}/metrics", platform.cell_url)).send().await?.text().await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("nudge_cell_pipeline_carts_idle_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64)
}

#[tokio::test]
async fn a_cart_left_alone_is_found_idle_once_and_only_it() -> anyhow::Result<()> {
    let platform = Platform::start_with(|_, cell| {
        cell.idle_carts.after_ms = AFTER_MS;
        cell.idle_carts.scan_interval_ms = 100;
    })
    .await?;
    let store = platform.sign_up_ready("Idle", ORIGIN).await?;
    let key = store.publishable_key.as_str();
    let tag = unique_suffix();
    let (left, bought, browsing, active) = (
        format!("shp_left_{tag}"),
        format!("shp_bought_{tag}"),
        format!("shp_browse_{tag}"),
        format!("shp_active_{tag}"),
    );

    // Clients cannot report abandonment.
    let r =
        platform.post_events(key, Some(ORIGIN), &json!({"events": [event(&left, 0, "cart_idle", json!({}))]})).await?;
    let body: Value = r.json().await?;
    assert_eq!(body["error"]["code"], "unknown_event_type", "{body}");

    let purchase = json!({"order_id": "o-1", "value": 79.0, "currency": "EUR"});
    let batch = json!({"events": [
        add(&left, 1),
        add(&bought, 1),
        event(&bought, 2, "purchase", purchase),
        event(&browsing, 1, "page_view", json!({"url": "https://idle.example.com/"})),
        add(&active, 1),
    ]});
    let r = platform.post_events(key, Some(ORIGIN), &batch).await?;
    anyhow::ensure!(r.status() == 202, "{}", r.text().await?);

    // The active shopper keeps going for twice the idle period, an event every third of
    // it; meanwhile only the cart left alone may be found idle.
    let mut n = 2;
    let until = tokio::time::Instant::now() + Duration::from_millis(2 * AFTER_MS);
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(AFTER_MS / 3)).await;
        let view = event(&active, n, "page_view", json!({"url": "https://idle.example.com/tents"}));
        let r = platform.post_events(key, Some(ORIGIN), &json!({"events": [view]})).await?;
        anyhow::ensure!(r.status() == 202, "{}", r.text().await?);
        n += 1;
    }
    let mut found = 0;
    for _ in 0..100 {
        found = carts_idle(&platform).await?;
        if found >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(found, 1, "only the cart left alone is idle while the other shopper is active");

    // Once the active shopper stops, their cart is found idle too; nothing else ever is,
    // and nothing twice.
    for _ in 0..200 {
        found = carts_idle(&platform).await?;
        if found >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(found, 2);
    tokio::time::sleep(Duration::from_millis(2 * AFTER_MS)).await;
    assert_eq!(carts_idle(&platform).await?, 2, "a bought cart or a browse is never idle, and no cart twice");

    // Every timer is settled.
    let mut redis = redis::Client::open(platform.redis_url.as_str())?.get_multiplexed_async_connection().await?;
    let schedule = format!("{}idle-carts:{}", platform.redis_prefix, platform.cell_config.cell_id);
    let waiting: u64 = redis.zcard(schedule).await?;
    assert_eq!(waiting, 0);

    platform.shutdown().await
}
