//! What the delayed channels keep in Redis, all under the cell's prefix and, but for the
//! cell's schedule, under the tenant:
//!
//! - `sends:{cell}`, the schedule: a sorted set of `{tenant}/{send id}` by due time; a
//!   claimed send is pushed a lease ahead, so a crashed dispatcher's sends come back, and
//!   is taken again just before it goes out only by the process still holding the claim;
//! - `t:{tenant}:send:{id}`, a pending send (a hash; its content sealed with the shopper's
//!   data key), and `t:{tenant}:pending:{shopper}`, the ids pending for a shopper, which a
//!   purchase cancels in one script;
//! - `t:{tenant}:send-done:{id}`, a marker that the send is settled (sent, skipped,
//!   cancelled, failed), so a replayed decision never schedules it again;
//! - `t:{tenant}:reach:{shopper}`, the shopper's address (sealed) and consent per channel;
//! - `t:{tenant}:sent:{shopper}`, their sends of the last 30 days, for the caps;
//! - `t:{tenant}:send-log`, the store's send log (a stream of the latest 10,000 entries),
//!   naming interventions and causing events, never shoppers.

use std::collections::HashMap;

use nudge_campaigns::model::FrequencyCap;
use nudge_tenants::TenantId;
use redis::{AsyncCommands, Script, aio::ConnectionManager};
use serde::{Deserialize, Serialize};

use crate::gate::{ConsentRecord, SentRecord};

/// How long a pending send and its settled marker are kept: the longest delay and a day.
pub const SEND_TTL_SECONDS: i64 = 8 * 24 * 3600;
/// How far back the caps look (the longest cap window is 720 hours).
pub const SENT_WINDOW_MS: i64 = 30 * 24 * 3_600_000;
/// Entries the send log keeps per store (about).
pub const LOG_LENGTH: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ChannelsError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("a stored send does not read: {0}")]
    Corrupt(String),
}

impl ChannelsError {
    /// Whether Redis is away (worth retrying), rather than the data being wrong.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Redis(r) => {
                r.is_io_error() || r.is_timeout() || r.is_connection_dropped() || r.is_connection_refusal()
            }
            Self::Corrupt(_) => false,
        }
    }
}

/// A send waiting for its time.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingSend {
    /// Derived from the intervention and the channel, so a replayed decision names it again.
    pub id: String,
    pub tenant: TenantId,
    pub shopper: String,
    /// The shopper's subject digest: the name their data key goes by.
    pub subject: String,
    pub channel: String,
    pub campaign_id: String,
    pub version: i32,
    pub variant: String,
    pub transactional: bool,
    pub campaign_cap: Option<FrequencyCap>,
    pub intervention_id: String,
    pub cause_event_id: String,
    pub decided_at_ms: i64,
    pub due_ms: i64,
    pub attempts: u32,
    /// The rendered content ([`SendContent`] as JSON), sealed with the shopper's data key.
    pub sealed: Vec<u8>,
}

/// What a send says, rendered when it was decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "channel", rename_all = "snake_case")]
pub enum SendContent {
    Email {
        subject: String,
        html: String,
        text: String,
    },
    /// The JSON body to POST to `url`.
    Webhook {
        url: String,
        body: String,
    },
}

/// A pending send a purchase cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancelled {
    pub id: String,
    pub channel: String,
    pub campaign_id: String,
    pub intervention_id: String,
    pub cause_event_id: String,
}

