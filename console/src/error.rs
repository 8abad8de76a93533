//! What can go wrong in the console, and the page each case shows.

use askama::Template;
use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
};

use crate::api::Refusal;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The API refused; shown with its code and message.
    #[error("{}: {}", .0.code, .0.message)]
    Refused(Refusal),
    /// No session, or it has ended: back to the sign-in page.
    #[error("signed out")]
    SignedOut,
    /// A form posted without the session's CSRF token, or from another origin.
    #[error("the form did not come from this console")]
    Csrf,
    /// The API rejected the session's access token although it had not expired (revoked, or
    /// the signing key changed): renewed once by [`crate::renew_rejected`].
    #[error("the access token was rejected")]
    TokenRejected(TokenDigest),
    /// A form sent while the session was being renewed: to be sent again.
    #[error("the session was renewed; the form must be sent again")]
    Resend,
    /// Something the console waits on did not answer in time.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Redis, where sessions live, cannot be reached.
    #[error("the session store is unavailable: {0}")]
    SessionsUnavailable(String),
    /// Nothing by that name.
    #[error("not found")]
    NotFound,
    #[error("internal error: {0}")]
    Internal(String),
}

/// Which access token was rejected: its SHA-256, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenDigest(pub [u8; 32]);

impl TokenDigest {
    pub fn of(token: &str) -> Self {
        use sha2::Digest;
        Self(sha2::Sha256::digest(token.as_bytes()).into())
    }
}

/// Marks an answer given because the API rejected the session's access token.
#[derive(Debug, Clone)]
pub struct TokenWasRejected(pub TokenDigest);

impl From<redis::RedisError> for ConsoleError {
    fn from(e: redis::RedisError) -> Self {
        Self::SessionsUnavailable(e.to_string())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    code: &'a str,
    message: &'a str,
    next_step: &'a str,
}

impl ConsoleError {
    /// Status, stable code, what happened and what to do next.
    fn describe(&self) -> (StatusCode, &str, String, &'static str, Option<u64>) {
        match self {
            Self::Refused(r) => (r.status, r.code.as_str(), r.message.clone(), r.next_step(), r.retry_after),
            Self::SignedOut => {
                (StatusCode::UNAUTHORIZED, "signed_out", "You are signed out.".into(), "Sign in again.", None)
            }
            Self::Csrf => (
                StatusCode::FORBIDDEN,
                "csrf_failed",
                "This form was not sent from a page of this console, or the page was too old.".into(),
                "Go back, reload the page and send the form again.",
                None,
            ),
            // Only when no session is at hand to renew (see `crate::renew_rejected`).
            Self::TokenRejected(_) => {
                (StatusCode::UNAUTHORIZED, "signed_out", "You are signed out.".into(), "Sign in again.", None)
            }
            Self::Resend => (
                StatusCode::CONFLICT,
                "resend_form",
                "Your sign-in was renewed while the form was on its way, so it was not applied.".into(),
                "Go back and send the form again.",
                None,
            ),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "A service the console depends on did not answer in time.".into(),
                "Try again in a few seconds.",
                Some(2),
            ),
            Self::SessionsUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "session_store_unavailable",
                "The console cannot reach its session store.".into(),
                "Try again in a few seconds.",
                Some(2),
            ),
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "There is no such page.".into(),
                "Use the navigation to find what you were looking for.",
                None,
            ),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Something went wrong on our side.".into(),
                "Try again; if it keeps happening, contact support.",
                None,
            ),
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        match &self {
            Self::SignedOut => return Redirect::to("/console/login").into_response(),
            Self::TokenRejected(digest) => {
                let mut response = Redirect::to("/console/login").into_response();
                response.extensions_mut().insert(TokenWasRejected(digest.clone()));
                return response;
            }
            Self::SessionsUnavailable(e) => tracing::warn!(error = %e, "console session store unavailable"),
            Self::Unavailable(e) => tracing::warn!(error = %e, "console dependency unavailable"),
            Self::Internal(e) => tracing::error!(error = %e, "console error"),
            _ => {}
        }
        let (status, code, message, next_step, retry_after) = self.describe();
        let title = status.canonical_reason().unwrap_or("Error");
        let page = ErrorPage { title, code, message: &message, next_step };
        let body = page.render().unwrap_or_else(|_| format!("{code}: {message}"));
        let mut response = (status, Html(body)).into_response();
        if let Ok(v) = HeaderValue::from_str(code) {
            response.headers_mut().insert("nudge-error-code", v);
        }
        if let Some(secs) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
