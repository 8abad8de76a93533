//! Ingest-side deduplication and idempotency keys, in Redis.
//!
//! - **Event ids.** Each event's (tenant, event id) is claimed for 24 hours before the batch
//!   is stored; an id claimed already is a resend and is dropped (counted `duplicate`). If the
//!   batch then cannot be stored, its claims are released, so the client's retry goes through.
//! - **Idempotency keys** on batch requests, with Stripe's semantics: the first request with
//!   a key runs; a later one with the same key and body gets the first response again; with
//!   a different body, 422; while the first still runs, 409. Keys are per tenant.

use std::{future::Future, pin::Pin};

use nudge_tenants::TenantId;
use redis::{Script, aio::ConnectionManager};

/// How long event ids and idempotency keys are remembered.
pub const REMEMBER_SECONDS: u64 = 24 * 3600;
/// How long a request may hold its idempotency key before another may take over (a process
/// that died mid-request must not block the key for a day).
pub const RUNNING_SECONDS: u64 = 60;

#[derive(Debug, thiserror::Error)]
#[error("the dedup store is unavailable: {0}")]
pub struct DedupUnavailable(pub String);

impl From<redis::RedisError> for DedupUnavailable {
    fn from(e: redis::RedisError) -> Self {
        Self(e.to_string())
    }
}

type Fut<'a, T> = Pin<Box<dyn Future<Output = Result<T, DedupUnavailable>> + Send + 'a>>;

/// What an idempotency key says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// First use: run the request, then [`Dedup::finish`].
    Fresh,
    /// Same key, same body, finished before: answer this again.
    Replay { status: u16, body: Vec<u8> },
    /// Same key, a request with it is running now.
    InProgress,
    /// Same key, different body.
    Mismatch,
}

/// The port ingest deduplicates through.
pub trait Dedup: Send + Sync {
    /// Claims each event id; `true` where the id is new.
    fn claim<'a>(&'a self, tenant: TenantId, event_ids: &'a [String]) -> Fut<'a, Vec<bool>>;
    /// Releases claims of a batch that was not stored.
    fn release<'a>(&'a self, tenant: TenantId, event_ids: &'a [String]) -> Fut<'a, ()>;
    /// Starts a request with an idempotency key and the SHA-256 of its body.
    fn begin<'a>(&'a self, tenant: TenantId, key: &'a str, body_sha256: &'a str) -> Fut<'a, KeyState>;
    /// Stores the final answer of a request started with [`Dedup::begin`].
    fn finish<'a>(&'a self, tenant: TenantId, key: &'a str, status: u16, body: &'a [u8]) -> Fut<'a, ()>;
    /// Forgets a key whose request ended in a retryable failure, so the retry can run.
    fn abandon<'a>(&'a self, tenant: TenantId, key: &'a str) -> Fut<'a, ()>;
}

const BEGIN: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'state', 'running', 'hash', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return {'fresh'}
end
local k = redis.call('HMGET', KEYS[1], 'state', 'hash', 'status', 'body')
if k[2] ~= ARGV[1] then return {'mismatch'} end
if k[1] ~= 'done' then return {'running'} end
return {'done', k[3], k[4]}
"#;

/// Redis-backed deduplication, keys under `{prefix}t:{tenant}:`.
#[derive(Clone)]
pub struct RedisDedup {
    redis: ConnectionManager,
    prefix: String,
}

impl RedisDedup {
    pub fn new(redis: ConnectionManager, prefix: impl Into<String>) -> Self {
        Self { redis, prefix: prefix.into() }
    }

    fn event_key(&self, tenant: TenantId, event_id: &str) -> String {
        format!("{}t:{tenant}:seen:{event_id}", self.prefix)
    }

    fn idem_key(&self, tenant: TenantId, key: &str) -> String {
        format!("{}t:{tenant}:idem:{key}", self.prefix)
    }
}

impl Dedup for RedisDedup {
    fn claim<'a>(&'a self, tenant: TenantId, event_ids: &'a [String]) -> Fut<'a, Vec<bool>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            for id in event_ids {
                pipe.cmd("SET").arg(self.event_key(tenant, id)).arg(1).arg("NX").arg("EX").arg(REMEMBER_SECONDS);
            }
            let mut conn = self.redis.clone();
            let replies: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
            Ok(replies.into_iter().map(|r| r.is_some()).collect())
        })
    }

    fn release<'a>(&'a self, tenant: TenantId, event_ids: &'a [String]) -> Fut<'a, ()> {
        Box::pin(async move {
            if event_ids.is_empty() {
                return Ok(());
            }
            let keys: Vec<String> = event_ids.iter().map(|id| self.event_key(tenant, id)).collect();
            let mut conn = self.redis.clone();
            redis::cmd("DEL").arg(keys).query_async::<()>(&mut conn).await?;
            Ok(())
        })
    }

    fn begin<'a>(&'a self, tenant: TenantId, key: &'a str, body_sha256: &'a str) -> Fut<'a, KeyState> {
        Box::pin(async move {
            let mut conn = self.redis.clone();
            let reply: Vec<Vec<u8>> = Script::new(BEGIN)
                .key(self.idem_key(tenant, key))
                .arg(body_sha256)
                .arg(RUNNING_SECONDS)
                .invoke_async(&mut conn)
                .await?;
            let text = |i: usize| reply.get(i).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
            Ok(match text(0).as_str() {
                "fresh" => KeyState::Fresh,
                "mismatch" => KeyState::Mismatch,
                "running" => KeyState::InProgress,
                _ => KeyState::Replay {
                    status: text(1).parse().unwrap_or(200),
                    body: reply.get(2).cloned().unwrap_or_default(),
                },
            })
        })
    }

    fn finish<'a>(&'a self, tenant: TenantId, key: &'a str, status: u16, body: &'a [u8]) -> Fut<'a, ()> {
        Box::pin(async move {
            let k = self.idem_key(tenant, key);
            let mut conn = self.redis.clone();
            redis::pipe()
                .atomic()
                .cmd("HSET")
                .arg(&k)
                .arg("state")
                .arg("done")
                .arg("status")
                .arg(status)
                .arg("body")
                .arg(body)
                .ignore()
                .cmd("EXPIRE")
                .arg(&k)
                .arg(REMEMBER_SECONDS)
                .ignore()
                .query_async::<()>(&mut conn)
                .await?;
            Ok(())
        })
    }

    fn abandon<'a>(&'a self, tenant: TenantId, key: &'a str) -> Fut<'a, ()> {
        Box::pin(async move {
            let mut conn = self.redis.clone();
            redis::cmd("DEL").arg(self.idem_key(tenant, key)).query_async::<()>(&mut conn).await?;
            Ok(())
        })
    }
}
