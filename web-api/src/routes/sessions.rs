//! Accounts and sessions: `POST /v1/accounts`, `POST /v1/sessions` (sign in),
//! `POST /v1/sessions/refresh`, `POST /v1/sessions/logout`.

use axum::{
    Json,
    extract::{State, rejection::JsonRejection},
    http::StatusCode,
};
use nudge_contracts::control::{AccountCreated, AccountRequest, LoginRequest, RefreshRequest, SessionTokens};
use nudge_control_plane::{
    accounts::{self, AccountError},
    auth::{
        passwords,
        refresh::{RefreshError, RefreshStore, Session},
        tokens::AccessClaims,
    },
};
use nudge_platform_http::{ApiError, ErrorBody};
use nudge_tenants::{Email, Password, TenantId};
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::{account_error, db_error, refresh_error};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_account))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(t)| t).map_err(|e| ApiError::bad_request("malformed_json", e.body_text()))
}

fn sessions(state: &AppState) -> Result<&RefreshStore, ApiError> {
    state
        .sessions
        .get()
        .ok_or_else(|| ApiError::unavailable("session_store_unavailable", "sessions are not available yet", 1))
}

/// Validated e-mail and password, with an error per field.
pub fn credentials(email: &str, password: &str) -> Result<(Email, Password), ApiError> {
    let email = Email::parse(email);
    let password = Password::parse(password);
    match (email, password) {
        (Ok(e), Ok(p)) => Ok((e, p)),
        (e, p) => {
            let mut fields = serde_json::Map::new();
            if let Err(e) = e {
                fields.insert("email".into(), json!(e.to_string()));
            }
            if let Err(p) = p {
                fields.insert("password".into(), json!(p.to_string()));
            }
            Err(ApiError::unprocessable("invalid_fields", "some fields are invalid")
                .with_details(json!({ "fields": fields })))
        }
    }
}

/// Create an account without a store, to be added to stores by their owners or admins.
#[utoipa::path(post, path = "/v1/accounts", tag = "sessions", request_body = AccountRequest, responses(
    (status = 201, description = "the account", body = AccountCreated),
    (status = 400, description = "`malformed_json`", body = ErrorBody),
    (status = 409, description = "`email_taken`", body = ErrorBody),
    (status = 422, description = "`invalid_fields` (malformed e-mail, weak password)", body = ErrorBody),
))]
#[tracing::instrument(skip_all)]
async fn create_account(
    State(state): State<AppState>,
    body: Result<Json<AccountRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<AccountCreated>), ApiError> {
    let request = json_body(body)?;
    let (email, password) = credentials(&request.email, &request.password)?;
    let hash = passwords::hash(&password).await.map_err(|e| ApiError::internal(&e))?;
    let account = accounts::register(&state.db, &email, &hash).await.map_err(account_error)?;
    Ok((StatusCode::CREATED, Json(AccountCreated { account_id: account.to_string(), email: email.to_string() })))
}

fn tokens_for(state: &AppState, claims: &AccessClaims, refresh_token: String) -> Result<SessionTokens, ApiError> {
    let access_token = state.tokens.issue(claims).map_err(|e| ApiError::internal(&e))?;
    Ok(SessionTokens {
        access_token,
        token_type: "Bearer".into(),
        expires_in: state.tokens.ttl().as_secs(),
        refresh_token,
        account_id: claims.account.to_string(),
        tenant_id: claims.tenant.to_string(),
        role: claims.role.as_str().to_owned(),
    })
}

