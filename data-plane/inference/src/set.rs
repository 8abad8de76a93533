//! The models a cell scores with, by version, and which one a tenant gets.
//!
//! A cell starts with the models compiled into it and learns the rest from the model
//! registry (`control.models.v1`, see [`crate::registry`]): new versions are loaded and
//! swapped in, archived ones dropped, the default follows the registry's. Readers take a
//! snapshot ([`Arc`]) per event, so a swap never disturbs a score in flight: an event is
//! scored entirely by the models of the snapshot it took.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
};

use nudge_tenants::{ModelRollout, RolloutMode, TenantId, in_canary};
use ort::environment::Environment;

use crate::{Model, ModelError, bundled};

/// One model held, with what the registry last said of it.
#[derive(Debug, Clone)]
struct Held {
    model: Arc<Model>,
    sha256: String,
    /// The registry record's revision (0: compiled in or configured, not yet announced).
    revision: u64,
}

#[derive(Debug, Clone)]
struct Snapshot {
    default: Arc<Model>,
    by_version: HashMap<String, Held>,
    /// Revision of the registry's default record applied (0: none yet).
    default_revision: u64,
    /// The registry's default when this cell does not hold it yet: it becomes the default
    /// as soon as it loads.
    pending_default: Option<String>,
}

/// Every model a cell holds: the default, and each model by version.
#[derive(Debug)]
pub struct ModelSet {
    env: &'static Environment,
    current: RwLock<Arc<Snapshot>>,
}

/// The models an event is scored with.
#[derive(Debug, Clone)]
pub struct Routing {
    /// Scores and acts.
    pub acting: Arc<Model>,
    /// Scores beside it, logged, never acts (a shadow rollout).
    pub shadow: Option<Arc<Model>>,
    /// A version the tenant's record names (its model, or a rollout's candidate) is not
    /// held here; the default or production stood in.
    pub fell_back: bool,
}

/// The model chosen for a tenant.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub model: Arc<Model>,
    /// The tenant named a version this cell does not hold and got the default instead.
    pub fell_back: bool,
}

/// What a registry record did to the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A version was loaded (and is the default, when the registry says so).
    Loaded { version: String, default: bool },
    /// A version held already: only its stage or revision changed.
    Unchanged,
    /// An archived version was dropped.
    Dropped { version: String },
    /// The default is now this version.
    Default { version: String },
    /// The registry's default is a version not held yet; it becomes the default once loaded.
    DefaultPending { version: String },
    /// Older than what the set holds.
    Stale,
}

/// A registry record the set refused.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The artifact failed its checksum, its schema check or ONNX Runtime: the version is
    /// not held, and stores naming it keep falling back (counted).
    #[error("model {version} not loaded: {source}")]
    Load { version: String, source: ModelError },
    /// The registry archived the version this cell uses as its default; it stays until
    /// the registry names another default.
    #[error("model {0} is archived but is this cell's default; keeping it until the default changes")]
    ArchivedDefault(String),
}

