//! Decisioning, free of I/O.
//!
//! # Layout
//!
//! - This file: [`RuleConfig`] and [`decide`], the default rule, for a store with no active
//!   campaign: a shopper who shows exit intent with items in the cart and a high
//!   abandonment probability gets a cart reminder, at most once per cooldown, and never
//!   after buying.
//! - [`campaigns`]: deciding with a store's active campaigns.

pub mod campaigns;

use nudge_contracts::proto::events::v1::{Event, event::Payload};
use nudge_data_plane_features::SessionState;
use serde::{Deserialize, Serialize};

/// Thresholds of the default rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RuleConfig {
    /// Minimum abandonment probability that earns a reminder.
    pub threshold: f32,
    /// Least time between two interventions for one shopper.
    pub cooldown_ms: i64,
}

impl Default for RuleConfig {
    fn default() -> Self {
        Self { threshold: 0.5, cooldown_ms: 30 * 60 * 1000 }
    }
}

/// An intervention to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub kind: &'static str,
    pub title: String,
    pub body: String,
}

/// Why nothing is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The event is not a moment to intervene.
    NotATrigger,
    EmptyCart,
    AlreadyPurchased,
    BelowThreshold,
    CoolingDown,
}

/// The decision for `event`, given the session after applying it and the model's score.
pub fn decide(rule: &RuleConfig, event: &Event, session: &SessionState, score: f32) -> Result<Action, Hold> {
    if !matches!(event.payload, Some(Payload::ExitIntent(_))) {
        return Err(Hold::NotATrigger);
    }
    if session.purchased {
        return Err(Hold::AlreadyPurchased);
    }
    if session.cart_items == 0 {
        return Err(Hold::EmptyCart);
    }
    if score < rule.threshold {
        return Err(Hold::BelowThreshold);
    }
    if session.last_intervention_ms != 0
        && event.occurred_at_ms.saturating_sub(session.last_intervention_ms) < rule.cooldown_ms
    {
        return Err(Hold::CoolingDown);
    }
    let items = session.cart_items;
    Ok(Action {
        kind: "cart_reminder",
        title: "Still thinking it over?".to_owned(),
        body: if items == 1 {
            "Your item is still in your cart, saved for you.".to_owned()
        } else {
            format!("Your {items} items are still in your cart, saved for you.")
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use nudge_contracts::proto::events::v1::{ExitIntent, PageView};

    use super::*;

    fn exit(at: i64) -> Event {
        Event { occurred_at_ms: at, payload: Some(Payload::ExitIntent(ExitIntent {})), ..Default::default() }
    }

    fn cart(items: i64) -> SessionState {
        SessionState { cart_items: items, cart_value_minor: items * 1000, first_seen_ms: 1, ..Default::default() }
    }

    #[test]
    fn exit_with_a_cart_and_a_high_score_earns_a_reminder() {
        let action = decide(&RuleConfig::default(), &exit(10), &cart(2), 0.9).unwrap();
        assert_eq!(action.kind, "cart_reminder");
        assert!(action.body.contains("2 items"));
    }

    #[test]
    fn holds_for_every_reason() {
        let rule = RuleConfig::default();
        let page = Event { payload: Some(Payload::PageView(PageView::default())), ..Default::default() };
        assert_eq!(decide(&rule, &page, &cart(2), 0.9), Err(Hold::NotATrigger));
        assert_eq!(decide(&rule, &exit(10), &cart(0), 0.9), Err(Hold::EmptyCart));
        assert_eq!(decide(&rule, &exit(10), &cart(2), 0.2), Err(Hold::BelowThreshold));
        let bought = SessionState { purchased: true, ..cart(2) };
        assert_eq!(decide(&rule, &exit(10), &bought, 0.9), Err(Hold::AlreadyPurchased));
        let recent = SessionState { last_intervention_ms: 5, ..cart(2) };
        assert_eq!(decide(&rule, &exit(10), &recent, 0.9), Err(Hold::CoolingDown));
        assert!(decide(&rule, &exit(5 + rule.cooldown_ms), &recent, 0.9).is_ok());
    }
}
