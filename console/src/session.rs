//! Console sessions.
//!
//! The browser holds one opaque, random id in a `__Host-nudge_session` cookie (`Secure`,
//! `HttpOnly`, `SameSite=Strict`, `Path=/`, no `Domain`): no token ever reaches page
//! scripts or another host. Redis keeps, under the id's SHA-256, the member's access and
//! refresh tokens from the public API's sign-in and the session's CSRF token; the entry
//! ends after `idle_timeout` without use, and at sign-out.
//!
//! An access token about to expire is traded for a new one with the refresh token. Refresh
//! tokens work once and a reused one revokes the whole session, so two requests refreshing
//! at the same moment (two tabs, a page and its event stream) must not both spend it: one
//! takes a short lock and refreshes, the others wait for its result.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, Method, header, request::Parts},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use nudge_contracts::control::{RefreshRequest, SessionTokens};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::{Console, ConsoleConfig, error::ConsoleError};

/// The session cookie.
pub const SESSION_COOKIE: &str = "__Host-nudge_session";
/// Before sign-in, the CSRF token of the sign-in and sign-up forms (double submit).
pub const FORM_COOKIE: &str = "__Host-nudge_form";

/// An access token with less than this left is refreshed first.
const REFRESH_MARGIN_MS: u64 = 60_000;
/// How long a refresh may hold the lock.
const REFRESH_LOCK_MS: u64 = 10_000;
/// How long a request waits for another's refresh.
const REFRESH_WAIT: Duration = Duration::from_secs(3);
/// A secret shown once (a new key) waits this long to be shown.
const REVEAL_MS: u64 = 600_000;

/// What Redis keeps for a session.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    pub access_token: String,
    /// Unix milliseconds.
    pub access_expires_ms: u64,
    pub refresh_token: String,
    pub csrf: String,
    pub tenant_id: String,
    pub account_id: String,
    pub role: String,
    pub email: String,
    pub store_name: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("tenant_id", &self.tenant_id).field("role", &self.role).finish_non_exhaustive()
    }
}

impl Session {
    /// From the API's sign-in answer.
    pub fn new(tokens: SessionTokens, email: String, store_name: String) -> Result<Self, ConsoleError> {
        Ok(Self {
            access_expires_ms: now_ms() + tokens.expires_in * 1000,
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            csrf: random_token()?,
            tenant_id: tokens.tenant_id,
            account_id: tokens.account_id,
            role: tokens.role,
            email,
            store_name,
        })
    }

    /// Whether `sent` is this session's CSRF token.
    pub fn check_csrf(&self, sent: &str) -> Result<(), ConsoleError> {
        if same_secret(sent, &self.csrf) { Ok(()) } else { Err(ConsoleError::Csrf) }
    }
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 32 random bytes, URL-safe.
pub fn random_token() -> Result<String, ConsoleError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ConsoleError::Internal(format!("random source: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The value of cookie `name` in a request's headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value for a `__Host-` cookie that lives `max_age` seconds (0 removes it).
pub fn set_cookie(name: &str, value: &str, max_age: u64) -> String {
    format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}")
}

/// Where sessions live.
#[derive(Clone)]
pub struct Sessions {
    redis: Arc<OnceCell<ConnectionManager>>,
    prefix: String,
    idle: Duration,
}

impl Sessions {
    pub fn new(redis: Arc<OnceCell<ConnectionManager>>, config: ConsoleConfig) -> Self {
        Self { redis, prefix: config.redis_prefix, idle: config.idle_timeout }
    }

    /// Seconds a session lives without use (the cookie's `Max-Age`).
    pub fn idle_secs(&self) -> u64 {
        self.idle.as_secs()
    }

    fn idle_ms(&self) -> u64 {
        u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX)
    }

    fn conn(&self) -> Result<ConnectionManager, ConsoleError> {
        self.redis
            .get()
            .cloned()
            .ok_or_else(|| ConsoleError::SessionsUnavailable("the control plane has not reached Redis yet".into()))
    }

    fn key(&self, id: &str) -> String {
        format!("{}console:s:{}", self.prefix, hex::encode(Sha256::digest(id.as_bytes())))
    }

    /// Stores a new session and returns its id, for the cookie.
    pub async fn create(&self, session: &Session) -> Result<String, ConsoleError> {
        let id = random_token()?;
        self.save(&id, session).await?;
        Ok(id)
    }

    async fn save(&self, id: &str, session: &Session) -> Result<(), ConsoleError> {
        let json = serde_json::to_string(session).map_err(|e| ConsoleError::Internal(e.to_string()))?;
        redis::cmd("SET")
            .arg(self.key(id))
            .arg(json)
            .arg("PX")
            .arg(self.idle_ms())
            .query_async::<()>(&mut self.conn()?)
            .await?;
        Ok(())
    }

    /// The session, its idle timer restarted; `None` when it has ended.
    pub async fn load(&self, id: &str) -> Result<Option<Session>, ConsoleError> {
        let json: Option<String> =
            redis::cmd("GETEX").arg(self.key(id)).arg("PX").arg(self.idle_ms()).query_async(&mut self.conn()?).await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Ends the session, returning what it held.
    pub async fn end(&self, id: &str) -> Result<Option<Session>, ConsoleError> {
        let mut conn = self.conn()?;
        let json: Option<String> = redis::cmd("GETDEL").arg(self.key(id)).query_async(&mut conn).await?;
        redis::cmd("DEL").arg(format!("{}:reveal", self.key(id))).query_async::<()>(&mut conn).await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Keeps a secret for the session to be shown once (a new key), for a few minutes.
    pub async fn put_reveal(&self, id: &str, secret: &str) -> Result<(), ConsoleError> {
        redis::cmd("SET")
            .arg(format!("{}:reveal", self.key(id)))
            .arg(secret)
            .arg("PX")
            .arg(REVEAL_MS)
            .query_async::<()>(&mut self.conn()?)
            .await?;
        Ok(())
    }

    /// The secret waiting to be shown, removed as it is read.
    pub async fn take_reveal(&self, id: &str) -> Result<Option<String>, ConsoleError> {
        Ok(redis::cmd("GETDEL").arg(format!("{}:reveal", self.key(id))).query_async(&mut self.conn()?).await?)
    }

    async fn lock_refresh(&self, id: &str) -> Result<bool, ConsoleError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("{}:refresh", self.key(id)))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(REFRESH_LOCK_MS)
            .query_async(&mut self.conn()?)
            .await?;
        Ok(set.is_some())
    }

    async fn unlock_refresh(&self, id: &str) -> Result<(), ConsoleError> {
        redis::cmd("DEL").arg(format!("{}:refresh", self.key(id))).query_async::<()>(&mut self.conn()?).await?;
        Ok(())
    }
}

/// The signed-in member behind a request, with a live access token.
#[derive(Debug, Clone)]
pub struct Member {
    /// The session id (the cookie's value).
    pub id: String,
    pub session: Session,
}

impl Member {
    pub fn token(&self) -> &str {
        &self.session.access_token
    }