impl ModelSet {
    /// `default`, and every bundled model (each checked at load like any artifact).
    pub fn with_bundled(env: &'static Environment, default: Model) -> Result<Self, ModelError> {
        let default = Arc::new(default);
        let mut by_version = HashMap::new();
        for b in bundled::MODELS {
            let model = if b.version == default.version() {
                default.clone()
            } else {
                Arc::new(Model::load(env, b.version, b.onnx, b.sha256)?)
            };
            by_version.insert(b.version.to_owned(), Held { model, sha256: b.sha256.to_owned(), revision: 0 });
        }
        by_version.entry(default.version().to_owned()).or_insert_with(|| Held {
            model: default.clone(),
            sha256: String::new(),
            revision: 0,
        });
        let snapshot = Snapshot { default, by_version, default_revision: 0, pending_default: None };
        Ok(Self { env, current: RwLock::new(Arc::new(snapshot)) })
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn default_model(&self) -> Arc<Model> {
        self.snapshot().default.clone()
    }

    /// The versions held, sorted.
    pub fn versions(&self) -> Vec<String> {
        let mut v: Vec<String> = self.snapshot().by_version.keys().cloned().collect();
        v.sort_unstable();
        v
    }

    /// Every model held.
    pub fn models(&self) -> Vec<Arc<Model>> {
        self.snapshot().by_version.values().map(|h| h.model.clone()).collect()
    }

    /// The model for a tenant that names `version` (`None`: the default).
    pub fn choose(&self, version: Option<&str>) -> Chosen {
        choose(&self.snapshot(), version)
    }

    /// The models for `shopper`'s event: the tenant's own model (`assigned`, else the
    /// default), or under a canary the candidate for the canary's share of shoppers (sticky
    /// by shopper), plus under a shadow rollout the candidate as shadow.
    pub fn route(
        &self,
        tenant: TenantId,
        shopper: &str,
        assigned: Option<&str>,
        rollout: Option<&ModelRollout>,
    ) -> Routing {
        let snapshot = self.snapshot();
        let production = choose(&snapshot, assigned);
        let mut routing = Routing { acting: production.model, shadow: None, fell_back: production.fell_back };
        let Some(rollout) = rollout else { return routing };
        let Some(candidate) = snapshot.by_version.get(&rollout.candidate).map(|h| &h.model) else {
            routing.fell_back = true;
            return routing;
        };
        match rollout.mode {
            RolloutMode::Canary => {
                if in_canary(tenant, shopper, rollout.canary_basis_points) {
                    routing.acting = candidate.clone();
                }
            }
            RolloutMode::Shadow => {
                if !Arc::ptr_eq(candidate, &routing.acting) {
                    routing.shadow = Some(candidate.clone());
                }
            }
        }
        routing
    }

    /// Applies a registry record for `version`: `artifact` `None` (archived) drops it,
    /// otherwise a version not held is loaded (checksum, schema and all, as at start). Loading
    /// builds an ONNX Runtime session: call from a blocking context.
    pub fn apply_version(
        &self,
        version: &str,
        sha256: &str,
        artifact: Option<&[u8]>,
        revision: u64,
    ) -> Result<Change, ApplyError> {
        // Load outside the lock (a session takes milliseconds to build), only when the
        // version is new or its bytes changed; everything else is decided under the lock.
        let needs_load = artifact.is_some()
            && self.snapshot().by_version.get(version).is_none_or(|h| h.sha256 != sha256 && !stale(h, revision));
        let loaded = match (needs_load, artifact) {
            (true, Some(bytes)) => Some(Arc::new(
                Model::load(self.env, version, bytes, sha256)
                    .map_err(|source| ApplyError::Load { version: version.to_owned(), source })?,
            )),
            _ => None,
        };
        let mut guard = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = guard.by_version.get(version)
            && stale(held, revision)
        {
            return Ok(Change::Stale);
        }
        let mut next = (**guard).clone();
        let change = match (artifact, loaded) {
            (None, _) => {
                if !next.by_version.contains_key(version) {
                    return Ok(Change::Unchanged);
                }
                if next.default.version() == version {
                    return Err(ApplyError::ArchivedDefault(version.to_owned()));
                }
                next.by_version.remove(version);
                Change::Dropped { version: version.to_owned() }
            }
            (Some(_), Some(model)) => {
                next.by_version
                    .insert(version.to_owned(), Held { model: model.clone(), sha256: sha256.to_owned(), revision });
                let default = next.pending_default.as_deref() == Some(version) || next.default.version() == version;
                if default {
                    next.default = model;
                    next.pending_default = None;
                }
                Change::Loaded { version: version.to_owned(), default }
            }
            (Some(_), None) => match next.by_version.get_mut(version) {
                Some(held) if held.sha256 == sha256 => {
                    held.revision = revision;
                    Change::Unchanged
                }
                // Changed under us between the look and the lock: the next record settles it.
                _ => return Ok(Change::Stale),
            },
        };
        *guard = Arc::new(next);
        Ok(change)
    }

    /// Applies the registry's default-model record.
    pub fn apply_default(&self, version: &str, revision: u64) -> Change {
        let mut guard = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if revision <= guard.default_revision {
            return Change::Stale;
        }
        let mut next = (**guard).clone();
        next.default_revision = revision;
        let change = match next.by_version.get(version) {
            Some(held) => {
                next.default = held.model.clone();
                next.pending_default = None;
                Change::Default { version: version.to_owned() }
            }
            None => {
                next.pending_default = Some(version.to_owned());
                Change::DefaultPending { version: version.to_owned() }
            }
        };
        *guard = Arc::new(next);
        change
    }
}

/// A record no newer than what is held (bundled and configured models have revision 0, so
/// any registry record is newer).
fn stale(held: &Held, revision: u64) -> bool {
    held.revision > 0 && held.revision >= revision
}

fn choose(snapshot: &Snapshot, version: Option<&str>) -> Chosen {
    match version {
        None => Chosen { model: snapshot.default.clone(), fell_back: false },
        Some(v) => match snapshot.by_version.get(v) {
            Some(held) => Chosen { model: held.model.clone(), fell_back: false },
            None => Chosen { model: snapshot.default.clone(), fell_back: true },
        },
    }
}
