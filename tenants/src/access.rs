//! Members' access tokens as every service reads them: PASETO v4.public, signed with Ed25519
//! by the control plane, carrying the account, the one store it acts for and the role there.
//! Verifying needs only the public key, so a cell checks a member's token without holding
//! anything that could make one.

use pasetors::{
    Public,
    claims::ClaimsValidationRules,
    keys::{AsymmetricPublicKey, AsymmetricSecretKey},
    public,
    token::UntrustedToken,
    version4::V4,
};

use crate::{AccountId, Role, TenantId};

/// The issuer every access token names.
pub const ISSUER: &str = "nudge-control-plane";
/// Bound into every signature, so a token made for something else never verifies as one.
pub const ASSERTION: &[u8] = b"nudge access token v1";

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    pub account: AccountId,
    pub tenant: TenantId,
    pub role: Role,
}

#[derive(Debug, thiserror::Error)]
pub enum AccessKeyError {
    #[error("an access-token public key must be 64 hex digits (a PASETO v4 public key)")]
    BadPublicKey,
    #[error("an access-token signing key must be 128 hex digits (a PASETO v4 secret key)")]
    BadSecretKey,
}

/// The token is not a valid, unexpired access token of a known key.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the access token is invalid or expired")]
pub struct InvalidToken;

/// Verifies access tokens against one or more public keys (several while a signing key is
/// rotated).
#[derive(Clone, Default)]
pub struct AccessVerifier {
    keys: Vec<AsymmetricPublicKey<V4>>,
}

impl std::fmt::Debug for AccessVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessVerifier").field("keys", &self.keys.len()).finish()
    }
}

impl AccessVerifier {
    pub fn new(keys: Vec<AsymmetricPublicKey<V4>>) -> Self {
        Self { keys }
    }

    /// From public keys as 64 hex digits each.
    pub fn from_hex<S: AsRef<str>>(keys: &[S]) -> Result<Self, AccessKeyError> {
        let keys = keys
            .iter()
            .map(|k| {
                let bytes = hex::decode(k.as_ref().trim()).map_err(|_| AccessKeyError::BadPublicKey)?;
                AsymmetricPublicKey::<V4>::from(&bytes).map_err(|_| AccessKeyError::BadPublicKey)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { keys })
    }

    /// Whether no key is known (no token verifies).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks signature, issuer and expiry against each key, and reads the claims.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, InvalidToken> {
        let untrusted = UntrustedToken::<Public, V4>::try_from(token).map_err(|_| InvalidToken)?;
        let mut rules = ClaimsValidationRules::new();
        rules.validate_issuer_with(ISSUER);
        let trusted = self
            .keys
            .iter()
            .find_map(|key| public::verify(key, &untrusted, &rules, None, Some(ASSERTION)).ok())
            .ok_or(InvalidToken)?;
        let claims = trusted.payload_claims().ok_or(InvalidToken)?;
        let text = |name: &str| claims.get_claim(name).and_then(|v| v.as_str()).ok_or(InvalidToken);
        Ok(AccessClaims {
            account: text("sub")?.parse().map_err(|_| InvalidToken)?,
            tenant: text("tid")?.parse().map_err(|_| InvalidToken)?,
            role: Role::parse(text("role")?).ok_or(InvalidToken)?,
        })
    }
}

/// The public key (64 hex digits) of a signing key given as 128 hex digits: what cells are
/// configured with.
pub fn public_key_hex(secret_hex: &str) -> Result<String, AccessKeyError> {
    let bytes = hex::decode(secret_hex.trim()).map_err(|_| AccessKeyError::BadSecretKey)?;
    let secret = AsymmetricSecretKey::<V4>::from(&bytes).map_err(|_| AccessKeyError::BadSecretKey)?;
    let public = AsymmetricPublicKey::<V4>::try_from(&secret).map_err(|_| AccessKeyError::BadSecretKey)?;
    Ok(hex::encode(public.as_bytes()))
}

/// Whether a member in `role` may do what a secret key's `scope` allows, on a cell: every
/// member reads reports; analysts and up read sends and features; owners and admins send
/// events and export shoppers.
pub fn role_allows(role: Role, scope: &str) -> bool {
    match scope {
        "reports:read" => true,
        "sends:read" | "features:read" => matches!(role, Role::Owner | Role::Admin | Role::Analyst),
        "events:write" | "shoppers:export" => matches!(role, Role::Owner | Role::Admin),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_map_to_the_scopes_of_their_reach() {
        assert!(role_allows(Role::Viewer, "reports:read"));
        assert!(!role_allows(Role::Viewer, "sends:read"));
        assert!(role_allows(Role::Analyst, "sends:read"));
        assert!(!role_allows(Role::Analyst, "events:write"));
        assert!(role_allows(Role::Admin, "shoppers:export"));
        assert!(!role_allows(Role::Owner, "anything:else"));
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(AccessVerifier::from_hex(&["abcd"]).is_err());
        assert!(public_key_hex("zz").is_err());
        assert!(AccessVerifier::from_hex::<&str>(&[]).is_ok_and(|v| v.is_empty()));
    }
}
