//! An operator chooses the model a store is scored with: the store's shoppers are scored
//! by it (exactly as Python onnxruntime scores that artifact) and the intervention names
//! it, while another store keeps the default; an unknown version is refused.

mod common;

use std::time::Duration;

use nudge_contracts::Topic;
use nudge_test_support::{OPERATOR_TOKEN, Platform, unique_suffix};
use serde_json::{Value, json};

use common::{
    GOLDEN_ROW, ORIGIN, abandoning_session, cell_metric, golden, golden_gbdt, read_all, reminder, stream_sessions,
};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_is_scored_with_the_model_it_is_assigned() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let trees = platform.sign_up_ready("Trees", ORIGIN).await?;
    let default = platform.sign_up_ready("Default", ORIGIN).await?;

    // Bad input first: nothing changes.
    let (status, body) = assign(&platform, &trees.tenant_id, json!("cart_abandonment@9")).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("unknown_model")), "{body}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_a_stores_model_under_continuous_scoring_fails_nothing() -> anyhow::Result<()> {
    use nudge_contracts::proto::{features::v1::FeatureSnapshot, predictions::v1::Prediction};
    use nudge_data_plane_inference::{ModelSet, bundled, init_runtime};

    let platform = Platform::start().await?;
    let store = platform.sign_up_ready("Swapping", ORIGIN).await?;

    // Shoppers stream in while an operator flips the store between the two models.
    let stop = tokio_util::sync::CancellationToken::new();
    let flipper = {
        let (stop, http, url, tenant) =
            (stop.clone(), platform.http.clone(), platform.control_plane_url.clone(), store.tenant_id.clone());
        tokio::spawn(async move {
            let mut flips = 0u32;
            while !stop.is_cancelled() {
                let model = if flips.is_multiple_of(2) { json!(GBDT) } else { Value::Null };
                let r = http
                    .post(format!("{url}/v1/admin/tenants/{tenant}/model"))
                    .bearer_auth(OPERATOR_TOKEN)
                    .json(&json!({ "model_version": model }))
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 200, "{}", r.text().await?);
                flips += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok(flips)
        })
    };
    let sent = stream_sessions(&platform, &store.publishable_key, &unique_suffix(), 60).await?;
    stop.cancel();
    let flips = flipper.await??;
    assert!(flips >= 4, "the model changed several times while scoring ({flips})");
    platform.wait_processed(sent as u64).await?;

    // Every event was scored, by one of the two models, and the prediction names the model
    // whose score it carries.
    let predictions: Vec<Prediction> = read_all(&platform, Topic::Predictions, sent).await?;
    let snapshots: Vec<FeatureSnapshot> = read_all(&platform, Topic::Features, sent).await?;
    let features: std::collections::HashMap<&str, &[f32]> =
        snapshots.iter().map(|s| (s.event_id.as_str(), s.values.as_slice())).collect();
    let env = init_runtime(None)?;
    let default = nudge_data_plane_inference::Model::load(
        env,
        bundled::MODEL_VERSION,
        bundled::MODEL_ONNX,
        bundled::MODEL_SHA256,
    )?;
    let models = ModelSet::with_bundled(env, default)?;
    let mut by_version = std::collections::HashMap::<String, usize>::new();
    for p in &predictions {
        let chosen = models.choose(Some(&p.model_version));
        assert!(!chosen.fell_back, "unknown model {}", p.model_version);
        let row: [f32; nudge_data_plane_features::N_FEATURES] = features[p.event_id.as_str()].try_into()?;
        let expected = chosen.model.score(&[row])?[0];
        assert!(
            (p.score - f64::from(expected)).abs() <= 1e-6,
            "{}: {} by {} vs {expected}",
            p.event_id,
            p.score,
            p.model_version
        );
        *by_version.entry(p.model_version.clone()).or_default() += 1;
    }
    assert_eq!(predictions.len(), sent, "one prediction per event");
    assert!(by_version.len() == 2, "both models scored some events: {by_version:?}");
    assert_eq!(cell_metric(&platform, "nudge_cell_stage_records_dead_lettered_total").await?, 0.0);
    assert_eq!(cell_metric(&platform, "nudge_cell_pipeline_model_fallbacks_total").await?, 0.0);

    platform.shutdown().await
}

async fn rollout(platform: &Platform, tenant: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
    let url = format!("{}/v1/admin/tenants/{tenant}/rollout", platform.control_plane_url);
    let request = match body {
        Some(b) => platform.http.post(url).json(&b),
        None => platform.http.delete(url),
    };
    let r = request.bearer_auth(OPERATOR_TOKEN).send().await?;
    Ok((r.status().as_u16(), r.json().await.unwrap_or(Value::Null)))
}

