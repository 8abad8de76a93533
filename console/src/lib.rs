//! The merchant console: server-rendered pages over the control plane's public API.
//!
//! The console holds no business logic and no database access of its own. Every page is
//! rendered from the public API's answers, called in-process with the signed-in member's
//! access token, so the console can show or change nothing the API would refuse that
//! member: isolation between stores and role checks are the API's, enforced once.
//!
//! # Layout
//!
//! - [`router`]: the console's routes under `/console`, with its security headers.
//! - [`api`]: the public API called in-process, and what it refused.
//! - [`cell`]: the store's cell over HTTP with the member's token (reports).
//! - [`session`]: console sessions in Redis behind a `__Host-` cookie (the member's access
//!   and refresh tokens, refreshed under a lock, and the session's CSRF token).
//! - [`security`]: the Content-Security-Policy and other headers; form posts from other
//!   origins refused.
//! - [`error`]: [`error::ConsoleError`] and its page.
//! - `pages`: one module per page.

pub mod api;
pub mod cell;
pub mod error;
mod pages;
pub mod security;
pub mod session;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{OriginalUri, Request, State},
    http::Method,
    middleware::{Next, from_fn_with_state},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

pub use api::Api;
pub use session::Sessions;

/// How the console keeps its sessions.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Prepended to the console's Redis keys.
    pub redis_prefix: String,
    /// A session nobody uses for this long ends.
    pub idle_timeout: Duration,
    /// The origin browsers reach the console at, when a proxy rewrites `Host`; `None`: the
    /// origin `Host` names.
    pub public_origin: Option<String>,
}

/// What every console handler can reach.
#[derive(Clone)]
pub struct Console {
    pub(crate) api: Api,
    pub(crate) sessions: Sessions,
    pub(crate) public_origin: Option<Arc<str>>,
    pub(crate) cell: cell::CellClient,
}

/// The console's routes, answering under `/console` (and `/` sends there). `api` is the
/// public API's router, which the console calls in-process; `redis` is set once the control
/// plane has reached Redis (until then the console answers 503).
pub fn router(api: Router, redis: Arc<OnceCell<ConnectionManager>>, config: ConsoleConfig) -> Router {
    let public_origin = config.public_origin.as_deref().map(Arc::from);
    let console = Console {
        api: Api::new(api),
        sessions: Sessions::new(redis, config),
        public_origin,
        cell: cell::CellClient::new().expect("an HTTP client with timeouts only"),
    };
    let pages = Router::new()
        .route("/", get(pages::overview::page))
        .route("/first-event", get(pages::overview::first_event))
        .route("/test-message", post(pages::overview::test_message))
        .route("/announce", post(pages::overview::announce))
        .route("/signup", get(pages::auth::signup_form).post(pages::auth::signup))
        .route("/login", get(pages::auth::login_form).post(pages::auth::login))
        .route("/join", get(pages::auth::join_form).post(pages::auth::join))
        .route("/logout", post(pages::auth::logout))
        .route("/keys", get(pages::keys::page).post(pages::keys::create))
        .route("/keys/created", get(pages::keys::created))
        .route("/keys/{key_id}/revoke", post(pages::keys::revoke))
        .route("/campaigns", get(pages::campaigns::list).post(pages::campaigns::create))
        .route("/campaigns/new", get(pages::campaigns::new))
        .route("/campaigns/{campaign_id}", get(pages::campaigns::show).post(pages::campaigns::save))
        .route("/campaigns/{campaign_id}/state", post(pages::campaigns::move_to))
        .route("/analytics", get(pages::analytics::page))
        .route("/events", get(pages::events::page))
        .route("/billing", get(pages::billing::page))
        .route("/billing/plan", post(pages::billing::change_plan))
        .route("/billing/portal", post(pages::billing::portal))
        .route("/team", get(pages::team::page).post(pages::team::add))
        .route("/team/{account_id}/role", post(pages::team::change_role))
        .route("/team/{account_id}/remove", post(pages::team::remove))
        .route("/privacy", get(pages::privacy::page))
        .route("/privacy/erasures", post(pages::privacy::file_erasure))
        .route("/privacy/erasures/{request_id}", get(pages::privacy::erasure))
        .route("/privacy/erasures/{request_id}/receipt", get(pages::privacy::receipt))
        .route("/privacy/export", post(pages::privacy::export))
        .route("/assets/{file}", get(pages::assets::asset))
        .fallback(pages::not_found)
        .layer(from_fn_with_state(console.clone(), renew_rejected))
        .layer(from_fn_with_state(console.clone(), security::headers))
        .with_state(console);
    Router::new().route("/", get(|| async { Redirect::to("/console") })).nest("/console", pages)
}

/// When the API rejected a session's access token before it expired (revoked, or signed with
/// a key since retired): the session is renewed once and a page is loaded again; a form is
/// not sent twice behind the member's back, they are asked to send it again.
async fn renew_rejected(State(console): State<Console>, request: Request, next: Next) -> Response {
    let id = session::cookie(request.headers(), session::SESSION_COOKIE).map(str::to_owned);
    let method = request.method().clone();
    let uri = request.extensions().get::<OriginalUri>().map_or_else(|| request.uri().clone(), |o| o.0.clone());
    let response = next.run(request).await;
    let Some(error::TokenWasRejected(rejected)) = response.extensions().get::<error::TokenWasRejected>().cloned()
    else {
        return response;
    };
    let Some(id) = id else { return response };
    match console.renew_rejected(&id, &rejected).await {
        Ok(()) if method == Method::GET => {
            Redirect::to(uri.path_and_query().map_or("/console", |p| p.as_str())).into_response()
        }
        Ok(()) => error::ConsoleError::Resend.into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request};
    use tower::ServiceExt;

    use super::*;

    fn console() -> Router {
        let config =
            ConsoleConfig { redis_prefix: "test:".into(), idle_timeout: Duration::from_secs(60), public_origin: None };
        router(Router::new(), Arc::new(OnceCell::new()), config)
    }

    #[tokio::test]
    async fn every_member_page_sends_strangers_to_sign_in() {
        for path in [
            "/console",
            "/console/keys",
            "/console/keys/created",
            "/console/team",
            "/console/privacy",
            "/console/campaigns",
            "/console/campaigns/new",
            "/console/billing",
            "/console/analytics",
            "/console/events",
        ] {
            let response =
                console().oneshot(Request::get(path).body(Body::empty()).expect("request")).await.expect("answer");
            assert_eq!(response.status(), 303, "{path}");
            assert_eq!(response.headers()["location"], "/console/login", "{path}");
        }
    }
}
