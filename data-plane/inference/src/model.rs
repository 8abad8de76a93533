//! One loaded model version.

use std::sync::{Mutex, PoisonError};

use nudge_data_plane_features::{
    FEATURE_SET_VERSION, FeatureVector, N_FEATURES,
    definitions::{DEFAULT_VECTOR, check_input_schema},
};
use ort::{
    environment::Environment,
    session::{Session, builder::GraphOptimizationLevel},
    value::TensorRef,
};
use sha2::{Digest, Sha256};

use crate::trees::CompiledTrees;

const INPUT: &str = "features";
const OUTPUT: &str = "probabilities";
/// Metadata keys `model/train.py` writes into every artifact.
const META_FEATURE_SET: &str = "nudge.feature_set";
const META_FEATURE_NAMES: &str = "nudge.feature_names";

#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    #[error("model artifact checksum is {actual}, expected {expected}")]
    Checksum { expected: String, actual: String },
    #[error("model does not fit the feature definitions: {0}")]
    Schema(String),
    #[error("onnx runtime: {0}")]
    Ort(String),
}

impl From<ort::Error> for ModelError {
    fn from(e: ort::Error) -> Self {
        Self::Ort(e.to_string())
    }
}

/// A model version ready to score. `Session::run` needs exclusive access, so calls are
/// serialised; one run scores a whole batch. A tree ensemble of the supported shape is
/// scored by its compiled form ([`CompiledTrees`]) once it has matched the session on the
/// probe rows at load; the session stays the reference and scores everything else.
pub struct Model {
    version: String,
    session: Mutex<Session>,
    trees: Option<CompiledTrees>,
}

/// How far a compiled model may stray from ONNX Runtime on a probe row.
const COMPILED_TOLERANCE: f32 = 1e-6;

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("version", &self.version).finish_non_exhaustive()
    }
}

impl Model {
    /// Loads `bytes` after checking its SHA-256 and that it takes `[N, N_FEATURES]` floats
    /// named `features` and yields `probabilities`.
    pub fn load(env: &Environment, version: &str, bytes: &[u8], sha256: &str) -> Result<Self, ModelError> {
        let mut model = Self::load_onnxruntime(env, version, bytes, sha256)?;
        if let Ok(trees) = CompiledTrees::compile(bytes) {
            let probes = probe_rows(&trees);
            let reference = model.score(&probes)?;
            let compiled = trees.score(&probes);
            if reference.iter().zip(&compiled).all(|(a, b)| (a - b).abs() <= COMPILED_TOLERANCE) {
                model.trees = Some(trees);
            }
        }
        Ok(model)
    }

    /// [`Model::load`] without compiling: every score goes through ONNX Runtime (the
    /// benchmark's reference).
    pub fn load_onnxruntime(env: &Environment, version: &str, bytes: &[u8], sha256: &str) -> Result<Self, ModelError> {
        let actual = hex::encode(Sha256::digest(bytes));
        if actual != sha256 {
            return Err(ModelError::Checksum { expected: sha256.to_owned(), actual });
        }
        let session = Session::builder(env)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| ModelError::Ort(e.to_string()))?
            // Scoring batches are small; one thread avoids handing work between threads.
            .with_intra_threads(1)
            .map_err(|e| ModelError::Ort(e.to_string()))?
            .commit_from_memory(bytes)?;

        let input = session
            .inputs()
            .iter()
            .find(|i| i.name() == INPUT)
            .ok_or_else(|| ModelError::Schema(format!("no input named `{INPUT}`")))?;
        let shape = input.dtype().tensor_shape().map(|s| s.to_vec()).unwrap_or_default();
        if shape.len() != 2 || shape[1] != N_FEATURES as i64 {
            return Err(ModelError::Schema(format!("input shape {shape:?}, expected [N, {N_FEATURES}]")));
        }
        if !session.outputs().iter().any(|o| o.name() == OUTPUT) {
            return Err(ModelError::Schema(format!("no output named `{OUTPUT}`")));
        }
        // The artifact names the feature set and its features; both must be the cells'.
        let metadata = session.metadata()?;
        let set = metadata.custom(META_FEATURE_SET).ok_or_else(|| {
            ModelError::Schema(format!("the artifact does not name its feature set (metadata `{META_FEATURE_SET}`)"))
        })?;
        if set != FEATURE_SET_VERSION {
            return Err(ModelError::Schema(format!(
                "the artifact was trained on feature set `{set}`, the cells compute `{FEATURE_SET_VERSION}`"
            )));
        }
        let names = metadata.custom(META_FEATURE_NAMES).ok_or_else(|| {
            ModelError::Schema(format!("the artifact does not name its features (metadata `{META_FEATURE_NAMES}`)"))
        })?;
        check_input_schema(&names.split(',').collect::<Vec<_>>()).map_err(ModelError::Schema)?;
        drop(metadata);
        Ok(Self { version: version.to_owned(), session: Mutex::new(session), trees: None })
    }

    /// What scores: `compiled trees` or `onnxruntime`.
    pub fn engine(&self) -> &'static str {
        if self.trees.is_some() { "compiled trees" } else { "onnxruntime" }
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// Abandonment probability for each row.
    pub fn score(&self, rows: &[FeatureVector]) -> Result<Vec<f32>, ModelError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(trees) = &self.trees {
            return Ok(trees.score(rows));
        }
        let flat: &[f32] = rows.as_flattened();
        let input = TensorRef::from_array_view(([rows.len() as i64, N_FEATURES as i64], flat))?;
        let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        let outputs = session.run(ort::inputs![INPUT => input])?;
        let (shape, probabilities) = outputs[OUTPUT].try_extract_tensor::<f32>()?;
        if shape.len() != 2 || shape[0] as usize != rows.len() || shape[1] != 2 {
            return Err(ModelError::Schema(format!("output shape {shape:?}, expected [{}, 2]", rows.len())));
        }
        Ok(probabilities.chunks_exact(2).map(|p| p[1]).collect())
    }
}

/// Rows that exercise every split of `trees` on both sides and at its threshold, plus a
/// spread of pseudo-random rows over the ranges the splits use: what a compiled model must
/// score exactly as ONNX Runtime does before it is trusted. Deterministic.
fn probe_rows(trees: &CompiledTrees) -> Vec<FeatureVector> {
    let thresholds = trees.thresholds();
    let mut upper = [1.0f32; N_FEATURES];
    for &(f, t) in &thresholds {
        upper[f] = upper[f].max(t.abs() * 1.5);
    }
    // A small LCG: the same rows every load.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut rows = vec![DEFAULT_VECTOR];
    for _ in 0..512 {
        let mut row = [0f32; N_FEATURES];
        for (v, hi) in row.iter_mut().zip(upper) {
            *v = (next() * hi).round();
        }
        rows.push(row);
    }
    for (i, &(f, t)) in thresholds.iter().enumerate() {
        let mut row = rows[1 + i % 512];
        for v in [t, adjacent(t, true), adjacent(t, false)] {
            row[f] = v;
            rows.push(row);
        }
    }
    rows
}

/// The float next to `t` upwards or downwards (finite `t`).
fn adjacent(t: f32, up: bool) -> f32 {
    if t == 0.0 {
        let tiny = f32::from_bits(1);
        return if up { tiny } else { -tiny };
    }
    let bits = t.to_bits();
    // Away from zero is one more in the magnitude's bits.
    let away = (t > 0.0) == up;
    f32::from_bits(if away { bits + 1 } else { bits - 1 })
}
