//! The Redis online store for sessions: one hash per (tenant, shopper), expiring a day after
//! the shopper's last event.

use nudge_contracts::ShopperId;
use nudge_tenants::{CellId, TenantId};
use redis::{Script, aio::ConnectionManager};

use crate::SessionState;

/// Sessions are forgotten this long after the last write.
pub const SESSION_TTL_SECONDS: i64 = crate::definitions::CART_SESSION.ttl_seconds;

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

    /// This shopper's subject digest: their name in the subject index ([`subject_key`]) and
    /// in the tenant's [`last_seen_key`] set.
    pub fn digest(&self) -> String {
        nudge_contracts::subject_digest(self.tenant.as_uuid(), &self.shopper)
    }

    /// The marker that an event's effects were applied to this session (named by the
    /// event id's digest: the id is the client's and may say anything).
    pub fn applied_key(&self, prefix: &str, event_id: &str) -> String {
        format!("{prefix}t:{}:applied:{}", self.tenant, nudge_contracts::id_digest(event_id))
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
    idle_key: String,
    commit: Script,
}

/// The session field holding the shopper's time zone (text, beside the numbers).
const TIME_ZONE: &str = "time_zone";

/// The stored fields, in the order of [`crate::session::stored`]'s bits.
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
        let prefix = prefix.into();
        Self { redis, idle_key: format!("{prefix}idle-carts"), prefix, commit: Script::new(COMMIT) }
    }

    /// Keeps idle-cart timers in `cell`'s own schedule (`{prefix}idle-carts:{cell}`), so
    /// cells sharing a Redis and a prefix never scan each other's carts.
    pub fn for_cell(mut self, cell: &CellId) -> Self {
        self.idle_key = format!("{}idle-carts:{cell}", self.prefix);
        self
    }

    /// The stored session; a fresh one when there is none.
    pub async fn load(&self, key: &SessionKey) -> Result<SessionState, StoreError> {
        let mut conn = self.redis.clone();
        let values: Vec<Option<i64>> =
            redis::cmd("HMGET").arg(key.redis_key(&self.prefix)).arg(&FIELDS[..]).query_async(&mut conn).await?;
        Ok(session_from(&values))
    }

    /// The stored sessions of `keys`, in order, in one round trip.
    pub async fn load_many(&self, keys: &[SessionKey]) -> Result<Vec<SessionState>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("HMGET").arg(key.redis_key(&self.prefix)).arg(&FIELDS[..]);
        }
        let mut conn = self.redis.clone();
        let rows: Vec<Vec<Option<i64>>> = pipe.query_async(&mut conn).await?;
        Ok(rows.iter().map(|values| session_from(values)).collect())
    }

    /// Whether the effects of `event_id` were already applied (a replayed record).
    pub async fn already_applied(&self, key: &SessionKey, event_id: &str) -> Result<bool, StoreError> {
        let mut conn = self.redis.clone();
        let exists: bool =
            redis::cmd("EXISTS").arg(key.applied_key(&self.prefix, event_id)).query_async(&mut conn).await?;
        Ok(exists)
    }

    /// Applies event `event_id`'s effect on the session exactly once: in one script, marks the
    /// event applied (for [`APPLIED_TTL_SECONDS`]), writes the whole session, renews its
    /// expiry, counts the event for the tenant and sets or clears the shopper's idle-cart
    /// timer; a `time_zone` given (the event's) becomes the shopper's. False (and nothing
    /// written) when the event was applied already.
    pub async fn commit(
        &self,
        key: &SessionKey,
        event_id: &str,
        s: &SessionState,
        timer: IdleTimer,
        time_zone: &str,
    ) -> Result<bool, StoreError> {
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
        let digest = key.digest();
        let mut invocation = self.commit.key(key.applied_key(&self.prefix, event_id));
        invocation
            .key(key.redis_key(&self.prefix))
            .key(effects_key(&self.prefix, key))
            .key(self.idle_key())
            .key(subject_key(&self.prefix, key.tenant, &digest))
            .key(last_seen_key(&self.prefix, key.tenant))
            .arg(APPLIED_TTL_SECONDS)
            .arg(SESSION_TTL_SECONDS);
        match timer {
            IdleTimer::Set { last_activity_ms } => invocation.arg("set").arg(last_activity_ms),
            IdleTimer::Clear => invocation.arg("clear").arg(0),
            IdleTimer::Keep => invocation.arg("keep").arg(0),
        };
        invocation
            .arg(idle_member(key))
            .arg(key.shopper.as_str())
            .arg(&digest)
            .arg(chrono::Utc::now().timestamp_millis());
        for (field, value) in FIELDS.iter().zip(values) {
            invocation.arg(*field).arg(value);
        }
        if !time_zone.is_empty() {
            invocation.arg(TIME_ZONE).arg(time_zone);
        }
        let mut conn = self.redis.clone();
        let applied: i64 = invocation.invoke_async(&mut conn).await?;
        Ok(applied == 1)
    }

    /// The shopper's time zone (IANA), as their browser last named it.
    pub async fn time_zone(&self, key: &SessionKey) -> Result<Option<String>, StoreError> {
        let mut conn = self.redis.clone();
        let zone: Option<String> =
            redis::cmd("HGET").arg(key.redis_key(&self.prefix)).arg(TIME_ZONE).query_async(&mut conn).await?;
        Ok(zone)
    }
}

