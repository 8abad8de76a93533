//! The model registry: an operator uploads a model (artifact + manifest), the registry
//! refuses a corrupt or mismatched artifact before any cell sees it, records the version's
//! input schema, metrics, lineage and stage history, and a promoted upload reaches the cells
//! and takes over a store's scoring without a restart or a failed prediction.

mod common;

use std::{collections::HashMap, time::Duration};

use nudge_contracts::{
    Topic,
    proto::{features::v1::FeatureSnapshot, predictions::v1::Prediction},
};
use nudge_data_plane_inference::{Model, bundled, init_runtime};
use nudge_test_support::{OPERATOR_TOKEN, Platform, unique_suffix};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use common::{ORIGIN, cell_metric, read_all, reminder, stream_sessions};

const LR: &str = "cart_abandonment@1";

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The gradient-boosted trees' manifest and artifact, renamed `name`.
fn gbdt_upload(name: &str) -> (Value, Vec<u8>) {
    let b = bundled::MODELS[1];
    let mut manifest: Value = serde_json::from_str(b.manifest).expect("bundled manifest");
    manifest["name"] = json!(name);
    manifest["lineage"]["code_commit"] = json!("0123456789abcdef0123456789abcdef01234567");
    (manifest, b.onnx.to_vec())
}

async fn upload(
    platform: &Platform,
    manifest: Option<&Value>,
    artifact: Option<Vec<u8>>,
) -> anyhow::Result<(u16, Value)> {
    let mut form = Form::new();
    if let Some(m) = manifest {
        form = form.part("manifest", Part::text(m.to_string()).mime_str("application/json")?);
    }
    if let Some(a) = artifact {
        form = form.part("artifact", Part::bytes(a).file_name("model.onnx"));
    }
    let r = platform
        .http
        .post(format!("{}/v1/admin/models", platform.control_plane_url))
        .bearer_auth(OPERATOR_TOKEN)
        .multipart(form)
        .send()
        .await?;
    if r.status() == 413 {
        // The body was not read to its end: the connection must not carry another request.
        anyhow::ensure!(r.headers().get("connection").is_some_and(|v| v == "close"), "413 without Connection: close");
    }
    Ok((r.status().as_u16(), r.json().await.unwrap_or(Value::Null)))
}

async fn admin(
    platform: &Platform,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut request =
        platform.http.request(method, format!("{}{path}", platform.control_plane_url)).bearer_auth(OPERATOR_TOKEN);
    if let Some(b) = body {
        request = request.json(&b);
    }
    let r = request.send().await?;
    Ok((r.status().as_u16(), r.json().await.unwrap_or(Value::Null)))
}

async fn stage(platform: &Platform, version: &str, to: &str) -> anyhow::Result<(u16, Value)> {
    let body = json!({ "stage": to, "reason": format!("test moves it to {to}") });
    admin(platform, reqwest::Method::POST, &format!("/v1/admin/models/{version}/stage"), Some(body)).await
}

fn error_code(body: &Value) -> Option<&str> {
    body["error"]["code"].as_str()
}

