//! Which tenant a request acts for. From a browser: the publishable key names the tenant,
//! and the `Origin` header must be one the tenant allows. From a store's server: a secret
//! key (known to the cell only by its SHA-256) with the scope the route needs. From the
//! merchant console: a member's access token, signed by the control plane, whose role
//! reaches the scope the route needs. The body is never consulted.

use std::sync::Arc;

use crate::{Directory, TenantEntry};
use http::{HeaderMap, StatusCode, Uri, header::AUTHORIZATION};
use nudge_platform_http::ApiError;
use nudge_tenants::{PublishableKey, SecretKey, TenantState};

/// The publishable key from `Authorization: Bearer pk_…`, or from the `key` query parameter
/// (for `navigator.sendBeacon` and WebSocket upgrades, which cannot set headers).
pub fn key_from(headers: &HeaderMap, query_key: Option<&str>) -> Result<PublishableKey, ApiError> {
    let from_header =
        headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
    let raw = from_header.or(query_key).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_key",
            "send the publishable key as `Authorization: Bearer pk_…`",
        )
    })?;
    PublishableKey::parse(raw).map_err(|_| invalid_key())
}

fn invalid_key() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_key",
        "the publishable key is not valid (revoked, mistyped or for another cell)",
    )
}

/// The tenant `key` belongs to, when the request's `Origin` is allowed and the tenant takes
/// traffic.
pub fn authorize(
    directory: &Directory,
    key: &PublishableKey,
    origin: Option<&str>,
) -> Result<Arc<TenantEntry>, ApiError> {
    if !directory.is_caught_up() {
        return Err(ApiError::unavailable("cell_starting", "the cell is still loading its tenants", 1));
    }
    let Some(tenant) = directory.by_key(key) else {
        return Err(match directory.elsewhere(key) {
            Some(url) => ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "tenant_moved",
                "this store is served by another cell now: send its requests to details.cell_url",
            )
            .with_details(serde_json::json!({ "cell_url": url.as_ref() })),
            None => invalid_key(),
        });
    };
    let origin = origin.ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_required",
            "publishable keys are accepted only with an Origin header",
        )
    })?;
    if !tenant.allows_origin(origin) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this origin is not in the store's allowed origins",
        ));
    }
    takes_traffic(tenant)
}

fn takes_traffic(tenant: Arc<TenantEntry>) -> Result<Arc<TenantEntry>, ApiError> {
    match tenant.state {
        TenantState::Active => Ok(tenant),
        TenantState::Suspended => {
            Err(ApiError::new(StatusCode::FORBIDDEN, "tenant_suspended", "this store's account is suspended"))
        }
        _ => Err(ApiError::new(StatusCode::FORBIDDEN, "tenant_inactive", "this store does not accept events now")),
    }
}

/// A secret key, when `Authorization: Bearer sk_…` carries one (a call from a server).
pub fn secret_key_from(headers: &HeaderMap) -> Option<Result<SecretKey, ApiError>> {
    let raw = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)?;
    raw.starts_with("sk_").then(|| SecretKey::parse(raw).map_err(|_| invalid_secret()))
}

fn invalid_secret() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_key",
        "the secret key is not valid (revoked, mistyped or for another cell)",
    )
}

/// The tenant of a server request: the secret key in `Authorization` must be there, valid,
/// have `scope`, and its tenant take traffic; or a member's access token, valid, for a store
/// of this cell, with a role that reaches `scope`.
pub fn authorize_server_request(
    directory: &Directory,
    headers: &HeaderMap,
    scope: &str,
) -> Result<Arc<TenantEntry>, ApiError> {
    if let Some(token) = member_token_from(headers) {
        return authorize_member(directory, token, scope);
    }
    let key = secret_key_from(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_key",
            format!("send a secret key with `{scope}` as `Authorization: Bearer sk_…`"),
        )
    })??;
    authorize_server(directory, &key, scope)
}

/// The tenant a secret key belongs to, when the key has `scope` and the tenant takes traffic.
pub fn authorize_server(directory: &Directory, key: &SecretKey, scope: &str) -> Result<Arc<TenantEntry>, ApiError> {
    if !directory.is_caught_up() {
        return Err(ApiError::unavailable("cell_starting", "the cell is still loading its tenants", 1));
    }
    let (tenant, entry) = directory.by_secret(key.hash().as_bytes()).ok_or_else(invalid_secret)?;
    if !entry.scopes.iter().any(|s| s == scope) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "missing_scope",
            format!("this key lacks the `{scope}` scope"),
        ));
    }
    takes_traffic(tenant)
}

/// A member's access token, when `Authorization: Bearer v4.public.…` carries one.
fn member_token_from(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| t.starts_with("v4.public."))
}

/// The tenant of a request only a store's members may make (never a key): its access
/// token must be there and reach `scope` (see [`authorize_member`]).
pub fn authorize_member_request(
    directory: &Directory,
    headers: &HeaderMap,
    scope: &str,
) -> Result<Arc<TenantEntry>, ApiError> {
    let token = member_token_from(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "members_only",
            "only a store's members may do this, with their access token",
        )
    })?;
    authorize_member(directory, token, scope)
}

/// The tenant of a member's access token, when the cell takes members' tokens, the token is
/// valid, its role reaches `scope`, and its store is served here and takes traffic.
pub fn authorize_member(directory: &Directory, token: &str, scope: &str) -> Result<Arc<TenantEntry>, ApiError> {
    if !directory.is_caught_up() {
        return Err(ApiError::unavailable("cell_starting", "the cell is still loading its tenants", 1));
    }
    let invalid = || ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", "the access token is invalid or expired");
    let verifier = directory.member_tokens().ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "members_not_accepted",
            "this cell takes no members' access tokens (members.token_public_keys); use a secret key",
        )
    })?;
    let claims = verifier.verify(token).map_err(|_| invalid())?;
    if !nudge_tenants::access::role_allows(claims.role, scope) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "missing_scope",
            format!("the role {} does not reach `{scope}`", claims.role.as_str()),
        ));
    }
    let tenant = directory.by_tenant(claims.tenant).ok_or_else(|| {
        ApiError::new(StatusCode::MISDIRECTED_REQUEST, "tenant_not_here", "this store is not served by this cell")
    })?;
    takes_traffic(tenant)
}

/// A query parameter's value, percent-decoded (`nudge.js` encodes ids with
/// `encodeURIComponent`).
pub fn query_param(uri: &Uri, name: &str) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_decoded() {
        let uri: Uri = "/v1/ws?key=pk_1&shopper_id=shp%3Aa%2Bb&empty=".parse().unwrap_or_default();
        assert_eq!(query_param(&uri, "shopper_id").as_deref(), Some("shp:a+b"));
        assert_eq!(query_param(&uri, "key").as_deref(), Some("pk_1"));
        assert_eq!(query_param(&uri, "empty").as_deref(), Some(""));
        assert_eq!(query_param(&uri, "missing"), None);
    }
}
