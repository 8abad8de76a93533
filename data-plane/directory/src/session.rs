//! Shopper session tokens: what a socket authenticates with besides the publishable key.
//!
//! Ingest issues a token for a (tenant, shopper) once the publishable key and `Origin` have
//! named the tenant; the gateway opens a socket only for the shopper a token names, and only
//! when the token's tenant is the key's. Neither the tenant nor the shopper of a socket is
//! ever taken from what the client asks for.
//!
//! A token is `base64url(tenant(16) ‖ expires(8, big-endian Unix seconds) ‖ shopper ‖
//! HMAC-SHA-256(secret, "nudge-session-v1" ‖ those bytes))`. Every replica of a cell shares
//! the secrets; the first signs and all verify, so a secret is rotated by adding the new
//! one in front, waiting one token lifetime, then removing the old one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use nudge_contracts::ShopperId;
use nudge_tenants::TenantId;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Sha256;

const DOMAIN: &[u8] = b"nudge-session-v1";
const MAC_LEN: usize = 32;
const HEADER_LEN: usize = 16 + 8;
/// Shortest secret accepted: 32 bytes, the HMAC-SHA-256 key size.
pub const MIN_SECRET_BYTES: usize = 32;

/// Session token settings; the same on every replica of a cell.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SessionConfig {
    /// Signing secrets, at least 32 bytes each: the first signs, every one verifies.
    pub secrets: Vec<SecretString>,
    /// How long a token opens sockets (seconds). The snippet fetches a fresh one on reconnect.
    pub ttl_secs: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self { secrets: Vec::new(), ttl_secs: 900 }
    }
}

/// The configuration cannot sign tokens.
#[derive(Debug, thiserror::Error)]
pub enum SessionConfigError {
    #[error(
        "sessions.secrets is empty: set at least one secret of {MIN_SECRET_BYTES}+ bytes, the same on every replica"
    )]
    NoSecret,
    #[error("sessions.secrets[{0}] is shorter than {MIN_SECRET_BYTES} bytes")]
    ShortSecret(usize),
    #[error("sessions.ttl_secs must be between 1 and 86400")]
    Ttl,
}

/// Why a token opens nothing. Each has a stable code and a socket close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no session token; get one from POST /v1/sessions")]
    Missing,
    #[error("the session token is malformed or its signature does not verify")]
    Invalid,
    #[error("the session token has expired; get a new one from POST /v1/sessions")]
    Expired,
    #[error("the session token was issued for another store")]
    Foreign,
}

impl TokenError {
    /// Stable machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "session_token_missing",
            Self::Invalid => "session_token_invalid",
            Self::Expired => "session_token_expired",
            Self::Foreign => "session_token_foreign",
        }
    }

    /// The WebSocket close code a socket refused for this reason gets (private range).
    pub fn close_code(self) -> u16 {
        match self {
            Self::Missing => 4001,
            Self::Invalid => 4002,
            Self::Expired => 4005,
            Self::Foreign => 4006,
        }
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionClaims {
    pub tenant: TenantId,
    pub shopper: ShopperId,
    /// Unix seconds.
    pub expires_at: u64,
}

/// Issues and checks session tokens.
#[derive(Clone)]
pub struct SessionSigner {
    keys: Vec<Hmac<Sha256>>,
    ttl: Duration,
}

impl std::fmt::Debug for SessionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSigner").field("keys", &self.keys.len()).field("ttl", &self.ttl).finish()
    }
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl SessionSigner {
    pub fn new(config: &SessionConfig) -> Result<Self, SessionConfigError> {
        if config.secrets.is_empty() {
            return Err(SessionConfigError::NoSecret);
        }
        if config.ttl_secs == 0 || config.ttl_secs > 86_400 {
            return Err(SessionConfigError::Ttl);
        }
        let keys = config
            .secrets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let bytes = s.expose_secret().as_bytes();
                if bytes.len() < MIN_SECRET_BYTES {
                    return Err(SessionConfigError::ShortSecret(i));
                }
                Hmac::<Sha256>::new_from_slice(bytes).map_err(|_| SessionConfigError::ShortSecret(i))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { keys, ttl: Duration::from_secs(config.ttl_secs) })
    }

    /// A token for `shopper` of `tenant`, valid for the configured lifetime; with its expiry
    /// (Unix seconds).
    pub fn issue(&self, tenant: TenantId, shopper: &ShopperId) -> (String, u64) {
        self.issue_at(tenant, shopper, now_unix())
    }

    fn issue_at(&self, tenant: TenantId, shopper: &ShopperId, now: u64) -> (String, u64) {
        let expires_at = now + self.ttl.as_secs();
        let mut bytes = Vec::with_capacity(HEADER_LEN + shopper.as_str().len() + MAC_LEN);
        bytes.extend_from_slice(tenant.as_uuid().as_bytes());
        bytes.extend_from_slice(&expires_at.to_be_bytes());
        bytes.extend_from_slice(shopper.as_str().as_bytes());
        let mac = mac(&self.keys[0], &bytes);
        bytes.extend_from_slice(&mac);
        (URL_SAFE_NO_PAD.encode(bytes), expires_at)
    }

    /// The claims of `token` when a secret signed it, it has not expired and it names
    /// `tenant` (the tenant of the key it came with).
    pub fn verify(&self, token: &str, tenant: TenantId) -> Result<SessionClaims, TokenError> {
        self.verify_at(token, tenant, now_unix())
    }

    fn verify_at(&self, token: &str, tenant: TenantId, now: u64) -> Result<SessionClaims, TokenError> {
        // The longest valid token is 24 + 64 + 32 bytes; anything longer is not one.
        if token.is_empty() || token.len() > 4 * (HEADER_LEN + 64 + MAC_LEN).div_ceil(3) {
            return Err(TokenError::Invalid);
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| TokenError::Invalid)?;
        if bytes.len() <= HEADER_LEN + MAC_LEN {
            return Err(TokenError::Invalid);
        }
        let (signed, tag) = bytes.split_at(bytes.len() - MAC_LEN);
        let verified = self.keys.iter().any(|key| {
            let mut m = key.clone();
            m.update(DOMAIN);
            m.update(signed);
            m.verify_slice(tag).is_ok()
        });
        if !verified {
            return Err(TokenError::Invalid);
        }
        let (header, shopper) = signed.split_at(HEADER_LEN);
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&header[..16]);
        let mut expires = [0u8; 8];
        expires.copy_from_slice(&header[16..]);
        let expires_at = u64::from_be_bytes(expires);
        let claimed = TenantId::from_uuid(uuid::Uuid::from_bytes(uuid));
        let shopper =
            std::str::from_utf8(shopper).ok().and_then(|s| ShopperId::parse(s).ok()).ok_or(TokenError::Invalid)?;
        if claimed != tenant {
            return Err(TokenError::Foreign);
        }
        if expires_at <= now {
            return Err(TokenError::Expired);
        }
        Ok(SessionClaims { tenant: claimed, shopper, expires_at })
    }
}

