//! Plans and the limits they set. The control plane records a store's plan; the cells
//! enforce its limits (events per second at ingest, open sockets at the gateway); the
//! control plane enforces seats.

use serde::{Deserialize, Serialize};

/// A store's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    /// Self-service start.
    #[default]
    Free,
    Growth,
    /// Negotiated; usually with a dedicated cell.
    Enterprise,
}

/// What a plan allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Sustained events per second accepted at ingest.
    pub events_per_second: u32,
    /// Extra events allowed in a burst above the sustained rate.
    pub burst_events: u32,
    /// Shopper sockets open at once on a cell.
    pub connections: u32,
    /// Days raw events and derived data are kept.
    pub retention_days: u32,
    /// Members of the store.
    pub seats: u32,
}

/// The share of a plan's monthly events at which the merchant is warned.
pub const SOFT_LIMIT_PERCENT: u64 = 80;

/// The shortest retention a store can have: the event topics keep a week of records.
pub const MIN_RETENTION_DAYS: u32 = 7;

/// Negotiated exceptions to a plan's limits; `None` keeps the plan's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_events: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seats: Option<u32>,
}

impl Limits {
    /// These limits with `overrides` applied.
    pub fn with(self, overrides: &LimitOverrides) -> Self {
        Self {
            events_per_second: overrides.events_per_second.unwrap_or(self.events_per_second),
            burst_events: overrides.burst_events.unwrap_or(self.burst_events),
            connections: overrides.connections.unwrap_or(self.connections),
            retention_days: overrides.retention_days.unwrap_or(self.retention_days),
            seats: overrides.seats.unwrap_or(self.seats),
        }
    }
}

impl Plan {
    pub const ALL: [Plan; 3] = [Plan::Free, Plan::Growth, Plan::Enterprise];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Growth => "growth",
            Self::Enterprise => "enterprise",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The plan's list price per month, in euro cents (the enterprise price is where
    /// negotiation starts). Stripe bills it: the price with this amount is the one
    /// `billing.prices` names for the plan.
    pub fn monthly_price_cents(self) -> u32 {
        match self {
            Self::Free => 0,
            Self::Growth => 49_00,
            Self::Enterprise => 99_000,
        }
    }

    /// Events a month the plan includes; `None`: no cap. At [`SOFT_LIMIT_PERCENT`] of it
    /// the merchant is warned; past it, the store's cell refuses its events until the month
    /// ends or the plan grows.
    pub fn monthly_events(self) -> Option<u64> {
        match self {
            Self::Free => Some(100_000),
            Self::Growth => Some(5_000_000),
            Self::Enterprise => None,
        }
    }

    pub fn limits(self) -> Limits {
        match self {
            Self::Free => {
                Limits { events_per_second: 50, burst_events: 500, connections: 1_000, retention_days: 30, seats: 3 }
            }
            Self::Growth => Limits {
                events_per_second: 1_000,
                burst_events: 10_000,
                connections: 20_000,
                retention_days: 90,
                seats: 20,
            },
            Self::Enterprise => Limits {
                events_per_second: 20_000,
                burst_events: 200_000,
                connections: 250_000,
                retention_days: 365,
                seats: 500,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_what_they_name() {
        let base = Plan::Free.limits();
        let o = LimitOverrides { connections: Some(2), ..Default::default() };
        let l = base.with(&o);
        assert_eq!(l.connections, 2);
        assert_eq!(l.events_per_second, base.events_per_second);
    }

    #[test]
    fn plans_round_trip_and_grow() {
        for p in Plan::ALL {
            assert_eq!(Plan::parse(p.as_str()), Some(p));
        }
        let (f, g, e) = (Plan::Free.limits(), Plan::Growth.limits(), Plan::Enterprise.limits());
        assert!(f.events_per_second < g.events_per_second && g.events_per_second < e.events_per_second);
        assert!(f.seats < g.seats && g.seats < e.seats);
        assert!(f.burst_events >= f.events_per_second);
    }
}
