//! The model versions every cell ships with. A store is scored with one of them, chosen by
//! an operator, or with the cell's default; the artifacts are in `model/`, embedded in the
//! cell binary (`nudge_data_plane_inference::bundled`), which checks it carries each.

/// What a store without an assignment is scored with.
pub const DEFAULT_MODEL: &str = "cart_abandonment@1";

/// Every model version a cell can score with: logistic regression, gradient-boosted trees.
pub const BUNDLED_MODELS: [&str; 2] = ["cart_abandonment@1", "cart_abandonment_gbdt@1"];
