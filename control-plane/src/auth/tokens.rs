//! Access tokens: PASETO v4.public, signed with Ed25519, carrying the account, the one
//! tenant it acts for, and the role there. Verification needs only the public key, so cells
//! can check tokens without the signing key.

use std::time::Duration;

use nudge_tenants::{AccountId, Role, TenantId};
use pasetors::{
    Public,
    claims::{Claims, ClaimsValidationRules},
    keys::{AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate},
    public,
    token::UntrustedToken,
    version4::V4,
};

const ISSUER: &str = "nudge-control-plane";
/// Bound into every signature, so a token made for something else never verifies here.
const ASSERTION: &[u8] = b"nudge access token v1";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("auth.signing_key must be 128 hex digits (a PASETO v4 secret key)")]
    BadKey,
    #[error("the token is invalid or expired")]
    Invalid,
    #[error("signing a token: {0}")]
    Sign(String),
}

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    pub account: AccountId,
    pub tenant: TenantId,
    pub role: Role,
}

/// Signs and verifies access tokens.
pub struct TokenKeys {
    secret: AsymmetricSecretKey<V4>,
    public: AsymmetricPublicKey<V4>,
    ttl: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// From a configured key (128 hex digits), or a fresh one.
    pub fn new(hex_key: Option<&str>, ttl: Duration) -> Result<Self, TokenError> {
        let (secret, public) = match hex_key {
            Some(hex_key) => {
                let bytes = hex::decode(hex_key.trim()).map_err(|_| TokenError::BadKey)?;
                let secret = AsymmetricSecretKey::<V4>::from(&bytes).map_err(|_| TokenError::BadKey)?;
                let public = AsymmetricPublicKey::<V4>::try_from(&secret).map_err(|_| TokenError::BadKey)?;
                (secret, public)
            }
            None => {
                let pair = AsymmetricKeyPair::<V4>::generate().map_err(|e| TokenError::Sign(e.to_string()))?;
                (pair.secret, pair.public)
            }
        };
        Ok(Self { secret, public, ttl })
    }

    /// A new secret key as 128 hex digits, for configuration.
    pub fn generate_hex() -> Result<String, TokenError> {
        let pair = AsymmetricKeyPair::<V4>::generate().map_err(|e| TokenError::Sign(e.to_string()))?;
        Ok(hex::encode(pair.secret.as_bytes()))
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn issue(&self, claims: &AccessClaims) -> Result<String, TokenError> {
        let sign_err = |e: pasetors::errors::Error| TokenError::Sign(e.to_string());
        let mut c = Claims::new_expires_in(&self.ttl).map_err(sign_err)?;
        c.issuer(ISSUER).map_err(sign_err)?;
        c.subject(&claims.account.to_string()).map_err(sign_err)?;
        c.add_additional("tid", claims.tenant.to_string()).map_err(sign_err)?;
        c.add_additional("role", claims.role.as_str()).map_err(sign_err)?;
        public::sign(&self.secret, &c, None, Some(ASSERTION)).map_err(sign_err)
    }

    /// Checks signature, issuer and expiry, and reads the claims.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let untrusted = UntrustedToken::<Public, V4>::try_from(token).map_err(|_| TokenError::Invalid)?;
        let mut rules = ClaimsValidationRules::new();
        rules.validate_issuer_with(ISSUER);
        let trusted =
            public::verify(&self.public, &untrusted, &rules, None, Some(ASSERTION)).map_err(|_| TokenError::Invalid)?;
        let claims = trusted.payload_claims().ok_or(TokenError::Invalid)?;
        let text = |name: &str| claims.get_claim(name).and_then(|v| v.as_str()).ok_or(TokenError::Invalid);
        Ok(AccessClaims {
            account: text("sub")?.parse().map_err(|_| TokenError::Invalid)?,
            tenant: text("tid")?.parse().map_err(|_| TokenError::Invalid)?,
            role: Role::parse(text("role")?).ok_or(TokenError::Invalid)?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn claims() -> AccessClaims {
        AccessClaims { account: AccountId::new(), tenant: TenantId::new(), role: Role::Admin }
    }

    #[test]
    fn issued_tokens_verify_with_their_claims() {
        let keys = TokenKeys::new(None, Duration::from_secs(60)).unwrap();
        let c = claims();
        let token = keys.issue(&c).unwrap();
        assert!(token.starts_with("v4.public."));
        assert_eq!(keys.verify(&token).unwrap(), c);
    }

    #[test]
    fn foreign_tampered_and_expired_tokens_fail() {
        let keys = TokenKeys::new(None, Duration::from_secs(60)).unwrap();
        let other = TokenKeys::new(None, Duration::from_secs(60)).unwrap();
        let token = other.issue(&claims()).unwrap();
        assert!(matches!(keys.verify(&token), Err(TokenError::Invalid)), "signed by another key");
        let mut tampered = keys.issue(&claims()).unwrap();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(keys.verify(&tampered).is_err());
        assert!(keys.verify("v4.public.garbage").is_err());

        let short = TokenKeys::new(Some(&hex::encode(keys.secret.as_bytes())), Duration::from_secs(1)).unwrap();
        let expiring = short.issue(&claims()).unwrap();
        std::thread::sleep(Duration::from_millis(2100));
        assert!(short.verify(&expiring).is_err(), "expired");
    }

    #[test]
    fn configured_keys_round_trip_and_bad_ones_are_refused() {
        let hex_key = TokenKeys::generate_hex().unwrap();
        let a = TokenKeys::new(Some(&hex_key), Duration::from_secs(60)).unwrap();
        let b = TokenKeys::new(Some(&hex_key), Duration::from_secs(60)).unwrap();
        assert!(b.verify(&a.issue(&claims()).unwrap()).is_ok(), "two replicas with one key agree");
        assert!(matches!(TokenKeys::new(Some("abcd"), Duration::from_secs(1)), Err(TokenError::BadKey)));
    }
}