    /// `/v1/tenants/{tenant_id}` and `rest` after it.
    pub fn store_path(&self, rest: &str) -> String {
        format!("/v1/tenants/{}{rest}", self.session.tenant_id)
    }
}

impl FromRequestParts<Console> for Member {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, ConsoleError> {
        let id = cookie(&parts.headers, SESSION_COOKIE).ok_or(ConsoleError::SignedOut)?.to_owned();
        let session = console.sessions.load(&id).await?.ok_or(ConsoleError::SignedOut)?;
        tracing::Span::current().record("tenant_id", session.tenant_id.as_str());
        let session = if session.access_expires_ms <= now_ms() + REFRESH_MARGIN_MS {
            console.refresh(&id, session).await?
        } else {
            session
        };
        Ok(Self { id, session })
    }
}

impl Console {
    /// A member whose session is still live (re-read, refreshed when needed): for work that
    /// outlives one request, such as an event stream.
    pub(crate) async fn member_again(&self, id: &str) -> Result<Member, ConsoleError> {
        let session = self.sessions.load(id).await?.ok_or(ConsoleError::SignedOut)?;
        let session = if session.access_expires_ms <= now_ms() + REFRESH_MARGIN_MS {
            self.refresh(id, session).await?
        } else {
            session
        };
        Ok(Member { id: id.to_owned(), session })
    }

    /// Trades the session's refresh token for new tokens, once for all concurrent requests.
    async fn refresh(&self, id: &str, session: Session) -> Result<Session, ConsoleError> {
        if !self.sessions.lock_refresh(id).await? {
            // Another request is refreshing: wait for its new token.
            let started = tokio::time::Instant::now();
            while started.elapsed() < REFRESH_WAIT {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let current = self.sessions.load(id).await?.ok_or(ConsoleError::SignedOut)?;
                if current.access_token != session.access_token {
                    return Ok(current);
                }
            }
            // Still the old token: usable while it has not expired.
            return if session.access_expires_ms > now_ms() {
                Ok(session)
            } else {
                Err(ConsoleError::SessionsUnavailable("a session refresh did not finish".into()))
            };
        }
        // The lock is ours, but another request may have refreshed between our read of the
        // session and now: its refresh token is then spent, and spending it again would end
        // the session. Read again under the lock.
        let session = match self.sessions.load(id).await {
            Ok(Some(current)) if current.access_token != session.access_token => {
                self.sessions.unlock_refresh(id).await?;
                return Ok(current);
            }
            Ok(Some(current)) => current,
            Ok(None) => {
                self.sessions.unlock_refresh(id).await?;
                return Err(ConsoleError::SignedOut);
            }
            Err(e) => {
                self.sessions.unlock_refresh(id).await?;
                return Err(e);
            }
        };
        let result = self
            .api
            .call::<SessionTokens>(
                Method::POST,
                "/v1/sessions/refresh",
                None,
                Some(&RefreshRequest { refresh_token: session.refresh_token.clone() }),
            )
            .await;
        let outcome = match result {
            Ok(tokens) => {
                let renewed = Session {
                    access_expires_ms: now_ms() + tokens.expires_in * 1000,
                    access_token: tokens.access_token,
                    refresh_token: tokens.refresh_token,
                    role: tokens.role,
                    ..session
                };
                self.sessions.save(id, &renewed).await.map(|()| renewed)
            }
            // The refresh token is no longer good (expired, revoked, the membership ended).
            Err(ConsoleError::Refused(r)) if r.status.as_u16() == 401 => {
                self.sessions.end(id).await?;
                Err(ConsoleError::SignedOut)
            }
            Err(e) => Err(e),
        };
        self.sessions.unlock_refresh(id).await?;
        outcome
    }
}
