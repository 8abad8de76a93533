//! The process-wide ONNX Runtime.
//!
//! `ort` is built with `load-dynamic`: the shared library comes from the `onnxruntime`
//! Python wheel set up by `scripts/setup`, found at the configured path or through
//! `ORT_DYLIB_PATH`. ONNX Runtime allows one environment per process, so the first call
//! wins and later calls reuse it.

use std::{path::Path, sync::OnceLock};

use ort::environment::Environment;

#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("loading ONNX Runtime from {path}: {reason} (run scripts/setup, or set inference.onnxruntime_library)")]
    Load { path: String, reason: String },
    #[error("creating the ONNX Runtime environment: {0}")]
    Environment(String),
}

static RUNTIME: OnceLock<Result<Environment, RuntimeError>> = OnceLock::new();

/// The ONNX Runtime environment, loading the library on first use. `library` names the
/// shared library; without it `ORT_DYLIB_PATH` decides.
pub fn init_runtime(library: Option<&Path>) -> Result<&'static Environment, RuntimeError> {
    RUNTIME
        .get_or_init(|| {
            let builder = match library {
                Some(path) => ort::init_from(path)
                    .map_err(|e| RuntimeError::Load { path: path.display().to_string(), reason: e.to_string() })?,
                None => ort::init(),
            };
            builder.with_name("nudge").build().map_err(|e| RuntimeError::Environment(e.to_string()))
        })
        .as_ref()
        .map_err(Clone::clone)
}
