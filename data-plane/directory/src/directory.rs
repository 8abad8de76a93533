//! The in-memory tenant directory.

use std::{
    collections::HashMap,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use nudge_contracts::{
    ShopperId,
    proto::control::v1::{TenantConfig, TenantState as WireState, rollout::Mode as WireRolloutMode},
    subject_digest,
};
use nudge_tenants::{AllowedOrigin, CellId, PublishableKey, TenantId, TenantState};
use prost::Message;

/// What a cell knows about one of its tenants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantEntry {
    pub tenant_id: TenantId,
    pub state: TenantState,
    pub publishable_keys: Vec<PublishableKey>,
    pub allowed_origins: Vec<AllowedOrigin>,
    /// Secret keys for server-to-server calls, as SHA-256 digests with their scopes.
    pub server_keys: Vec<ServerKeyEntry>,
    /// What the store's plan allows on this cell.
    pub limits: TenantLimits,
    /// Subject digests ([`nudge_contracts::subject_digest`]) of the shoppers whose events
    /// are dropped at ingest.
    pub suppressed: std::collections::HashSet<String>,
    /// Email digests ([`nudge_contracts::email_digest`]) of the store's erased e-mail
    /// addresses: an identify naming one is dropped.
    pub suppressed_emails: std::collections::HashSet<String>,
    /// Erasure requests this tenant's cell is to carry out and report (each with its
    /// request id).
    pub erasure_orders: Vec<Erasure>,
    /// Dunning: the store's payment failed and ingest refuses its events (402).
    pub ingest_paused: bool,
    /// Past the plan's monthly events: ingest refuses its events (429).
    pub quota_exceeded: bool,
    /// The model version this tenant is scored with; `None`: the cell's default.
    pub model_version: Option<String>,
    /// A candidate model being rolled out beside it.
    pub rollout: Option<nudge_tenants::ModelRollout>,
    /// The store's rules for every campaign send (caps, quiet hours, consent, holdout).
    pub messaging: nudge_campaigns::policy::MessagingPolicy,
    pub revision: u64,
}

/// The limits a cell enforces for a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantLimits {
    pub events_per_second: u32,
    pub burst_events: u32,
    pub connections: u32,
    /// Days the cell keeps what it derived from a shopper's events after their last one.
    pub retention_days: u32,
}

impl From<nudge_tenants::Limits> for TenantLimits {
    fn from(l: nudge_tenants::Limits) -> Self {
        Self {
            events_per_second: l.events_per_second,
            burst_events: l.burst_events,
            connections: l.connections,
            retention_days: l.retention_days,
        }
    }
}

/// A secret key as a cell knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerKeyEntry {
    pub key_id: String,
    pub sha256: [u8; 32],
    pub scopes: Vec<String>,
}

impl TenantEntry {
    /// Whether `shopper`'s events are dropped (by subject digest; no hashing while the
    /// store suppresses nobody).
    pub fn is_suppressed(&self, shopper: &str) -> bool {
        if self.suppressed.is_empty() {
            return false;
        }
        ShopperId::parse(shopper).is_ok_and(|s| self.suppressed.contains(&subject_digest(self.tenant_id.as_uuid(), &s)))
    }

    /// Whether the shopper with this subject digest is suppressed.
    pub fn is_suppressed_subject(&self, subject_digest: &str) -> bool {
        self.suppressed.contains(subject_digest)
    }

    /// Whether the e-mail address with this hash (the store's `email_sha256`) was erased:
    /// an identify naming it is dropped.
    pub fn is_suppressed_email(&self, email_sha256: &str) -> bool {
        !self.suppressed_emails.is_empty()
            && self.is_suppressed_email_digest(&nudge_contracts::email_digest(self.tenant_id.as_uuid(), email_sha256))
    }

    /// Whether the e-mail address with this email digest was erased.
    pub fn is_suppressed_email_digest(&self, email_digest: &str) -> bool {
        self.suppressed_emails.contains(email_digest)
    }

    /// Whether a browser's `Origin` header is one this tenant allows.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|o| o.matches(origin))
    }
}

/// Why a record could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record key is not a tenant id: {0}")]
    Key(String),
    #[error("record value does not decode as TenantConfig: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("record field {field} is invalid: {reason}")]
    Field { field: &'static str, reason: String },
}

