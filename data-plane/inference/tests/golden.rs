#![allow(clippy::unwrap_used)]
//! The Rust scorer agrees with Python onnxruntime on the committed golden file, and the
//! model takes the features in the order the feature definitions declare.

use nudge_data_plane_features::{FEATURE_NAMES, FeatureVector, N_FEATURES};
use nudge_data_plane_inference::{Model, ModelError, bundled, init_runtime};
use serde::Deserialize;

#[derive(Deserialize)]
struct Golden {
    model_version: String,
    features: Vec<String>,
    rows: Vec<Row>,
}

#[derive(Deserialize)]
struct Row {
    name: String,
    features: Vec<f32>,
    probability: f64,
}

fn golden() -> Golden {
    serde_json::from_str(include_str!("../../../model/cart_abandonment/v1/golden.json")).expect("golden.json parses")
}

fn model() -> Model {
    let env = init_runtime(None).expect("ONNX Runtime loads (scripts/test sets ORT_DYLIB_PATH)");
    Model::load(env, bundled::MODEL_VERSION, bundled::MODEL_ONNX, bundled::MODEL_SHA256).expect("bundled model loads")
}

#[test]
fn feature_order_matches_the_model_card() {
    let g = golden();
    assert_eq!(g.features, FEATURE_NAMES);
    assert_eq!(g.model_version, bundled::MODEL_VERSION);
    let card = include_str!("../../../model/cart_abandonment/v1/MODEL_CARD.md");
    for (i, name) in FEATURE_NAMES.iter().enumerate() {
        assert!(card.contains(&format!("| {i} | `{name}` |")), "model card lists {name} at {i}");
    }
}

#[test]
fn scores_equal_python_onnxruntime_to_1e_5() {
    let g = golden();
    assert!(g.rows.len() >= 1000);
    let model = model();
    let rows: Vec<FeatureVector> = g
        .rows
        .iter()
        .map(|r| {
            let mut v = [0f32; N_FEATURES];
            v.copy_from_slice(&r.features);
            v
        })
        .collect();
    // Batched and one by one agree (to float rounding: kernels vectorise differently).
    let batched = model.score(&rows).expect("scores");
    for ((row, features), score) in g.rows.iter().zip(&rows).zip(&batched) {
        let single = model.score(std::slice::from_ref(features)).expect("scores")[0];
        assert!((f64::from(*score) - row.probability).abs() <= 1e-5, "{}: {score} vs {}", row.name, row.probability);
        assert!((single - score).abs() <= 1e-6, "{}: single {single} vs batched {score}", row.name);
    }
}

#[test]
fn a_tampered_artifact_is_refused() {
    let env = init_runtime(None).expect("runtime");
    let mut bytes = bundled::MODEL_ONNX.to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let err = Model::load(env, "x", &bytes, bundled::MODEL_SHA256).unwrap_err();
    assert!(matches!(err, ModelError::Checksum { .. }), "{err}");
    let err = Model::load(env, "x", b"not a model", &sha256(b"not a model")).unwrap_err();
    assert!(matches!(err, ModelError::Ort(_)), "{err}");
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
