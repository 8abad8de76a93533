//! The models a cell scores with, by version, and which one a tenant gets.

use std::{collections::HashMap, sync::Arc};

use nudge_tenants::{ModelRollout, RolloutMode, TenantId, in_canary};
use ort::environment::Environment;

use crate::{Model, ModelError, bundled};

/// Every model a cell holds: the default, and each bundled model by version.
#[derive(Debug)]
pub struct ModelSet {
    default: Arc<Model>,
    by_version: HashMap<String, Arc<Model>>,
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

impl ModelSet {
    /// `default`, and every bundled model (each checked at load like any artifact).
    pub fn with_bundled(env: &Environment, default: Model) -> Result<Self, ModelError> {
        let default = Arc::new(default);
        let mut by_version = HashMap::new();
        for b in bundled::MODELS {
            let model = if b.version == default.version() {
                default.clone()
            } else {
                Arc::new(Model::load(env, b.version, b.onnx, b.sha256)?)
            };
            by_version.insert(b.version.to_owned(), model);
        }
        by_version.insert(default.version().to_owned(), default.clone());
        Ok(Self { default, by_version })
    }

    pub fn default_model(&self) -> &Arc<Model> {
        &self.default
    }

    /// The versions held, sorted.
    pub fn versions(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.by_version.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// The model for a tenant that names `version` (`None`: the default).
    pub fn choose(&self, version: Option<&str>) -> Chosen {
        match version {
            None => Chosen { model: self.default.clone(), fell_back: false },
            Some(v) => match self.by_version.get(v) {
                Some(model) => Chosen { model: model.clone(), fell_back: false },
                None => Chosen { model: self.default.clone(), fell_back: true },
            },
        }
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
        let production = self.choose(assigned);
        let mut routing = Routing { acting: production.model, shadow: None, fell_back: production.fell_back };
        let Some(rollout) = rollout else { return routing };
        let Some(candidate) = self.by_version.get(&rollout.candidate) else {
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
}
