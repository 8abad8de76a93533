//! Crypto-shredding: every record a cell writes about a shopper to a Kafka topic is sealed
//! with that shopper's own data key, so erasing the key makes every copy of those records
//! unreadable for good — in the topics' retained segments, in the DLQ, in a broker's
//! backups — where deleting the records themselves is not possible.
//!
//! # Keys
//!
//! - A **data key** per (tenant, subject digest): 32 random bytes, AES-256-GCM, made by the
//!   first process that seals a record for the shopper. It is stored only wrapped, in the
//!   cell's Redis under [`Keyring::data_key`], and lives past its last use for the tenant's retention
//!   (at most [`KeyringConfig::key_ttl_hours`], longer than any sealed topic keeps records).
//!   Erasure and the retention sweep delete it sooner.
//! - A **key encryption key** per tenant: the OpenBao Transit key
//!   `{transit_key_prefix}{tenant id}`, which never leaves the vault. The vault rotates it
//!   on its own schedule ([`KeyringConfig::rotate_every_hours`]); [`Keyring::rewrap`]
//!   re-encrypts stored data keys with the latest version and then retires the older
//!   versions, so a wrapped data key copied anywhere before the rotation is useless.
//!
//! Processes keep unwrapped data keys in memory for [`KeyringConfig::cache_ttl_ms`], so the
//! vault sees one call per shopper per process per few minutes, not one per record.
//!
//! # Records
//!
//! A sealed record's value is a `nudge.sealed.v1.Sealed`: tenant, subject digest, the name
//! of the message inside, a random nonce and the ciphertext. The associated data binds the
//! ciphertext to the tenant, the subject and the schema, so a sealed record passed off as
//! another tenant's, another shopper's or another kind of record does not open.
//!
//! # Erasure
//!
//! [`Keyring::erase`] replaces a data key with a marker that lasts as long as a key would:
//! a process that has not yet heard of the erasure cannot make the subject a new key (for
//! ten minutes, whatever it believes; after that only while the subject is suppressed).

mod cache;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream};
use nudge_contracts::proto::sealed::v1::Sealed;
use nudge_data_plane_directory::Directory;
use nudge_data_plane_features::store::last_seen_key;
use nudge_platform_telemetry::Metrics;
use nudge_platform_vault::{Vault, VaultError, ciphertext_version};
use nudge_tenants::TenantId;
use prometheus_client::metrics::counter::Counter;
use redis::aio::ConnectionManager;
use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom, SystemRandom},
};
use serde::Deserialize;

use crate::cache::KeyCache;

/// How data keys are kept and rotated.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyringConfig {
    /// A tenant's Transit key is this followed by the tenant id.
    pub transit_key_prefix: String,
    /// How long a process keeps an unwrapped data key in memory.
    pub cache_ttl_ms: u64,
    /// The most data keys a process keeps in memory.
    pub cache_capacity: usize,
    /// A data key expires this long after its last use, or after its tenant's retention when
    /// that is shorter; longer than the event topics keep records (an older `features.v1`
    /// snapshot or DLQ record becomes unreadable).
    pub key_ttl_hours: u64,
    /// The vault rotates a tenant's Transit key this often (0: only when asked to).
    pub rotate_every_hours: u64,
    /// How often the pipeline process rewraps stored data keys with the latest version of
    /// their tenant's Transit key.
    pub rewrap_interval_ms: u64,
    /// Older Transit key versions are retired (stop decrypting) once no stored data key
    /// uses them and the latest version is at least this old, so a process that wrapped a
    /// key just before the rotation has long stored it.
    pub retire_after_ms: u64,
}

impl Default for KeyringConfig {
    fn default() -> Self {
        Self {
            transit_key_prefix: "nudge-tenant-".into(),
            cache_ttl_ms: 300_000,
            cache_capacity: 200_000,
            key_ttl_hours: 35 * 24,
            rotate_every_hours: 30 * 24,
            rewrap_interval_ms: 3_600_000,
            retire_after_ms: 3_600_000,
        }
    }
}

