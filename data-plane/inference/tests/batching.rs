#![allow(clippy::unwrap_used)]
//! Micro-batching: many concurrent single-row scores come back exactly as scored alone,
//! in fewer calls than rows; a lone score is not held back.

use std::sync::{Arc, atomic::Ordering};

use nudge_data_plane_features::{FeatureVector, N_FEATURES};
use nudge_data_plane_inference::{BatchConfig, BatchScorer, Model, bundled, init_runtime};

fn rows() -> Vec<FeatureVector> {
    let golden: serde_json::Value =
        serde_json::from_str(include_str!("../../../model/cart_abandonment_gbdt/v1/golden.json")).unwrap();
    golden["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut v = [0f32; N_FEATURES];
            for (slot, x) in v.iter_mut().zip(r["features"].as_array().unwrap()) {
                *slot = x.as_f64().unwrap() as f32;
            }
            v
        })
        .collect()
}

fn gbdt() -> Arc<Model> {
    let env = init_runtime(None).unwrap();
    let b = bundled::MODELS[1];
    Arc::new(Model::load(env, b.version, b.onnx, b.sha256).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_scores_share_calls_and_equal_scoring_alone() {
    let model = gbdt();
    let scorer = BatchScorer::spawn(model.clone(), &BatchConfig { max_rows: 64, max_wait_us: 2_000 });
    let rows = rows();
    let calls: Vec<_> = rows
        .iter()
        .map(|row| {
            let (scorer, row) = (scorer.clone(), *row);
            tokio::spawn(async move { scorer.score(row).await })
        })
        .collect();
    for (call, row) in calls.into_iter().zip(&rows) {
        let batched = call.await.unwrap().unwrap();
        let alone = model.score(std::slice::from_ref(row)).unwrap()[0];
        assert!((batched - alone).abs() <= 1e-6, "{batched} vs {alone}");
    }
    let stats = scorer.stats();
    let (scored, made) = (stats.rows.load(Ordering::Relaxed), stats.calls.load(Ordering::Relaxed));
    assert_eq!(scored, rows.len() as u64);
    assert!(made < scored / 4, "{scored} rows in {made} calls: they were not batched");
}

#[tokio::test]
async fn without_a_wait_a_lone_score_goes_at_once() {
    let model = gbdt();
    let scorer = BatchScorer::spawn(model.clone(), &BatchConfig { max_rows: 64, max_wait_us: 0 });
    let row = rows()[0];
    for _ in 0..3 {
        let score = scorer.score(row).await.unwrap();
        assert!((score - model.score(&[row]).unwrap()[0]).abs() <= 1e-6);
    }
    assert_eq!(scorer.stats().calls.load(Ordering::Relaxed), 3, "each lone score is its own call");
}