/// A session from its `HMGET` of [`FIELDS`]; absent fields are zero (a new session).
fn session_from(values: &[Option<i64>]) -> SessionState {
    let v = |i: usize| values.get(i).copied().flatten().unwrap_or(0);
    // No field at all is a shopper without a session; some fields absent is a session
    // written by something else (an older layout, a hand edit): those fields are unknown.
    let exists = values.iter().any(Option::is_some);
    let missing = if exists {
        (0..FIELDS.len()).filter(|&i| values.get(i).copied().flatten().is_none()).fold(0u16, |m, i| m | (1 << i))
    } else {
        0
    };
    SessionState {
        missing,
        // A visit without its start still began by its last event: the session is not new
        // (its clock and the new-visit gap still work); `session_seconds` takes its default.
        first_seen_ms: if values.first().copied().flatten().is_none() { v(1) } else { v(0) },
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
    }
}

/// How long an event id is remembered as applied: replays and client retries come well
/// within a day.
pub const APPLIED_TTL_SECONDS: i64 = 24 * 3600;

/// Marks, writes, counts and sets the timer in one step (see [`SessionStore::commit`]).
/// KEYS: applied marker, session hash, tenant's effects hash, idle-cart schedule, subject
/// index entry, tenant's last-seen set. ARGV: marker TTL, session TTL, timer action (`set`,
/// `clear`, `keep`), last activity, schedule member, shopper id, subject digest, now (ms),
/// then field/value pairs.
const COMMIT: &str = r#"
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) == false then
  return 0
end
for i = 9, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('SET', KEYS[5], ARGV[6], 'EX', ARGV[2])
redis.call('ZADD', KEYS[6], ARGV[8], ARGV[7])
redis.call('HINCRBY', KEYS[3], 'events', 1)
if ARGV[3] == 'set' then
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5])
elseif ARGV[3] == 'clear' then
  redis.call('ZREM', KEYS[4], ARGV[5])
end
return 1
"#;

/// What a committed event does to the shopper's idle-cart timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleTimer {
    /// The cart holds something: watch for silence after this activity.
    Set { last_activity_ms: i64 },
    /// The cart is empty (or bought): nothing to watch.
    Clear,
    /// Leave the timer as it is (the event was not activity).
    Keep,
}

/// A cart found idle: whose, and their last activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleCart {
    pub key: SessionKey,
    pub last_activity_ms: i64,
}

/// The schedule member of a shopper: tenant id, `/`, shopper id (tenant ids hold no `/`).
/// The member of a shopper's idle-cart timer in the cell's schedule.
pub fn idle_member(key: &SessionKey) -> String {
    format!("{}/{}", key.tenant, key.shopper)
}

/// Removes a member only if its score is still the one the scanner saw: a shopper who came
/// back meanwhile keeps the newer timer.
const SETTLE: &str = r#"
if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1])) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"#;

impl SessionStore {
    /// The cell's idle-cart schedule: one sorted set, members `tenant/shopper`, scored by
    /// the shopper's last activity (Unix ms).
    fn idle_key(&self) -> &str {
        &self.idle_key
    }

    /// The sorted set of this store's idle-cart timers.
    pub fn idle_schedule(&self) -> &str {
        &self.idle_key
    }

    /// Carts whose last activity is at or before `silent_since_ms`, oldest first, at most
    /// `limit`. A member that does not parse is removed and logged.
    pub async fn idle_carts(&self, silent_since_ms: i64, limit: usize) -> Result<Vec<IdleCart>, StoreError> {
        let mut conn = self.redis.clone();
        let due: Vec<(String, i64)> = redis::cmd("ZRANGE")
            .arg(self.idle_key())
            .arg("-inf")
            .arg(silent_since_ms)
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        let mut carts = Vec::with_capacity(due.len());
        for (member, last_activity_ms) in due {
            let parsed = member.split_once('/').and_then(|(t, s)| Some((t.parse().ok()?, ShopperId::parse(s).ok()?)));
            match parsed {
                Some((tenant, shopper)) => {
                    carts.push(IdleCart { key: SessionKey { tenant, shopper }, last_activity_ms })
                }
                None => {
                    tracing::error!(member_len = member.len(), "unreadable idle-cart timer removed");
                    redis::cmd("ZREM").arg(self.idle_key()).arg(&member).query_async::<()>(&mut conn).await?;
                }
            }
        }
        Ok(carts)
    }

