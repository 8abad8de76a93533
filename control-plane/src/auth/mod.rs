//! Merchant authentication.
//!
//! - [`passwords`]: argon2id hashing, off the async workers.
//! - [`tokens`]: PASETO v4.public access tokens (at most 15 minutes, bound to one tenant).
//! - [`refresh`]: refresh tokens in Redis, rotated on every use; reusing a spent one revokes
//!   its whole family. Redis unreachable means no refresh succeeds (fail closed).

pub mod passwords;
pub mod refresh;
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
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { signing_key: None, access_ttl_seconds: 900, refresh_ttl_seconds: 30 * 24 * 3600 }
    }
}

impl AuthConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=900).contains(&self.access_ttl_seconds) {
            return Err("auth.access_ttl_seconds must be 1-900 (15 minutes at most)".into());
        }
        if self.refresh_ttl_seconds < self.access_ttl_seconds {
            return Err("auth.refresh_ttl_seconds must not be shorter than the access-token lifetime".into());
        }
        Ok(())
    }
}
