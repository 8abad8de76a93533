//! A shopper's session and how events move it.

use nudge_contracts::proto::events::v1::{Event, event::Payload};

use crate::{FeatureVector, N_FEATURES, definitions::CART_SESSION};

/// Inactivity after which the next event starts a new session.
pub const SESSION_GAP_MS: i64 = 30 * 60 * 1000;

/// Running totals for one shopper's current session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionState {
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub cart_value_minor: i64,
    pub cart_items: i64,
    pub page_views: i64,
    pub product_views: i64,
    pub cart_adds: i64,
    pub cart_removes: i64,
    pub checkout_started: bool,
    pub exit_intents: i64,
    pub purchased: bool,
    /// When the last intervention was sent to this shopper (0 = never).
    pub last_intervention_ms: i64,
    /// Stored fields that were absent from a stored session ([`stored`] bits): the features
    /// computed from them take their declared defaults instead.
    pub missing: u16,
}

/// The fields of a stored session, as bits of [`SessionState::missing`].
pub mod stored {
    pub const FIRST_SEEN: u16 = 1 << 0;
    pub const LAST_SEEN: u16 = 1 << 1;
    pub const CART_VALUE: u16 = 1 << 2;
    pub const CART_ITEMS: u16 = 1 << 3;
    pub const PAGE_VIEWS: u16 = 1 << 4;
    pub const PRODUCT_VIEWS: u16 = 1 << 5;
    pub const CART_ADDS: u16 = 1 << 6;
    pub const CART_REMOVES: u16 = 1 << 7;
    pub const CHECKOUT_STARTED: u16 = 1 << 8;
    pub const EXIT_INTENTS: u16 = 1 << 9;
    pub const PURCHASED: u16 = 1 << 10;
    pub const LAST_INTERVENTION: u16 = 1 << 11;
}

/// The stored fields each feature (in input order) is computed from.
const SOURCES: [u16; N_FEATURES] = [
    stored::CART_VALUE,
    stored::CART_ITEMS,
    stored::PAGE_VIEWS,
    stored::PRODUCT_VIEWS,
    stored::CART_ADDS,
    stored::CART_REMOVES,
    stored::CHECKOUT_STARTED,
    stored::FIRST_SEEN | stored::LAST_SEEN,
    stored::LAST_SEEN,
    stored::EXIT_INTENTS,
];

impl SessionState {
    pub fn is_new(&self) -> bool {
        self.first_seen_ms == 0
    }

    /// Applies `event` and returns the features as of that event.
    pub fn apply(&mut self, event: &Event) -> FeatureVector {
        let at = event.occurred_at_ms;
        if let Some(Payload::CartIdle(_)) = event.payload {
            // Silence is not activity: the session stays as it is, and the features are
            // read at the moment the cart was found idle.
            return self.features_at(at);
        }
        if !self.is_new() && at.saturating_sub(self.last_seen_ms) > SESSION_GAP_MS {
            // A new visit: the cart persists in the store, the visit's behaviour does not.
            let (cart_value, cart_items) = (self.cart_value_minor, self.cart_items);
            let last_intervention = self.last_intervention_ms;
            // What is still unknown is what carried over; the visit's counts start at zero.
            let missing = self.missing & (stored::CART_VALUE | stored::CART_ITEMS | stored::LAST_INTERVENTION);
            *self = Self {
                cart_value_minor: cart_value,
                cart_items,
                last_intervention_ms: last_intervention,
                missing,
                ..Self::default()
            };
        }
        // Late events (out of order) count, but never move the clock backwards.
        let since_last_ms = if self.is_new() { 0 } else { at.saturating_sub(self.last_seen_ms).max(0) };
        if self.is_new() {
            self.first_seen_ms = at;
            self.last_seen_ms = at;
        }
        self.last_seen_ms = self.last_seen_ms.max(at);

        match &event.payload {
            // Counts and amounts come from untrusted clients: saturate, never overflow.
            Some(Payload::PageView(_)) => self.page_views = self.page_views.saturating_add(1),
            Some(Payload::ProductView(_)) => self.product_views = self.product_views.saturating_add(1),
            Some(Payload::AddToCart(c)) => {
                self.cart_adds = self.cart_adds.saturating_add(1);
                self.cart_items = self.cart_items.saturating_add(i64::from(c.quantity));
                self.cart_value_minor =
                    self.cart_value_minor.saturating_add(c.price_minor.max(0).saturating_mul(i64::from(c.quantity)));
            }
            Some(Payload::RemoveFromCart(c)) => {
                self.cart_removes = self.cart_removes.saturating_add(1);
                self.cart_items = self.cart_items.saturating_sub(i64::from(c.quantity)).max(0);
                self.cart_value_minor = self
                    .cart_value_minor
                    .saturating_sub(c.price_minor.max(0).saturating_mul(i64::from(c.quantity)))
                    .max(0);
                if self.cart_items == 0 {
                    self.cart_value_minor = 0;
                }
            }
            Some(Payload::CheckoutStart(_)) => self.checkout_started = true,
            Some(Payload::Purchase(_)) => {
                self.purchased = true;
                self.cart_items = 0;
                self.cart_value_minor = 0;
                self.checkout_started = false;
            }
            Some(Payload::ExitIntent(_)) => self.exit_intents = self.exit_intents.saturating_add(1),
            Some(
                Payload::Identify(_) | Payload::CartIdle(_) | Payload::Consent(_) | Payload::InterventionFeedback(_),
            )
            | None => {}
        }

        self.vector(at, since_last_ms)
    }

