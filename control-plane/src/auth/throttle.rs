//! Sign-in attempts, limited per e-mail address.
//!
//! Each wrong password (or unknown address) counts against the address it was tried for,
//! in Redis under the SHA-256 of the normalised address. From the first failure a window
//! opens; once it holds `max_failures`, every sign-in for that address is refused until the
//! window closes — the right password included, so guessing cannot go on by watching which
//! attempt is refused differently. A successful sign-in clears the count.
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

    /// `Some(seconds)` to wait when sign-in for `email` is closed now.
    pub async fn closed_for(&self, email: &str) -> Result<Option<u64>, RefreshError> {
        let mut conn = self.redis.clone();
        let (failures, ttl_ms): (Option<u32>, i64) = redis::pipe()
            .cmd("GET")
            .arg(self.key(email))
            .cmd("PTTL")
            .arg(self.key(email))
            .query_async(&mut conn)
            .await?;
        if failures.unwrap_or(0) < self.limit.max_failures {
            return Ok(None);
        }
        // A key without an expiry cannot be written by this module; treat it as a full window.
        let ms = if ttl_ms > 0 { ttl_ms as u64 } else { self.limit.window.as_millis() as u64 };
        Ok(Some(ms.div_ceil(1000).max(1)))
    }

    /// Counts a failed sign-in for `email`; the window opens at the first failure.
    pub async fn failed(&self, email: &str) -> Result<(), RefreshError> {
        let key = self.key(email);
        let window_ms = u64::try_from(self.limit.window.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.redis.clone();
        redis::pipe()
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
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Clears the count after a successful sign-in.
    pub async fn succeeded(&self, email: &str) -> Result<(), RefreshError> {
        let mut conn = self.redis.clone();
        redis::cmd("DEL").arg(self.key(email)).query_async::<()>(&mut conn).await?;
        Ok(())
    }
}
