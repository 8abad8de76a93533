//! Retention: nothing the cell derived from a shopper's events outlives their store's
//! retention (`limits.retention_days`, from its plan). Redis keeps a shopper's data for at
//! most two days (every key expires; their data key lasts the store's retention after its
//! last use, at most 35 days); the compacted `features.v1` keeps their latest snapshot
//! until a tombstone. The pipeline notes when it last applied an event of each shopper (a
//! per-tenant sorted set of subject digests); this job writes a tombstone for every shopper
//! silent for longer than their store's retention, deletes their data key — so whatever the
//! topics still hold of them (sealed, see `crate::sealing`) can no longer be read — and
//! forgets them.
//!
//! [`Retention::sweep`] takes the time as an argument, so tests run it under a controlled
//! clock; [`run`] calls it with the wall clock on an interval.

use std::{sync::Arc, time::Duration};

use nudge_contracts::{headers::FEATURES_V1, proto::features::v1::SubjectKey};
use nudge_data_plane_directory::Directory;
use nudge_data_plane_features::store::last_seen_key;
use nudge_data_plane_keyring::Keyring;
use nudge_platform_kafka::{SharedProducer, headers::record_headers};
use nudge_tenants::TenantId;
use prost::Message;
use rdkafka::producer::FutureRecord;
use redis::{Script, aio::ConnectionManager};
use tokio_util::sync::CancellationToken;

/// How long the broker has to acknowledge a batch of tombstones.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

const DAY_MS: i64 = 24 * 3600 * 1000;

/// Removes each member (ARGV 2…) from the set (KEYS 1), and deletes its data key (KEYS 2…,
/// in the same order), only if its score is still at or below the cutoff (ARGV 1): a
/// shopper seen again meanwhile stays.
const FORGET_IF_SILENT: &str = r"
local removed = 0
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) <= tonumber(ARGV[1]) then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
    local key = redis.call('GET', KEYS[i])
    if key and string.sub(key, 1, 7) ~= 'erased:' then
      redis.call('UNLINK', KEYS[i])
    end
  end
end
return removed
";

/// Expires shoppers past their store's retention.
pub struct Retention {
    pub redis: ConnectionManager,
    /// Whose data keys expire with the shoppers.
    pub keyring: Arc<Keyring>,
    pub prefix: String,
    pub producer: SharedProducer,
    pub features_topic: String,
    /// Shoppers handled per round trip.
    pub batch: usize,
}

/// What one sweep expired, per tenant.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub expired: Vec<(TenantId, u64)>,
}

impl Retention {
    /// Expires, for every tenant `directory` serves, each shopper whose last event was applied
    /// more than the tenant's retention before `now_ms`: a `features.v1` tombstone first, then
    /// the shopper leaves the last-seen set (unless seen again meanwhile).
    pub async fn sweep(&self, directory: &Directory, now_ms: i64) -> anyhow::Result<Swept> {
        let forget = Script::new(FORGET_IF_SILENT);
        let mut swept = Swept::default();
        for (tenant, days) in directory.retention() {
            let key = last_seen_key(&self.prefix, tenant);
            let cutoff = now_ms.saturating_sub(i64::from(days).saturating_mul(DAY_MS));
            let mut expired = 0u64;
            loop {
                let mut redis = self.redis.clone();
                let silent: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                    .arg(&key)
                    .arg("-inf")
                    .arg(cutoff)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(self.batch)
                    .query_async(&mut redis)
                    .await?;
                if silent.is_empty() {
                    break;
                }
                let keys: Vec<Vec<u8>> = silent
                    .iter()
                    .map(|digest| {
                        SubjectKey { tenant_id: tenant.to_string(), subject_digest: digest.clone() }.encode_to_vec()
                    })
                    .collect();
                let tombstones = keys.iter().map(|k| {
                    FutureRecord::<[u8], [u8]>::to(&self.features_topic)
                        .key(k.as_slice())
                        .headers(record_headers(FEATURES_V1, None))
                });
                self.producer.send_all(tombstones, ACK_TIMEOUT).await?;
                let mut invocation = forget.key(&key);
                invocation.arg(cutoff);
                for digest in &silent {
                    invocation.key(self.keyring.data_key(tenant, digest)).arg(digest);
                }
                let removed: u64 = invocation.invoke_async(&mut redis).await?;
                for digest in &silent {
                    self.keyring.forget(tenant, digest);
                }
                expired += removed;
                if silent.len() < self.batch {
                    break;
                }
            }
            if expired > 0 {
                swept.expired.push((tenant, expired));
            }
        }
        Ok(swept)
    }
}

/// Sweeps every `interval` until `shutdown`; a failed sweep is logged and tried again at the
/// next interval.
pub async fn run(
    retention: Retention,
    directory: Arc<Directory>,
    interval: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
        if !directory.is_caught_up() {
            continue;
        }
        match retention.sweep(&directory, chrono::Utc::now().timestamp_millis()).await {
            Ok(swept) => {
                for (tenant, expired) in swept.expired {
                    tracing::info!(tenant_id = %tenant, shoppers = expired, "shoppers past retention expired");
                }
            }
            Err(e) => tracing::warn!(error = %e, "the retention sweep failed; trying again at the next interval"),
        }
    }
}
