//! The model versions every cell ships with, compiled in (`nudge_data_plane_inference::bundled`,
//! which checks it carries each; artifacts in `model/`). The control plane registers them in
//! the model registry at start, beside any version uploaded later, and makes
//! [`DEFAULT_MODEL`] the default until an operator chooses another.

/// What a store without an assignment is scored with.
pub const DEFAULT_MODEL: &str = "cart_abandonment@1";

/// Every model version a cell can score with: logistic regression, gradient-boosted trees.
pub const BUNDLED_MODELS: [&str; 2] = ["cart_abandonment@1", "cart_abandonment_gbdt@1"];
