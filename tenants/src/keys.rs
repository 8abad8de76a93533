//! API keys.
//!
//! A **publishable key** (`pk_…`) identifies a tenant to browsers. It is public by design, so
//! it is only ever accepted together with an allowed `Origin`, and it grants nothing but
//! sending events and receiving interventions.
//!
//! A **secret key** (`sk_…`) authenticates a merchant's servers. It is shown once at signup and
//! stored only as a SHA-256 hash: the key carries 192 random bits, so a slow password hash
//! would add cost without adding safety.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const PUBLISHABLE_PREFIX: &str = "pk_";
const PUBLISHABLE_BYTES: usize = 16;
const SECRET_PREFIX: &str = "sk_";
const SECRET_BYTES: usize = 24;

/// Why a key did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a publishable key looks like `pk_` followed by 32 hex digits")]
    MalformedPublishable,
    #[error("a secret key looks like `sk_` followed by 48 hex digits")]
    MalformedSecret,
    #[error("the system random source failed: {0}")]
    Random(String),
}

fn random_hex(bytes: usize) -> Result<String, KeyError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(hex::encode(buf))
}

fn well_formed(s: &str, prefix: &str, bytes: usize) -> bool {
    s.strip_prefix(prefix).is_some_and(|body| {
        body.len() == bytes * 2 && body.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A tenant's publishable key, safe to embed in a web page.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublishableKey(String);

impl PublishableKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, KeyError> {
        Ok(Self(format!("{PUBLISHABLE_PREFIX}{}", random_hex(PUBLISHABLE_BYTES)?)))
    }

    pub fn parse(s: &str) -> Result<Self, KeyError> {
        if well_formed(s, PUBLISHABLE_PREFIX, PUBLISHABLE_BYTES) {
            Ok(Self(s.to_owned()))
        } else {
            Err(KeyError::MalformedPublishable)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PublishableKey {
    type Error = KeyError;
    fn try_from(s: String) -> Result<Self, KeyError> {
        Self::parse(&s)
    }
}

impl From<PublishableKey> for String {
    fn from(k: PublishableKey) -> String {
        k.0
    }
}

impl fmt::Display for PublishableKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PublishableKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tenant's secret key. Never logged; `Debug` shows only the prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(String);

impl SecretKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, KeyError> {
        Ok(Self(format!("{SECRET_PREFIX}{}", random_hex(SECRET_BYTES)?)))
    }

    pub fn parse(s: &str) -> Result<Self, KeyError> {
        if well_formed(s, SECRET_PREFIX, SECRET_BYTES) {
            Ok(Self(s.to_owned()))
        } else {
            Err(KeyError::MalformedSecret)
        }
    }

    /// The key in full, for the one response that shows it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The first characters, enough for a merchant to tell keys apart in a list.
    pub fn visible_prefix(&self) -> &str {
        &self.0[..SECRET_PREFIX.len() + 8]
    }

    /// The hash stored in place of the key.
    pub fn hash(&self) -> SecretKeyHash {
        SecretKeyHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…", self.visible_prefix())
    }
}

/// SHA-256 of a secret key: what storage holds and lookups compare.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretKeyHash(pub [u8; 32]);

impl SecretKeyHash {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SecretKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_differ() {
        let a = PublishableKey::generate().unwrap();
        let b = PublishableKey::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(PublishableKey::parse(a.as_str()), Ok(a));

        let s = SecretKey::generate().unwrap();
        assert_eq!(SecretKey::parse(s.expose()).unwrap(), s);
        assert!(s.expose().starts_with("sk_"));
    }

    #[test]
    fn malformed_keys_are_rejected() {
        assert_eq!(PublishableKey::parse("pk_123"), Err(KeyError::MalformedPublishable));
        assert_eq!(PublishableKey::parse(&format!("sk_{}", "a".repeat(32))), Err(KeyError::MalformedPublishable));
        assert_eq!(SecretKey::parse("sk_nothex").unwrap_err(), KeyError::MalformedSecret);
    }

    #[test]
    fn secret_key_debug_hides_the_key() {
        let s = SecretKey::generate().unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains(s.expose()));
        assert!(shown.starts_with("sk_"));
    }

    #[test]
    fn hash_is_stable_and_distinct() {
        let s = SecretKey::generate().unwrap();
        assert_eq!(s.hash(), SecretKey::parse(s.expose()).unwrap().hash());
        assert_ne!(s.hash(), SecretKey::generate().unwrap().hash());
    }
}
