//! Ingest-side deduplication and idempotency keys, in Redis.
//!
//! - **Event ids.** Each event's (tenant, event id) is claimed before the batch is stored; an
//!   id claimed already is a resend and is dropped (counted `duplicate`). If the batch then
//!   cannot be stored, its claims are released, so the client's retry goes through. Ids live
//!   in one Redis set per tenant and UTC day; a claim looks in today's and yesterday's set,
//!   so an id is remembered for at least 24 hours and at most 48. A batch is claimed in one
//!   transaction of set commands, where a key per id cost Redis a command per event, and a
//!   member is the first 16 bytes of the id's SHA-256, where its hex form cost Redis twice
//!   the bytes to parse, hash and keep (on hosts with fast system calls the dedup store is
//!   the ingest path's bottleneck, see docs/benchmarks.md).
//! - **Idempotency keys** on batch requests, with Stripe's semantics: the first request with
//!   a key runs; a later one with the same key and body gets the first response again; with
//!   a different body, 422; while the first still runs, 409. Keys are per tenant.

use std::{collections::HashMap, future::Future, pin::Pin};

use nudge_contracts::id_digest;
use nudge_tenants::TenantId;
use redis::{Script, aio::ConnectionManager};
use sha2::{Digest, Sha256};

/// How long idempotency keys are remembered, and the least time event ids are.
pub const REMEMBER_SECONDS: u64 = 24 * 3600;
/// How long past the end of its day's window an event-id set is kept, for clocks that
/// disagree a little between replicas.
const DAY_SLACK_SECONDS: u64 = 3600;
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

/// Bytes of an id's digest kept in a day set: 128 bits, so two ids of a tenant's day are
/// taken for each other with a chance of about 10^-23 at a hundred million ids.
const MEMBER_BYTES: usize = 16;

/// What a day set keeps of an event id.
fn member(id: &str) -> [u8; MEMBER_BYTES] {
    let digest = Sha256::digest(id.as_bytes());
    let mut m = [0u8; MEMBER_BYTES];
    m.copy_from_slice(&digest[..MEMBER_BYTES]);
    m
}

/// Days since the Unix epoch, UTC.
fn today() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() / 86_400).unwrap_or(0)
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

    /// The set of ids claimed on `day` (days since the Unix epoch, UTC). The tenant is the
    /// hash tag, so a tenant's two sets share a Redis Cluster slot.
    fn seen_key(&self, tenant: TenantId, day: u64) -> String {
        format!("{}t:{{{tenant}}}:ids:{day}", self.prefix)
    }

    /// Claims `event_ids` on `day` (days since the Unix epoch).
    async fn claim_on(&self, tenant: TenantId, event_ids: &[String], day: u64) -> Result<Vec<bool>, DedupUnavailable> {
        // A repeat within the batch is a duplicate of its first occurrence; Redis sees
        // each id once.
        let mut first = HashMap::with_capacity(event_ids.len());
        let mut distinct: Vec<&str> = Vec::with_capacity(event_ids.len());
        for id in event_ids {
            first.entry(id.as_str()).or_insert_with(|| {
                distinct.push(id);
                distinct.len() - 1
            });
        }
        if distinct.is_empty() {
            return Ok(Vec::new());
        }
        // Redis keeps digests of the ids, never the ids.
        let digests: Vec<[u8; MEMBER_BYTES]> = distinct.iter().map(|id| member(id)).collect();
        let members: Vec<&[u8]> = digests.iter().map(|d| d.as_slice()).collect();
        // One transaction: each id's lookups run after any earlier claim's SADD, so two
        // requests with the same id never both find it new. Redis does a few hash lookups
        // per id; a script would convert every id to Lua and back, and a key per id would
        // cost a command per event.
        let (today_key, yesterday_key) = (self.seen_key(tenant, day), self.seen_key(tenant, day.saturating_sub(1)));
        let (yesterday, now): (Vec<i64>, Vec<i64>) = redis::pipe()
            .atomic()
            .cmd("SMISMEMBER")
            .arg(&yesterday_key)
            .arg(&members)
            .cmd("SMISMEMBER")
            .arg(&today_key)
            .arg(&members)
            .cmd("SADD")
            .arg(&today_key)
            .arg(&members)
            .ignore()
            .cmd("EXPIREAT")
            .arg(&today_key)
            .arg((day + 2) * 86_400 + DAY_SLACK_SECONDS)
            .ignore()
            .query_async(&mut self.redis.clone())
            .await?;
        if yesterday.len() != distinct.len() || now.len() != distinct.len() {
            return Err(DedupUnavailable(format!(
                "Redis answered {} and {} flags for {} ids",
                yesterday.len(),
                now.len(),
                distinct.len()
            )));
        }
        let fresh: Vec<bool> = yesterday.iter().zip(&now).map(|(y, t)| *y == 0 && *t == 0).collect();
        let mut answered = vec![false; distinct.len()];
        Ok(event_ids
            .iter()
            .map(|id| {
                let i = first[id.as_str()];
                // Only the first occurrence may be new.
                let new = fresh[i] && !answered[i];
                answered[i] = true;
                new
            })
            .collect())
    }

    fn idem_key(&self, tenant: TenantId, key: &str) -> String {
        format!("{}t:{tenant}:idem:{}", self.prefix, id_digest(key))
    }
}

impl Dedup for RedisDedup {
    fn claim<'a>(&'a self, tenant: TenantId, event_ids: &'a [String]) -> Fut<'a, Vec<bool>> {
        Box::pin(self.claim_on(tenant, event_ids, today()))
    }