    /// Whether the cart holds something (a purchase empties it): what the idle timer
    /// watches.
    pub fn has_open_cart(&self) -> bool {
        self.cart_items > 0
    }

    /// The features as they stand at `now_ms`, with no new event: the clock-based ones
    /// (`session_seconds`, `seconds_since_last_activity`) run on to `now_ms`. What the read
    /// API answers.
    pub fn features_at(&self, now_ms: i64) -> FeatureVector {
        let now = now_ms.max(self.last_seen_ms);
        self.vector(now, now.saturating_sub(self.last_seen_ms))
    }

    /// How many features take their declared default because a stored field they come
    /// from was absent.
    pub fn defaulted(&self) -> usize {
        SOURCES.iter().filter(|&&fields| self.missing & fields != 0).count()
    }

    fn vector(&self, at: i64, since_last_ms: i64) -> FeatureVector {
        let mut v = self.computed(at, since_last_ms);
        if self.missing != 0 {
            for (i, &fields) in SOURCES.iter().enumerate() {
                if self.missing & fields != 0 {
                    v[i] = CART_SESSION.features[i].default;
                }
            }
        }
        v
    }

    fn computed(&self, at: i64, since_last_ms: i64) -> FeatureVector {
        [
            self.cart_value_minor as f32 / 100.0,
            self.cart_items as f32,
            self.page_views as f32,
            self.product_views as f32,
            self.cart_adds as f32,
            self.cart_removes as f32,
            f32::from(u8::from(self.checkout_started)),
            (at.saturating_sub(self.first_seen_ms).max(0) / 1000) as f32,
            (since_last_ms.max(0) / 1000) as f32,
            self.exit_intents as f32,
        ]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use nudge_contracts::proto::events::v1::{CartChange, ExitIntent, PageView, Purchase};

    use super::*;

    #[test]
    fn features_from_missing_fields_take_their_declared_defaults() {
        let mut s = SessionState::default();
        s.apply(&ev(0, Payload::PageView(PageView::default())));
        s.apply(&ev(5, Payload::AddToCart(CartChange { quantity: 2, price_minor: 1000, ..Default::default() })));
        assert_eq!(s.defaulted(), 0);
        let whole = s.features_at(10_000);

        s.missing = stored::CART_VALUE | stored::FIRST_SEEN;
        assert_eq!(s.defaulted(), 2, "cart_value and session_seconds");
        let f = s.features_at(10_000);
        for (i, def) in CART_SESSION.features.iter().enumerate() {
            let expected =
                if def.name == "cart_value" || def.name == "session_seconds" { def.default } else { whole[i] };
            assert_eq!(f[i], expected, "{}", def.name);
        }
        // A new visit starts the visit's counts afresh; what carried over stays unknown.
        let f = s.apply(&ev(5 + 31 * 60, Payload::PageView(PageView::default())));
        assert_eq!(s.missing, stored::CART_VALUE);
        assert_eq!((f[0], f[2]), (CART_SESSION.features[0].default, 1.0));
    }

    fn ev(at_s: i64, payload: Payload) -> Event {
        Event { occurred_at_ms: 1_800_000_000_000 + at_s * 1000, payload: Some(payload), ..Default::default() }
    }

    fn add(price_minor: i64, quantity: u32) -> Payload {
        Payload::AddToCart(CartChange { product_id: "p".into(), price_minor, currency: "EUR".into(), quantity })
    }

    #[test]
    fn a_session_accumulates() {
        let mut s = SessionState::default();
        s.apply(&ev(0, Payload::PageView(PageView::default())));
        s.apply(&ev(10, add(2500, 2)));
        let f = s.apply(&ev(70, Payload::ExitIntent(ExitIntent {})));
        assert_eq!(f, [50.0, 2.0, 1.0, 0.0, 1.0, 0.0, 0.0, 70.0, 60.0, 1.0]);
    }

    #[test]
    fn features_at_a_later_moment_run_the_clocks_on() {
        let mut s = SessionState::default();
        s.apply(&ev(0, Payload::PageView(PageView::default())));
        let f = s.apply(&ev(10, add(2500, 2)));
        let later = s.features_at(1_800_000_000_000 + 100 * 1000);
        assert_eq!(later[..7], f[..7], "counts do not change without events");
        assert_eq!((later[7], later[8]), (100.0, 90.0));
        // A clock behind the last event does not run backwards: as of the last event.
        let stale = s.features_at(0);
        assert_eq!((&stale[..8], stale[8]), (&f[..8], 0.0));
    }

    #[test]
    fn an_idle_cart_event_reads_the_session_without_touching_it() {
        use nudge_contracts::proto::events::v1::CartIdle;
        let mut s = SessionState::default();
        s.apply(&ev(0, add(2500, 2)));
        let before = s.clone();
        let f = s.apply(&ev(1800, Payload::CartIdle(CartIdle { last_activity_ms: before.last_seen_ms })));
        assert_eq!(s, before, "an idle event is not activity");
        assert_eq!((f[0], f[1], f[7], f[8]), (50.0, 2.0, 1800.0, 1800.0));
    }

    #[test]
    fn only_a_live_cart_waits_for_the_idle_timer() {
        let mut s = SessionState::default();
        s.apply(&ev(0, Payload::PageView(PageView::default())));
        assert!(!s.has_open_cart());
        s.apply(&ev(1, add(1000, 1)));
        assert!(s.has_open_cart());
        s.apply(&ev(
            2,
            Payload::Purchase(Purchase { order_id: "o".into(), value_minor: 1000, currency: "EUR".into() }),
        ));
        assert!(!s.has_open_cart());
        s.apply(&ev(3, add(500, 1)));
        assert!(s.has_open_cart(), "a cart filled again after a purchase is watched again");
    }

    #[test]
    fn purchase_empties_the_cart() {
        let mut s = SessionState::default();
        s.apply(&ev(0, add(1000, 1)));
        let f = s.apply(&ev(
            5,
            Payload::Purchase(Purchase { order_id: "o".into(), value_minor: 1000, currency: "EUR".into() }),
        ));
        assert_eq!((f[0], f[1]), (0.0, 0.0));
        assert!(s.purchased);
    }

    #[test]
    fn a_long_gap_starts_a_new_visit_but_keeps_the_cart() {
        let mut s = SessionState::default();
        s.apply(&ev(0, Payload::PageView(PageView::default())));
        s.apply(&ev(1, add(1000, 1)));
        let f = s.apply(&ev(1 + 31 * 60, Payload::PageView(PageView::default())));
        assert_eq!(f[0], 10.0, "cart kept");
        assert_eq!((f[2], f[4], f[7], f[8]), (1.0, 0.0, 0.0, 0.0), "visit counters restart");
    }

    #[test]
    fn hostile_amounts_saturate_instead_of_overflowing() {
        let mut s = SessionState::default();
        for i in 0..20_000 {
            s.apply(&ev(i, add(1_000_000_000_000, 1000)));
        }
        assert_eq!(s.cart_value_minor, i64::MAX);
        s.apply(&ev(
            20_001,
            Payload::RemoveFromCart(CartChange { quantity: 1000, price_minor: i64::MAX, ..Default::default() }),
        ));
        assert!(s.cart_value_minor >= 0);
    }

    #[test]
    fn late_events_do_not_rewind_the_clock() {
        let mut s = SessionState::default();
        s.apply(&ev(100, Payload::PageView(PageView::default())));
        let f = s.apply(&ev(50, Payload::PageView(PageView::default())));
        assert_eq!(f[8], 0.0);
        assert_eq!(s.last_seen_ms, 1_800_000_000_000 + 100_000);
    }
}