/// What applying a record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Upserted,
    Removed,
    /// Older than what the directory holds (a replayed or reordered record).
    Stale,
    /// For another cell.
    NotOurs,
}

#[derive(Default)]
struct Inner {
    tenants: HashMap<TenantId, Arc<TenantEntry>>,
    keys: HashMap<PublishableKey, TenantId>,
    secrets: HashMap<[u8; 32], TenantId>,
    /// The highest revision seen per tenant, kept after a tenant is removed or moves away,
    /// so a replayed older record cannot bring it back.
    revisions: HashMap<TenantId, u64>,
    /// Publishable keys of tenants on other cells, with the URL of their cell, so a request
    /// that reaches this cell (an old snippet URL) is pointed there.
    elsewhere: HashMap<PublishableKey, Arc<str>>,
    /// Those keys by tenant, to drop them when its next record arrives.
    elsewhere_keys: HashMap<TenantId, Vec<PublishableKey>>,
}

impl Inner {
    fn forget(&mut self, tenant_id: TenantId) -> bool {
        for k in self.elsewhere_keys.remove(&tenant_id).into_iter().flatten() {
            self.elsewhere.remove(&k);
        }
        match self.tenants.remove(&tenant_id) {
            Some(old) => {
                for k in &old.publishable_keys {
                    self.keys.remove(k);
                }
                for k in &old.server_keys {
                    self.secrets.remove(&k.sha256);
                }
                true
            }
            None => false,
        }
    }
}

/// What the cell is to erase: a shopper by subject digest, every shopper identified with one
/// e-mail address, or everything it keeps of the tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    pub tenant: TenantId,
    /// The shopper's subject digest; for [`ErasureScope::Email`], the address's email
    /// digest ([`nudge_contracts::email_digest`]); empty for [`ErasureScope::Tenant`].
    pub subject_digest: String,
    /// The erasure request to report on, when one asked for it (a plain suppression does not).
    pub request_id: Option<String>,
    pub scope: ErasureScope,
}

/// What an [`Erasure`] covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErasureScope {
    /// One shopper.
    Subject,
    /// Every shopper the store identified with the address, but those `held` (subject
    /// digests under a legal hold).
    Email { held: Vec<String> },
    /// The tenant's offboarding: every shopper, and every key of the tenant.
    Tenant,
}

/// The tenants of one cell, keyed by tenant and by publishable key.
pub struct Directory {
    cell: CellId,
    inner: RwLock<Inner>,
    caught_up: AtomicBool,
    /// Shoppers newly on a tenant's suppression list, or named by a new erasure order, whose
    /// data the cell must erase.
    erasures: std::sync::Mutex<Vec<Erasure>>,
    /// Erasure orders already queued by this process (each is carried out and reported
    /// once per process; a restart does them again, harmlessly).
    ordered: std::sync::Mutex<std::collections::HashSet<String>>,
    erasure_wake: tokio::sync::Notify,
    /// Whether a process role erases (the pipeline's): others keep no queue.
    erasing: AtomicBool,
    /// The control plane's access-token keys: members' tokens verify against them.
    member_tokens: std::sync::OnceLock<nudge_tenants::access::AccessVerifier>,
}

impl Directory {
    pub fn new(cell: CellId) -> Self {
        Self {
            cell,
            inner: RwLock::new(Inner::default()),
            caught_up: AtomicBool::new(false),
            erasures: std::sync::Mutex::new(Vec::new()),
            ordered: std::sync::Mutex::new(std::collections::HashSet::new()),
            erasure_wake: tokio::sync::Notify::new(),
            erasing: AtomicBool::new(false),
            member_tokens: std::sync::OnceLock::new(),
        }
    }

    /// Accept members' access tokens signed by these keys (once, at start).
    pub fn accept_member_tokens(&self, verifier: nudge_tenants::access::AccessVerifier) {
        if self.member_tokens.set(verifier).is_err() {
            tracing::warn!("members' token keys were already set; the first set stays");
        }
    }

    /// The keys members' access tokens verify against, when the cell takes them.
    pub fn member_tokens(&self) -> Option<&nudge_tenants::access::AccessVerifier> {
        self.member_tokens.get().filter(|v| !v.is_empty())
    }

    pub fn cell(&self) -> &CellId {
        &self.cell
    }

