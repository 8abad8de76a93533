//! Scoring shopper features with an ONNX model.
//!
//! # Layout
//!
//! - [`runtime`]: loads the ONNX Runtime shared library once per process.
//! - [`model`]: [`Model`], one loaded model version: checks its input shape and declared
//!   features against the feature set and turns feature vectors into abandonment
//!   probabilities.
//! - [`bundled`]: the model artifacts compiled into the binary, so a cell runs with no files.
//! - [`set`]: [`ModelSet`], the models a cell holds by version, and the choice per tenant.
//! - [`batch`]: micro-batching of concurrent single-row scores, a worker per model.
//! - [`trees`]: gradient-boosted trees compiled from their ONNX graph into flat arrays,
//!   used once they score the probe rows as ONNX Runtime does.

pub mod batch;
pub mod bundled;
pub mod model;
pub mod runtime;
pub mod set;
pub mod trees;

pub use batch::{BatchConfig, BatchScorer, Scorers};
pub use model::{Model, ModelError};
pub use runtime::{RuntimeError, init_runtime};
pub use set::{Chosen, ModelSet, Routing};
