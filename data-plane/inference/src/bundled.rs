//! The models compiled into the binary, trained by `model/train.py`: the logistic
//! regression (`model/cart_abandonment/v1`, the default) and the gradient-boosted trees
//! (`model/cart_abandonment_gbdt/v1`). A store is scored with the one its tenant record
//! names, else with the default (or the artifact the cell is configured with instead).

/// A model in the binary.
#[derive(Debug, Clone, Copy)]
pub struct BundledModel {
    /// As predictions and interventions report it.
    pub version: &'static str,
    pub onnx: &'static [u8],
    /// SHA-256 of `onnx`, as the model card records it.
    pub sha256: &'static str,
    /// `manifest.json` (name, SHA-256, metrics, lineage): what the control plane registers
    /// the model with.
    pub manifest: &'static str,
}

/// The default model's ONNX artifact.
pub const MODEL_ONNX: &[u8] = include_bytes!("../../../model/cart_abandonment/v1/model.onnx");

/// The default model's version.
pub const MODEL_VERSION: &str = "cart_abandonment@1";

/// SHA-256 of [`MODEL_ONNX`], as the model card records it.
pub const MODEL_SHA256: &str = "007d87cd4a7b651641057c8dca81d9da004d8d4aec30b81b10835cdaf27936d3";

/// Every model in the binary, the default first (`nudge_contracts::models::BUNDLED_MODELS`
/// lists the same versions; a test holds them together).
pub const MODELS: [BundledModel; 2] = [
    BundledModel {
        version: MODEL_VERSION,
        onnx: MODEL_ONNX,
        sha256: MODEL_SHA256,
        manifest: include_str!("../../../model/cart_abandonment/v1/manifest.json"),
    },
    BundledModel {
        version: "cart_abandonment_gbdt@1",
        onnx: include_bytes!("../../../model/cart_abandonment_gbdt/v1/model.onnx"),
        sha256: "41bd8c7d648e95bd0c8022f58a1091944133cec206ab77377d262a231636eb4f",
        manifest: include_str!("../../../model/cart_abandonment_gbdt/v1/manifest.json"),
    },
];