    /// The tenant a publishable key belongs to.
    pub fn by_key(&self, key: &PublishableKey) -> Option<Arc<TenantEntry>> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.keys.get(key).and_then(|t| inner.tenants.get(t)).cloned()
    }

    /// Queues newly suppressed shoppers for erasure from now on (the process that erases
    /// calls it before it follows the topic).
    pub fn enable_erasures(&self) {
        self.erasing.store(true, Ordering::Release);
    }

    /// Takes the shoppers whose data is to be erased (each newly suppressed by its tenant).
    pub fn take_erasures(&self) -> Vec<Erasure> {
        std::mem::take(&mut *self.erasures.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Resolves when there are erasures to take (at once if some arrived meanwhile).
    pub async fn erasures_arrived(&self) {
        self.erasure_wake.notified().await;
    }

    /// The URL of the cell a publishable key's tenant is on, when that is another cell.
    pub fn elsewhere(&self, key: &PublishableKey) -> Option<Arc<str>> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.elsewhere.get(key).cloned()
    }

    /// The tenant and key a secret key (by its SHA-256) belongs to.
    pub fn by_secret(&self, sha256: &[u8; 32]) -> Option<(Arc<TenantEntry>, ServerKeyEntry)> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let tenant = inner.tenants.get(inner.secrets.get(sha256)?)?.clone();
        let key = tenant.server_keys.iter().find(|k| &k.sha256 == sha256)?.clone();
        Some((tenant, key))
    }

    pub fn by_tenant(&self, tenant: TenantId) -> Option<Arc<TenantEntry>> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner).tenants.get(&tenant).cloned()
    }

    /// Every tenant served here with its retention in days.
    pub fn retention(&self) -> Vec<(TenantId, u32)> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.tenants.values().map(|t| (t.tenant_id, t.limits.retention_days)).collect()
    }

    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(PoisonError::into_inner).tenants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the directory has read the topic up to where it ended at start.
    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// Declares the directory complete. The follower calls it once it has read the topic to
    /// where it ended at start; a process that fills the directory itself (a benchmark, a
    /// test) calls it when it is done.
    pub fn mark_caught_up(&self) {
        self.caught_up.store(true, Ordering::Release);
    }

    /// Applies one `control.tenants.v1` record; `value` is `None` for a tombstone.
    pub fn apply(&self, key: &[u8], value: Option<&[u8]>) -> Result<Applied, RecordError> {
        let key_text = std::str::from_utf8(key).map_err(|e| RecordError::Key(e.to_string()))?;
        let tenant_id: TenantId = key_text.parse().map_err(|e| RecordError::Key(format!("{e}")))?;
        let Some(value) = value else {
            // A tombstone follows a `deleted` record; the revision watermark stays.
            let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
            return Ok(if inner.forget(tenant_id) { Applied::Removed } else { Applied::Stale });
        };
        let config = TenantConfig::decode(value)?;
        let entry = parse_entry(tenant_id, &config)?;
        let ours = config.cell_id == self.cell.as_str();

        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if inner.revisions.get(&tenant_id).is_some_and(|&seen| seen > entry.revision) {
            return Ok(Applied::Stale);
        }
        inner.revisions.insert(tenant_id, entry.revision);
        let suppressed_before = inner.tenants.get(&tenant_id).map(|t| t.suppressed.clone());
        let orders_before = inner.tenants.get(&tenant_id).map(|t| t.erasure_orders.clone()).unwrap_or_default();
        inner.forget(tenant_id);
        if entry.state == TenantState::Deleted {
            return Ok(Applied::Removed);
        }
        if !ours {
            // The tenant moved to another cell (or was never ours): forget it here, but
            // remember where its keys go now.
            if !config.cell_url.is_empty() {
                let url: Arc<str> = Arc::from(config.cell_url.as_str());
                for k in &entry.publishable_keys {
                    inner.elsewhere.insert(k.clone(), url.clone());
                }
                inner.elsewhere_keys.insert(tenant_id, entry.publishable_keys.clone());
            }
            return Ok(Applied::NotOurs);
        }
        for k in &entry.publishable_keys {
            inner.keys.insert(k.clone(), tenant_id);
        }
        for k in &entry.server_keys {
            inner.secrets.insert(k.sha256, tenant_id);
        }
        // Suppressed first, erased next: every erasure order not yet queued, and every
        // shopper new on the list (all of them when the cell reads the topic from the start;
        // erasing again is harmless).
        let mut newly = Vec::new();
        if self.erasing.load(Ordering::Acquire) {
            let mut ordered = self.ordered.lock().unwrap_or_else(PoisonError::into_inner);
            // An order gone from the record is complete: forget it.
            for before in &orders_before {
                if !entry.erasure_orders.iter().any(|o| o.request_id == before.request_id)
                    && let Some(id) = &before.request_id
                {
                    ordered.remove(id);
                }
            }
            for order in &entry.erasure_orders {
                if order.request_id.as_ref().is_some_and(|id| ordered.insert(id.clone())) {
                    newly.push(order.clone());
                }
            }
            for digest in &entry.suppressed {
                let is_new = suppressed_before.as_ref().is_none_or(|before| !before.contains(digest));
                if is_new && !newly.iter().any(|e| &e.subject_digest == digest) {
                    newly.push(Erasure {
                        tenant: tenant_id,
                        subject_digest: digest.clone(),
                        request_id: None,
                        scope: ErasureScope::Subject,
                    });
                }
            }
        }
        inner.tenants.insert(tenant_id, Arc::new(entry));
        drop(inner);
        if !newly.is_empty() {
            self.erasures.lock().unwrap_or_else(PoisonError::into_inner).extend(newly);
            self.erasure_wake.notify_one();
        }
        Ok(Applied::Upserted)
    }
}

