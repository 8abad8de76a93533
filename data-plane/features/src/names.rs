//! The names a campaign may use: its condition may read every feature of the feature set
//! (flags as booleans, the others as numbers) and the model's prediction; its messages may
//! also show the discount they offer. The control plane checks campaigns against these
//! names when they are saved, and a cell evaluates them with a [`Moment`].

use nudge_campaigns::{
    expr::{Schema, Type, Value, Values},
    model::Vocabulary,
};

use crate::definitions::{CART_SESSION, FeatureKind, FeatureVector};

/// The prediction a condition may read: the shopper's abandonment probability, 0 to 1.
pub const PREDICTION: &str = "prediction.abandonment";

/// The names a condition may use.
pub struct CampaignNames;

impl Schema for CampaignNames {
    fn type_of(&self, name: &str) -> Option<Type> {
        if name == PREDICTION {
            return Some(Type::Number);
        }
        CART_SESSION.features.iter().find(|f| f.name == name).map(|f| match f.kind {
            FeatureKind::Flag => Type::Bool,
            FeatureKind::Amount | FeatureKind::Count | FeatureKind::Seconds => Type::Number,
        })
    }
}

/// The variables a message may use: a condition's names, and the offered discount.
pub fn message_variable(name: &str) -> bool {
    matches!(name, "discount.code" | "discount.percent") || CampaignNames.type_of(name).is_some()
}

/// What a campaign of this platform may refer to.
pub fn vocabulary() -> Vocabulary<'static> {
    vocabulary_with(false)
}

/// [`vocabulary`], with webhooks to loopback addresses allowed or not (local runs and tests
/// only).
pub fn vocabulary_with(loopback_webhooks: bool) -> Vocabulary<'static> {
    Vocabulary { schema: &CampaignNames, variables: &message_variable, loopback_webhooks }
}

/// The values of the names at one moment of a shopper: the features after the event, and
/// the model's score.
pub struct Moment<'a> {
    pub features: &'a FeatureVector,
    pub score: f32,
}

impl Values for Moment<'_> {
    fn value_of(&self, name: &str) -> Value {
        if name == PREDICTION {
            return Value::Number(f64::from(self.score));
        }
        match CART_SESSION.features.iter().position(|f| f.name == name) {
            Some(i) => {
                let v = self.features[i];
                match CART_SESSION.features[i].kind {
                    FeatureKind::Flag => Value::Bool(v != 0.0),
                    _ => Value::Number(f64::from(v)),
                }
            }
            // A checked condition names nothing else; a template's discount is the caller's.
            None => Value::Text(String::new()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use nudge_campaigns::expr::Condition;

    use super::*;
    use crate::definitions::{DEFAULT_VECTOR, FEATURE_NAMES};

    #[test]
    fn conditions_read_the_features_and_the_prediction() {
        assert_eq!(CampaignNames.type_of("cart_value"), Some(Type::Number));
        assert_eq!(CampaignNames.type_of("checkout_started"), Some(Type::Bool));
        assert_eq!(CampaignNames.type_of(PREDICTION), Some(Type::Number));
        assert_eq!(CampaignNames.type_of("shopper.email"), None);
        assert!(message_variable("discount.code") && message_variable("cart_items") && !message_variable("email"));

        let mut features = DEFAULT_VECTOR;
        let at = |name: &str| FEATURE_NAMES.iter().position(|n| *n == name).unwrap();
        features[at("cart_value")] = 80.0;
        features[at("checkout_started")] = 1.0;
        let moment = Moment { features: &features, score: 0.9 };
        let holds = |s: &str| Condition::parse(s, &CampaignNames).unwrap().holds(&moment);
        assert!(holds("cart_value >= 50 and prediction.abandonment > 0.8 and checkout_started"));
        assert!(!holds("cart_value > 100 or not checkout_started"));
    }
}
