#![allow(clippy::unwrap_used)]
//! The set a cell scores with follows the model registry: versions load (checked as at
//! start) and drop, the default follows, stale records change nothing, and every bundled
//! model carries the manifest the registry registers it with.

use nudge_contracts::control::ModelManifest;
use nudge_data_plane_inference::{
    Model, ModelSet, bundled, init_runtime,
    set::{ApplyError, Change},
};

const LR: &str = "cart_abandonment@1";

fn set() -> ModelSet {
    let env = init_runtime(None).expect("ONNX Runtime loads (scripts/test sets ORT_DYLIB_PATH)");
    let default = Model::load(env, LR, bundled::MODEL_ONNX, bundled::MODEL_SHA256).unwrap();
    ModelSet::with_bundled(env, default).unwrap()
}

#[test]
fn registry_records_load_swap_and_drop_models() {
    let set = set();
    let trees = bundled::MODELS[1];

    // A new version: loaded, chosen by name, not yet the default.
    let change = set.apply_version("uploaded@1", trees.sha256, Some(trees.onnx), 1).unwrap();
    assert_eq!(change, Change::Loaded { version: "uploaded@1".into(), default: false });
    let chosen = set.choose(Some("uploaded@1"));
    assert_eq!((chosen.model.version(), chosen.fell_back), ("uploaded@1", false));
    assert_eq!(set.apply_version("uploaded@1", trees.sha256, Some(trees.onnx), 1).unwrap(), Change::Stale);

    // An artifact that is not what its record says is refused, and not held.
    let err = set.apply_version("tampered@1", bundled::MODEL_SHA256, Some(trees.onnx), 1).unwrap_err();
    assert!(matches!(err, ApplyError::Load { .. }), "{err}");
    assert!(set.choose(Some("tampered@1")).fell_back);

    // The default follows the registry's record, newest revision wins.
    assert_eq!(set.apply_default("uploaded@1", 2), Change::Default { version: "uploaded@1".into() });
    assert_eq!(set.choose(None).model.version(), "uploaded@1");
    assert_eq!(set.apply_default(LR, 1), Change::Stale);
    assert_eq!(set.choose(None).model.version(), "uploaded@1");

    // The default is never dropped from under the cell.
    let err = set.apply_version("uploaded@1", trees.sha256, None, 2).unwrap_err();
    assert!(matches!(err, ApplyError::ArchivedDefault(_)), "{err}");
    assert_eq!(set.apply_default(LR, 3), Change::Default { version: LR.into() });
    assert_eq!(
        set.apply_version("uploaded@1", trees.sha256, None, 3).unwrap(),
        Change::Dropped { version: "uploaded@1".into() }
    );
    let chosen = set.choose(Some("uploaded@1"));
    assert_eq!((chosen.model.version(), chosen.fell_back), (LR, true));

    // A default the cell does not hold yet takes over as soon as it loads.
    assert_eq!(set.apply_default("later@1", 4), Change::DefaultPending { version: "later@1".into() });
    assert_eq!(set.choose(None).model.version(), LR);
    let change = set.apply_version("later@1", trees.sha256, Some(trees.onnx), 1).unwrap();
    assert_eq!(change, Change::Loaded { version: "later@1".into(), default: true });
    assert_eq!(set.choose(None).model.version(), "later@1");
}

#[test]
fn every_bundled_model_carries_its_registry_manifest() {
    for b in bundled::MODELS {
        let manifest: ModelManifest = serde_json::from_str(b.manifest).unwrap();
        assert_eq!(manifest.sha256, b.sha256, "{}", b.version);
        assert_eq!(format!("{}@1", manifest.name), b.version);
        assert_eq!(manifest.lineage.seed, 20261127);
        assert!(manifest.metrics.contains_key("roc_auc"), "{}", b.version);
    }
}