fn parse_entry(tenant_id: TenantId, config: &TenantConfig) -> Result<TenantEntry, RecordError> {
    if config.tenant_id != tenant_id.to_string() {
        return Err(RecordError::Field { field: "tenant_id", reason: "differs from the record key".into() });
    }
    let state = match WireState::try_from(config.state) {
        Ok(WireState::Pending) => TenantState::Pending,
        Ok(WireState::Provisioning) => TenantState::Provisioning,
        Ok(WireState::Active) => TenantState::Active,
        Ok(WireState::Suspended) => TenantState::Suspended,
        Ok(WireState::Offboarding) => TenantState::Offboarding,
        Ok(WireState::Deleted) => TenantState::Deleted,
        Ok(WireState::Unspecified) | Err(_) => {
            return Err(RecordError::Field { field: "state", reason: format!("unknown state {}", config.state) });
        }
    };
    let publishable_keys = config
        .publishable_keys
        .iter()
        .map(|k| PublishableKey::parse(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RecordError::Field { field: "publishable_keys", reason: e.to_string() })?;
    let allowed_origins = config
        .allowed_origins
        .iter()
        .map(|o| AllowedOrigin::parse(o))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RecordError::Field { field: "allowed_origins", reason: e.to_string() })?;
    let server_keys = config
        .server_keys
        .iter()
        .map(|k| {
            let sha256: [u8; 32] = k
                .sha256
                .as_slice()
                .try_into()
                .map_err(|_| RecordError::Field { field: "server_keys", reason: "a digest is not 32 bytes".into() })?;
            Ok(ServerKeyEntry { key_id: k.key_id.clone(), sha256, scopes: k.scopes.clone() })
        })
        .collect::<Result<Vec<_>, RecordError>>()?;
    // A record without limits (from before plans existed) gets the free plan's.
    let free: TenantLimits = nudge_tenants::Plan::Free.limits().into();
    let limits = match &config.limits {
        Some(l) => TenantLimits {
            events_per_second: l.events_per_second,
            burst_events: l.burst_events,
            connections: l.connections,
            // Never zero: a record without it keeps the free plan's.
            retention_days: if l.retention_days == 0 { free.retention_days } else { l.retention_days },
        },
        None => free,
    };
    Ok(TenantEntry {
        tenant_id,
        state,
        publishable_keys,
        allowed_origins,
        server_keys,
        limits,
        suppressed: if config.suppressed_subjects.is_empty() {
            // A record written before suppressions travelled as digests.
            config
                .suppressed_shoppers
                .iter()
                .filter_map(|s| ShopperId::parse(s).ok())
                .map(|s| subject_digest(tenant_id.as_uuid(), &s))
                .collect()
        } else {
            config.suppressed_subjects.iter().cloned().collect()
        },
        suppressed_emails: config.suppressed_emails.iter().cloned().collect(),
        ingest_paused: config.ingest_paused,
        quota_exceeded: config.quota_exceeded,
        erasure_orders: config
            .erasures
            .iter()
            // An order names a subject (or an address) or the whole tenant, never neither.
            .filter(|o| o.whole_tenant || !o.subject_digest.is_empty())
            .map(|o| Erasure {
                tenant: tenant_id,
                subject_digest: o.subject_digest.clone(),
                request_id: Some(o.request_id.clone()),
                scope: if o.whole_tenant {
                    ErasureScope::Tenant
                } else if o.by_email {
                    ErasureScope::Email { held: o.held_subjects.clone() }
                } else {
                    ErasureScope::Subject
                },
            })
            .collect(),
        model_version: Some(config.model_version.clone()).filter(|m| !m.is_empty()),
        rollout: config.rollout.as_ref().and_then(|r| {
            let mode = match r.mode() {
                WireRolloutMode::Canary => nudge_tenants::RolloutMode::Canary,
                WireRolloutMode::Shadow => nudge_tenants::RolloutMode::Shadow,
                // A record from a newer control plane with a mode this cell does not know:
                // no rollout, production only.
                WireRolloutMode::Unspecified => return None,
            };
            Some(nudge_tenants::ModelRollout {
                candidate: r.candidate_model_version.clone(),
                mode,
                canary_basis_points: r.canary_basis_points,
            })
        }),
        messaging: messaging_policy(tenant_id, &config.messaging_policy_json),
        revision: config.revision,
    })
}