/// One entry of a store's send log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogEntry {
    /// When it was logged (Unix milliseconds).
    pub at_ms: i64,
    /// `scheduled`, `sent`, `skipped`, `deferred`, `cancelled`, `failed`, `retrying`, and
    /// `offered` (a discount judged worth its cost, the inputs in `detail`).
    pub outcome: String,
    /// Why, for every outcome but `scheduled` and `sent`: `no_consent`, `consent_refused`,
    /// `quiet_hours`, `frequency_cap`, `campaign_frequency_cap`, `purchased`, `no_address`,
    /// `erased`, `global_holdout`, `control_group`, `outranked`, `discount_not_worth_it`,
    /// `channel_unavailable`,
    /// `rejected`, `attempts_exhausted`, `tenant_not_served`, …
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub channel: String,
    pub campaign_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
    /// The intervention (derived from the causing event) the send belongs to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub intervention_id: String,
    /// The store's id of the event the decision was taken at.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cause_event_id: String,
    /// The consent the send was checked against, when the shopper had given an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<ConsentRecord>,
    /// More about it: a deferral's new due time, a cancellation's delay after the purchase,
    /// an error.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

// KEYS: the schedule, the send, the shopper's pending set, the settled marker. ARGV: the
// schedule member, the id, the lifetime, then field/value pairs starting with `due_ms`.
const SCHEDULE: &str = r#"
if redis.call('EXISTS', KEYS[4]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[5], ARGV[1])
return 1
"#;

const CLAIM: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], member)
end
return due
"#;

const SETTLE: &str = r#"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[2])
redis.call('SET', KEYS[4], '1', 'EX', ARGV[3])
return 1
"#;

// KEYS: the schedule, the send. ARGV: member, the lease it was claimed with, the new lease.
const RENEW: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
return 1
"#;

const RESCHEDULE: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('HSET', KEYS[2], 'attempts', ARGV[3], 'due_ms', ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
"#;

// KEYS: the schedule, the shopper's pending set. ARGV: the tenant's key prefix
// (`…t:{tenant}:`), the tenant id, the settled marker's lifetime.
const CANCEL: &str = r#"
local ids = redis.call('SMEMBERS', KEYS[2])
local out = {}
for _, id in ipairs(ids) do
  local job = ARGV[1] .. 'send:' .. id
  local fields = redis.call('HMGET', job, 'channel', 'campaign_id', 'intervention_id', 'cause_event_id')
  if fields[1] then
    table.insert(out, id)
    table.insert(out, fields[1])
    table.insert(out, fields[2] or '')
    table.insert(out, fields[3] or '')
    table.insert(out, fields[4] or '')
  end
  redis.call('ZREM', KEYS[1], ARGV[2] .. '/' .. id)
  redis.call('DEL', job)
  redis.call('SET', ARGV[1] .. 'send-done:' .. id, '1', 'EX', ARGV[3])
end
redis.call('DEL', KEYS[2])
return out
"#;

// KEYS: the store's webhook health. ARGV: campaign, version.
const WEBHOOK_FAILED: &str = r#"
local current = redis.call('HGET', KEYS[1], ARGV[1])
local failures = 1
if current then
  local version, count = string.match(current, '^([^|]*)|(%d+)$')
  if version == ARGV[2] then
    failures = tonumber(count) + 1
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. failures)
return failures
"#;

/// The Redis side of the delayed channels.
#[derive(Clone)]
pub struct ChannelStore {
    redis: ConnectionManager,
    prefix: String,
    schedule: String,
}

/// `…t:{tenant}:`: where a tenant's channel keys start.
fn tenant_prefix(prefix: &str, tenant: TenantId) -> String {
    format!("{prefix}t:{tenant}:")
}

/// A pending send.
pub fn send_key(prefix: &str, tenant: TenantId, id: &str) -> String {
    format!("{}send:{id}", tenant_prefix(prefix, tenant))
}

fn done_key(prefix: &str, tenant: TenantId, id: &str) -> String {
    format!("{}send-done:{id}", tenant_prefix(prefix, tenant))
}

/// The sends pending for a shopper.
pub fn pending_key(prefix: &str, tenant: TenantId, shopper: &str) -> String {
    format!("{}pending:{shopper}", tenant_prefix(prefix, tenant))
}

/// A shopper's address and consent.
pub fn reach_key(prefix: &str, tenant: TenantId, shopper: &str) -> String {
    format!("{}reach:{shopper}", tenant_prefix(prefix, tenant))
}

