//! Signing up, signing in and signing out.
//!
//! Before sign-in there is no session to hold a CSRF token, so the sign-up and sign-in forms
//! use a double submit: a random token in a `__Host-` cookie and the same token in the form.
//! A page of another site can neither read the cookie nor set one of that name.

use askama::Template;
use axum::{
    Form,
    extract::State,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use nudge_contracts::control::{
    AccountCreated, AccountRequest, LoginRequest, RefreshRequest, SessionTokens, SignupRequest, SignupResponse,
    TenantView,
};
use serde::Deserialize;

use super::render;
use crate::{
    Console,
    api::Empty,
    error::ConsoleError,
    session::{
        FORM_COOKIE, Reveal, SESSION_COOKIE, Session, StoredSession, cookie, random_token, same_secret, set_cookie,
        set_session_cookie,
    },
};

/// How long a sign-in or sign-up form stays valid.
const FORM_TOKEN_SECS: u64 = 3600;

#[derive(Template, Default)]
#[template(path = "signup.html")]
struct SignupPage {
    csrf: String,
    name: String,
    store_url: String,
    email: String,
    /// Field → what is wrong.
    errors: Vec<(String, String)>,
    problem: Option<String>,
}

impl SignupPage {
    fn error(&self, field: &str) -> Option<&str> {
        self.errors.iter().find(|(f, _)| f == field).map(|(_, e)| e.as_str())
    }
}

#[derive(Template, Default)]
#[template(path = "join.html")]
struct JoinPage {
    csrf: String,
    email: String,
    errors: Vec<(String, String)>,
    problem: Option<String>,
    /// The new account's e-mail address, once made.
    created: Option<String>,
}

impl JoinPage {
    fn error(&self, field: &str) -> Option<&str> {
        self.errors.iter().find(|(f, _)| f == field).map(|(_, e)| e.as_str())
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct JoinForm {
    csrf: String,
    email: String,
    password: String,
}

#[derive(Template, Default)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    email: String,
    /// Shown when the account belongs to several stores.
    ask_store: bool,
    tenant_id: String,
    problem: Option<String>,
}

/// After the store was created but the member could not be signed in: the only copy of the
/// secret key, and the way in.
#[derive(Template)]
#[template(path = "signup_done.html")]
struct SignupDonePage {
    secret: String,
    tenant_id: String,
    problem: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SignupForm {
    csrf: String,
    name: String,
    store_url: String,
    email: String,
    password: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LoginForm {
    csrf: String,
    email: String,
    password: String,
    tenant_id: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CsrfForm {
    pub csrf: String,
}

/// A page with the form token and the cookie that carries it. A token the browser already
/// holds is kept: sign-in pages open in two tabs must not make each other's forms stale.
fn with_form_token(
    headers: &HeaderMap,
    page: impl FnOnce(String) -> Result<Response, ConsoleError>,
) -> Result<Response, ConsoleError> {
    let token = match cookie(headers, FORM_COOKIE) {
        Some(held) if held.len() == 43 && held.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') => {
            held.to_owned()
        }
        _ => random_token()?,
    };
    let mut response = page(token.clone())?;
    let cookie = set_cookie(FORM_COOKIE, &token, FORM_TOKEN_SECS);
    response
        .headers_mut()
        .append(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(|e| ConsoleError::Internal(e.to_string()))?);
    Ok(response)
}

/// The form's token must be the cookie's.
fn check_form_token(headers: &HeaderMap, sent: &str) -> Result<(), ConsoleError> {
    match cookie(headers, FORM_COOKIE) {
        Some(expected) if same_secret(sent, expected) => Ok(()),
        _ => Err(ConsoleError::Csrf),
    }
}

/// What to tell someone whose sign-up or sign-in could not be handled just now.
fn try_later(r: &crate::api::Refusal) -> String {
    let wait =
        r.retry_after.map_or_else(|| " Try again shortly.".to_owned(), |s| format!(" Try again in {s} seconds."));
    format!("Nudge cannot take this just now: {}.{wait}", r.message.trim_end_matches('.'))
}

/// A page that asks the browser to wait before sending again.
fn with_retry_after(mut response: Response, retry_after: Option<u64>) -> Response {
    if let Some(secs) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

pub async fn signup_form(headers: HeaderMap) -> Result<Response, ConsoleError> {
    with_form_token(&headers, |csrf| Ok(render(&SignupPage { csrf, ..SignupPage::default() })?.into_response()))
}

pub async fn signup(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<SignupForm>,
) -> Result<Response, ConsoleError> {
    check_form_token(&headers, &form.csrf)?;
    let request = SignupRequest {
        name: form.name.trim().to_owned(),
        allowed_origins: vec![form.store_url.trim().trim_end_matches('/').to_owned()],
        email: form.email.trim().to_owned(),
        password: form.password.clone(),
    };
    let refused = |status: StatusCode, errors: Vec<(String, String)>, problem: Option<String>| {
        with_form_token(&headers, |csrf| {
            let page = SignupPage {
                csrf,
                name: form.name.clone(),
                store_url: form.store_url.clone(),
                email: form.email.clone(),
                errors,
                problem,
            };
            Ok((status, render(&page)?).into_response())
        })
    };
    let created: SignupResponse = match console.api.call(Method::POST, "/v1/tenants", None, Some(&request)).await {
        Ok(created) => created,
        Err(ConsoleError::Refused(r)) if r.status.as_u16() == 422 => {
            let errors = r
                .fields
                .iter()
                .map(|(field, e)| {
                    let field = if field.starts_with("allowed_origins") { "store_url" } else { field.as_str() };
                    (field.to_owned(), e.clone())
                })
                .collect();
            return refused(StatusCode::UNPROCESSABLE_ENTITY, errors, None);
        }
        Err(ConsoleError::Refused(r)) if r.code == "email_taken" => {
            let taken = vec![("email".into(), "an account with this e-mail exists: sign in instead".into())];
            return refused(StatusCode::CONFLICT, taken, None);
        }
        // Busy or starting (no capacity yet, a cell being provisioned): the form comes back
        // as it was, with when to try again.
        Err(ConsoleError::Refused(r)) if matches!(r.status.as_u16(), 429 | 503) => {
            let page = refused(r.status, Vec::new(), Some(try_later(&r)))?;
            return Ok(with_retry_after(page, r.retry_after));
        }
        Err(e) => return Err(e),
    };
    tracing::info!(tenant_id = %created.tenant_id, "store signed up in the console");
    match open_new_store(&console, &request.email, form.password, &created).await {
        Ok(id) => signed_in(&id),
        Err(e) => {
            // The store exists and its secret key is in this answer only: show it here rather
            // than lose it, and let the member sign in by hand.
            tracing::warn!(tenant_id = %created.tenant_id, error = %e, "a new store could not be opened in the console");
            let page = SignupDonePage {
                secret: created.secret_key.clone(),
                tenant_id: created.tenant_id.clone(),
                problem: "a service it needs did not answer".into(),
            };
            let mut response = render(&page)?.into_response();
            response.headers_mut().append(
                header::SET_COOKIE,
                HeaderValue::from_str(&set_cookie(FORM_COOKIE, "", 0))
                    .map_err(|e| ConsoleError::Internal(e.to_string()))?,
            );
            Ok(response)
        }
    }
}

/// Signs the new store's owner in, with the secret key waiting to be shown on the first page.
async fn open_new_store(
    console: &Console,
    email: &str,
    password: String,
    created: &SignupResponse,
) -> Result<String, ConsoleError> {
    let login = LoginRequest { email: email.to_owned(), password, tenant_id: Some(created.tenant_id.clone()) };
    let tokens: SessionTokens = console.api.call(Method::POST, "/v1/sessions", None, Some(&login)).await?;
    let id = console.sessions.create(&Session::new(tokens, email.to_owned(), created.name.clone())?).await?;
    console.sessions.put_reveal(&id, Reveal::Signup, &created.secret_key).await?;
    Ok(id)
}

/// Where a new session starts: the overview, with the session cookie (and the form token's
/// cookie gone).
fn signed_in(id: &str) -> Result<Response, ConsoleError> {
    let mut response = Redirect::to("/console").into_response();
    for cookie in [set_session_cookie(SESSION_COOKIE, id), set_cookie(FORM_COOKIE, "", 0)] {
        response.headers_mut().append(
            header::SET_COOKIE,
            HeaderValue::from_str(&cookie).map_err(|e| ConsoleError::Internal(e.to_string()))?,
        );
    }
    Ok(response)
}

/// An account of one's own, without a store: to be added to a team.
pub async fn join_form(headers: HeaderMap) -> Result<Response, ConsoleError> {
    with_form_token(&headers, |csrf| Ok(render(&JoinPage { csrf, ..JoinPage::default() })?.into_response()))
}

pub async fn join(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<JoinForm>,
) -> Result<Response, ConsoleError> {
    check_form_token(&headers, &form.csrf)?;
    let request = AccountRequest { email: form.email.trim().to_owned(), password: form.password };
    let refused = |status: StatusCode, errors: Vec<(String, String)>, problem: Option<String>| {
        with_form_token(&headers, |csrf| {
            let page = JoinPage { csrf, email: form.email.clone(), errors, problem, created: None };
            Ok((status, render(&page)?).into_response())
        })
    };
    match console.api.call::<AccountCreated>(Method::POST, "/v1/accounts", None, Some(&request)).await {
        Ok(created) => {
            tracing::info!(account_id = %created.account_id, "account created in the console");
            let page = JoinPage { created: Some(created.email), ..JoinPage::default() };
            let mut response = (StatusCode::CREATED, render(&page)?).into_response();
            response.headers_mut().append(
                header::SET_COOKIE,
                HeaderValue::from_str(&set_cookie(FORM_COOKIE, "", 0))
                    .map_err(|e| ConsoleError::Internal(e.to_string()))?,
            );
            Ok(response)
        }
        Err(ConsoleError::Refused(r)) if r.status.as_u16() == 422 => {
            refused(StatusCode::UNPROCESSABLE_ENTITY, r.fields.clone(), None)
        }
        Err(ConsoleError::Refused(r)) if r.code == "email_taken" => refused(
            StatusCode::CONFLICT,
            vec![("email".into(), "an account with this e-mail exists: sign in, or ask to be added".into())],
            None,
        ),
        Err(ConsoleError::Refused(r)) if matches!(r.status.as_u16(), 429 | 503) => {
            let page = refused(r.status, Vec::new(), Some(try_later(&r)))?;
            Ok(with_retry_after(page, r.retry_after))
        }
        Err(e) => Err(e),
    }
}

pub async fn login_form(headers: HeaderMap) -> Result<Response, ConsoleError> {
    with_form_token(&headers, |csrf| Ok(render(&LoginPage { csrf, ..LoginPage::default() })?.into_response()))
}

pub async fn login(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, ConsoleError> {
    check_form_token(&headers, &form.csrf)?;
    let email = form.email.trim().to_owned();
    let tenant_id = form.tenant_id.trim().to_owned();
    let request = LoginRequest {
        email: email.clone(),
        password: form.password,
        tenant_id: (!tenant_id.is_empty()).then(|| tenant_id.clone()),
    };
    let refused = |status: StatusCode, problem: &str, ask_store: bool| {
        with_form_token(&headers, |csrf| {
            let page = LoginPage {
                csrf,
                email: email.clone(),
                ask_store,
                tenant_id: tenant_id.clone(),
                problem: Some(problem.to_owned()),
            };
            Ok((status, render(&page)?).into_response())
        })
    };
    let tokens: SessionTokens = match console.api.call(Method::POST, "/v1/sessions", None, Some(&request)).await {
        Ok(tokens) => tokens,
        Err(ConsoleError::Refused(r)) => {
            return match r.code.as_str() {
                "invalid_credentials" | "invalid_fields" | "malformed_json" => refused(
                    StatusCode::UNAUTHORIZED,
                    "The e-mail address or the password is not right.",
                    !tenant_id.is_empty(),
                ),
                "tenant_required" => refused(
                    StatusCode::UNAUTHORIZED,
                    "Your account belongs to several stores: give the id of the one to open.",
                    true,
                ),
                "not_found" => refused(StatusCode::UNAUTHORIZED, "Your account is not a member of that store.", true),
                "too_many_attempts" => {
                    let minutes = r.retry_after.unwrap_or(60).div_ceil(60);
                    let problem = format!(
                        "Too many wrong passwords for this address lately: sign-in is closed for it for \
                         {minutes} more minute{}.",
                        if minutes == 1 { "" } else { "s" }
                    );
                    let page = refused(StatusCode::TOO_MANY_REQUESTS, &problem, !tenant_id.is_empty())?;
                    Ok(with_retry_after(page, r.retry_after))
                }
                _ if matches!(r.status.as_u16(), 429 | 503) => {
                    let page = refused(r.status, &try_later(&r), !tenant_id.is_empty())?;
                    Ok(with_retry_after(page, r.retry_after))
                }
                _ => Err(ConsoleError::Refused(r)),
            };
        }
        Err(e) => return Err(e),
    };
    let store: TenantView = console.api.get(&format!("/v1/tenants/{}", tokens.tenant_id), &tokens.access_token).await?;
    tracing::info!(tenant_id = %tokens.tenant_id, "signed in to the console");
    let id = console.sessions.create(&Session::new(tokens, email, store.name)?).await?;
    signed_in(&id)
}

/// Signing out needs only the stored session, not a live token: it works while the API
/// cannot renew tokens.
pub async fn logout(
    State(console): State<Console>,
    member: StoredSession,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ConsoleError> {
    member.session.check_csrf(&form.csrf)?;
    console.sessions.end(&member.id).await?;
    // The refresh token dies with the session here; telling the API too ends its family.
    let ended = console
        .api
        .call::<Empty>(
            Method::POST,
            "/v1/sessions/logout",
            None,
            Some(&RefreshRequest { refresh_token: member.session.refresh_token.clone() }),
        )
        .await;
    if let Err(e) = ended {
        tracing::warn!(error = %e, "the API could not revoke a signed-out session's refresh token");
    }
    let mut response = Redirect::to("/console/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_str(&set_cookie(SESSION_COOKIE, "", 0)).map_err(|e| ConsoleError::Internal(e.to_string()))?,
    );
    Ok(response)
}
