//! Per-tenant rate limits at ingest: a token bucket per tenant, refilled at the plan's
//! events per second up to its burst. One noisy store is answered 429 with `Retry-After`;
//! the others are not slowed.
//!
//! The buckets live in this process: with several ingest replicas each enforces the limit on
//! what it receives, so a store's total can exceed its rate by the replica count until the
//! limits are shared (issue 4).

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::Instant,
};

use nudge_data_plane_directory::TenantLimits;
use nudge_tenants::TenantId;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets by tenant.
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<TenantId, Bucket>>,
}

impl RateLimiter {
    /// Takes `events` tokens from `tenant`'s bucket, or says how many whole seconds until
    /// enough have refilled.
    pub fn take(&self, tenant: TenantId, events: u32, limits: TenantLimits) -> Result<(), u32> {
        self.take_at(tenant, events, limits, Instant::now())
    }

    fn take_at(&self, tenant: TenantId, events: u32, limits: TenantLimits, now: Instant) -> Result<(), u32> {
        let rate = f64::from(limits.events_per_second.max(1));
        let capacity = f64::from(limits.burst_events.max(limits.events_per_second).max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets.entry(tenant).or_insert(Bucket { tokens: capacity, updated: now });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.updated = now;
        let wanted = f64::from(events);
        if bucket.tokens >= wanted {
            bucket.tokens -= wanted;
            Ok(())
        } else {
            // A batch bigger than the bucket can never pass whole; say when it would be full.
            let missing = wanted.min(capacity) - bucket.tokens;
            Err((missing / rate).ceil().max(1.0) as u32)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const LIMITS: TenantLimits =
        TenantLimits { events_per_second: 10, burst_events: 20, connections: 1, retention_days: 30 };

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let limiter = RateLimiter::default();
        let (t, start) = (TenantId::new(), Instant::now());
        assert_eq!(limiter.take_at(t, 20, LIMITS, start), Ok(()));
        assert_eq!(limiter.take_at(t, 5, LIMITS, start), Err(1));
        assert_eq!(limiter.take_at(t, 5, LIMITS, start + Duration::from_millis(500)), Ok(()));
        assert_eq!(limiter.take_at(t, 15, LIMITS, start + Duration::from_millis(500)), Err(2));
    }

    #[test]
    fn tenants_do_not_share_a_bucket() {
        let limiter = RateLimiter::default();
        let now = Instant::now();
        let (noisy, quiet) = (TenantId::new(), TenantId::new());
        assert!(limiter.take_at(noisy, 20, LIMITS, now).is_ok());
        assert!(limiter.take_at(noisy, 1, LIMITS, now).is_err());
        assert!(limiter.take_at(quiet, 20, LIMITS, now).is_ok());
    }
}