/// A shopper's recent sends.
pub fn sent_key(prefix: &str, tenant: TenantId, shopper: &str) -> String {
    format!("{}sent:{shopper}", tenant_prefix(prefix, tenant))
}

/// A store's send log.
fn log_key(prefix: &str, tenant: TenantId) -> String {
    format!("{}send-log", tenant_prefix(prefix, tenant))
}

fn member(tenant: TenantId, id: &str) -> String {
    format!("{tenant}/{id}")
}

impl ChannelStore {
    /// The store of the cell whose schedule is `sends:{cell}` under `prefix`.
    pub fn new(redis: ConnectionManager, prefix: impl Into<String>, cell: &str) -> Self {
        let prefix = prefix.into();
        let schedule = format!("{prefix}sends:{cell}");
        Self { redis, prefix, schedule }
    }

    /// Schedules `send`, unless it is pending or settled already (a replayed decision).
    /// True when it was new.
    pub async fn schedule_send(&self, send: &PendingSend) -> Result<bool, ChannelsError> {
        let (cap_max, cap_hours) = send.campaign_cap.map_or((0, 0), |c| (c.max, c.per_hours));
        let script = Script::new(SCHEDULE);
        let mut invocation = script.key(&self.schedule);
        invocation
            .key(send_key(&self.prefix, send.tenant, &send.id))
            .key(pending_key(&self.prefix, send.tenant, &send.shopper))
            .key(done_key(&self.prefix, send.tenant, &send.id))
            .arg(member(send.tenant, &send.id))
            .arg(&send.id)
            .arg(SEND_TTL_SECONDS);
        // The first pair is the due time (ARGV[4], ARGV[5]), which the script also scores by.
        invocation.arg("due_ms").arg(send.due_ms);
        for (field, value) in [
            ("shopper", send.shopper.clone()),
            ("subject", send.subject.clone()),
            ("channel", send.channel.clone()),
            ("campaign_id", send.campaign_id.clone()),
            ("version", send.version.to_string()),
            ("variant", send.variant.clone()),
            ("transactional", u8::from(send.transactional).to_string()),
            ("cap_max", cap_max.to_string()),
            ("cap_hours", cap_hours.to_string()),
            ("intervention_id", send.intervention_id.clone()),
            ("cause_event_id", send.cause_event_id.clone()),
            ("decided_at_ms", send.decided_at_ms.to_string()),
            ("attempts", send.attempts.to_string()),
        ] {
            invocation.arg(field).arg(value);
        }
        invocation.arg("sealed").arg(send.sealed.as_slice());
        let mut conn = self.redis.clone();
        let added: i64 = invocation.invoke_async(&mut conn).await?;
        Ok(added == 1)
    }

