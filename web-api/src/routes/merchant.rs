//! The merchant behind a request: an access token, bound to one store.

use std::sync::Arc;

use axum::{
    extract::{FromRef, FromRequestParts},
    http::{StatusCode, header::AUTHORIZATION, request::Parts},
};
use nudge_control_plane::{
    Database, accounts,
    auth::tokens::{AccessClaims, TokenKeys},
};
use nudge_platform_http::ApiError;
use nudge_tenants::{Role, TenantId};

use super::error::db_error;

/// A signed-in member of one store.
#[derive(Debug, Clone)]
pub struct Merchant(pub AccessClaims);

impl<S: Send + Sync> FromRequestParts<S> for Merchant
where
    Arc<TokenKeys>: FromRef<S>,
    Database: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let keys = Arc::<TokenKeys>::from_ref(state);
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::new(StatusCode::UNAUTHORIZED, "missing_token", "sign in and send the access token")
            })?;
        let claims = keys.verify(token.trim()).map_err(|_| {
            ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", "the access token is invalid or expired")
        })?;
        tracing::Span::current().record("tenant_id", tracing::field::display(claims.tenant));
        // The membership is read again on every request, so a member who was removed is
        // refused, and one whose role changed acts in the new role, at once rather than when
        // the access token expires.
        let db = Database::from_ref(state);
        let role = accounts::role_in(&db, claims.tenant, claims.account).await.map_err(db_error)?.ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "membership_ended",
                "this account is no longer a member of the store; sign in again",
            )
        })?;
        Ok(Self(AccessClaims { role, ..claims }))
    }
}

impl Merchant {
    /// The store named in the path, which must be the token's: any other id answers 404,
    /// exactly as an id that does not exist, so nothing is learnt about other stores.
    pub fn tenant(&self, path_id: &str) -> Result<TenantId, ApiError> {
        match path_id.parse::<TenantId>() {
            Ok(t) if t == self.0.tenant => Ok(t),
            _ => Err(ApiError::not_found()),
        }
    }

    /// The member's role in the store now (read at this request, not from the token).
    pub fn role(&self) -> Role {
        self.0.role
    }

    /// The member, as the author of a change to the store's memberships.
    pub fn actor(&self) -> accounts::Actor {
        accounts::Actor { account: self.0.account, role: self.0.role }
    }

    /// Refuses, within the member's own store, what their role does not allow.
    pub fn require(&self, allowed: bool) -> Result<(), ApiError> {
        if allowed {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("the {} role cannot do this", self.0.role.as_str()),
            ))
        }
    }
}