impl KeyringConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.transit_key_prefix.is_empty()
            || !self.transit_key_prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("keys.transit_key_prefix must be letters, digits, '-' or '_'".into());
        }
        if self.cache_ttl_ms == 0 || u64::try_from(ERASED_GUARD_MS).is_ok_and(|guard| self.cache_ttl_ms >= guard) {
            // A key held longer than an erasure marker guards could outlive its replacement.
            return Err("keys.cache_ttl_ms must be positive and under 10 minutes".into());
        }
        if self.cache_capacity == 0 || self.key_ttl_hours == 0 || self.rewrap_interval_ms == 0 {
            return Err("keys: cache_capacity, key_ttl_hours and rewrap_interval_ms must be positive".into());
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The subject's data key is gone (erased, or expired with the rest of the shopper's
    /// data): what it sealed cannot be read, by design.
    #[error("the subject's data key is gone")]
    Shredded,
    /// The record or its wrapped key does not open: damaged, not sealed for this tenant,
    /// subject and schema, or wrapped with a retired key version.
    #[error("unreadable: {0}")]
    Unreadable(String),
    /// The vault or Redis cannot be reached: retry later.
    #[error("data keys are unavailable: {0}")]
    Unavailable(String),
}

fn vault_error(e: VaultError) -> KeyError {
    match e {
        VaultError::Unavailable(why) => KeyError::Unavailable(why),
        VaultError::Refused(why) | VaultError::NotFound(why) | VaultError::Config(why) => KeyError::Unreadable(why),
    }
}

fn redis_error(e: redis::RedisError) -> KeyError {
    KeyError::Unavailable(format!("redis: {e}"))
}

/// The associated data of a sealed record.
fn associated_data(tenant: &str, subject_digest: &str, schema: &str) -> Vec<u8> {
    const PREFIX: &[u8] = b"nudge.sealed.v1:";
    let mut out = Vec::with_capacity(PREFIX.len() + tenant.len() + subject_digest.len() + schema.len() + 2);
    for part in [PREFIX, tenant.as_bytes(), b":", subject_digest.as_bytes(), b":", schema.as_bytes()] {
        out.extend_from_slice(part);
    }
    out
}

/// A subject digest is 64 lowercase hex characters.
fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Keyring counters.
#[derive(Clone, Default)]
struct KeyringMetrics {
    created: Counter,
    unwrapped: Counter,
    shredded: Counter,
    unreadable: Counter,
    rewrapped: Counter,
}

impl KeyringMetrics {
    fn register(metrics: &Metrics) -> Self {
        let m = Self::default();
        let mut r = metrics.registry();
        r.register("keyring_data_keys_created", "Shopper data keys made (and wrapped by the vault)", m.created.clone());
        r.register(
            "keyring_data_keys_unwrapped",
            "Data keys unwrapped by the vault (cache misses)",
            m.unwrapped.clone(),
        );
        r.register(
            "keyring_records_shredded",
            "Sealed records whose data key was gone (erased or expired): unreadable by design",
            m.shredded.clone(),
        );
        r.register(
            "keyring_decrypt_errors",
            "Sealed records or wrapped data keys that failed to decrypt although their key exists",
            m.unreadable.clone(),
        );
        r.register(
            "keyring_data_keys_rewrapped",
            "Data keys rewrapped with a newer Transit key version",
            m.rewrapped.clone(),
        );
        m
    }
}

/// What one [`Keyring::rewrap`] of a tenant did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rewrapped {
    /// Stored data keys of the tenant.
    pub keys: u64,
    /// Of them, rewrapped with the latest Transit key version.
    pub rewrapped: u64,
    /// The Transit key version below which nothing decrypts any more, when this round
    /// retired older versions.
    pub retired_below: Option<u64>,
}