    fn release<'a>(&'a self, tenant: TenantId, event_ids: &'a [String]) -> Fut<'a, ()> {
        Box::pin(async move {
            if event_ids.is_empty() {
                return Ok(());
            }
            // The claim may have been made yesterday; an id a claim found new is in no other
            // request's set, so removing it from both days only undoes this claim.
            let day = today();
            let digests: Vec<[u8; MEMBER_BYTES]> = event_ids.iter().map(|id| member(id)).collect();
            let members: Vec<&[u8]> = digests.iter().map(|d| d.as_slice()).collect();
            let mut pipe = redis::pipe();
            pipe.cmd("SREM").arg(self.seen_key(tenant, day)).arg(&members).ignore();
            pipe.cmd("SREM").arg(self.seen_key(tenant, day.saturating_sub(1))).arg(&members).ignore();
            let mut conn = self.redis.clone();
            pipe.query_async::<()>(&mut conn).await?;
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

#[cfg(test)]
mod tests {
    //! Against the real Redis the tests run with, under a key prefix of their own.

    use super::*;

    async fn dedup() -> RedisDedup {
        let url = std::env::var("NUDGE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
        let client = redis::Client::open(url).expect("a Redis URL");
        let redis = ConnectionManager::new(client).await.expect("Redis is running (scripts/test starts it)");
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        RedisDedup::new(redis, format!("nudge-test:dedup:{}:{nanos}:", std::process::id()))
    }

    async fn forget(d: &RedisDedup) {
        let mut conn = d.redis.clone();
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}*", d.prefix)).query_async(&mut conn).await.unwrap();
        if !keys.is_empty() {
            redis::cmd("DEL").arg(keys).query_async::<()>(&mut conn).await.unwrap();
        }
    }

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn an_id_is_new_once_per_tenant_and_a_repeat_in_the_batch_is_a_duplicate() {
        let d = dedup().await;
        let (a, b) = (TenantId::new(), TenantId::new());
        assert_eq!(d.claim(a, &ids(&["e1", "e2", "e1"])).await.unwrap(), [true, true, false]);
        assert_eq!(d.claim(a, &ids(&["e2", "e3"])).await.unwrap(), [false, true]);
        assert_eq!(d.claim(b, &ids(&["e1"])).await.unwrap(), [true], "another tenant's ids are its own");
        forget(&d).await;
    }

    #[tokio::test]
    async fn yesterdays_ids_are_remembered_and_the_day_before_is_not() {
        let d = dedup().await;
        let t = TenantId::new();
        let day = today();
        assert_eq!(d.claim_on(t, &ids(&["y"]), day - 1).await.unwrap(), [true]);
        assert_eq!(d.claim_on(t, &ids(&["y"]), day).await.unwrap(), [false], "a claim looks at yesterday's set");
        assert_eq!(d.claim_on(t, &ids(&["z"]), day).await.unwrap(), [true]);
        assert_eq!(d.claim_on(t, &ids(&["z"]), day + 1).await.unwrap(), [false]);
        // Claimed two days before `day + 1` only: out of the window.
        assert_eq!(d.claim_on(t, &ids(&["y"]), day + 1).await.unwrap(), [false], "y was claimed again today");
        assert_eq!(d.claim_on(t, &ids(&["w"]), day - 1).await.unwrap(), [true]);
        assert_eq!(d.claim_on(t, &ids(&["w"]), day + 1).await.unwrap(), [true], "a set two days old is not looked at");

        // Each set outlives its window by the slack, and no more.
        let mut conn = d.redis.clone();
        let ttl: i64 = redis::cmd("TTL").arg(d.seen_key(t, day)).query_async(&mut conn).await.unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let expected = ((day + 2) * 86_400 + DAY_SLACK_SECONDS - now) as i64;
        assert!((expected - 5..=expected).contains(&ttl), "ttl {ttl}, expected about {expected}");
        assert!(ttl >= REMEMBER_SECONDS as i64, "an id claimed now is remembered at least a day");
        forget(&d).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_many_requests_claiming_one_id_at_once_exactly_one_wins() {
        let d = dedup().await;
        let (t, other) = (TenantId::new(), TenantId::new());
        let claims: Vec<_> = (0..200)
            .map(|i| {
                let d = d.clone();
                // Interleave another tenant's claims of the same id.
                let tenant = if i % 2 == 0 { t } else { other };
                tokio::spawn(async move { (tenant, d.claim(tenant, &ids(&["same", &format!("own-{i}")])).await) })
            })
            .collect();
        let mut wins = HashMap::new();
        for claim in claims {
            let (tenant, flags) = claim.await.unwrap();
            let flags = flags.unwrap();
            assert!(flags[1], "each request's own id is new");
            *wins.entry(tenant).or_insert(0) += usize::from(flags[0]);
        }
        assert_eq!(wins[&t], 1);
        assert_eq!(wins[&other], 1);
        forget(&d).await;
    }

    #[tokio::test]
    async fn a_released_claim_lets_the_retry_through() {
        let d = dedup().await;
        let t = TenantId::new();
        assert_eq!(d.claim(t, &ids(&["r", "s"])).await.unwrap(), [true, true]);
        d.release(t, &ids(&["r"])).await.unwrap();
        assert_eq!(d.claim(t, &ids(&["r", "s"])).await.unwrap(), [true, false]);
        forget(&d).await;
    }

    #[tokio::test]
    async fn a_large_batch_is_claimed_whole() {
        let d = dedup().await;
        let t = TenantId::new();
        let many: Vec<String> = (0..5_000).map(|i| format!("id-{i}")).collect();
        assert!(d.claim(t, &many).await.unwrap().iter().all(|new| *new));
        assert!(d.claim(t, &many).await.unwrap().iter().all(|new| !*new));
        forget(&d).await;
    }
}
