#![allow(clippy::unwrap_used)]
//! The Rust scorer agrees with Python onnxruntime on the committed golden files of both model
//! types (logistic regression, gradient-boosted trees), and each model takes the features in
//! the order the feature definitions declare.

use nudge_data_plane_features::{FEATURE_NAMES, FeatureVector, N_FEATURES};
use nudge_data_plane_inference::{Model, ModelError, ModelSet, bundled, init_runtime};
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

/// A committed model directory: artifact, golden file and model card.
struct Artifacts {
    onnx: &'static [u8],
    golden: &'static str,
    card: &'static str,
}

const LOGISTIC: Artifacts = Artifacts {
    onnx: include_bytes!("../../../model/cart_abandonment/v1/model.onnx"),
    golden: include_str!("../../../model/cart_abandonment/v1/golden.json"),
    card: include_str!("../../../model/cart_abandonment/v1/MODEL_CARD.md"),
};

const GBDT: Artifacts = Artifacts {
    onnx: include_bytes!("../../../model/cart_abandonment_gbdt/v1/model.onnx"),
    golden: include_str!("../../../model/cart_abandonment_gbdt/v1/golden.json"),
    card: include_str!("../../../model/cart_abandonment_gbdt/v1/MODEL_CARD.md"),
};

impl Golden {
    /// The rows' features as the model takes them.
    fn feature_rows(&self) -> Vec<FeatureVector> {
        self.rows
            .iter()
            .map(|r| {
                let mut v = [0f32; N_FEATURES];
                v.copy_from_slice(&r.features);
                v
            })
            .collect()
    }
}

impl Artifacts {
    fn golden(&self) -> Golden {
        serde_json::from_str(self.golden).expect("golden.json parses")
    }

    /// The artifact's SHA-256 as its model card records it.
    fn card_sha256(&self) -> &'static str {
        let line = self
            .card
            .lines()
            .find(|l| l.starts_with("- Artifact SHA-256: `"))
            .expect("the card names the artifact's hash");
        line.trim_start_matches("- Artifact SHA-256: `").trim_end_matches('`')
    }

    /// Loads the artifact against the checksum its card records.
    fn model(&self) -> Model {
        let env = init_runtime(None).expect("ONNX Runtime loads (scripts/test sets ORT_DYLIB_PATH)");
        Model::load(env, &self.golden().model_version, self.onnx, self.card_sha256()).expect("the artifact loads")
    }
}

#[test]
fn the_bundled_model_is_the_committed_logistic_regression() {
    assert_eq!(bundled::MODEL_ONNX, LOGISTIC.onnx);
    assert_eq!(bundled::MODEL_SHA256, LOGISTIC.card_sha256());
    assert_eq!(bundled::MODEL_VERSION, LOGISTIC.golden().model_version);
    assert_eq!(GBDT.golden().model_version, "cart_abandonment_gbdt@1");
}

#[test]
fn the_binary_carries_every_committed_model_and_the_set_chooses_among_them() {
    let versions: Vec<&str> = bundled::MODELS.iter().map(|m| m.version).collect();
    assert_eq!(versions, nudge_contracts::models::BUNDLED_MODELS);
    assert_eq!(versions[0], nudge_contracts::models::DEFAULT_MODEL);
    for (b, artifacts) in bundled::MODELS.iter().zip([LOGISTIC, GBDT]) {
        assert_eq!(b.onnx, artifacts.onnx, "{}", b.version);
        assert_eq!(b.sha256, artifacts.card_sha256(), "{}", b.version);
        assert_eq!(b.version, artifacts.golden().model_version);
    }

    let set = ModelSet::with_bundled(init_runtime(None).unwrap(), LOGISTIC.model()).unwrap();
    assert_eq!(set.versions(), ["cart_abandonment@1", "cart_abandonment_gbdt@1"]);
    let chosen = set.choose(None);
    assert_eq!((chosen.model.version(), chosen.fell_back), ("cart_abandonment@1", false));
    let chosen = set.choose(Some("cart_abandonment_gbdt@1"));
    assert_eq!((chosen.model.version(), chosen.fell_back), ("cart_abandonment_gbdt@1", false));
    let chosen = set.choose(Some("cart_abandonment@9"));
    assert_eq!(
        (chosen.model.version(), chosen.fell_back),
        ("cart_abandonment@1", true),
        "unknown: the default, flagged"
    );
}

