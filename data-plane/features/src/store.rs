//! The Redis online store for sessions: one hash per (tenant, shopper), expiring a day after
//! the shopper's last event.

use nudge_contracts::ShopperId;
use nudge_tenants::TenantId;
use redis::aio::ConnectionManager;

use crate::SessionState;

/// Sessions are forgotten this long after the last write.
pub const SESSION_TTL_SECONDS: i64 = 24 * 3600;

/// Identifies one shopper's session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub tenant: TenantId,
    pub shopper: ShopperId,
}

impl SessionKey {
    /// The Redis key, under `prefix`. The tenant comes first, so a tenant's keys can be
    /// found (and erased) by pattern.
    pub fn redis_key(&self, prefix: &str) -> String {
        format!("{prefix}t:{}:session:{}", self.tenant, self.shopper)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Reads and writes sessions.
#[derive(Clone)]
pub struct SessionStore {
    redis: ConnectionManager,
    prefix: String,
}

const FIELDS: [&str; 12] = [
    "first_seen_ms",
    "last_seen_ms",
    "cart_value_minor",
    "cart_items",
    "page_views",
    "product_views",
    "cart_adds",
    "cart_removes",
    "checkout_started",
    "exit_intents",
    "purchased",
    "last_intervention_ms",
];

impl SessionStore {
    pub fn new(redis: ConnectionManager, prefix: impl Into<String>) -> Self {
        Self { redis, prefix: prefix.into() }
    }

    /// The stored session; a fresh one when there is none.
    pub async fn load(&self, key: &SessionKey) -> Result<SessionState, StoreError> {
        let mut conn = self.redis.clone();
        let values: Vec<Option<i64>> =
            redis::cmd("HMGET").arg(key.redis_key(&self.prefix)).arg(&FIELDS[..]).query_async(&mut conn).await?;
        let v = |i: usize| values.get(i).copied().flatten().unwrap_or(0);
        Ok(SessionState {
            first_seen_ms: v(0),
            last_seen_ms: v(1),
            cart_value_minor: v(2),
            cart_items: v(3),
            page_views: v(4),
            product_views: v(5),
            cart_adds: v(6),
            cart_removes: v(7),
            checkout_started: v(8) != 0,
            exit_intents: v(9),
            purchased: v(10) != 0,
            last_intervention_ms: v(11),
        })
    }

    /// Writes the whole session and renews its expiry, atomically.
    pub async fn save(&self, key: &SessionKey, s: &SessionState) -> Result<(), StoreError> {
        let redis_key = key.redis_key(&self.prefix);
        let values: [i64; 12] = [
            s.first_seen_ms,
            s.last_seen_ms,
            s.cart_value_minor,
            s.cart_items,
            s.page_views,
            s.product_views,
            s.cart_adds,
            s.cart_removes,
            i64::from(s.checkout_started),
            s.exit_intents,
            i64::from(s.purchased),
            s.last_intervention_ms,
        ];
        let pairs: Vec<(&str, i64)> = FIELDS.iter().copied().zip(values).collect();
        let mut conn = self.redis.clone();
        redis::pipe()
            .atomic()
            .hset_multiple(&redis_key, &pairs)
            .ignore()
            .expire(&redis_key, SESSION_TTL_SECONDS)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }
}