    /// Claims up to `limit` sends due by `now_ms`, leasing each until `lease_until_ms` (a
    /// claimed send not settled by then comes back).
    pub async fn claim(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<(TenantId, String)>, ChannelsError> {
        let mut conn = self.redis.clone();
        let members: Vec<String> = Script::new(CLAIM)
            .key(&self.schedule)
            .arg(now_ms)
            .arg(lease_until_ms)
            .arg(limit)
            .invoke_async(&mut conn)
            .await?;
        let mut claimed = Vec::with_capacity(members.len());
        for m in members {
            match m.split_once('/').and_then(|(t, id)| Some((t.parse::<TenantId>().ok()?, id.to_owned()))) {
                Some(pair) => claimed.push(pair),
                None => {
                    tracing::warn!("an unreadable member of the send schedule was dropped");
                    conn.zrem::<_, _, ()>(&self.schedule, &m).await?;
                }
            }
        }
        Ok(claimed)
    }

    /// A pending send; `None` once cancelled or settled.
    pub async fn pending(&self, tenant: TenantId, id: &str) -> Result<Option<PendingSend>, ChannelsError> {
        let mut conn = self.redis.clone();
        let mut fields: HashMap<String, Vec<u8>> = conn.hgetall(send_key(&self.prefix, tenant, id)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let mut text = |name: &str| -> Result<String, ChannelsError> {
            let bytes = fields.remove(name).ok_or_else(|| ChannelsError::Corrupt(format!("no {name}")))?;
            String::from_utf8(bytes).map_err(|_| ChannelsError::Corrupt(format!("{name} is not text")))
        };
        let number = |value: String, name: &str| -> Result<i64, ChannelsError> {
            value.parse().map_err(|_| ChannelsError::Corrupt(format!("{name} is not a number")))
        };
        let shopper = text("shopper")?;
        let subject = text("subject")?;
        let channel = text("channel")?;
        let campaign_id = text("campaign_id")?;
        let version = i32::try_from(number(text("version")?, "version")?).unwrap_or(0);
        let variant = text("variant")?;
        let transactional = text("transactional")? == "1";
        let cap_max = u32::try_from(number(text("cap_max")?, "cap_max")?).unwrap_or(0);
        let cap_hours = u32::try_from(number(text("cap_hours")?, "cap_hours")?).unwrap_or(0);
        let intervention_id = text("intervention_id")?;
        let cause_event_id = text("cause_event_id")?;
        let decided_at_ms = number(text("decided_at_ms")?, "decided_at_ms")?;
        let due_ms = number(text("due_ms")?, "due_ms")?;
        let attempts = u32::try_from(number(text("attempts")?, "attempts")?).unwrap_or(0);
        let sealed = fields.remove("sealed").ok_or_else(|| ChannelsError::Corrupt("no content".into()))?;
        Ok(Some(PendingSend {
            id: id.to_owned(),
            tenant,
            shopper,
            subject,
            channel,
            campaign_id,
            version,
            variant,
            transactional,
            campaign_cap: (cap_max > 0).then_some(FrequencyCap { max: cap_max, per_hours: cap_hours }),
            intervention_id,
            cause_event_id,
            decided_at_ms,
            due_ms,
            attempts,
            sealed,
        }))
    }

    /// Settles a send (sent, skipped or failed): off the schedule, deleted, marked done.
    pub async fn settle(&self, tenant: TenantId, id: &str, shopper: &str) -> Result<(), ChannelsError> {
        let mut conn = self.redis.clone();
        Script::new(SETTLE)
            .key(&self.schedule)
            .key(send_key(&self.prefix, tenant, id))
            .key(pending_key(&self.prefix, tenant, shopper))
            .key(done_key(&self.prefix, tenant, id))
            .arg(member(tenant, id))
            .arg(id)
            .arg(SEND_TTL_SECONDS)
            .invoke_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Takes a send id off the schedule (its send is gone: cancelled or settled).
    pub async fn forget(&self, tenant: TenantId, id: &str) -> Result<(), ChannelsError> {
        let mut conn = self.redis.clone();
        conn.zrem::<_, _, ()>(&self.schedule, member(tenant, id)).await?;
        Ok(())
    }

    /// Whether this process still holds the send it claimed with lease `claimed_until_ms`
    /// (no one cancelled it, no one claimed it after the lease ran out); if so its lease
    /// runs until `until_ms` from now. Called just before the send goes out, so two
    /// processes never both send it.
    pub async fn renew(
        &self,
        tenant: TenantId,
        id: &str,
        claimed_until_ms: i64,
        until_ms: i64,
    ) -> Result<bool, ChannelsError> {
        let mut conn = self.redis.clone();
        let held: i64 = Script::new(RENEW)
            .key(&self.schedule)
            .key(send_key(&self.prefix, tenant, id))
            .arg(member(tenant, id))
            .arg(claimed_until_ms)
            .arg(until_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(held == 1)
    }

    /// Due again at `due_ms` after `attempts` tries; false when it was cancelled meanwhile.
    pub async fn reschedule(
        &self,
        tenant: TenantId,
        id: &str,
        due_ms: i64,
        attempts: u32,
    ) -> Result<bool, ChannelsError> {
        let mut conn = self.redis.clone();
        let kept: i64 = Script::new(RESCHEDULE)
            .key(&self.schedule)
            .key(send_key(&self.prefix, tenant, id))
            .arg(member(tenant, id))
            .arg(due_ms)
            .arg(attempts)
            .invoke_async(&mut conn)
            .await?;
        Ok(kept == 1)
    }

    /// Cancels every send pending for `shopper` (they bought): off the schedule, deleted,
    /// marked done, in one script. What was cancelled.
    pub async fn cancel_shopper(&self, tenant: TenantId, shopper: &str) -> Result<Vec<Cancelled>, ChannelsError> {
        let mut conn = self.redis.clone();
        let flat: Vec<String> = Script::new(CANCEL)
            .key(&self.schedule)
            .key(pending_key(&self.prefix, tenant, shopper))
            .arg(tenant_prefix(&self.prefix, tenant))
            .arg(tenant.to_string())
            .arg(SEND_TTL_SECONDS)
            .invoke_async(&mut conn)
            .await?;
        Ok(flat
            .chunks_exact(5)
            .map(|c| Cancelled {
                id: c[0].clone(),
                channel: c[1].clone(),
                campaign_id: c[2].clone(),
                intervention_id: c[3].clone(),
                cause_event_id: c[4].clone(),
            })
            .collect())
    }

    /// Records the shopper's answer for `channel`, kept `ttl_seconds` (the store's retention).
    pub async fn record_consent(
        &self,
        tenant: TenantId,
        shopper: &str,
        channel: &str,
        consent: &ConsentRecord,
        ttl_seconds: i64,
    ) -> Result<(), ChannelsError> {
        let key = reach_key(&self.prefix, tenant, shopper);
        let json = serde_json::to_string(consent).map_err(|e| ChannelsError::Corrupt(e.to_string()))?;
        let mut conn = self.redis.clone();
        redis::pipe()
            .atomic()
            .hset(&key, format!("consent:{channel}"), json)
            .ignore()
            .expire(&key, ttl_seconds)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// The shopper's answer for `channel`, if they gave one.
    pub async fn consent(
        &self,
        tenant: TenantId,
        shopper: &str,
        channel: &str,
    ) -> Result<Option<ConsentRecord>, ChannelsError> {
        let mut conn = self.redis.clone();
        let json: Option<String> =
            conn.hget(reach_key(&self.prefix, tenant, shopper), format!("consent:{channel}")).await?;
        json.map(|j| serde_json::from_str(&j).map_err(|e| ChannelsError::Corrupt(e.to_string()))).transpose()
    }

    /// Keeps the shopper's address, `sealed` with their data key, `ttl_seconds`.
    pub async fn set_address(
        &self,
        tenant: TenantId,
        shopper: &str,
        sealed: &[u8],
        ttl_seconds: i64,
    ) -> Result<(), ChannelsError> {
        let key = reach_key(&self.prefix, tenant, shopper);
        let mut conn = self.redis.clone();
        redis::pipe()
            .atomic()
            .hset(&key, "email", sealed)
            .ignore()
            .expire(&key, ttl_seconds)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// The shopper's address, sealed.
    pub async fn address(&self, tenant: TenantId, shopper: &str) -> Result<Option<Vec<u8>>, ChannelsError> {
        let mut conn = self.redis.clone();
        Ok(conn.hget(reach_key(&self.prefix, tenant, shopper), "email").await?)
    }

    /// The shopper's sends of the last 30 days.
    pub async fn sent(&self, tenant: TenantId, shopper: &str, now_ms: i64) -> Result<Vec<SentRecord>, ChannelsError> {
        let mut conn = self.redis.clone();
        let entries: Vec<(String, i64)> = conn
            .zrangebyscore_withscores(sent_key(&self.prefix, tenant, shopper), now_ms - SENT_WINDOW_MS, "+inf")
            .await?;
        Ok(entries
            .into_iter()
            .filter_map(|(m, at_ms)| {
                let mut parts = m.splitn(3, '|');
                Some(SentRecord { channel: parts.next()?.to_owned(), campaign_id: parts.next()?.to_owned(), at_ms })
            })
            .collect())
    }

    /// Counts a send `id` to the shopper for the caps.
    pub async fn record_sent(
        &self,
        tenant: TenantId,
        shopper: &str,
        channel: &str,
        campaign_id: &str,
        id: &str,
        at_ms: i64,
    ) -> Result<(), ChannelsError> {
        let key = sent_key(&self.prefix, tenant, shopper);
        let mut conn = self.redis.clone();
        redis::pipe()
            .atomic()
            .zadd(&key, format!("{channel}|{campaign_id}|{id}"), at_ms)
            .ignore()
            .zrembyscore(&key, "-inf", at_ms - SENT_WINDOW_MS)
            .ignore()
            .pexpire(&key, SENT_WINDOW_MS)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Counts a failed webhook attempt of `campaign` at `version` (a new version starts from
    /// nothing); the failures in a row so far.
    pub async fn webhook_failed(&self, tenant: TenantId, campaign: &str, version: i32) -> Result<u32, ChannelsError> {
        let mut conn = self.redis.clone();
        let failures: u32 = Script::new(WEBHOOK_FAILED)
            .key(format!("{}webhook-health", tenant_prefix(&self.prefix, tenant)))
            .arg(campaign)
            .arg(version)
            .invoke_async(&mut conn)
            .await?;
        Ok(failures)
    }

    /// A webhook of `campaign` at `version` went through: its failures start over.
    pub async fn webhook_succeeded(&self, tenant: TenantId, campaign: &str, version: i32) -> Result<(), ChannelsError> {
        let mut conn = self.redis.clone();
        conn.hset::<_, _, _, ()>(
            format!("{}webhook-health", tenant_prefix(&self.prefix, tenant)),
            campaign,
            format!("{version}|0"),
        )
        .await?;
        Ok(())
    }

    /// The failed webhook attempts in a row of `campaign` at `version`.
    pub async fn webhook_failures(&self, tenant: TenantId, campaign: &str, version: i32) -> Result<u32, ChannelsError> {
        let mut conn = self.redis.clone();
        let value: Option<String> =
            conn.hget(format!("{}webhook-health", tenant_prefix(&self.prefix, tenant)), campaign).await?;
        Ok(value
            .and_then(|v| {
                let (at, failures) = v.split_once('|')?;
                (at.parse::<i32>().ok()? == version).then(|| failures.parse().ok()).flatten()
            })
            .unwrap_or(0))
    }

    /// Appends to the store's send log.
    pub async fn log(&self, tenant: TenantId, entry: &LogEntry) -> Result<(), ChannelsError> {
        let json = serde_json::to_string(entry).map_err(|e| ChannelsError::Corrupt(e.to_string()))?;
        let mut conn = self.redis.clone();
        redis::cmd("XADD")
            .arg(log_key(&self.prefix, tenant))
            .arg("MAXLEN")
            .arg("~")
            .arg(LOG_LENGTH)
            .arg("*")
            .arg("entry")
            .arg(json)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// The store's latest `limit` log entries, newest first.
    pub async fn read_log(&self, tenant: TenantId, limit: usize) -> Result<Vec<LogEntry>, ChannelsError> {
        let mut conn = self.redis.clone();
        // Each entry: its id, then its field/value list (`entry`, the JSON).
        let reply: Vec<(String, Vec<String>)> = redis::cmd("XREVRANGE")
            .arg(log_key(&self.prefix, tenant))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        reply
            .iter()
            .filter_map(|(_, fields)| fields.chunks_exact(2).find(|kv| kv[0] == "entry").map(|kv| &kv[1]))
            .map(|json| serde_json::from_str(json).map_err(|e| ChannelsError::Corrupt(e.to_string())))
            .collect()
    }
}
