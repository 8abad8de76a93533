//! An operator chooses the model a store is scored with: the store's shoppers are scored
//! by it (exactly as Python onnxruntime scores that artifact) and the intervention names
//! it, while another store keeps the default; an unknown version is refused.

mod common;

use std::time::Duration;

use nudge_contracts::push::PushMessage;
use nudge_test_support::{OPERATOR_TOKEN, Platform, unique_suffix};
use serde_json::{Value, json};

use common::{GOLDEN_ROW, abandoning_session, golden, golden_gbdt};

const ORIGIN: &str = "https://shop.example.com";
const GBDT: &str = "cart_abandonment_gbdt@1";

async fn assign(platform: &Platform, tenant: &str, model: Value) -> anyhow::Result<(u16, Value)> {
    let r = platform
        .http
        .post(format!("{}/v1/admin/tenants/{tenant}/model", platform.control_plane_url))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({ "model_version": model }))
        .send()
        .await?;
    Ok((r.status().as_u16(), r.json().await.unwrap_or(Value::Null)))
}

/// Plays the golden session for a new shopper and returns the intervention's model and score.
async fn reminder(platform: &Platform, key: &str) -> anyhow::Result<(String, f64)> {
    let shopper = format!("shp_{}", unique_suffix());
    let mut socket = platform.connect_shopper(key, ORIGIN, &shopper).await?;
    let (browsing, exit) = abandoning_session(&shopper);
    for batch in [&browsing, &exit] {
        let r = platform.post_events(key, Some(ORIGIN), batch).await?;
        anyhow::ensure!(r.status() == 202, "{}", r.text().await?);
    }
    let message = socket.next_message(Duration::from_secs(30)).await?.expect("an intervention arrives");
    let PushMessage::Intervention(iv) = message else { anyhow::bail!("expected an intervention, got {message:?}") };
    Ok((iv.model_version, iv.score))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_is_scored_with_the_model_it_is_assigned() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let trees = platform.sign_up_ready("Trees", ORIGIN).await?;
    let default = platform.sign_up_ready("Default", ORIGIN).await?;

    // Bad input first: nothing changes.
    let (status, body) = assign(&platform, &trees.tenant_id, json!("cart_abandonment@9")).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("unknown_model")), "{body}");
    assert_eq!(body["error"]["details"]["models"], json!(["cart_abandonment@1", GBDT]));
    let (status, _) = assign(&platform, &nudge_tenants::TenantId::new().to_string(), json!(GBDT)).await?;
    assert_eq!(status, 404);

    let (status, body) = assign(&platform, &trees.tenant_id, json!(GBDT)).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["effective_model_version"], GBDT);

    // The cell learns of the assignment within moments; until then it scores with the default.
    let (_, trees_probability) = golden_gbdt(GOLDEN_ROW);
    let mut scored = None;
    for _ in 0..20 {
        let (model, score) = reminder(&platform, &trees.publishable_key).await?;
        if model == GBDT {
            scored = Some(score);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let score = scored.expect("the assigned model scores the store's shoppers");
    assert!((score - trees_probability).abs() <= 1e-5, "score {score} vs Python onnxruntime {trees_probability}");

    // The other store is untouched.
    let (model, score) = reminder(&platform, &default.publishable_key).await?;
    let (_, default_probability) = golden(GOLDEN_ROW);
    assert_eq!(model, "cart_abandonment@1");
    assert!((score - default_probability).abs() <= 1e-5);

    // Back to the default.
    let (status, body) = assign(&platform, &trees.tenant_id, Value::Null).await?;
    assert_eq!((status, body["effective_model_version"].as_str()), (200, Some("cart_abandonment@1")), "{body}");
    let mut back = false;
    for _ in 0..20 {
        if reminder(&platform, &trees.publishable_key).await?.0 == "cart_abandonment@1" {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(back, "the store returns to the default model");

    platform.shutdown().await
}
