//! Feature definitions, in model input order.

/// The feature set's name and version: what the read API labels values with. Bump the
/// version when a feature's meaning or the order changes.
pub const FEATURE_SET_VERSION: &str = "cart_session@1";

/// How many features the model takes.
pub const N_FEATURES: usize = 10;

/// Feature names in model input order (see `model/cart_abandonment/MODEL_CARD.md`).
pub const FEATURE_NAMES: [&str; N_FEATURES] = [
    // Value of the cart in major currency units.
    "cart_value",
    // Items in the cart (sum of quantities).
    "cart_items",
    "page_views",
    "product_views",
    "cart_adds",
    "cart_removes",
    // 1 when checkout was started in this session, else 0.
    "checkout_started",
    // From the session's first event to this one.
    "session_seconds",
    // From the previous event to this one.
    "seconds_since_last_activity",
    "exit_intents",
];

/// One shopper's features at one moment, in [`FEATURE_NAMES`] order.
pub type FeatureVector = [f32; N_FEATURES];