    /// Links the shopper with subject digest `subject` to the e-mail address with email
    /// digest `email` ([`nudge_contracts::email_digest`]) in both directions, for
    /// `ttl_seconds` from now (the tenant's retention): an erasure by e-mail finds the
    /// shopper through [`email_key`], and erasing the shopper unlinks them through
    /// [`emails_key`]. Idempotent.
    pub async fn link_email(
        &self,
        tenant: TenantId,
        subject: &str,
        email: &str,
        ttl_seconds: i64,
    ) -> Result<(), StoreError> {
        let (by_email, of_subject) =
            (email_key(&self.prefix, tenant, email), emails_key(&self.prefix, tenant, subject));
        let mut conn = self.redis.clone();
        redis::pipe()
            .atomic()
            .sadd(&by_email, subject)
            .ignore()
            .expire(&by_email, ttl_seconds)
            .ignore()
            .sadd(&of_subject, email)
            .ignore()
            .expire(&of_subject, ttl_seconds)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Ends the timer the scanner acted on, unless the shopper has been active since.
    pub async fn settle_idle(&self, cart: &IdleCart) -> Result<(), StoreError> {
        let mut conn = self.redis.clone();
        Script::new(SETTLE)
            .key(self.idle_key())
            .arg(idle_member(&cart.key))
            .arg(cart.last_activity_ms)
            .invoke_async::<i64>(&mut conn)
            .await?;
        Ok(())
    }
}

/// A shopper's entry in the tenant's subject index: their id under their subject digest, so
/// an erasure that names only the digest finds their keys. Written with the session,
/// expiring with it.
pub fn subject_key(prefix: &str, tenant: TenantId, digest: &str) -> String {
    format!("{prefix}t:{tenant}:subject:{digest}")
}

/// The shoppers (subject digests) the store identified with one e-mail address, under the
/// address's email digest: what an erasure by e-mail erases. Expires with the tenant's
/// retention after the last identify.
pub fn email_key(prefix: &str, tenant: TenantId, email: &str) -> String {
    format!("{prefix}t:{tenant}:email:{email}")
}

/// The email digests a shopper was identified with: what erasing the shopper unlinks from
/// each [`email_key`].
pub fn emails_key(prefix: &str, tenant: TenantId, subject: &str) -> String {
    format!("{prefix}t:{tenant}:emails:{subject}")
}

/// A tenant's shoppers by when the cell last applied an event of theirs (a sorted set of
/// subject digests, scored in ms): what retention expires (their `features.v1` snapshot).
pub fn last_seen_key(prefix: &str, tenant: TenantId) -> String {
    format!("{prefix}t:{tenant}:last-seen")
}

/// The per-tenant count of events whose effects were applied (hash field `events`).
pub fn effects_key(prefix: &str, key: &SessionKey) -> String {
    format!("{prefix}t:{}:effects", key.tenant)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::stored;

    #[test]
    fn absent_fields_of_a_stored_session_are_marked_missing() {
        assert_eq!(session_from(&[None; 12]), SessionState::default(), "no session at all is a fresh one");
        let mut values = [Some(7i64); 12];
        assert_eq!(session_from(&values).missing, 0);
        values[2] = None;
        values[9] = None;
        let s = session_from(&values);
        assert_eq!(s.missing, stored::CART_VALUE | stored::EXIT_INTENTS);
        assert_eq!((s.cart_value_minor, s.exit_intents, s.page_views), (0, 0, 7));
        // Each bit names its field.
        for (i, bit) in [
            stored::FIRST_SEEN,
            stored::LAST_SEEN,
            stored::CART_VALUE,
            stored::CART_ITEMS,
            stored::PAGE_VIEWS,
            stored::PRODUCT_VIEWS,
            stored::CART_ADDS,
            stored::CART_REMOVES,
            stored::CHECKOUT_STARTED,
            stored::EXIT_INTENTS,
            stored::PURCHASED,
            stored::LAST_INTERVENTION,
        ]
        .into_iter()
        .enumerate()
        {
            let mut values = [Some(1i64); 12];
            values[i] = None;
            assert_eq!(session_from(&values).missing, bit, "{}", FIELDS[i]);
        }
    }
}