/// A record's messaging policy. One this cell cannot read (from a newer control plane)
/// is replaced by the defaults (consent before any e-mail, at most two a day, quiet
/// nights), logged: the store is not stopped for it, though a stricter policy of its own
/// (caps on site or on webhooks, a global holdout) is not applied meanwhile.
fn messaging_policy(tenant: TenantId, json: &str) -> nudge_campaigns::policy::MessagingPolicy {
    if json.is_empty() {
        return nudge_campaigns::policy::MessagingPolicy::default();
    }
    serde_json::from_str(json).unwrap_or_else(|e| {
        tracing::warn!(tenant_id = %tenant, error = %e, "a messaging policy this cell cannot read; the defaults apply");
        nudge_campaigns::policy::MessagingPolicy::default()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use nudge_contracts::proto::control::v1::ErasureOrder;

    use super::*;

    fn record(tenant: TenantId, cell: &str, revision: u64, state: WireState) -> (Vec<u8>, Vec<u8>, PublishableKey) {
        let key = PublishableKey::generate().unwrap();
        let config = TenantConfig {
            tenant_id: tenant.to_string(),
            state: state as i32,
            cell_id: cell.to_owned(),
            publishable_keys: vec![key.to_string()],
            allowed_origins: vec!["https://shop.example.com".into()],
            revision,
            updated_at_ms: 0,
            server_keys: vec![],
            limits: None,
            model_version: String::new(),
            rollout: None,
            cell_url: format!("https://{cell}.cells.example"),
            ..Default::default()
        };
        (tenant.to_string().into_bytes(), config.encode_to_vec(), key)
    }

    #[test]
    fn upserts_and_finds_by_key() {
        let dir = Directory::new(CellId::default_shared());
        let t = TenantId::new();
        let (k, v, pk) = record(t, "shared-1", 1, WireState::Active);
        assert_eq!(dir.apply(&k, Some(&v)).unwrap(), Applied::Upserted);
        let entry = dir.by_key(&pk).unwrap();
        assert_eq!(entry.tenant_id, t);
        assert!(entry.allows_origin("https://shop.example.com"));
        assert!(!entry.allows_origin("https://evil.example.com"));
    }

    #[test]
    fn ignores_stale_revisions_and_other_cells() {
        let dir = Directory::new(CellId::default_shared());
        let t = TenantId::new();
        let (k, v2, pk2) = record(t, "shared-1", 2, WireState::Active);
        let (_, v1, pk1) = record(t, "shared-1", 1, WireState::Active);
        dir.apply(&k, Some(&v2)).unwrap();
        assert_eq!(dir.apply(&k, Some(&v1)).unwrap(), Applied::Stale);
        assert!(dir.by_key(&pk2).is_some());
        assert!(dir.by_key(&pk1).is_none());

        let (k3, v3, pk3) = record(t, "other-cell", 3, WireState::Active);
        assert_eq!(dir.apply(&k3, Some(&v3)).unwrap(), Applied::NotOurs);
        assert!(dir.by_key(&pk2).is_none(), "a tenant moved away is forgotten");
        assert_eq!(dir.elsewhere(&pk3).as_deref(), Some("https://other-cell.cells.example"), "and where it went");
        assert!(dir.elsewhere(&pk2).is_none());

        // Back on this cell: served here, pointed nowhere else.
        let (k4, v4, pk4) = record(t, "shared-1", 4, WireState::Active);
        assert_eq!(dir.apply(&k4, Some(&v4)).unwrap(), Applied::Upserted);
        assert!(dir.by_key(&pk4).is_some());
        assert!(dir.elsewhere(&pk3).is_none(), "the old redirect is dropped");
    }

    #[test]
    fn a_shopper_new_on_the_suppression_list_is_queued_for_erasure_once() {
        let dir = Directory::new(CellId::default_shared());
        dir.enable_erasures();
        let t = TenantId::new();
        let with = |revision: u64, suppressed: &[&str], orders: &[(&str, &str)]| {
            let (k, _, _) = record(t, "shared-1", revision, WireState::Active);
            let (_, v, _) = record(t, "shared-1", revision, WireState::Active);
            let mut config = TenantConfig::decode(v.as_slice()).unwrap();
            config.suppressed_subjects = suppressed.iter().map(|s| (*s).to_owned()).collect();
            config.erasures = orders
                .iter()
                .map(|(r, d)| ErasureOrder {
                    request_id: (*r).to_owned(),
                    subject_digest: (*d).to_owned(),
                    ..ErasureOrder::default()
                })
                .collect();
            (k, config.encode_to_vec())
        };
        let plain = |d: &str| Erasure {
            tenant: t,
            subject_digest: d.to_owned(),
            request_id: None,
            scope: ErasureScope::Subject,
        };
        let (k, v) = with(1, &["a"], &[]);
        dir.apply(&k, Some(&v)).unwrap();
        assert_eq!(dir.take_erasures(), [plain("a")]);
        let (k, v) = with(2, &["a", "b"], &[]);
        dir.apply(&k, Some(&v)).unwrap();
        assert_eq!(dir.take_erasures(), [plain("b")], "only the new one");
        let (k, v) = with(3, &["a", "b"], &[]);
        dir.apply(&k, Some(&v)).unwrap();
        assert!(dir.take_erasures().is_empty());

        // An order comes with its suppression; it is queued once, with its request.
        let (k, v) = with(4, &["a", "b", "c"], &[("req-1", "c")]);
        dir.apply(&k, Some(&v)).unwrap();
        let ordered = Erasure { request_id: Some("req-1".into()), ..plain("c") };
        assert_eq!(dir.take_erasures(), [ordered]);
        let (k, v) = with(5, &["a", "b", "c"], &[("req-1", "c")]);
        dir.apply(&k, Some(&v)).unwrap();
        assert!(dir.take_erasures().is_empty(), "an order already queued is not queued again");
        let (k, v) = with(6, &["a", "b", "c"], &[]);
        dir.apply(&k, Some(&v)).unwrap();
        assert!(dir.ordered.lock().unwrap().is_empty(), "a completed order is forgotten");
    }

    #[test]
    fn an_order_by_email_carries_its_held_subjects_and_suppresses_the_address() {
        let dir = Directory::new(CellId::default_shared());
        dir.enable_erasures();
        let t = TenantId::new();
        let hash = "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514";
        let email = nudge_contracts::email_digest(t.as_uuid(), hash);
        let (k, v, _) = record(t, "shared-1", 1, WireState::Active);
        let mut config = TenantConfig::decode(v.as_slice()).unwrap();
        config.suppressed_emails = vec![email.clone()];
        config.erasures = vec![ErasureOrder {
            request_id: "req-e".into(),
            subject_digest: email.clone(),
            by_email: true,
            held_subjects: vec!["h".into()],
            ..ErasureOrder::default()
        }];
        dir.apply(&k, Some(&config.encode_to_vec())).unwrap();
        let order = Erasure {
            tenant: t,
            subject_digest: email,
            request_id: Some("req-e".into()),
            scope: ErasureScope::Email { held: vec!["h".into()] },
        };
        assert_eq!(dir.take_erasures(), [order], "the address is not also erased as a subject");
        let entry = dir.by_tenant(t).unwrap();
        assert!(entry.is_suppressed_email(hash));
        assert!(!entry.is_suppressed_email(&"0".repeat(64)));
    }

    #[test]
    fn suppression_is_by_subject_digest() {
        let dir = Directory::new(CellId::default_shared());
        let t = TenantId::new();
        let (k, v, _) = record(t, "shared-1", 1, WireState::Active);
        let mut config = TenantConfig::decode(v.as_slice()).unwrap();
        config.suppressed_subjects = vec![subject_digest(t.as_uuid(), &ShopperId::parse("shp_gone").unwrap())];
        dir.apply(&k, Some(&config.encode_to_vec())).unwrap();
        let entry = dir.by_tenant(t).unwrap();
        assert!(entry.is_suppressed("shp_gone"));
        assert!(!entry.is_suppressed("shp_kept"));
        assert!(!entry.is_suppressed("not a shopper id"));

        // A record from before digests: its shopper ids still suppress.
        let mut legacy = config.clone();
        legacy.revision = 2;
        legacy.suppressed_subjects.clear();
        legacy.suppressed_shoppers = vec!["shp_old".into()];
        dir.apply(&k, Some(&legacy.encode_to_vec())).unwrap();
        assert!(dir.by_tenant(t).unwrap().is_suppressed("shp_old"));
    }

    #[test]
    fn tombstone_removes_and_rotated_keys_stop_working() {
        let dir = Directory::new(CellId::default_shared());
        let t = TenantId::new();
        let (k, v1, old_key) = record(t, "shared-1", 1, WireState::Active);
        dir.apply(&k, Some(&v1)).unwrap();
        let (_, v2, new_key) = record(t, "shared-1", 2, WireState::Suspended);
        dir.apply(&k, Some(&v2)).unwrap();
        assert!(dir.by_key(&old_key).is_none(), "a revoked key stops working");
        assert_eq!(dir.by_key(&new_key).unwrap().state, TenantState::Suspended);
        assert_eq!(dir.apply(&k, None).unwrap(), Applied::Removed);
        assert!(dir.by_key(&new_key).is_none());
        assert!(dir.is_empty());
    }

    #[test]
    fn a_replayed_older_record_cannot_revive_a_deleted_or_moved_tenant() {
        let dir = Directory::new(CellId::default_shared());
        let t = TenantId::new();
        let (k, v1, pk1) = record(t, "shared-1", 1, WireState::Active);
        let (_, deleted, _) = record(t, "shared-1", 2, WireState::Deleted);
        dir.apply(&k, Some(&v1)).unwrap();
        assert_eq!(dir.apply(&k, Some(&deleted)).unwrap(), Applied::Removed);
        assert_eq!(dir.apply(&k, None).unwrap(), Applied::Stale);
        assert_eq!(dir.apply(&k, Some(&v1)).unwrap(), Applied::Stale, "replay after deletion");
        assert!(dir.by_key(&pk1).is_none());

        let u = TenantId::new();
        let (k, v1, pk) = record(u, "shared-1", 1, WireState::Active);
        let (_, moved, _) = record(u, "other-cell", 2, WireState::Active);
        dir.apply(&k, Some(&v1)).unwrap();
        dir.apply(&k, Some(&moved)).unwrap();
        assert_eq!(dir.apply(&k, Some(&v1)).unwrap(), Applied::Stale, "replay after moving away");
        assert!(dir.by_key(&pk).is_none());
    }

    #[test]
    fn rejects_garbage() {
        let dir = Directory::new(CellId::default_shared());
        assert!(dir.apply(b"not-a-tenant", Some(b"x")).is_err());
        let t = TenantId::new();
        assert!(dir.apply(t.to_string().as_bytes(), Some(&[0xff, 0xff, 0xff])).is_err());
        let (k, _, _) = record(t, "shared-1", 1, WireState::Active);
        let bad = TenantConfig { tenant_id: TenantId::new().to_string(), state: 3, ..Default::default() };
        assert!(dir.apply(&k, Some(&bad.encode_to_vec())).is_err());
    }
}
