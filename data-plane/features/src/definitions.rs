//! The feature set, declared once: every feature's name, type, the events it is computed
//! from, how they are aggregated and the value a model gets when it is missing. The
//! streaming writer ([`crate::SessionState`]), the model input order ([`FEATURE_NAMES`]), the
//! read API and the model cards all follow this table; tests hold each of them to it.

/// A feature set's identity: what snapshots and the read API label values with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureSet {
    pub name: &'static str,
    /// Bumped when a feature's meaning, type or order changes; models name the version
    /// they were trained on.
    pub version: u32,
    /// How long a shopper's state lives after their last event.
    pub ttl_seconds: i64,
    pub features: &'static [FeatureDefinition],
}

/// One feature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureDefinition {
    pub name: &'static str,
    pub kind: FeatureKind,
    /// Event types that change it (the clock-based ones move with every event).
    pub source_events: &'static [&'static str],
    pub aggregation: Aggregation,
    /// What the model gets when the value is missing (a shopper with no state yet).
    pub default: f32,
    pub description: &'static str,
}

/// The value's type, as the model receives it (always an f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureKind {
    /// A money amount in the currency's major unit.
    Amount,
    /// A non-negative count.
    Count,
    /// 0 or 1.
    Flag,
    /// Whole seconds.
    Seconds,
}

/// How the source events make the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    /// Running sum of amounts or quantities, down on removals, reset by a purchase.
    CartBalance,
    /// Number of source events in the visit.
    CountInVisit,
    /// Set by the source event, cleared by a purchase.
    LatchInVisit,
    /// Time from the visit's first event to now.
    SinceVisitStart,
    /// Time from the previous event to now.
    SinceLastEvent,
}

impl Aggregation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CartBalance => "cart balance",
            Self::CountInVisit => "count in visit",
            Self::LatchInVisit => "latch in visit",
            Self::SinceVisitStart => "since visit start",
            Self::SinceLastEvent => "since last event",
        }
    }
}

const CART: &[&str] = &["add_to_cart", "remove_from_cart", "purchase"];
const ANY: &[&str] = &["*"];

const fn feature(
    name: &'static str,
    kind: FeatureKind,
    source_events: &'static [&'static str],
    aggregation: Aggregation,
    description: &'static str,
) -> FeatureDefinition {
    FeatureDefinition { name, kind, source_events, aggregation, default: 0.0, description }
}

/// The cart-session feature set, in model input order.
pub const CART_SESSION: FeatureSet = FeatureSet {
    name: "cart_session",
    version: 1,
    ttl_seconds: 24 * 3600,
    features: &[
        feature("cart_value", FeatureKind::Amount, CART, Aggregation::CartBalance, "value of the cart"),
        feature(
            "cart_items",
            FeatureKind::Count,
            CART,
            Aggregation::CartBalance,
            "items in the cart (sum of quantities)",
        ),
        feature(
            "page_views",
            FeatureKind::Count,
            &["page_view"],
            Aggregation::CountInVisit,
            "pages viewed in the visit",
        ),
        feature(
            "product_views",
            FeatureKind::Count,
            &["product_view"],
            Aggregation::CountInVisit,
            "products viewed in the visit",
        ),
        feature("cart_adds", FeatureKind::Count, &["add_to_cart"], Aggregation::CountInVisit, "additions to the cart"),
        feature(
            "cart_removes",
            FeatureKind::Count,
            &["remove_from_cart"],
            Aggregation::CountInVisit,
            "removals from the cart",
        ),
        feature(
            "checkout_started",
            FeatureKind::Flag,
            &["checkout_start", "purchase"],
            Aggregation::LatchInVisit,
            "checkout started and not completed",
        ),
        feature("session_seconds", FeatureKind::Seconds, ANY, Aggregation::SinceVisitStart, "length of the visit"),
        feature(
            "seconds_since_last_activity",
            FeatureKind::Seconds,
            ANY,
            Aggregation::SinceLastEvent,
            "idle time before this moment",
        ),
        feature(
            "exit_intents",
            FeatureKind::Count,
            &["exit_intent"],
            Aggregation::CountInVisit,
            "exit intents in the visit",
        ),
    ],
};

/// How many features the model takes.
pub const N_FEATURES: usize = CART_SESSION.features.len();

/// Feature names in model input order, from [`CART_SESSION`].
pub const FEATURE_NAMES: [&str; N_FEATURES] = {
    let mut names = [""; N_FEATURES];
    let mut i = 0;
    while i < N_FEATURES {
        names[i] = CART_SESSION.features[i].name;
        i += 1;
    }
    names
};

/// Every feature at its declared default: what a model gets for a shopper with no state.
pub const DEFAULT_VECTOR: FeatureVector = {
    let mut values = [0.0; N_FEATURES];
    let mut i = 0;
    while i < N_FEATURES {
        values[i] = CART_SESSION.features[i].default;
        i += 1;
    }
    values
};

/// `name@version` of the feature set, as the read API and snapshots label values.
pub const FEATURE_SET_VERSION: &str = "cart_session@1";

/// One shopper's features at one moment, in [`FEATURE_NAMES`] order.
pub type FeatureVector = [f32; N_FEATURES];

/// A model's input schema checked against the feature set: the same names in the same
/// order. The message names the first difference.
pub fn check_input_schema(names: &[&str]) -> Result<(), String> {
    if names.len() != N_FEATURES {
        return Err(format!("the model takes {} features, the feature set has {N_FEATURES}", names.len()));
    }
    match names.iter().zip(FEATURE_NAMES).enumerate().find(|(_, (a, b))| *a != b) {
        Some((i, (got, want))) => Err(format!("input {i} is `{got}`, the feature set has `{want}` there")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_label_is_the_sets() {
        assert_eq!(FEATURE_SET_VERSION, format!("{}@{}", CART_SESSION.name, CART_SESSION.version));
    }

    #[test]
    fn names_are_unique_snake_case_and_sources_are_event_types() {
        // Event types as ingest takes them, and `*` for every event.
        let known = |e: &&str| *e == "*" || nudge_contracts::ingest::EVENT_TYPES.contains(e);
        for (i, f) in CART_SESSION.features.iter().enumerate() {
            assert!(f.name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{}", f.name);
            assert!(!CART_SESSION.features[..i].iter().any(|g| g.name == f.name), "{} twice", f.name);
            assert!(!f.source_events.is_empty() && f.source_events.iter().all(known), "{}", f.name);
            assert!(f.default.is_finite());
        }
    }

    #[test]
    fn an_input_schema_must_match_name_for_name() {
        assert_eq!(check_input_schema(&FEATURE_NAMES), Ok(()));
        let mut swapped = FEATURE_NAMES;
        swapped.swap(0, 1);
        assert_eq!(
            check_input_schema(&swapped),
            Err("input 0 is `cart_items`, the feature set has `cart_value` there".into())
        );
        assert!(check_input_schema(&FEATURE_NAMES[..3]).unwrap_err().contains("takes 3 features"));
    }
}
