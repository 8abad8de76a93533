//! Per-tenant counts of what happened to events: accepted, or dropped and why. Ingest and
//! the pipeline count; the cell's usage reporter drains the counts into `usage.v1` records.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use nudge_tenants::TenantId;

/// Why events were not accepted or not acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Drop {
    /// Over the plan's events per second.
    Rate,
    /// Over a quota of the plan (reserved for billing).
    Quota,
    /// Failed validation.
    Schema,
    /// The shopper is on the store's suppression list.
    Suppressed,
    /// Sent before (same event id).
    Duplicate,
}

impl Drop {
    pub const ALL: [Drop; 5] = [Drop::Rate, Drop::Quota, Drop::Schema, Drop::Suppressed, Drop::Duplicate];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rate => "rate",
            Self::Quota => "quota",
            Self::Schema => "schema",
            Self::Suppressed => "suppressed",
            Self::Duplicate => "duplicate",
        }
    }
}

/// Counts for one tenant since the last drain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub accepted: u64,
    pub dropped: HashMap<Drop, u64>,
    /// Events scored (a shadow model's score counts too).
    pub predictions: u64,
    /// Interventions delivered: acknowledged by a shopper's browser, each counted once.
    pub interventions: u64,
    /// Sockets open at sampled instants (unix ms, connections), oldest first.
    pub connection_samples: Vec<(i64, u64)>,
}

/// The counters of a cell process.
#[derive(Default)]
pub struct UsageCounters {
    counts: Mutex<HashMap<TenantId, Counts>>,
}

impl UsageCounters {
    pub fn accepted(&self, tenant: TenantId, n: u64) {
        if n > 0 {
            self.counts.lock().unwrap_or_else(PoisonError::into_inner).entry(tenant).or_default().accepted += n;
        }
    }

    pub fn dropped(&self, tenant: TenantId, why: Drop, n: u64) {
        if n > 0 {
            *self
                .counts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(tenant)
                .or_default()
                .dropped
                .entry(why)
                .or_default() += n;
        }
    }

    /// `n` scores made for the tenant's events.
    pub fn predicted(&self, tenant: TenantId, n: u64) {
        if n > 0 {
            self.counts.lock().unwrap_or_else(PoisonError::into_inner).entry(tenant).or_default().predictions += n;
        }
    }

    /// `n` interventions delivered to the tenant's shoppers.
    pub fn delivered(&self, tenant: TenantId, n: u64) {
        if n > 0 {
            self.counts.lock().unwrap_or_else(PoisonError::into_inner).entry(tenant).or_default().interventions += n;
        }
    }

    /// The sockets each tenant holds in this process at the instant `at_ms`.
    pub fn connections(&self, at_ms: i64, held: impl IntoIterator<Item = (TenantId, u64)>) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        for (tenant, n) in held {
            counts.entry(tenant).or_default().connection_samples.push((at_ms, n));
        }
    }

    /// Takes the counts gathered so far, leaving zero.
    pub fn drain(&self) -> HashMap<TenantId, Counts> {
        std::mem::take(&mut *self.counts.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts counts back (a report could not be sent), adding to what came in meanwhile.
    pub fn restore(&self, counts: HashMap<TenantId, Counts>) {
        let mut current = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        for (tenant, c) in counts {
            let entry = current.entry(tenant).or_default();
            entry.accepted += c.accepted;
            entry.predictions += c.predictions;
            entry.interventions += c.interventions;
            entry.connection_samples.extend(c.connection_samples);
            entry.connection_samples.sort_unstable();
            for (why, n) in c.dropped {
                *entry.dropped.entry(why).or_default() += n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_drain_and_restore() {
        let usage = UsageCounters::default();
        let t = TenantId::new();
        usage.accepted(t, 3);
        usage.dropped(t, Drop::Rate, 2);
        let drained = usage.drain();
        assert_eq!(drained[&t].accepted, 3);
        assert!(usage.drain().is_empty());
        usage.accepted(t, 1);
        usage.predicted(t, 2);
        usage.delivered(t, 1);
        usage.connections(2_000, [(t, 5)]);
        let mut drained = drained;
        drained.get_mut(&t).expect("counted").connection_samples.push((1_000, 7));
        usage.restore(drained);
        let again = usage.drain();
        assert_eq!((again[&t].accepted, again[&t].dropped[&Drop::Rate]), (4, 2));
        assert_eq!((again[&t].predictions, again[&t].interventions), (2, 1));
        assert_eq!(again[&t].connection_samples, vec![(1_000, 7), (2_000, 5)]);
    }
}