/// Replaces the first `from` in `bytes` with `to` (same length, so the protobuf stays valid).
fn patch(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes.windows(from.len()).position(|w| w == from).expect("the pattern is in the artifact");
    let mut out = bytes.to_vec();
    out[at..at + from.len()].copy_from_slice(to);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_artifact_is_refused_at_upload_and_never_registered() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let (manifest, artifact) = gbdt_upload("refused_model");

    // Only operators.
    let r = platform.http.get(format!("{}/v1/admin/models", platform.control_plane_url)).send().await?;
    assert_eq!(r.status(), 401);

    // The bytes are not the ones the manifest names.
    let lr = bundled::MODEL_ONNX.to_vec();
    let (status, body) = upload(&platform, Some(&manifest), Some(lr)).await?;
    assert_eq!((status, error_code(&body)), (422, Some("checksum_mismatch")), "{body}");
    assert_eq!(body["error"]["details"]["actual"], json!(sha256(bundled::MODEL_ONNX)));

    // A truncated file, its checksum declared honestly: ONNX Runtime cannot open it.
    let truncated = artifact[..artifact.len() / 2].to_vec();
    let mut m = manifest.clone();
    m["sha256"] = json!(sha256(&truncated));
    let (status, body) = upload(&platform, Some(&m), Some(truncated)).await?;
    assert_eq!((status, error_code(&body)), (422, Some("invalid_artifact")), "{body}");

    // A model that declares other features, or another feature set.
    for (from, to, what) in [
        (&b"cart_value,cart_items"[..], &b"cart_worth,cart_items"[..], "cart_worth"),
        (&b"cart_session@1"[..], &b"cart_session@2"[..], "cart_session@2"),
    ] {
        let patched = patch(&artifact, from, to);
        let mut m = manifest.clone();
        m["sha256"] = json!(sha256(&patched));
        let (status, body) = upload(&platform, Some(&m), Some(patched)).await?;
        assert_eq!((status, error_code(&body)), (422, Some("schema_mismatch")), "{what}: {body}");
        assert!(body["error"]["message"].as_str().unwrap_or_default().contains(what), "{body}");
    }

    // Manifest problems, each by field; missing parts; a manifest that is not one.
    let mut m = manifest.clone();
    m["name"] = json!("Not A Name");
    m["lineage"]["training_data_sha256"] = json!("abc");
    let (status, body) = upload(&platform, Some(&m), Some(artifact.clone())).await?;
    assert_eq!((status, error_code(&body)), (422, Some("invalid_fields")), "{body}");
    let fields = &body["error"]["details"]["fields"];
    assert!(fields["name"].is_string() && fields["lineage.training_data_sha256"].is_string(), "{body}");
    let (status, body) = upload(&platform, Some(&manifest), None).await?;
    assert_eq!((status, error_code(&body)), (422, Some("invalid_fields")), "{body}");
    assert!(body["error"]["details"]["fields"]["artifact"].is_string(), "{body}");
    let (status, body) = upload(&platform, Some(&json!({"name": "x"})), Some(artifact.clone())).await?;
    assert_eq!((status, error_code(&body)), (422, Some("invalid_manifest")), "{body}");

    // Too large: refused before anything is read into the registry.
    let huge = vec![0u8; 9 * 1024 * 1024];
    let (status, body) = upload(&platform, Some(&manifest), Some(huge)).await?;
    assert_eq!((status, error_code(&body)), (413, Some("artifact_too_large")), "{body}");

    // Nothing was registered: only the models the binaries carry.
    let (status, list) = admin(&platform, reqwest::Method::GET, "/v1/admin/models", None).await?;
    assert_eq!(status, 200);
    let versions: Vec<&str> = list["models"].as_array().unwrap().iter().filter_map(|m| m["version"].as_str()).collect();
    assert_eq!(versions, [LR, "cart_abandonment_gbdt@1"], "{list}");

    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_model_is_promoted_and_swapped_in_under_continuous_scoring() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let store = platform.sign_up_ready("Uploading", ORIGIN).await?;
    let tenant = store.tenant_id.clone();
    let name = format!("store_gbdt_{}", unique_suffix().to_lowercase().replace('-', "_"));
    let name: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(60).collect();
    let version = format!("{name}@1");
    let (manifest, artifact) = gbdt_upload(&name);

    // Registered as a candidate, with the schema it was checked against and its lineage.
    let (status, body) = upload(&platform, Some(&manifest), Some(artifact.clone())).await?;
    assert_eq!(status, 201, "{body}");
    let model = &body["model"];
    assert_eq!(model["version"], json!(version));
    assert_eq!(model["stage"], "candidate");
    assert_eq!(model["sha256"], json!(sha256(&artifact)));
    assert_eq!(model["input"]["feature_set"], "cart_session@1");
    assert_eq!(model["input"]["feature_names"].as_array().map(Vec::len), Some(10));
    assert_eq!(model["lineage"], manifest["lineage"]);
    let metrics: HashMap<String, f64> = serde_json::from_value(model["metrics"].clone())?;
    let declared: HashMap<String, f64> = serde_json::from_value(manifest["metrics"].clone())?;
    assert_eq!(metrics, declared);
    // The same bytes again are the same version.
    let (status, body) = upload(&platform, Some(&manifest), Some(artifact.clone())).await?;
    assert_eq!(
        (status, body["created"].as_bool(), body["model"]["version"].as_str()),
        (200, Some(false), Some(version.as_str()))
    );

    // A candidate cannot be assigned; a production model can.
    let assign = |model: Value| {
        let (http, url, tenant) = (platform.http.clone(), platform.control_plane_url.clone(), tenant.clone());
        async move {
            let r = http
                .post(format!("{url}/v1/admin/tenants/{tenant}/model"))
                .bearer_auth(OPERATOR_TOKEN)
                .json(&json!({ "model_version": model }))
                .send()
                .await?;
            anyhow::Ok((r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null)))
        }
    };
    let (status, body) = assign(json!(version)).await?;
    assert_eq!((status, error_code(&body)), (422, Some("model_not_production")), "{body}");

    // A canary rollout (at 0 %: production still acts for everyone) makes it a canary.
    let rollout_url = format!("{}/v1/admin/tenants/{tenant}/rollout", platform.control_plane_url);
    let canary = json!({"candidate_model_version": version, "mode": "canary", "canary_percent": 0});
    let r = platform.http.post(&rollout_url).bearer_auth(OPERATOR_TOKEN).json(&canary).send().await?;
    assert_eq!(r.status(), 200, "{}", r.text().await?);
    let (_, model) = admin(&platform, reqwest::Method::GET, &format!("/v1/admin/models/{version}"), None).await?;
    assert_eq!(model["stage"], "canary", "{model}");

    // Shoppers stream in while the rollout is promoted: the uploaded model becomes the
    // store's model, and production in the registry.
    let stop = tokio_util::sync::CancellationToken::new();
    let switcher = {
        let (stop, http, promote) = (
            stop.clone(),
            platform.http.clone(),
            format!("{}/v1/admin/tenants/{tenant}/rollout/promote", platform.control_plane_url),
        );
        async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            let r = http.post(&promote).bearer_auth(OPERATOR_TOKEN).send().await?;
            anyhow::ensure!(r.status() == 200, "{}", r.text().await?);
            stop.cancelled().await;
            anyhow::Ok(())
        }
    };
    let streaming = async {
        let sent = stream_sessions(&platform, &store.publishable_key, &unique_suffix(), 50).await;
        stop.cancel();
        sent
    };
    let (sent, switched) = tokio::join!(streaming, switcher);
    let sent = sent?;
    switched?;
    platform.wait_processed(sent as u64).await?;
    let (_, model) = admin(&platform, reqwest::Method::GET, &format!("/v1/admin/models/{version}"), None).await?;
    assert_eq!(model["stage"], "production", "{model}");
    let (status, body) = stage(&platform, &version, "canary").await?;
    assert_eq!((status, error_code(&body)), (409, Some("invalid_stage_change")), "{body}");

    // Every event scored, none failed; each prediction names the model whose score it
    // carries, and the uploaded one took over.
    let predictions: Vec<Prediction> = read_all(&platform, Topic::Predictions, sent).await?;
    let snapshots: Vec<FeatureSnapshot> = read_all(&platform, Topic::Features, sent).await?;
    let features: HashMap<&str, &[f32]> =
        snapshots.iter().map(|s| (s.event_id.as_str(), s.values.as_slice())).collect();
    let env = init_runtime(None)?;
    let reference: HashMap<&str, Model> = [
        (LR, Model::load(env, LR, bundled::MODEL_ONNX, bundled::MODEL_SHA256)?),
        (version.as_str(), Model::load(env, &version, &artifact, &sha256(&artifact))?),
    ]
    .into_iter()
    .collect();
    let mut by_version = HashMap::<String, usize>::new();
    for p in &predictions {
        let model = reference.get(p.model_version.as_str()).unwrap_or_else(|| panic!("scored by {}", p.model_version));
        let row: [f32; nudge_data_plane_features::N_FEATURES] = features[p.event_id.as_str()].try_into()?;
        let expected = model.score(&[row])?[0];
        assert!((p.score - f64::from(expected)).abs() <= 1e-6, "{}: {} by {}", p.event_id, p.score, p.model_version);
        *by_version.entry(p.model_version.clone()).or_default() += 1;
    }
    assert_eq!(predictions.len(), sent, "one prediction per event");
    assert!(by_version.get(&version).copied().unwrap_or(0) > 0, "the uploaded model scored: {by_version:?}");
    assert_eq!(cell_metric(&platform, "nudge_cell_stage_records_dead_lettered_total").await?, 0.0);
    assert_eq!(cell_metric(&platform, "nudge_cell_pipeline_model_fallbacks_total").await?, 0.0);
    assert_eq!(cell_metric(&platform, "nudge_cell_models_registry_refused_total").await?, 0.0);

    // In use: cannot be archived. The default cannot be archived either, nor replaced by a
    // model that is not in production.
    let (status, body) = stage(&platform, &version, "archived").await?;
    assert_eq!((status, error_code(&body)), (409, Some("model_in_use")), "{body}");
    let (status, body) = stage(&platform, LR, "archived").await?;
    assert_eq!((status, error_code(&body)), (409, Some("model_is_default")), "{body}");

    // The default follows the registry: the uploaded model becomes every store's default,
    // and a store without a model of its own is scored with it.
    let (status, body) =
        admin(&platform, reqwest::Method::PUT, "/v1/admin/models/default", Some(json!({ "version": version }))).await?;
    assert_eq!(status, 200, "{body}");
    let (status, body) = assign(Value::Null).await?;
    assert_eq!((status, body["effective_model_version"].as_str()), (200, Some(version.as_str())), "{body}");
    let mut by_default = false;
    for _ in 0..25 {
        if reminder(&platform, &store.publishable_key).await?.0 == version {
            by_default = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(by_default, "the cell follows the registry's default");
    let (status, body) =
        admin(&platform, reqwest::Method::PUT, "/v1/admin/models/default", Some(json!({ "version": LR }))).await?;
    assert_eq!(status, 200, "{body}");

    // No longer used: archived, and the history says who did what.
    let (status, body) = stage(&platform, &version, "archived").await?;
    assert_eq!((status, body["stage"].as_str()), (200, Some("archived")), "{body}");
    let (status, body) = assign(json!(version)).await?;
    assert_eq!((status, error_code(&body)), (422, Some("model_not_production")), "{body}");
    let (status, history) =
        admin(&platform, reqwest::Method::GET, &format!("/v1/admin/models/{version}/stages"), None).await?;
    assert_eq!(status, 200);
    let stages: Vec<&str> =
        history["events"].as_array().unwrap().iter().filter_map(|e| e["to_stage"].as_str()).collect();
    assert_eq!(stages, ["candidate", "canary", "production", "archived"], "{history}");
    assert!(history["events"][1]["actor"].as_str().unwrap_or_default().starts_with("operator:"), "{history}");
    let (status, _) = admin(&platform, reqwest::Method::GET, "/v1/admin/models/nothing@1", None).await?;
    assert_eq!(status, 404);

    platform.shutdown().await
}
