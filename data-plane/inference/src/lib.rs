//! Scoring shopper features with an ONNX model.
//!
//! # Layout
//!
//! - [`runtime`]: loads the ONNX Runtime shared library once per process.
//! - [`model`]: [`Model`], one loaded model version: checks its input shape against the
//!   feature definitions and turns feature vectors into abandonment probabilities.
//! - [`bundled`]: the model artifact compiled into the binary, so a cell runs with no files.

pub mod bundled;
pub mod model;
pub mod runtime;

pub use model::{Model, ModelError};
pub use runtime::{RuntimeError, init_runtime};
