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
//! takes a short lock and refreshes, the others wait for its result. A refresh that fails for
//! a passing reason (the API busy or unavailable) leaves the member on the old token while it
//! lasts.
//!
//! Requests a page makes by itself (an event stream, a page reloading itself while work is
//! in progress) carry `auto` in their query and do not count as use: a tab left open does not
//! keep a session alive forever.

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

use crate::{
    Console, ConsoleConfig,
    error::{ConsoleError, TokenDigest},
};

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
/// How long a request waits for its own refresh before carrying on without it (the refresh
/// itself goes on, bounded inside the lock's life).
const REFRESH_CALL: Duration = Duration::from_secs(5);
/// An access token the API rejects although it was issued this recently is not renewed
/// again: the session ends instead of looping.
const RENEWED_RECENTLY_MS: u64 = 30_000;

/// Removes a lock only if it still holds the holder's value.
const UNLOCK: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
/// Reads and removes one secret waiting to be shown.
const TAKE_REVEAL: &str =
    "local v = redis.call('HGET', KEYS[1], ARGV[1]) if v then redis.call('HDEL', KEYS[1], ARGV[1]) end return v";

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
    /// When the access token was issued (Unix milliseconds).
    #[serde(default)]
    pub issued_ms: u64,
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
            issued_ms: now_ms(),
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

/// A `Set-Cookie` value for a `__Host-` cookie that lives until the browser closes; how long
/// the session behind it lives is the server's to say (its idle timeout).
pub fn set_session_cookie(name: &str, value: &str) -> String {
    format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict")
}

/// Where a secret waiting to be shown once is kept.
#[derive(Debug, Clone, Copy)]
pub enum Reveal<'a> {
    /// The secret key made at sign-up.
    Signup,
    /// A secret key made in the console, by its id.
    Key(&'a str),
}

impl Reveal<'_> {
    fn field(&self) -> String {
        match self {
            Self::Signup => "signup".to_owned(),
            Self::Key(id) => format!("key:{id}"),
        }
    }
}

