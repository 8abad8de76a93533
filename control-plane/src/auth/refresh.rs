//! Refresh tokens, kept in Redis.
//!
//! A token is `rt_` and 64 hex digits; Redis keeps only its SHA-256. Tokens of one login
//! form a *family*. Using a token spends it and returns its successor in the same family.
//! Presenting a spent token again means it was stolen (or the client is broken): the whole
//! family is revoked, so neither the thief nor the owner can go on refreshing. Every check
//! and change is one Lua script, so two concurrent uses of one token cannot both succeed.
//!
//! Redis down means no refresh and no login succeeds: the store answers
//! [`RefreshError::Unavailable`] and the API 503; it never falls back to trusting the token.

use std::time::Duration;

use nudge_tenants::{AccountId, TenantId};
use redis::{Script, aio::ConnectionManager};
use sha2::{Digest, Sha256};

use super::throttle::{SignInLimit, SignInThrottle};

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("the refresh token is unknown, expired or revoked")]
    Invalid,
    #[error("the refresh token was already used; its session is revoked")]
    Reused,
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
}

impl From<redis::RedisError> for RefreshError {
    fn from(e: redis::RedisError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// Whom a refresh token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub account: AccountId,
    pub tenant: TenantId,
}

/// A refresh token to hand to the client, with its family.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub family: String,
}

fn random_hex(bytes: usize) -> Result<String, RefreshError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| RefreshError::Unavailable(format!("random source: {e}")))?;
    Ok(hex::encode(buf))
}

/// Rotates: checks the family is live and the token unspent, spends it, stores its
/// successor. A spent token revokes the family.
const ROTATE: &str = r#"
local t = redis.call('HMGET', KEYS[1], 'family', 'state', 'account', 'tenant')
if not t[1] then return {'invalid'} end
local family = ARGV[1] .. 'rtfam:' .. t[1]
if redis.call('GET', family) ~= 'live' then return {'invalid'} end
if t[2] ~= 'live' then
  redis.call('SET', family, 'revoked', 'KEEPTTL')
  return {'reused'}
end
redis.call('HSET', KEYS[1], 'state', 'spent')
redis.call('HSET', KEYS[2], 'family', t[1], 'state', 'live', 'account', t[3], 'tenant', t[4])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return {'ok', t[3], t[4], t[1]}
"#;

/// Revokes the family of a token, whatever the token's state.
const REVOKE: &str = r#"
local f = redis.call('HGET', KEYS[1], 'family')
if not f then return 0 end
redis.call('SET', ARGV[1] .. 'rtfam:' .. f, 'revoked', 'KEEPTTL')
return 1
"#;

/// The session store: refresh tokens, and the sign-in attempts counted beside them.
#[derive(Clone)]
pub struct RefreshStore {
    redis: ConnectionManager,
    prefix: String,
    ttl: Duration,
    sign_in: SignInThrottle,
}

impl RefreshStore {
    pub fn new(redis: ConnectionManager, prefix: impl Into<String>, ttl: Duration, sign_in: SignInLimit) -> Self {
        let prefix = prefix.into();
        let sign_in = SignInThrottle::new(redis.clone(), prefix.clone(), sign_in);
        Self { redis, prefix, ttl, sign_in }
    }

    /// Failed sign-ins, per e-mail address.
    pub fn sign_in(&self) -> &SignInThrottle {
        &self.sign_in
    }

    fn token_key(&self, token: &str) -> String {
        format!("{}rt:{}", self.prefix, hex::encode(Sha256::digest(token.as_bytes())))
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// Starts a family for a new login.
    pub async fn start(&self, session: &Session) -> Result<Issued, RefreshError> {
        let family = random_hex(16)?;
        let token = format!("rt_{}", random_hex(32)?);
        let mut conn = self.redis.clone();
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(format!("{}rtfam:{family}", self.prefix))
            .arg("live")
            .arg("PX")
            .arg(self.ttl_ms())
            .ignore()
            .cmd("HSET")
            .arg(self.token_key(&token))
            .arg(&[
                ("family", family.as_str()),
                ("state", "live"),
                ("account", &session.account.to_string()),
                ("tenant", &session.tenant.to_string()),
            ])
            .ignore()
            .cmd("PEXPIRE")
            .arg(self.token_key(&token))
            .arg(self.ttl_ms())
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(Issued { token, family })
    }

    /// Spends `token` and returns its successor and the session it speaks for.
    pub async fn rotate(&self, token: &str) -> Result<(Issued, Session), RefreshError> {
        if !token.starts_with("rt_") || token.len() != 67 {
            return Err(RefreshError::Invalid);
        }
        let next = format!("rt_{}", random_hex(32)?);
        let mut conn = self.redis.clone();
        let reply: Vec<String> = Script::new(ROTATE)
            .key(self.token_key(token))
            .key(self.token_key(&next))
            .arg(&self.prefix)
            .arg(self.ttl_ms())
            .invoke_async(&mut conn)
            .await?;
        match reply.first().map(String::as_str) {
            Some("ok") if reply.len() == 4 => {
                let account = reply[1].parse().map_err(|_| RefreshError::Invalid)?;
                let tenant = reply[2].parse().map_err(|_| RefreshError::Invalid)?;
                Ok((Issued { token: next, family: reply[3].clone() }, Session { account, tenant }))
            }
            Some("reused") => Err(RefreshError::Reused),
            _ => Err(RefreshError::Invalid),
        }
    }

    /// Whom `token` speaks for, without spending it (so checks that may fail can run
    /// before the token is used up).
    pub async fn peek(&self, token: &str) -> Result<Session, RefreshError> {
        if !token.starts_with("rt_") || token.len() != 67 {
            return Err(RefreshError::Invalid);
        }
        let mut conn = self.redis.clone();
        let fields: Vec<Option<String>> =
            redis::cmd("HMGET").arg(self.token_key(token)).arg(&["account", "tenant"]).query_async(&mut conn).await?;
        match fields.as_slice() {
            [Some(account), Some(tenant)] => Ok(Session {
                account: account.parse().map_err(|_| RefreshError::Invalid)?,
                tenant: tenant.parse().map_err(|_| RefreshError::Invalid)?,
            }),
            _ => Err(RefreshError::Invalid),
        }
    }

    /// Ends the session `token` belongs to (logout). Unknown tokens are ignored.
    pub async fn revoke(&self, token: &str) -> Result<(), RefreshError> {
        let mut conn = self.redis.clone();
        let _revoked: i64 =
            Script::new(REVOKE).key(self.token_key(token)).arg(&self.prefix).invoke_async(&mut conn).await?;
        Ok(())
    }

    /// Revokes a whole family (a membership ended, say).
    pub async fn revoke_family(&self, family: &str) -> Result<(), RefreshError> {
        let mut conn = self.redis.clone();
        redis::cmd("SET")
            .arg(format!("{}rtfam:{family}", self.prefix))
            .arg("revoked")
            .arg("KEEPTTL")
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }
}
