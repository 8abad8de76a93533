//! The model compiled into the binary: `model/cart_abandonment/v1`, trained by
//! `model/train.py`. A cell scores with it unless configured with another artifact.

/// The ONNX artifact.
pub const MODEL_ONNX: &[u8] = include_bytes!("../../../model/cart_abandonment/v1/model.onnx");

/// Its version, as predictions and interventions report it.
pub const MODEL_VERSION: &str = "cart_abandonment@1";

/// SHA-256 of [`MODEL_ONNX`], as the model card records it.
pub const MODEL_SHA256: &str = "33706d5fa8a78d9f811ba77312f190be08278ca2114dd0c765ea3c49c7cdcd76";