/// Sealing and opening records with per-subject data keys. Cheap to share.
pub struct Keyring {
    vault: Vault,
    /// The tenants' retention, which bounds how long an unused data key is kept.
    directory: Arc<Directory>,
    redis: ConnectionManager,
    prefix: String,
    config: KeyringConfig,
    cache: Mutex<KeyCache>,
    /// Tenants whose Transit key this process has made sure of.
    ensured: Mutex<HashSet<TenantId>>,
    rng: SystemRandom,
    metrics: KeyringMetrics,
}

/// What an erased subject's data key is replaced with (followed by `:<unix ms>`).
const ERASED: &str = "erased";

/// For this long after an erasure no new key is made for the subject, whatever a process's
/// directory says (it may not have heard of the suppression yet); after it, a subject no
/// longer suppressed (an opt-out lifted) gets a new key.
const ERASED_GUARD_MS: i64 = 10 * 60 * 1000;

/// When the erasure marker `value` was written, if it is one.
fn erased_at(value: &str) -> Option<i64> {
    value.strip_prefix(ERASED)?.strip_prefix(':').and_then(|ms| ms.parse().ok()).or(Some(0))
}

/// How long sealing a batch may take to fetch or make its keys.
const SEAL_DEADLINE: Duration = Duration::from_secs(5);

fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The stored key (KEYS 1) for sealing: its expiry refreshed (ARGV 2 seconds) and the
/// subject (ARGV 4) noted as seen at ARGV 3 in the tenant's last-seen set (KEYS 2), unless
/// it is the erasure marker (ARGV 1). Atomic with the retention sweep's own script.
const TOUCH: &str = r"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, string.len(ARGV[1])) ~= ARGV[1] then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[2], 'GT', ARGV[3], ARGV[4])
end
return v
";

/// Stores a new wrapped key (ARGV 1, for ARGV 2 seconds) unless one is there, which is
/// returned instead, or an erasure marker other than the expected one (ARGV 5; the marker
/// this process decided to replace, or empty) or younger than ARGV 6 ms by Redis's clock,
/// which is returned too; notes the subject as seen.
const STORE_NEW: &str = r"
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[5] then
  return v
end
if v then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local at = tonumber(string.match(v, ':(%d+)$')) or 0
  if now - at < tonumber(ARGV[6]) then
    return v
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], 'GT', ARGV[3], ARGV[4])
return false
";

