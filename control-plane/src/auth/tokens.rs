//! Access tokens: PASETO v4.public, signed with Ed25519, carrying the account, the one
//! tenant it acts for, and the role there. Verification needs only the public key, so cells
//! can check tokens without the signing key.

use std::time::Duration;

pub use nudge_tenants::access::AccessClaims;
use nudge_tenants::access::{ASSERTION, AccessVerifier, ISSUER};
use pasetors::{
    claims::Claims,
    keys::{AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate},
    public,
    version4::V4,
};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("auth.signing_key must be 128 hex digits (a PASETO v4 secret key)")]
    BadKey,
    #[error("the token is invalid or expired")]
    Invalid,
    #[error("signing a token: {0}")]
    Sign(String),
}

/// Signs and verifies access tokens.
pub struct TokenKeys {
    secret: AsymmetricSecretKey<V4>,
    public: AsymmetricPublicKey<V4>,
    verifier: AccessVerifier,
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
        let verifier = AccessVerifier::new(vec![public.clone()]);
        Ok(Self { secret, public, verifier, ttl })
    }

    /// The public key, 64 hex digits: what cells verify members' tokens with
    /// (`members.token_public_keys`).
    pub fn public_hex(&self) -> String {
        hex::encode(self.public.as_bytes())
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
        self.verifier.verify(token).map_err(|_| TokenError::Invalid)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use nudge_tenants::{AccountId, Role, TenantId};

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
        let cell = AccessVerifier::from_hex(&[nudge_tenants::access::public_key_hex(&hex_key).unwrap()]).unwrap();
        assert_eq!(
            cell.verify(&a.issue(&claims()).unwrap()).unwrap().role,
            Role::Admin,
            "a cell verifies with the public key"
        );
        assert_eq!(a.public_hex(), nudge_tenants::access::public_key_hex(&hex_key).unwrap());
        assert!(matches!(TokenKeys::new(Some("abcd"), Duration::from_secs(1)), Err(TokenError::BadKey)));
    }
}