/// Sign in with e-mail and password, for one store.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = LoginRequest, responses(
    (status = 200, description = "signed in", body = SessionTokens),
    (status = 400, description = "`malformed_json`", body = ErrorBody),
    (status = 401, description = "`invalid_credentials`", body = ErrorBody),
    (status = 404, description = "`not_found`: not a member of the store named", body = ErrorBody),
    (status = 409, description = "`tenant_required`: the account belongs to several stores", body = ErrorBody),
    (status = 429, description = "`too_many_attempts`: too many failed sign-ins for this address lately; `Retry-After` says when to try again", body = ErrorBody),
    (status = 503, description = "`session_store_unavailable`, `database_unavailable`", body = ErrorBody),
))]
#[tracing::instrument(skip_all)]
async fn login(
    State(state): State<AppState>,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> Result<Json<SessionTokens>, ApiError> {
    let request = json_body(body)?;
    let store = sessions(&state)?;
    let tenant = match request.tenant_id.as_deref() {
        None => None,
        Some(t) => Some(t.parse::<TenantId>().map_err(|_| ApiError::not_found())?),
    };
    if let Some(wait) = store.sign_in().attempt(&request.email).await.map_err(refresh_error)? {
        tracing::info!("sign-in refused: too many failed attempts for the address");
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            "too many failed sign-ins for this address; try again later",
        )
        .with_retry_after(u32::try_from(wait).unwrap_or(u32::MAX)));
    }
    let who = match accounts::authenticate(&state.db, &request.email, &request.password, tenant).await {
        Ok(who) => who,
        Err(e) => {
            match e {
                // The attempt stays counted.
                AccountError::InvalidCredentials => {}
                // The password checked out; the account is just not (only) in that store.
                AccountError::NotAMember | AccountError::TenantRequired { .. } => {
                    store.sign_in().succeeded(&request.email).await.map_err(refresh_error)?;
                }
                _ => store.sign_in().not_checked(&request.email).await.map_err(refresh_error)?,
            }
            return Err(account_error(e));
        }
    };
    store.sign_in().succeeded(&request.email).await.map_err(refresh_error)?;
    let issued = store.start(&Session { account: who.account, tenant: who.tenant }).await.map_err(refresh_error)?;
    let claims = AccessClaims { account: who.account, tenant: who.tenant, role: who.role };
    tracing::info!(tenant_id = %who.tenant, account_id = %who.account, "signed in");
    Ok(Json(tokens_for(&state, &claims, issued.token)?))
}

/// Trade a refresh token for a new access token and a new refresh token. Each refresh token
/// works once; presenting a used one ends the session.
#[utoipa::path(post, path = "/v1/sessions/refresh", tag = "sessions", request_body = RefreshRequest, responses(
    (status = 200, description = "new tokens", body = SessionTokens),
    (status = 401, description = "`invalid_refresh_token`, `refresh_token_reused`", body = ErrorBody),
    (status = 503, description = "`session_store_unavailable`", body = ErrorBody),
))]
#[tracing::instrument(skip_all)]
async fn refresh(
    State(state): State<AppState>,
    body: Result<Json<RefreshRequest>, JsonRejection>,
) -> Result<Json<SessionTokens>, ApiError> {
    let request = json_body(body)?;
    let store = sessions(&state)?;
    // Everything that may fail runs before the token is spent, so a passing outage never
    // burns a token the client would then retry (and be taken for a thief).
    let session = store.peek(&request.refresh_token).await.map_err(refresh_error)?;
    // The role is read again: it may have changed, or the membership ended.
    let role = accounts::role_in(&state.db, session.tenant, session.account).await.map_err(db_error)?;
    let Some(role) = role else {
        store.revoke(&request.refresh_token).await.map_err(refresh_error)?;
        return Err(refresh_error(RefreshError::Invalid));
    };
    let (issued, session) = store.rotate(&request.refresh_token).await.map_err(refresh_error)?;
    let claims = AccessClaims { account: session.account, tenant: session.tenant, role };
    Ok(Json(tokens_for(&state, &claims, issued.token)?))
}

/// End the session a refresh token belongs to.
#[utoipa::path(post, path = "/v1/sessions/logout", tag = "sessions", request_body = RefreshRequest, responses(
    (status = 204, description = "signed out (also for an unknown token)"),
    (status = 503, description = "`session_store_unavailable`", body = ErrorBody),
))]
#[tracing::instrument(skip_all)]
async fn logout(
    State(state): State<AppState>,
    body: Result<Json<RefreshRequest>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let request = json_body(body)?;
    sessions(&state)?.revoke(&request.refresh_token).await.map_err(refresh_error)?;
    Ok(StatusCode::NO_CONTENT)
}