fn mac(key: &Hmac<Sha256>, bytes: &[u8]) -> [u8; MAC_LEN] {
    let mut m = key.clone();
    m.update(DOMAIN);
    m.update(bytes);
    m.finalize().into_bytes().into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn signer(secrets: &[&str]) -> SessionSigner {
        SessionSigner::new(&SessionConfig {
            secrets: secrets.iter().map(|s| SecretString::from(*s)).collect(),
            ttl_secs: 60,
        })
        .unwrap()
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn a_token_names_its_tenant_and_shopper_until_it_expires() {
        let s = signer(&[A]);
        let (t, shopper) = (TenantId::new(), ShopperId::parse("shp_1").unwrap());
        let (token, exp) = s.issue_at(t, &shopper, 1_000);
        assert_eq!(exp, 1_060);
        let claims = s.verify_at(&token, t, 1_059).unwrap();
        assert_eq!((claims.tenant, claims.shopper), (t, shopper));
        assert_eq!(s.verify_at(&token, t, 1_060), Err(TokenError::Expired));
        assert_eq!(s.verify_at(&token, TenantId::new(), 1_000), Err(TokenError::Foreign));
    }

    #[test]
    fn tampered_or_foreign_secret_tokens_do_not_verify() {
        let (t, shopper) = (TenantId::new(), ShopperId::parse("shp_1").unwrap());
        let (token, _) = signer(&[A]).issue_at(t, &shopper, 1_000);
        assert_eq!(signer(&[B]).verify_at(&token, t, 1_000), Err(TokenError::Invalid));
        // Another shopper spliced in keeps the length but breaks the signature.
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        bytes[HEADER_LEN + 4] = b'2';
        assert_eq!(signer(&[A]).verify_at(&URL_SAFE_NO_PAD.encode(&bytes), t, 1_000), Err(TokenError::Invalid));
        // A later expiry, likewise.
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        bytes[16] = 0xff;
        assert_eq!(signer(&[A]).verify_at(&URL_SAFE_NO_PAD.encode(&bytes), t, 1_000), Err(TokenError::Invalid));
        for junk in ["", "not base64!", "AAAA", &"A".repeat(5000)] {
            assert_eq!(signer(&[A]).verify_at(junk, t, 1_000), Err(TokenError::Invalid), "{junk:.20}");
        }
    }

    #[test]
    fn rotation_signs_with_the_first_secret_and_verifies_with_any() {
        let (t, shopper) = (TenantId::new(), ShopperId::parse("shp_1").unwrap());
        let (old, _) = signer(&[A]).issue_at(t, &shopper, 1_000);
        let rotated = signer(&[B, A]);
        assert!(rotated.verify_at(&old, t, 1_000).is_ok(), "tokens from before the rotation still open sockets");
        let (new, _) = rotated.issue_at(t, &shopper, 1_000);
        assert_eq!(signer(&[A]).verify_at(&new, t, 1_000), Err(TokenError::Invalid), "the new secret signs");
    }

    #[test]
    fn refuses_weak_configuration() {
        let config = |secrets: &[&str], ttl_secs| SessionConfig {
            secrets: secrets.iter().map(|s| SecretString::from(*s)).collect(),
            ttl_secs,
        };
        assert!(matches!(SessionSigner::new(&config(&[], 60)), Err(SessionConfigError::NoSecret)));
        assert!(matches!(SessionSigner::new(&config(&[A, "short"], 60)), Err(SessionConfigError::ShortSecret(1))));
        assert!(matches!(SessionSigner::new(&config(&[A], 0)), Err(SessionConfigError::Ttl)));
    }
}
