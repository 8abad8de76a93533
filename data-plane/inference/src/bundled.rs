//! The model compiled into the binary: `model/cart_abandonment/v1`, trained by
//! `model/train.py`. A cell scores with it unless configured with another artifact.

/// The ONNX artifact.
pub const MODEL_ONNX: &[u8] = include_bytes!("../../../model/cart_abandonment/v1/model.onnx");

/// Its version, as predictions and interventions report it.
pub const MODEL_VERSION: &str = "cart_abandonment@1";

/// SHA-256 of [`MODEL_ONNX`], as the model card records it.
pub const MODEL_SHA256: &str = "98b155b798ead6fd09516bb1babae5570bbf51f0e689eb4944cbf4c9369998a8";
