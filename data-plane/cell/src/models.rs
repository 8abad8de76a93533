//! Following the model registry (`control.models.v1`): every version the registry holds is
//! loaded (its checksum verified again here), archived ones are dropped, and the default
//! follows the registry's, all without a restart; the batching workers follow the set.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use nudge_contracts::proto::control::v1::{ModelRegistryRecord, ModelStage, model_registry_record::Record};
use nudge_data_plane_inference::{ModelSet, Scorers, set::Change};
use nudge_platform_kafka::follow::Follower;
use prometheus_client::metrics::counter::Counter;
use prost::Message;

/// Applies registry records to the cell's models.
pub struct Registry {
    pub models: Arc<ModelSet>,
    pub scorers: Arc<Scorers>,
    pub caught_up: Arc<AtomicBool>,
    /// Records refused (an artifact that failed its checks, an undecodable record).
    pub refused: Counter,
}

impl Follower for Registry {
    fn what(&self) -> &'static str {
        "model"
    }

    fn apply(&self, key: &[u8], payload: Option<&[u8]>) -> Result<String, String> {
        let result = self.apply_record(key, payload);
        if result.is_err() {
            self.refused.inc();
        }
        result
    }

    fn caught_up(&self) {
        tracing::info!(
            default = self.models.default_model().version(),
            models = ?self.models.versions(),
            "model registry caught up"
        );
        self.caught_up.store(true, Ordering::Release);
    }
}

impl Registry {
    fn apply_record(&self, key: &[u8], payload: Option<&[u8]>) -> Result<String, String> {
        let key = String::from_utf8_lossy(key);
        // The registry never deletes a key; a tombstone has nothing to apply.
        let Some(payload) = payload else { return Ok(format!("tombstone for {key} ignored")) };
        let record = ModelRegistryRecord::decode(payload).map_err(|e| format!("undecodable record {key}: {e}"))?;
        let change = match record.record {
            Some(Record::Model(m)) => {
                let archived = m.stage == ModelStage::Archived as i32 || m.artifact.is_empty();
                let artifact = (!archived).then_some(m.artifact.as_slice());
                self.models.apply_version(&m.version, &m.sha256, artifact, m.revision).map_err(|e| e.to_string())?
            }
            Some(Record::DefaultModel(d)) => self.models.apply_default(&d.version, d.revision),
            None => return Err(format!("record {key} holds nothing")),
        };
        match &change {
            Change::Loaded { version, default } => {
                tracing::info!(version, default, "model loaded from the registry");
            }
            Change::Dropped { version } => tracing::info!(version, "archived model dropped"),
            Change::Default { version } => tracing::info!(version, "default model changed"),
            Change::DefaultPending { version } => {
                tracing::warn!(version, "the registry's default is not loaded yet; keeping the current default");
            }
            Change::Unchanged | Change::Stale => {}
        }
        if matches!(change, Change::Loaded { .. } | Change::Dropped { .. }) {
            self.scorers.sync(&self.models);
        }
        Ok(format!("{change:?}"))
    }
}