/// Whether a request was made by a page by itself, not by the member (see the module's
/// documentation).
pub fn is_automatic(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.split('&').any(|pair| pair == "auto" || pair.starts_with("auto=")))
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
        let json = serde_json::to_string(session).map_err(|e| ConsoleError::Internal(e.to_string()))?;
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key(&id))
            .arg(json)
            .arg("NX")
            .arg("PX")
            .arg(self.idle_ms())
            .query_async(&mut self.conn()?)
            .await?;
        match set {
            Some(_) => Ok(id),
            None => Err(ConsoleError::Internal("a new session id was already in use".into())),
        }
    }

    /// Replaces a live session's contents, keeping its idle timer; `false` when it has ended
    /// meanwhile (a sign-out is never undone by a refresh finishing late).
    async fn replace(&self, id: &str, session: &Session) -> Result<bool, ConsoleError> {
        let json = serde_json::to_string(session).map_err(|e| ConsoleError::Internal(e.to_string()))?;
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key(id))
            .arg(json)
            .arg("XX")
            .arg("KEEPTTL")
            .query_async(&mut self.conn()?)
            .await?;
        Ok(set.is_some())
    }

    /// The session, its idle timer restarted; `None` when it has ended.
    pub async fn load(&self, id: &str) -> Result<Option<Session>, ConsoleError> {
        let json: Option<String> =
            redis::cmd("GETEX").arg(self.key(id)).arg("PX").arg(self.idle_ms()).query_async(&mut self.conn()?).await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// The session as it is, its idle timer left running; `None` when it has ended.
    pub async fn peek(&self, id: &str) -> Result<Option<Session>, ConsoleError> {
        let json: Option<String> = redis::cmd("GET").arg(self.key(id)).query_async(&mut self.conn()?).await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Ends the session, returning what it held.
    pub async fn end(&self, id: &str) -> Result<Option<Session>, ConsoleError> {
        let mut conn = self.conn()?;
        let key = self.key(id);
        let (json,): (Option<String>,) = redis::pipe()
            .cmd("GETDEL")
            .arg(&key)
            .cmd("DEL")
            .arg(format!("{key}:reveal"))
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Keeps a secret for the session to be shown once, for a few minutes.
    pub async fn put_reveal(&self, id: &str, slot: Reveal<'_>, secret: &str) -> Result<(), ConsoleError> {
        let key = format!("{}:reveal", self.key(id));
        redis::pipe()
            .cmd("HSET")
            .arg(&key)
            .arg(slot.field())
            .arg(secret)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(REVEAL_MS)
            .ignore()
            .query_async::<()>(&mut self.conn()?)
            .await?;
        Ok(())
    }

    /// The secret waiting in `slot`, removed as it is read.
    pub async fn take_reveal(&self, id: &str, slot: Reveal<'_>) -> Result<Option<String>, ConsoleError> {
        Ok(redis::Script::new(TAKE_REVEAL)
            .key(format!("{}:reveal", self.key(id)))
            .arg(slot.field())
            .invoke_async(&mut self.conn()?)
            .await?)
    }

    /// The refresh lock, with the holder's value to release it by; `None` when another holds it.
    async fn lock_refresh(&self, id: &str) -> Result<Option<String>, ConsoleError> {
        let holder = random_token()?;
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("{}:refresh", self.key(id)))
            .arg(&holder)
            .arg("NX")
            .arg("PX")
            .arg(REFRESH_LOCK_MS)
            .query_async(&mut self.conn()?)
            .await?;
        Ok(set.map(|_| holder))
    }

    /// Releases the lock if it is still `holder`'s (it may have expired and been taken).
    async fn unlock_refresh(&self, id: &str, holder: &str) -> Result<(), ConsoleError> {
        redis::Script::new(UNLOCK)
            .key(format!("{}:refresh", self.key(id)))
            .arg(holder)
            .invoke_async::<i64>(&mut self.conn()?)
            .await?;
        Ok(())
    }
}

/// The signed-in member behind a request, with a live access token.
#[derive(Clone)]
pub struct Member {
    /// The session id (the cookie's value).
    pub id: String,
    pub session: Session,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the session id: it is the member's credential.
        f.debug_struct("Member").field("session", &self.session).finish_non_exhaustive()
    }
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
        let session = if is_automatic(parts.uri.query()) {
            console.sessions.peek(&id).await?
        } else {
            console.sessions.load(&id).await?
        };
        let session = session.ok_or(ConsoleError::SignedOut)?;
        tracing::Span::current().record("tenant_id", session.tenant_id.as_str());
        let session = if session.access_expires_ms <= now_ms() + REFRESH_MARGIN_MS {
            console.refresh(&id, session).await?
        } else {
            session
        };
        Ok(Self { id, session })
    }
}

/// The session behind a request as stored, without a live token: for signing out, which
/// must work while the API cannot renew tokens.
pub struct StoredSession {
    pub id: String,
    pub session: Session,
}

impl FromRequestParts<Console> for StoredSession {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, ConsoleError> {
        let id = cookie(&parts.headers, SESSION_COOKIE).ok_or(ConsoleError::SignedOut)?.to_owned();
        let session = console.sessions.peek(&id).await?.ok_or(ConsoleError::SignedOut)?;
        Ok(Self { id, session })
    }
}

impl Console {
    /// A member whose session is still live (re-read without counting as use, refreshed
    /// when needed): for work that outlives one request, such as an event stream.
    pub(crate) async fn member_again(&self, id: &str) -> Result<Member, ConsoleError> {
        let session = self.sessions.peek(id).await?.ok_or(ConsoleError::SignedOut)?;
        let session = if session.access_expires_ms <= now_ms() + REFRESH_MARGIN_MS {
            self.refresh(id, session).await?
        } else {
            session
        };
        Ok(Member { id: id.to_owned(), session })
    }

    /// After the API rejected the session's access token `rejected`: a new one, unless the
    /// token was issued moments ago (then the session ends, rather than renewing in a loop).
    /// When another request has renewed it meanwhile, its new token is the answer.
    pub(crate) async fn renew_rejected(&self, id: &str, rejected: &TokenDigest) -> Result<(), ConsoleError> {
        let session = self.sessions.peek(id).await?.ok_or(ConsoleError::SignedOut)?;
        if TokenDigest::of(&session.access_token) != *rejected {
            return Ok(());
        }
        if session.issued_ms + RENEWED_RECENTLY_MS > now_ms() {
            tracing::warn!(tenant_id = %session.tenant_id, "a fresh access token was rejected; the session ends");
            self.sessions.end(id).await?;
            return Err(ConsoleError::SignedOut);
        }
        // Renewed whatever its expiry says: the API no longer takes it.
        let stale = Session { access_expires_ms: 0, ..session };
        self.try_refresh(id, &stale).await.map(|_| ())
    }

