//! The models a cell scores with, by version, and which one a tenant gets.

use std::{collections::HashMap, sync::Arc};

use ort::environment::Environment;

use crate::{Model, ModelError, bundled};

/// Every model a cell holds: the default, and each bundled model by version.
#[derive(Debug)]
pub struct ModelSet {
    default: Arc<Model>,
    by_version: HashMap<String, Arc<Model>>,
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
}