#[test]
fn routing_follows_the_rollout() {
    use nudge_tenants::{ModelRollout, RolloutMode, TenantId};

    let set = ModelSet::with_bundled(init_runtime(None).unwrap(), LOGISTIC.model()).unwrap();
    let tenant = TenantId::new();
    let rollout = |mode, canary_basis_points| ModelRollout {
        candidate: "cart_abandonment_gbdt@1".into(),
        mode,
        canary_basis_points,
    };
    let route = |r: Option<&ModelRollout>| {
        let routing = set.route(tenant, "shp_1", None, r);
        (routing.acting.version().to_owned(), routing.shadow.map(|m| m.version().to_owned()), routing.fell_back)
    };
    let production = ("cart_abandonment@1".to_owned(), None, false);
    assert_eq!(route(None), production);
    assert_eq!(route(Some(&rollout(RolloutMode::Canary, 0))), production);
    assert_eq!(route(Some(&rollout(RolloutMode::Canary, 10_000))), ("cart_abandonment_gbdt@1".to_owned(), None, false));
    assert_eq!(
        route(Some(&rollout(RolloutMode::Shadow, 0))),
        ("cart_abandonment@1".to_owned(), Some("cart_abandonment_gbdt@1".to_owned()), false)
    );
    let unknown =
        ModelRollout { candidate: "cart_abandonment@9".into(), mode: RolloutMode::Shadow, canary_basis_points: 0 };
    assert_eq!(route(Some(&unknown)), ("cart_abandonment@1".to_owned(), None, true));
}

#[test]
fn feature_order_matches_the_model_cards() {
    for artifacts in [LOGISTIC, GBDT] {
        let g = artifacts.golden();
        assert_eq!(g.features, FEATURE_NAMES, "{}", g.model_version);
        for (i, name) in FEATURE_NAMES.iter().enumerate() {
            assert!(
                artifacts.card.contains(&format!("| {i} | `{name}` |")),
                "{}: card lists {name} at {i}",
                g.model_version
            );
        }
    }
}

#[test]
fn logistic_regression_scores_equal_python_onnxruntime_to_1e_5() {
    scores_equal_python_onnxruntime(&LOGISTIC);
}

#[test]
fn gradient_boosted_trees_score_equal_python_onnxruntime_to_1e_5() {
    scores_equal_python_onnxruntime(&GBDT);
}

fn scores_equal_python_onnxruntime(artifacts: &Artifacts) {
    let g = artifacts.golden();
    assert!(g.rows.len() >= 1000);
    let model = artifacts.model();
    let rows = g.feature_rows();
    // Batched and one by one agree (to float rounding: kernels vectorise differently).
    let batched = model.score(&rows).expect("scores");
    for ((row, features), score) in g.rows.iter().zip(&rows).zip(&batched) {
        let single = model.score(std::slice::from_ref(features)).expect("scores")[0];
        let v = &g.model_version;
        assert!(
            (f64::from(*score) - row.probability).abs() <= 1e-5,
            "{v} {}: {score} vs {}",
            row.name,
            row.probability
        );
        assert!((single - score).abs() <= 1e-6, "{v} {}: single {single} vs batched {score}", row.name);
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

#[test]
fn an_artifact_naming_other_features_is_refused() {
    let env = init_runtime(None).expect("runtime");
    for artifacts in [LOGISTIC, GBDT] {
        // Swap two names of equal length in the artifact's metadata: still a valid model,
        // trained (it says) on inputs in another order.
        let names = "cart_value,cart_items,page_views";
        let swapped = "page_views,cart_items,cart_value";
        let at = artifacts
            .onnx
            .windows(names.len())
            .position(|w| w == names.as_bytes())
            .expect("the names are in the metadata");
        let mut bytes = artifacts.onnx.to_vec();
        bytes[at..at + names.len()].copy_from_slice(swapped.as_bytes());
        let err = Model::load(env, "x", &bytes, &sha256(&bytes)).unwrap_err();
        assert!(
            matches!(&err, ModelError::Schema(m) if m == "input 0 is `page_views`, the feature set has `cart_value` there"),
            "{err}"
        );
    }
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn the_trees_are_compiled_and_score_as_onnx_runtime_does() {
    use nudge_data_plane_inference::trees::CompiledTrees;

    let env = init_runtime(None).expect("runtime");
    let trees = CompiledTrees::compile(GBDT.onnx).expect("the trees compile");
    assert_eq!(trees.trees(), 100);
    let err = CompiledTrees::compile(LOGISTIC.onnx).unwrap_err();
    assert!(err.contains("the first node is Scaler"), "{err}");
    assert!(CompiledTrees::compile(b"not a model").is_err());

    let compiled = GBDT.model();
    assert_eq!(compiled.engine(), "compiled trees");
    assert_eq!(LOGISTIC.model().engine(), "onnxruntime");
    let reference =
        Model::load_onnxruntime(env, "cart_abandonment_gbdt@1", GBDT.onnx, GBDT.card_sha256()).expect("loads");
    assert_eq!(reference.engine(), "onnxruntime");
    let rows = GBDT.golden().feature_rows();
    // NaN and infinities in any feature go where ONNX Runtime sends them.
    let mut rows = rows;
    for i in 0..N_FEATURES {
        for odd in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut row = rows[i];
            row[i] = odd;
            rows.push(row);
        }
    }
    let (a, b) = (compiled.score(&rows).unwrap(), reference.score(&rows).unwrap());
    for ((x, y), row) in a.iter().zip(&b).zip(&rows) {
        assert!((x - y).abs() <= 1e-6, "{row:?}: compiled {x} vs onnxruntime {y}");
    }
}