    /// New tokens for a session about to expire. A refresh that fails for a passing reason
    /// leaves the old token in use while it is still good.
    async fn refresh(&self, id: &str, session: Session) -> Result<Session, ConsoleError> {
        match self.try_refresh(id, &session).await {
            Ok(renewed) => Ok(renewed),
            Err(ConsoleError::SignedOut) => Err(ConsoleError::SignedOut),
            Err(e) if session.access_expires_ms > now_ms() + 1_000 => {
                tracing::warn!(tenant_id = %session.tenant_id, error = %e, "a session refresh failed; the current token serves until it expires");
                Ok(session)
            }
            Err(e) => Err(e),
        }
    }

    /// Trades the session's refresh token for new tokens, once for all concurrent requests.
    async fn try_refresh(&self, id: &str, session: &Session) -> Result<Session, ConsoleError> {
        let Some(holder) = self.sessions.lock_refresh(id).await? else {
            // Another request is refreshing: wait for its new token.
            let started = tokio::time::Instant::now();
            while started.elapsed() < REFRESH_WAIT {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let current = self.sessions.peek(id).await?.ok_or(ConsoleError::SignedOut)?;
                if current.access_token != session.access_token {
                    return Ok(current);
                }
            }
            return Err(ConsoleError::Unavailable("a session refresh did not finish in time".into()));
        };
        // The refresh runs to its end on its own task: a request that gives up waiting (or a
        // browser that goes away) must not cut it between the API spending the refresh token
        // and the new tokens being stored, or the next refresh would reuse a spent token and
        // end the session.
        let (console, owned_id, seen) = (self.clone(), id.to_owned(), session.clone());
        let work = tokio::spawn(async move {
            let bounded = Duration::from_millis(REFRESH_LOCK_MS - 1_000);
            let outcome = match tokio::time::timeout(bounded, console.refresh_locked(&owned_id, &seen)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(ConsoleError::Unavailable("the session refresh did not finish in time".into())),
            };
            if let Err(e) = console.sessions.unlock_refresh(&owned_id, &holder).await {
                // The lock expires by itself in a few seconds.
                tracing::warn!(error = %e, "a session refresh lock could not be released");
            }
            outcome
        });
        match tokio::time::timeout(REFRESH_CALL, work).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => Err(ConsoleError::Internal(format!("the session refresh stopped: {e}"))),
            // It goes on and stores its result; this request carries on without it.
            Err(_) => Err(ConsoleError::Unavailable("the session refresh is taking long".into())),
        }
    }

    async fn refresh_locked(&self, id: &str, seen: &Session) -> Result<Session, ConsoleError> {
        // The lock is ours, but another request may have refreshed between our read of the
        // session and now: its refresh token is then spent, and spending it again would end
        // the session. Read again under the lock.
        let session = self.sessions.peek(id).await?.ok_or(ConsoleError::SignedOut)?;
        if session.access_token != seen.access_token {
            return Ok(session);
        }
        let request = RefreshRequest { refresh_token: session.refresh_token.clone() };
        let tokens =
            match self.api.call::<SessionTokens>(Method::POST, "/v1/sessions/refresh", None, Some(&request)).await {
                Ok(tokens) => tokens,
                // The refresh token is no longer good (expired, revoked, the membership ended).
                Err(ConsoleError::Refused(r)) if r.status.as_u16() == 401 => {
                    self.sessions.end(id).await?;
                    return Err(ConsoleError::SignedOut);
                }
                Err(e) => return Err(e),
            };
        let renewed = Session {
            access_expires_ms: now_ms() + tokens.expires_in * 1000,
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            role: tokens.role,
            issued_ms: now_ms(),
            ..session
        };
        if self.sessions.replace(id, &renewed).await? { Ok(renewed) } else { Err(ConsoleError::SignedOut) }
    }
}
