//! Unwrapped data keys kept in memory for a while, so sealing a known shopper's events
//! needs no vault call.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use nudge_tenants::TenantId;
use ring::aead::LessSafeKey;

struct Cached {
    key: Arc<LessSafeKey>,
    at: Instant,
}

/// Unwrapped data keys by tenant and subject (looked up without allocating), each for the
/// cache's time to live, at most `capacity` in all.
/// Expired keys are dropped (their bytes freed) at least once per time to live whenever the
/// cache is used.
pub(crate) struct KeyCache {
    by_tenant: HashMap<TenantId, HashMap<String, Cached>>,
    len: usize,
    purged: Instant,
}

impl Default for KeyCache {
    fn default() -> Self {
        Self { by_tenant: HashMap::new(), len: 0, purged: Instant::now() }
    }
}

impl KeyCache {
    pub(crate) fn get(&mut self, tenant: TenantId, subject: &str, ttl: Duration) -> Option<Arc<LessSafeKey>> {
        let now = Instant::now();
        self.of_tenant(tenant, ttl, now).and_then(|keys| keys.get(subject, now))
    }

    /// The tenant's cached keys as of `now`, for looking up many of them at once.
    pub(crate) fn of_tenant(&mut self, tenant: TenantId, ttl: Duration, now: Instant) -> Option<TenantKeys<'_>> {
        if now.saturating_duration_since(self.purged) >= ttl {
            self.purge(ttl);
        }
        self.by_tenant.get(&tenant).map(|keys| TenantKeys { keys, ttl })
    }

    fn purge(&mut self, ttl: Duration) {
        for keys in self.by_tenant.values_mut() {
            keys.retain(|_, c| c.at.elapsed() < ttl);
        }
        self.by_tenant.retain(|_, keys| !keys.is_empty());
        self.len = self.by_tenant.values().map(HashMap::len).sum();
        self.purged = Instant::now();
    }

    pub(crate) fn insert(
        &mut self,
        tenant: TenantId,
        subject: &str,
        key: Arc<LessSafeKey>,
        ttl: Duration,
        capacity: usize,
    ) {
        if self.len >= capacity || self.purged.elapsed() >= ttl {
            self.purge(ttl);
            if self.len >= capacity {
                // Still full of live keys: start over rather than grow; they come back on use.
                self.by_tenant.clear();
                self.len = 0;
            }
        }
        let previous =
            self.by_tenant.entry(tenant).or_default().insert(subject.to_owned(), Cached { key, at: Instant::now() });
        if previous.is_none() {
            self.len += 1;
        }
    }

    pub(crate) fn remove(&mut self, tenant: TenantId, subject: &str) {
        if self.by_tenant.get_mut(&tenant).and_then(|keys| keys.remove(subject)).is_some() {
            self.len -= 1;
        }
    }

    pub(crate) fn remove_tenant(&mut self, tenant: TenantId) {
        if let Some(keys) = self.by_tenant.remove(&tenant) {
            self.len -= keys.len();
        }
    }
}

/// One tenant's cached keys.
pub(crate) struct TenantKeys<'a> {
    keys: &'a HashMap<String, Cached>,
    ttl: Duration,
}

impl TenantKeys<'_> {
    /// The subject's key, unless it has been cached for the time to live or longer.
    pub(crate) fn get(&self, subject: &str, now: Instant) -> Option<Arc<LessSafeKey>> {
        let hit = self.keys.get(subject)?;
        (now.saturating_duration_since(hit.at) < self.ttl).then(|| hit.key.clone())
    }
}

#[cfg(test)]
mod tests {
    use ring::aead::{AES_256_GCM, UnboundKey};

    use super::*;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn cached_keys_last_their_time_to_live_and_belong_to_their_tenant() {
        let key = || Arc::new(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).unwrap()));
        let (a, b) = (TenantId::new(), TenantId::new());
        let ttl = Duration::from_secs(60);
        let mut cache = KeyCache::default();
        cache.insert(a, "s1", key(), ttl, 10);
        let at = cache.by_tenant[&a]["s1"].at;
        let keys = cache.of_tenant(a, ttl, at).unwrap();
        assert!(keys.get("s1", at).is_some());
        assert!(keys.get("s1", at + ttl - Duration::from_millis(1)).is_some());
        assert!(keys.get("s1", at + ttl).is_none(), "a key is stale at its time to live");
        assert!(keys.get("s2", at).is_none());
        assert!(cache.of_tenant(b, ttl, at).is_none(), "a tenant sees only its own keys");
        assert!(cache.get(a, "s1", ttl).is_some());
        assert!(cache.get(b, "s1", ttl).is_none());
        cache.remove(a, "s1");
        assert!(cache.get(a, "s1", ttl).is_none());
        assert_eq!(cache.len, 0);
    }
}
