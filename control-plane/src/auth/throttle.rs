//! Sign-in attempts, limited per e-mail address.
//!
//! Each attempt counts against the address it was tried for (an unknown address too), in
//! Redis under the SHA-256 of the normalised address, before its password is checked. From
//! the first attempt a window opens; once it holds `max_failures` attempts that did not
//! succeed, every sign-in for that address is refused until the window closes — the right
//! password included, so guessing cannot go on by watching which attempt is refused
//! differently. A password that checks out clears the count.
//!
//! The limit is per address, not per client: it slows guessing one account's password from
//! any number of machines. A refused owner waits at most one window. Redis unreachable
//! means no sign-in (the session store fails closed the same way).

use std::time::Duration;

use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};

use super::refresh::RefreshError;

/// How many failures within how long close sign-in for an address.
#[derive(Debug, Clone, Copy)]
pub struct SignInLimit {
    pub max_failures: u32,
    pub window: Duration,
}

/// The sign-in attempt counter.
#[derive(Clone)]
pub struct SignInThrottle {
    redis: ConnectionManager,
    prefix: String,
    limit: SignInLimit,
}

impl SignInThrottle {
    pub fn new(redis: ConnectionManager, prefix: impl Into<String>, limit: SignInLimit) -> Self {
        Self { redis, prefix: prefix.into(), limit }
    }

    fn key(&self, email: &str) -> String {
        let normalised = email.trim().to_lowercase();
        format!("{}signin:{}", self.prefix, hex::encode(Sha256::digest(normalised.as_bytes())))
    }

    /// Counts an attempt to sign in as `email`, before its password is checked, and says
    /// whether it may go ahead: `Some(seconds)` to wait when the window already holds
    /// `max_failures` attempts that did not succeed. Counting first means attempts made in
    /// parallel cannot all slip in before the first of them fails. The window opens at the
    /// first attempt and is not extended by later ones.
    pub async fn attempt(&self, email: &str) -> Result<Option<u64>, RefreshError> {
        let key = self.key(email);
        let window_ms = u64::try_from(self.limit.window.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.redis.clone();
        let (attempts, ttl_ms): (u32, i64) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&key)
            .arg(0)
            .arg("PX")
            .arg(window_ms)
            .arg("NX")
            .ignore()
            .cmd("INCR")
            .arg(&key)
            .cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await?;
        if attempts <= self.limit.max_failures {
            return Ok(None);
        }
        let ms = if ttl_ms > 0 { ttl_ms as u64 } else { window_ms };
        Ok(Some(ms.div_ceil(1000).max(1)))
    }

    /// Takes back an attempt whose password was never checked (the database was
    /// unreachable): an outage does not count against the member.
    pub async fn not_checked(&self, email: &str) -> Result<(), RefreshError> {
        let mut conn = self.redis.clone();
        // DECR on a key that expired meanwhile would leave -1 without an expiry: only an
        // existing key is decremented.
        redis::Script::new("if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DECR', KEYS[1]) end return 0")
            .key(self.key(email))
            .invoke_async::<i64>(&mut conn)
            .await?;
        Ok(())
    }

    /// Clears the count once a password checked out.
    pub async fn succeeded(&self, email: &str) -> Result<(), RefreshError> {
        let mut conn = self.redis.clone();
        redis::cmd("DEL").arg(self.key(email)).query_async::<()>(&mut conn).await?;
        Ok(())
    }
}