/// Plays sessions until the reminder comes from `model` (the cell has followed a change).
async fn until_reminded_by(platform: &Platform, key: &str, model: &str) -> anyhow::Result<()> {
    for _ in 0..25 {
        if reminder(platform, key).await?.0 == model {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("reminders never came from {model}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_canary_rollback_and_promotion_through_the_api() -> anyhow::Result<()> {
    use nudge_contracts::proto::predictions::v1::Prediction;

    let platform = Platform::start().await?;
    let store = platform.sign_up_ready("Rolling", ORIGIN).await?;
    let (tenant, key) = (store.tenant_id.as_str(), store.publishable_key.as_str());
    let promote = format!("{}/v1/admin/tenants/{tenant}/rollout/promote", platform.control_plane_url);

    // Bad input.
    for (body, what) in [
        (json!({"candidate_model_version": "cart_abandonment@9", "mode": "shadow"}), "unknown model"),
        (json!({"candidate_model_version": GBDT, "mode": "blue"}), "unknown mode"),
        (json!({"candidate_model_version": GBDT, "mode": "canary"}), "canary without a share"),
        (json!({"candidate_model_version": GBDT, "mode": "canary", "canary_percent": 101}), "share over 100"),
    ] {
        let (status, body) = rollout(&platform, tenant, Some(body)).await?;
        assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_rollout")), "{what}: {body}");
    }
    let r = platform.http.post(&promote).bearer_auth(OPERATOR_TOKEN).send().await?;
    assert_eq!(r.status(), 409, "nothing to promote");

    // Shadow: the candidate scores every event beside production and never acts.
    let (status, body) =
        rollout(&platform, tenant, Some(json!({"candidate_model_version": GBDT, "mode": "shadow"}))).await?;
    assert_eq!(status, 200, "{body}");
    let mut shadowed = false;
    for _ in 0..25 {
        let (model, _) = reminder(&platform, key).await?;
        assert_eq!(model, "cart_abandonment@1", "in shadow, production acts");
        if cell_metric(&platform, "nudge_cell_pipeline_shadow_scores_total").await? > 0.0 {
            shadowed = true;
            break;
        }
    }
    assert!(shadowed, "the shadow model never scored");
    let shopper = format!("shp_shadow_{}", unique_suffix());
    let (browsing, exit) = abandoning_session(&shopper);
    for batch in [&browsing, &exit] {
        assert_eq!(platform.post_events(key, Some(ORIGIN), batch).await?.status(), 202);
    }
    let processed = cell_metric(&platform, "nudge_cell_pipeline_events_processed_total").await? as u64;
    platform.wait_processed(processed.max(1) + 10).await?;
    let total = cell_metric(&platform, "nudge_cell_pipeline_events_processed_total").await?
        + cell_metric(&platform, "nudge_cell_pipeline_shadow_scores_total").await?;
    let predictions: Vec<Prediction> = read_all(&platform, Topic::Predictions, total as usize).await?;
    let mine: Vec<&Prediction> = predictions.iter().filter(|p| p.shopper_id == shopper).collect();
    assert_eq!(mine.len(), 20, "each of the 10 events scored twice");
    for p in &mine {
        let expected = if p.shadow { GBDT } else { "cart_abandonment@1" };
        assert_eq!(p.model_version, expected, "{p:?}");
    }
    let exit_scores: Vec<(bool, f64)> =
        mine.iter().filter(|p| p.event_id.ends_with("-e10")).map(|p| (p.shadow, p.score)).collect();
    let (_, lr) = golden(GOLDEN_ROW);
    let (_, trees) = golden_gbdt(GOLDEN_ROW);
    for (shadow, score) in exit_scores {
        let want = if shadow { trees } else { lr };
        assert!((score - want).abs() <= 1e-5, "shadow {shadow}: {score} vs {want}");
    }

    // Canary at 100 %: the candidate acts for every shopper.
    let canary = json!({"candidate_model_version": GBDT, "mode": "canary", "canary_percent": 100});
    let (status, body) = rollout(&platform, tenant, Some(canary)).await?;
    assert_eq!((status, body["canary_percent"].as_f64()), (200, Some(100.0)), "{body}");
    until_reminded_by(&platform, key, GBDT).await?;

    // Rollback: production again.
    assert_eq!(rollout(&platform, tenant, None).await?.0, 204);
    until_reminded_by(&platform, key, "cart_abandonment@1").await?;

    // Promotion makes the candidate the store's model and ends the rollout.
    let canary = json!({"candidate_model_version": GBDT, "mode": "canary", "canary_percent": 0});
    assert_eq!(rollout(&platform, tenant, Some(canary)).await?.0, 200);
    let r: Value = platform.http.post(&promote).bearer_auth(OPERATOR_TOKEN).send().await?.json().await?;
    assert_eq!(r["model_version"], GBDT, "{r}");
    until_reminded_by(&platform, key, GBDT).await?;
    let r = platform.http.post(&promote).bearer_auth(OPERATOR_TOKEN).send().await?;
    assert_eq!(r.status(), 409, "the rollout ended with the promotion");

    platform.shutdown().await
}
