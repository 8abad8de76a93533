//! Merchant authentication.
//!
//! - [`passwords`]: argon2id hashing, off the async workers.
//! - [`tokens`]: PASETO v4.public access tokens (at most 15 minutes, bound to one tenant).
//! - [`refresh`]: refresh tokens in Redis, rotated on every use; reusing a spent one revokes
//!   its whole family. Redis unreachable means no refresh succeeds (fail closed).
//! - [`throttle`]: sign-in attempts counted per e-mail address before the password is
//!   checked; too many that fail close sign-in for that address for a while.

pub mod passwords;
pub mod refresh;
pub mod throttle;
pub mod tokens;

use secrecy::SecretString;
use serde::Deserialize;

/// Authentication settings of the control plane.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// PASETO v4 secret key, 128 hex digits (`nudge auth keygen` makes one). When unset, a key
    /// is generated at start: tokens then die with the process and differ between replicas,
    /// which is fine on a laptop and nowhere else.
    pub signing_key: Option<SecretString>,
    /// Access-token lifetime; at most 900 (15 minutes).
    pub access_ttl_seconds: u64,
    /// Refresh-token lifetime.
    pub refresh_ttl_seconds: u64,
    /// Failed sign-ins for one e-mail address within `sign_in_window_seconds` (counted from
    /// the first) after which sign-in for that address is refused (429 `too_many_attempts`)
    /// until the window ends.
    pub sign_in_max_failures: u32,
    pub sign_in_window_seconds: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            signing_key: None,
            access_ttl_seconds: 900,
            refresh_ttl_seconds: 30 * 24 * 3600,
            sign_in_max_failures: 10,
            sign_in_window_seconds: 900,
        }
    }
}

impl AuthConfig {
    pub fn sign_in_limit(&self) -> throttle::SignInLimit {
        throttle::SignInLimit {
            max_failures: self.sign_in_max_failures,
            window: std::time::Duration::from_secs(self.sign_in_window_seconds),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(1..=900).contains(&self.access_ttl_seconds) {
            return Err("auth.access_ttl_seconds must be 1-900 (15 minutes at most)".into());
        }
        if self.refresh_ttl_seconds < self.access_ttl_seconds {
            return Err("auth.refresh_ttl_seconds must not be shorter than the access-token lifetime".into());
        }
        if self.sign_in_max_failures == 0 {
            return Err("auth.sign_in_max_failures must be at least 1".into());
        }
        if !(1..=86_400).contains(&self.sign_in_window_seconds) {
            return Err("auth.sign_in_window_seconds must be 1-86400 (a day at most)".into());
        }
        Ok(())
    }
}