/// Replaces a data key (KEYS 1) with a fresh erasure marker (ARGV 1, `:` and the time by
/// Redis's clock) for ARGV 2 seconds, a marker already there included (so a process about
/// to replace an old marker finds another); 1 when a key was there.
const ERASE: &str = r"
local v = redis.call('GET', KEYS[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. now, 'EX', ARGV[2])
if v and string.sub(v, 1, string.len(ARGV[1])) ~= ARGV[1] then
  return 1
end
return 0
";

/// Sets a stored wrapped key to its rewrapped form only if nobody changed it meanwhile
/// (an erasure deleted it, or another process rewrapped it).
const SWAP_IF_UNCHANGED: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0
";

impl Keyring {
    /// `prefix` is the cell's Redis prefix. No I/O here.
    pub fn new(
        vault: Vault,
        directory: Arc<Directory>,
        redis: ConnectionManager,
        prefix: impl Into<String>,
        config: KeyringConfig,
        metrics: &Metrics,
    ) -> Self {
        Self {
            vault,
            directory,
            redis,
            prefix: prefix.into(),
            config,
            cache: Mutex::new(KeyCache::default()),
            ensured: Mutex::new(HashSet::new()),
            rng: SystemRandom::new(),
            metrics: KeyringMetrics::register(metrics),
        }
    }

    /// The Transit key wrapping `tenant`'s data keys.
    pub fn transit_key(&self, tenant: TenantId) -> String {
        format!("{}{tenant}", self.config.transit_key_prefix)
    }

    /// The Redis key of a subject's wrapped data key.
    pub fn data_key(&self, tenant: TenantId, subject_digest: &str) -> String {
        format!("{}t:{tenant}:dek:{subject_digest}", self.prefix)
    }

    /// Seals `plaintext` (an encoded `schema` message) for the subject, making its data key
    /// if it has none.
    pub async fn seal(
        &self,
        tenant: TenantId,
        subject_digest: &str,
        schema: &str,
        plaintext: &[u8],
    ) -> Result<Sealed, KeyError> {
        let key = self.key_of(tenant, subject_digest, true).await?;
        let nonce = self.nonces(1)?;
        self.seal_with(&key, &tenant.to_string(), subject_digest, schema, plaintext, &nonce)
    }

    /// `n` random nonces in one draw from the system's generator (one system call for a
    /// batch, where a call per record showed in the ingest profile). Each comes from the
    /// kernel as it is needed, never from a buffer a copy of this process (a fork, a VM
    /// snapshot restored twice) could hand out again: a repeated nonce under one data key
    /// would break AES-GCM.
    fn nonces(&self, n: usize) -> Result<Vec<u8>, KeyError> {
        let mut nonces = vec![0u8; n * NONCE_LEN];
        self.rng.fill(&mut nonces).map_err(|_| KeyError::Unavailable("no random numbers".into()))?;
        Ok(nonces)
    }

    /// Seals many records of one tenant (`(subject digest, plaintext)`), fetching or making
    /// the data keys of distinct subjects a few at a time. `None` for a record whose subject
    /// has no key to have (suppressed or erased meanwhile): it must not be stored.
    pub async fn seal_many(
        &self,
        tenant: TenantId,
        schema: &str,
        records: &[(String, Vec<u8>)],
    ) -> Result<Vec<Option<Sealed>>, KeyError> {
        // Known shoppers' keys from memory under one lock; the others fetched or made a few
        // at a time, within a deadline (the caller holds claims meanwhile).
        let ttl = Duration::from_millis(self.config.cache_ttl_ms);
        // Each record's key when cached, in the records' order.
        let mut keys: Vec<Option<Arc<LessSafeKey>>> = Vec::with_capacity(records.len());
        let mut missing: HashSet<&str> = HashSet::new();
        let entry = self.directory.by_tenant(tenant);
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let cached = cache.of_tenant(tenant, ttl, now);
            for (subject, _) in records {
                // A suppressed subject goes the slow way, which refuses it a key.
                let key = if entry.as_ref().is_some_and(|t| t.is_suppressed_subject(subject)) {
                    None
                } else {
                    cached.as_ref().and_then(|c| c.get(subject, now))
                };
                if key.is_none() {
                    missing.insert(subject);
                }
                keys.push(key);
            }
        }
        let fetch = stream::iter(missing.into_iter().map(str::to_owned))
            .map(|s| async move {
                let key = self.key_of(tenant, &s, true).await;
                (s, key)
            })
            .buffer_unordered(8)
            .collect::<Vec<(String, Result<Arc<LessSafeKey>, KeyError>)>>();
        let fetched = tokio::time::timeout(SEAL_DEADLINE, fetch)
            .await
            .map_err(|_| KeyError::Unavailable("making or fetching data keys took too long".into()))?;
        let mut made = HashMap::with_capacity(fetched.len());
        for (subject, key) in fetched {
            match key {
                Ok(key) => made.insert(subject, Some(key)),
                Err(KeyError::Shredded) => made.insert(subject, None),
                Err(e) => return Err(e),
            };
        }
        let tenant_id = tenant.to_string();
        let nonces = self.nonces(records.len())?;
        records
            .iter()
            .zip(keys)
            .zip(nonces.chunks_exact(NONCE_LEN))
            .map(|(((subject, plaintext), cached), nonce)| {
                let key = match &cached {
                    Some(key) => key,
                    None => match made.get(subject.as_str()) {
                        Some(Some(key)) => key,
                        Some(None) => return Ok(None),
                        None => return Err(KeyError::Unavailable("no key".into())),
                    },
                };
                self.seal_with(key, &tenant_id, subject, schema, plaintext, nonce).map(Some)
            })
            .collect()
    }

    fn seal_with(
        &self,
        key: &LessSafeKey,
        tenant_id: &str,
        subject_digest: &str,
        schema: &str,
        plaintext: &[u8],
        nonce: &[u8],
    ) -> Result<Sealed, KeyError> {
        let nonce: [u8; NONCE_LEN] =
            nonce.try_into().map_err(|_| KeyError::Unreadable("a nonce is 12 bytes".into()))?;
        let mut ciphertext = Vec::with_capacity(plaintext.len() + AES_256_GCM.tag_len());
        ciphertext.extend_from_slice(plaintext);
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(associated_data(tenant_id, subject_digest, schema)),
            &mut ciphertext,
        )
        .map_err(|_| KeyError::Unreadable("sealing failed".into()))?;
        Ok(Sealed {
            tenant_id: tenant_id.to_owned(),
            subject_digest: subject_digest.to_owned(),
            schema: schema.to_owned(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Opens a sealed record holding a `schema` message: its plaintext bytes.
    pub async fn open(&self, sealed: &Sealed, schema: &str) -> Result<Vec<u8>, KeyError> {
        let unreadable = |why: &str| {
            self.metrics.unreadable.inc();
            KeyError::Unreadable(why.to_owned())
        };
        if sealed.schema != schema {
            return Err(unreadable(&format!("sealed {} where {schema} was expected", sealed.schema)));
        }
        let tenant: TenantId = sealed.tenant_id.parse().map_err(|_| unreadable("the sealed record names no tenant"))?;
        if !is_digest(&sealed.subject_digest) {
            return Err(unreadable("the sealed record names no subject"));
        }
        let nonce: [u8; NONCE_LEN] =
            sealed.nonce.as_slice().try_into().map_err(|_| unreadable("the sealed record's nonce is malformed"))?;
        let key = match self.key_of(tenant, &sealed.subject_digest, false).await {
            Ok(key) => key,
            Err(KeyError::Shredded) => {
                self.metrics.shredded.inc();
                return Err(KeyError::Shredded);
            }
            Err(e) => return Err(e),
        };
        let mut buffer = sealed.ciphertext.clone();
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated_data(&sealed.tenant_id, &sealed.subject_digest, schema)),
                &mut buffer,
            )
            .map_err(|_| unreadable("the sealed record does not authenticate"))?;
        let len = plain.len();
        buffer.truncate(len);
        Ok(buffer)
    }

    /// Opens a sealed record and decodes the `schema` message inside.
    pub async fn open_message<M: prost::Message + Default>(
        &self,
        sealed: &Sealed,
        schema: &str,
    ) -> Result<M, KeyError> {
        let plain = self.open(sealed, schema).await?;
        M::decode(plain.as_slice()).map_err(|e| {
            self.metrics.unreadable.inc();
            KeyError::Unreadable(format!("the sealed {schema} does not decode: {e}"))
        })
    }

    /// Drops a subject's data key from this process's memory (its stored copy is deleted
    /// by the caller, with the rest of the subject's data).
    pub fn forget(&self, tenant: TenantId, subject_digest: &str) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).remove(tenant, subject_digest);
    }

    /// How long a subject's stored data key outlives its last use: the key lifetime
    /// (`key_ttl_hours`), or the tenant's retention when shorter. What the cell keeps to find
    /// a subject's data again (their e-mail links) lives as long.
    pub fn key_lifetime_seconds(&self, tenant: TenantId) -> u64 {
        let lifetime = self.config.key_ttl_hours.saturating_mul(3600);
        match self.directory.by_tenant(tenant).map(|t| t.limits.retention_days).filter(|d| *d > 0) {
            Some(days) => lifetime.min(u64::from(days).saturating_mul(24 * 3600)),
            None => lifetime,
        }
    }

    /// Drops every data key of `tenant` this process holds unwrapped (its offboarding).
    pub fn forget_tenant(&self, tenant: TenantId) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).remove_tenant(tenant);
    }

    /// The subject's data key: from memory, else unwrapped from Redis, else — when `create`
    /// (sealing) — newly made, wrapped and stored. Sealing refreshes the stored key's expiry
    /// and notes the shopper as seen (so the retention sweep does not take the key of a
    /// shopper who is back). A suppressed subject, or one whose key was erased, has none.
    async fn key_of(&self, tenant: TenantId, subject: &str, create: bool) -> Result<Arc<LessSafeKey>, KeyError> {
        if self.directory.by_tenant(tenant).is_some_and(|t| t.is_suppressed_subject(subject)) {
            self.forget(tenant, subject);
            return Err(KeyError::Shredded);
        }
        let ttl = Duration::from_millis(self.config.cache_ttl_ms);
        if let Some(hit) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(tenant, subject, ttl) {
            return Ok(hit);
        }
        let stored_key = self.data_key(tenant, subject);
        let seen_key = last_seen_key(&self.prefix, tenant);
        let expiry = self.key_lifetime_seconds(tenant);
        let now_ms = now_unix_ms();
        let mut redis = self.redis.clone();
        let stored: Option<String> = if create {
            redis::Script::new(TOUCH)
                .key(&stored_key)
                .key(&seen_key)
                .arg(ERASED)
                .arg(expiry)
                .arg(now_ms)
                .arg(subject)
                .invoke_async(&mut redis)
                .await
                .map_err(redis_error)?
        } else {
            redis::cmd("GET").arg(&stored_key).query_async(&mut redis).await.map_err(redis_error)?
        };
        // An erasure marker: no key, unless it is old and the subject is not suppressed (the
        // caller checked) and this is sealing: then a new key replaces it.
        let (stored, replacing) = match stored {
            Some(marker) if let Some(at) = erased_at(&marker) => {
                if !create || now_ms.saturating_sub(at) < ERASED_GUARD_MS {
                    return Err(KeyError::Shredded);
                }
                (None, marker)
            }
            other => (other, String::new()),
        };
        let raw = match stored {
            Some(wrapped) => self.unwrap(tenant, &wrapped).await?,
            None if !create => return Err(KeyError::Shredded),
            None => {
                self.ensure_transit_key(tenant).await?;
                let mut raw = vec![0u8; 32];
                self.rng.fill(&mut raw).map_err(|_| KeyError::Unavailable("no random numbers".into()))?;
                let wrapped = self.vault.wrap(&self.transit_key(tenant), &raw).await.map_err(vault_error)?;
                // Another process may have made one meanwhile (then theirs is the key), or
                // the subject may have been erased meanwhile (then there is none).
                let existing: Option<String> = redis::Script::new(STORE_NEW)
                    .key(&stored_key)
                    .key(&seen_key)
                    .arg(&wrapped)
                    .arg(expiry)
                    .arg(now_ms)
                    .arg(subject)
                    .arg(&replacing)
                    .arg(ERASED_GUARD_MS)
                    .invoke_async(&mut redis)
                    .await
                    .map_err(redis_error)?;
                match existing {
                    None => {
                        self.metrics.created.inc();
                        raw
                    }
                    Some(marker) if erased_at(&marker).is_some() => return Err(KeyError::Shredded),
                    Some(theirs) => self.unwrap(tenant, &theirs).await?,
                }
            }
        };
        let key = UnboundKey::new(&AES_256_GCM, &raw)
            .map(|k| Arc::new(LessSafeKey::new(k)))
            .map_err(|_| KeyError::Unreadable("a stored data key has the wrong length".into()))?;
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(
            tenant,
            subject,
            key.clone(),
            ttl,
            self.config.cache_capacity,
        );
        Ok(key)
    }

    /// Erases subjects' data keys for good: each is replaced by a marker that lasts as long
    /// as a key would, so a process that has not yet heard of the erasure cannot make a new
    /// key for the subject. Returns, per subject, whether a key was there.
    pub async fn erase(&self, tenant: TenantId, subjects: &[String]) -> Result<Vec<bool>, KeyError> {
        let erase = redis::Script::new(ERASE);
        let mut redis = self.redis.clone();
        let mut found = Vec::with_capacity(subjects.len());
        for subject in subjects {
            let was: i64 = erase
                .key(self.data_key(tenant, subject))
                .arg(ERASED)
                .arg(self.config.key_ttl_hours.saturating_mul(3600))
                .invoke_async(&mut redis)
                .await
                .map_err(redis_error)?;
            found.push(was == 1);
        }
        for subject in subjects {
            self.forget(tenant, subject);
        }
        Ok(found)
    }

    async fn unwrap(&self, tenant: TenantId, wrapped: &str) -> Result<Vec<u8>, KeyError> {
        match self.vault.unwrap(&self.transit_key(tenant), wrapped).await {
            Ok(raw) => {
                self.metrics.unwrapped.inc();
                Ok(raw)
            }
            Err(VaultError::Unavailable(why)) => Err(KeyError::Unavailable(why)),
            Err(e) => {
                self.metrics.unreadable.inc();
                Err(KeyError::Unreadable(format!("a stored data key does not unwrap: {e}")))
            }
        }
    }

    async fn ensure_transit_key(&self, tenant: TenantId) -> Result<(), KeyError> {
        if self.ensured.lock().unwrap_or_else(|e| e.into_inner()).contains(&tenant) {
            return Ok(());
        }
        let rotate = (self.config.rotate_every_hours > 0).then(|| format!("{}h", self.config.rotate_every_hours));
        self.vault.ensure_encryption_key(&self.transit_key(tenant), rotate.as_deref()).await.map_err(vault_error)?;
        self.ensured.lock().unwrap_or_else(|e| e.into_inner()).insert(tenant);
        Ok(())
    }

    /// Rewraps every stored data key of `tenants` made with an older version of its tenant's
    /// Transit key, in one pass over the cell's Redis, then — for each tenant with none left
    /// behind whose latest version is older than [`KeyringConfig::retire_after_ms`] —
    /// retires the older versions. Processes sealing and opening records meanwhile are not
    /// disturbed: a rewrapped key holds the same data key, and a key changed meanwhile
    /// (erased, or made anew) is left as it is. A tenant the vault has no key for has no
    /// data keys; one whose key cannot be read is skipped this round, logged.
    pub async fn rewrap(
        &self,
        tenants: &[TenantId],
        now_unix_ms: i64,
    ) -> Result<HashMap<TenantId, Rewrapped>, KeyError> {
        struct Round {
            name: String,
            latest: u64,
            retire: bool,
            behind: u64,
            /// The vault failed for this tenant: no more calls for it this round.
            failed: bool,
            outcome: Rewrapped,
        }
        let mut rounds: HashMap<TenantId, Round> = HashMap::new();
        for &tenant in tenants {
            let name = self.transit_key(tenant);
            let versions = match self.vault.key_versions(&name).await {
                Ok(v) => v,
                Err(VaultError::NotFound(_)) => continue,
                // One store's trouble (a policy missing for its key, say) holds up no other.
                Err(e) => {
                    tracing::warn!(tenant_id = %tenant, error = %e, "the tenant's Transit key cannot be read");
                    continue;
                }
            };
            // The vault gives the creation time in whole seconds: counted from the end of
            // that second, so the wait is never shorter than configured.
            let created_ms = versions.latest_created_unix_s.saturating_add(1).saturating_mul(1000);
            let retire = versions.min_decryption < versions.latest
                && now_unix_ms.saturating_sub(created_ms)
                    >= i64::try_from(self.config.retire_after_ms).unwrap_or(i64::MAX);
            rounds.insert(
                tenant,
                Round {
                    name,
                    latest: versions.latest,
                    retire,
                    behind: 0,
                    failed: false,
                    outcome: Rewrapped::default(),
                },
            );
        }
        if rounds.is_empty() {
            return Ok(HashMap::new());
        }
        let mut redis = self.redis.clone();
        let tenant_part = format!("{}t:", self.prefix);
        let pattern = format!("{tenant_part}*:dek:*");
        let swap = redis::Script::new(SWAP_IF_UNCHANGED);
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut redis)
                .await
                .map_err(redis_error)?;
            if !keys.is_empty() {
                let values: Vec<Option<String>> =
                    redis::cmd("MGET").arg(&keys).query_async(&mut redis).await.map_err(redis_error)?;
                for (key, wrapped) in keys.iter().zip(values) {
                    let tenant = key
                        .strip_prefix(&tenant_part)
                        .and_then(|rest| rest.split_once(":dek:"))
                        .and_then(|(tenant, _)| tenant.parse::<TenantId>().ok());
                    let Some((tenant, round)) = tenant.and_then(|t| Some(t).zip(rounds.get_mut(&t))) else {
                        continue;
                    };
                    let Some(wrapped) = wrapped.filter(|w| erased_at(w).is_none()) else { continue };
                    round.outcome.keys += 1;
                    if ciphertext_version(&wrapped).is_some_and(|v| v >= round.latest) {
                        continue;
                    }
                    if round.failed {
                        round.behind += 1;
                        continue;
                    }
                    let fresh = match self.vault.rewrap(&round.name, &wrapped).await {
                        Ok(fresh) => fresh,
                        Err(e @ VaultError::Unavailable(_)) => {
                            tracing::warn!(tenant_id = %tenant, error = %e, "rewrapping stopped for this round");
                            round.failed = true;
                            round.behind += 1;
                            continue;
                        }
                        Err(e) => {
                            // Left as it is (and counted): older versions are not retired.
                            self.metrics.unreadable.inc();
                            tracing::warn!(tenant_id = %tenant, error = %e, "a stored data key does not rewrap");
                            round.behind += 1;
                            continue;
                        }
                    };
                    let swapped: i64 =
                        swap.key(key).arg(&wrapped).arg(&fresh).invoke_async(&mut redis).await.map_err(redis_error)?;
                    if swapped == 1 {
                        round.outcome.rewrapped += 1;
                        self.metrics.rewrapped.inc();
                    } else {
                        // Changed meanwhile: the next round looks at it again before
                        // anything is retired.
                        round.behind += 1;
                    }
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let mut done = HashMap::with_capacity(rounds.len());
        for (tenant, mut round) in rounds {
            if round.retire && round.behind == 0 {
                match self.vault.set_min_decryption_version(&round.name, round.latest).await {
                    Ok(()) => round.outcome.retired_below = Some(round.latest),
                    Err(e) => tracing::warn!(tenant_id = %tenant, error = %e, "retiring older key versions failed"),
                }
            }
            done.insert(tenant, round.outcome);
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn associated_data_names_tenant_subject_and_schema() {
        let a = associated_data("t", "d", "nudge.events.v1.Event");
        assert_eq!(a, b"nudge.sealed.v1:t:d:nudge.events.v1.Event".to_vec());
        assert_ne!(a, associated_data("t", "d", "nudge.predictions.v1.Prediction"));
    }

    #[test]
    fn erasure_markers_are_told_from_wrapped_keys() {
        assert_eq!(erased_at("erased:1700000000000"), Some(1_700_000_000_000));
        assert_eq!(erased_at("erased"), Some(0));
        assert_eq!(erased_at("vault:v1:abc"), None);
    }

    #[test]
    fn digests_are_64_lowercase_hex() {
        assert!(is_digest(&"a".repeat(64)));
        assert!(!is_digest(&"A".repeat(64)));
        assert!(!is_digest(&"a".repeat(63)));
        assert!(!is_digest("shp_someone"));
    }
}
