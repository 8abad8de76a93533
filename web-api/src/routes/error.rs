//! Mapping control-plane errors to API errors, in one place.

use axum::http::StatusCode;
use nudge_control_plane::provision::ProvisionError;
use nudge_control_plane::{
    accounts::AccountError, auth::refresh::RefreshError, db::DbError, keys::ApiKeyError, signup::SignupError,
};
use nudge_platform_http::ApiError;
use serde_json::json;

pub fn db_error(e: DbError) -> ApiError {
    match e {
        DbError::Unavailable(_) => ApiError::unavailable("database_unavailable", "the database is unavailable", 2),
        DbError::Query(ref inner) => ApiError::internal(inner),
        DbError::TenantMoving => {
            ApiError::unavailable("tenant_moving", "this store is moving to its own database; retry in a moment", 1)
        }
    }
}

/// A provisioner that cannot place or start a cell now: 503 with when to try again.
pub fn provision_error(e: ProvisionError) -> ApiError {
    match e {
        ProvisionError::Pending(message) => ApiError::unavailable("cell_provisioning", message, 10),
        ProvisionError::NoCapacity(message) => ApiError::unavailable("no_capacity", message, 60),
        ProvisionError::Unavailable(message) => ApiError::unavailable("provisioning_unavailable", message, 60),
        ProvisionError::Failed(message) => {
            tracing::error!(error = %message, "provisioning failed");
            ApiError::unavailable("provisioner_unavailable", "the provisioner could not be reached; retry", 5)
        }
    }
}

pub fn signup_error(e: SignupError) -> ApiError {
    match e {
        SignupError::Db(db) => db_error(db),
        SignupError::Keys(ref k) => ApiError::internal(k),
        SignupError::Account(a) => account_error(a),
    }
}

pub fn account_error(e: AccountError) -> ApiError {
    match e {
        AccountError::EmailTaken => {
            ApiError::new(StatusCode::CONFLICT, "email_taken", "an account with this e-mail address exists; sign in")
        }
        // One answer for unknown e-mail and wrong password: nothing to learn about accounts.
        AccountError::InvalidCredentials => {
            ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials", "e-mail address or password is wrong")
        }
        AccountError::NotAMember => ApiError::not_found(),
        AccountError::TenantRequired { tenants } => ApiError::new(
            StatusCode::CONFLICT,
            "tenant_required",
            "the account belongs to several stores; sign in again with tenant_id",
        )
        .with_details(json!({
            "tenants": tenants.iter().map(|(t, r)| json!({"tenant_id": t.to_string(), "role": r.as_str()})).collect::<Vec<_>>()
        })),
        AccountError::UnknownAccount => ApiError::unprocessable(
            "unknown_account",
            "no account has this e-mail address; the person creates one first (POST /v1/accounts)",
        ),
        AccountError::AlreadyMember => {
            ApiError::new(StatusCode::CONFLICT, "already_member", "this account is a member of the store already")
        }
        AccountError::SeatLimit { seats } => ApiError::new(
            StatusCode::CONFLICT,
            "seat_limit",
            format!("the store's plan allows {seats} members; upgrade or remove one"),
        )
        .with_details(json!({ "seats": seats })),
        AccountError::Forbidden { role } => {
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", format!("the {} role cannot do this", role.as_str()))
        }
        AccountError::LastOwner => ApiError::new(
            StatusCode::CONFLICT,
            "last_owner",
            "a store keeps at least one owner: make another member owner first",
        ),
        AccountError::Db(db) => db_error(db),
        AccountError::Hash(ref h) => ApiError::internal(h),
    }
}

pub fn refresh_error(e: RefreshError) -> ApiError {
    match e {
        RefreshError::Invalid => ApiError::new(StatusCode::UNAUTHORIZED, "invalid_refresh_token", e.to_string()),
        RefreshError::Reused => ApiError::new(StatusCode::UNAUTHORIZED, "refresh_token_reused", e.to_string()),
        RefreshError::Unavailable(why) => {
            tracing::warn!(reason = %why, "session store unavailable");
            ApiError::unavailable("session_store_unavailable", "sessions cannot be checked right now; retry later", 2)
        }
    }
}

pub fn key_error(e: ApiKeyError) -> ApiError {
    match e {
        ApiKeyError::NotFound => ApiError::not_found(),
        ApiKeyError::Db(db) => db_error(db),
        ApiKeyError::Key(ref k) => ApiError::internal(k),
    }
}
