//! The model registry: every model version the cells may score with, its content-addressed
//! artifact, input schema, metrics, lineage and stage, and the default model.
//!
//! An upload is checked the way a cell loads it (SHA-256 against the manifest, then ONNX
//! Runtime opens it and its declared feature set and names must be the cells'), so a
//! corrupt or mismatched artifact never reaches a cell. Every change is announced on
//! `control.models.v1` through the outbox in the same transaction: the record carries the
//! artifact, and each cell verifies the checksum again when it loads it.
//!
//! Stages: `candidate` (uploaded; may be rolled out as shadow or canary) → `canary` (in a
//! canary rollout) → `production` (may be assigned to stores and made the default) →
//! `archived` (cells unload it). An archived version may return to `candidate`. A version in
//! use (the default, assigned to a store, or rolled out) cannot be archived.

use std::{collections::BTreeMap, path::Path};

use chrono::{DateTime, SecondsFormat, Utc};
use nudge_contracts::{
    Topics,
    control::{ModelInputSchema, ModelManifest, ModelStageEvent, ModelView},
    headers::MODEL_REGISTRY_V1,
    models::DEFAULT_MODEL,
    proto::control::v1::{
        DefaultModel, ModelRegistryRecord, ModelStage as WireStage, ModelVersion, model_registry_record::Record,
    },
    topics::Topic,
};
use nudge_data_plane_features::{
    FEATURE_NAMES, FEATURE_SET_VERSION, FeatureVector, N_FEATURES, definitions::DEFAULT_VECTOR,
};
use nudge_data_plane_inference::{Model, ModelError, bundled, init_runtime};
use prost::Message;
use sha2::{Digest, Sha256};
use sqlx::{Postgres, Row, Transaction, postgres::PgRow};

use crate::{
    db::{Database, DbError},
    outbox::{self, OutboxRecord},
    routing::TenantRouter,
};

/// The largest artifact the registry takes; it travels to the cells in one record.
pub const MAX_ARTIFACT_BYTES: usize = 8 * 1024 * 1024;

/// The key of the default-model record on `control.models.v1`.
pub const DEFAULT_KEY: &str = "default";

/// Where a model version is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Candidate,
    Canary,
    Production,
    Archived,
}

impl Stage {
    pub const ALL: [Stage; 4] = [Stage::Candidate, Stage::Canary, Stage::Production, Stage::Archived];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Candidate => "candidate",
            Self::Canary => "canary",
            Self::Production => "production",
            Self::Archived => "archived",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    fn wire(self) -> WireStage {
        match self {
            Self::Candidate => WireStage::Candidate,
            Self::Canary => WireStage::Canary,
            Self::Production => WireStage::Production,
            Self::Archived => WireStage::Archived,
        }
    }

    /// Whether an operator may move a version from `self` to `to`.
    pub fn may_become(self, to: Stage) -> bool {
        use Stage::*;
        matches!(
            (self, to),
            (Candidate, Canary | Production | Archived)
                | (Canary, Candidate | Production | Archived)
                | (Production, Archived)
                | (Archived, Candidate)
        )
    }
}

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("some manifest fields are invalid")]
    Invalid(BTreeMap<String, String>),
    #[error("the artifact is {size} bytes; at most {max}")]
    TooLarge { size: usize, max: usize },
    #[error("the artifact's SHA-256 is {actual}, the manifest says {declared}")]
    Checksum { declared: String, actual: String },
    #[error("the model does not fit the feature definitions: {0}")]
    Schema(String),
    #[error("the artifact is not a model ONNX Runtime can run: {0}")]
    Corrupt(String),
    #[error("artifacts cannot be checked here: {0}")]
    ChecksUnavailable(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for UploadError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_model_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    s.len() <= 63
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The manifest's fields, each problem by field.
pub fn check_manifest(m: &ModelManifest) -> Result<(), UploadError> {
    let mut fields = BTreeMap::new();
    if !is_model_name(&m.name) {
        fields.insert("name".into(), "lowercase letters, digits and _, starting with a letter, at most 63".into());
    }
    if !is_hex64(&m.sha256) {
        fields.insert("sha256".into(), "64 lowercase hex digits".into());
    }
    if m.metrics.len() > 64 || m.metrics.iter().any(|(k, v)| k.is_empty() || k.len() > 100 || !v.is_finite()) {
        fields.insert("metrics".into(), "at most 64 names of 1-100 characters, each a finite number".into());
    }
    if !is_hex64(&m.lineage.training_data_sha256) {
        fields.insert("lineage.training_data_sha256".into(), "64 lowercase hex digits".into());
    }
    if !is_hex64(&m.lineage.code_sha256) {
        fields.insert("lineage.code_sha256".into(), "64 lowercase hex digits".into());
    }
    if m.lineage.code_commit.as_ref().is_some_and(|c| c.is_empty() || c.len() > 100) {
        fields.insert("lineage.code_commit".into(), "1-100 characters".into());
    }
    if serde_json::to_vec(&m.lineage.parameters).map_or(true, |v| v.len() > 16 * 1024) {
        fields.insert("lineage.parameters".into(), "an object of at most 16 KiB".into());
    }
    if fields.is_empty() { Ok(()) } else { Err(UploadError::Invalid(fields)) }
}

/// Checks `artifact` against `manifest` the way a cell loads it, and runs it once: size,
/// SHA-256, ONNX Runtime can open it, input `features` `[N, 10]` and output `probabilities`,
/// the feature set and names the artifact declares are the cells', and a row of feature
/// defaults scores to a probability. Blocking (ONNX Runtime builds a session).
pub fn check_artifact(library: Option<&Path>, manifest: &ModelManifest, artifact: &[u8]) -> Result<(), UploadError> {
    if artifact.len() > MAX_ARTIFACT_BYTES {
        return Err(UploadError::TooLarge { size: artifact.len(), max: MAX_ARTIFACT_BYTES });
    }
    let actual = hex::encode(Sha256::digest(artifact));
    if actual != manifest.sha256 {
        return Err(UploadError::Checksum { declared: manifest.sha256.clone(), actual });
    }
    let env = init_runtime(library).map_err(|e| UploadError::ChecksUnavailable(e.to_string()))?;
    let model = Model::load(env, &manifest.name, artifact, &actual).map_err(|e| match e {
        ModelError::Schema(s) => UploadError::Schema(s),
        ModelError::Ort(s) => UploadError::Corrupt(s),
        ModelError::Checksum { .. } => UploadError::Checksum { declared: manifest.sha256.clone(), actual },
    })?;
    let row: FeatureVector = DEFAULT_VECTOR;
    let scores = model.score(&[row]).map_err(|e| UploadError::Corrupt(e.to_string()))?;
    match scores.first() {
        Some(p) if p.is_finite() && (0.0..=1.0).contains(p) => Ok(()),
        other => Err(UploadError::Corrupt(format!("scoring a row of defaults gave {other:?}, not a probability"))),
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

const MODEL_COLUMNS: &str = "m.version, m.name, m.number, m.sha256, a.size_bytes, m.stage, m.feature_set,
     m.feature_names, m.input_type, m.metrics, m.lineage, m.created_by, m.created_at, m.stage_changed_at,
     (d.version IS NOT NULL) AS is_default";
const MODEL_FROM: &str = "models m JOIN model_artifacts a ON a.sha256 = m.sha256
     LEFT JOIN model_default d ON d.version = m.version";

fn view(row: &PgRow) -> Result<ModelView, sqlx::Error> {
    let decode = |what: &str, e: serde_json::Error| sqlx::Error::Decode(format!("{what}: {e}").into());
    Ok(ModelView {
        version: row.try_get("version")?,
        name: row.try_get("name")?,
        number: row.try_get("number")?,
        sha256: row.try_get("sha256")?,
        size_bytes: row.try_get("size_bytes")?,
        stage: row.try_get("stage")?,
        default: row.try_get("is_default")?,
        input: ModelInputSchema {
            feature_set: row.try_get("feature_set")?,
            feature_names: row.try_get("feature_names")?,
            tensor: row.try_get("input_type")?,
        },
        metrics: serde_json::from_value(row.try_get("metrics")?).map_err(|e| decode("metrics", e))?,
        lineage: serde_json::from_value(row.try_get("lineage")?).map_err(|e| decode("lineage", e))?,
        created_by: row.try_get("created_by")?,
        created_at: rfc3339(row.try_get("created_at")?),
        stage_changed_at: rfc3339(row.try_get("stage_changed_at")?),
    })
}

async fn fetch_view(tx: &mut Transaction<'static, Postgres>, version: &str) -> Result<Option<ModelView>, sqlx::Error> {
    let row = sqlx::query(&format!("SELECT {MODEL_COLUMNS} FROM {MODEL_FROM} WHERE m.version = $1"))
        .bind(version)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(view).transpose()
}

/// Every version, by name then number.
pub async fn list(db: &Database) -> Result<Vec<ModelView>, DbError> {
    let rows = sqlx::query(&format!("SELECT {MODEL_COLUMNS} FROM {MODEL_FROM} ORDER BY m.name, m.number"))
        .fetch_all(db.pool())
        .await?;
    Ok(rows.iter().map(view).collect::<Result<_, _>>()?)
}

/// One version.
pub async fn get(db: &Database, version: &str) -> Result<Option<ModelView>, DbError> {
    let mut tx = db.platform_tx().await?;
    let found = fetch_view(&mut tx, version).await?;
    tx.commit().await?;
    Ok(found)
}

/// A version's stage changes, oldest first.
pub async fn history(db: &Database, version: &str) -> Result<Vec<ModelStageEvent>, DbError> {
    let rows = sqlx::query(
        "SELECT from_stage, to_stage, actor, reason, at FROM model_stage_events WHERE version = $1 ORDER BY id",
    )
    .bind(version)
    .fetch_all(db.pool())
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            Ok(ModelStageEvent {
                from_stage: r.try_get("from_stage")?,
                to_stage: r.try_get("to_stage")?,
                actor: r.try_get("actor")?,
                reason: r.try_get("reason")?,
                at: rfc3339(r.try_get("at")?),
            })
        })
        .collect::<Result<_, sqlx::Error>>()?)
}

/// The stage of `version`, if registered.
pub async fn stage_of(db: &Database, version: &str) -> Result<Option<Stage>, DbError> {
    let stage: Option<String> = sqlx::query_scalar("SELECT stage FROM models WHERE version = $1")
        .bind(version)
        .fetch_optional(db.pool())
        .await?;
    Ok(stage.and_then(|s| Stage::parse(&s)))
}

/// The version stores without an assignment are scored with.
pub async fn default_version(db: &Database) -> Result<String, DbError> {
    let v: Option<String> =
        sqlx::query_scalar("SELECT version FROM model_default WHERE singleton").fetch_optional(db.pool()).await?;
    Ok(v.unwrap_or_else(|| DEFAULT_MODEL.to_owned()))
}

/// Bumps `version`'s revision and enqueues its record (with the artifact unless archived).
async fn announce_model(
    tx: &mut Transaction<'static, Postgres>,
    topics: &Topics,
    version: &str,
) -> Result<(), sqlx::Error> {
    let row = sqlx::query(
        "UPDATE models m SET revision = m.revision + 1 FROM model_artifacts a
         WHERE m.version = $1 AND a.sha256 = m.sha256
         RETURNING m.name, m.sha256, m.stage, m.feature_set, m.revision,
                   CASE WHEN m.stage = 'archived' THEN NULL ELSE a.bytes END AS bytes",
    )
    .bind(version)
    .fetch_one(&mut **tx)
    .await?;
    let stage_text: String = row.try_get("stage")?;
    let stage =
        Stage::parse(&stage_text).ok_or_else(|| sqlx::Error::Decode(format!("unknown stage {stage_text}").into()))?;
    let record = ModelRegistryRecord {
        record: Some(Record::Model(ModelVersion {
            version: version.to_owned(),
            name: row.try_get("name")?,
            sha256: row.try_get("sha256")?,
            stage: stage.wire() as i32,
            artifact: row.try_get::<Option<Vec<u8>>, _>("bytes")?.unwrap_or_default(),
            feature_set: row.try_get("feature_set")?,
            revision: u64::try_from(row.try_get::<i64, _>("revision")?).unwrap_or(0),
        })),
    };
    enqueue(tx, topics, version, &record).await
}

/// Enqueues the default-model record as it stands in `tx`.
async fn announce_default(tx: &mut Transaction<'static, Postgres>, topics: &Topics) -> Result<(), sqlx::Error> {
    let row = sqlx::query("SELECT version, revision FROM model_default WHERE singleton").fetch_one(&mut **tx).await?;
    let record = ModelRegistryRecord {
        record: Some(Record::DefaultModel(DefaultModel {
            version: row.try_get("version")?,
            revision: u64::try_from(row.try_get::<i64, _>("revision")?).unwrap_or(0),
        })),
    };
    enqueue(tx, topics, DEFAULT_KEY, &record).await
}

async fn enqueue(
    tx: &mut Transaction<'static, Postgres>,
    topics: &Topics,
    key: &str,
    record: &ModelRegistryRecord,
) -> Result<(), sqlx::Error> {
    outbox::enqueue(
        tx,
        &OutboxRecord {
            topic: topics.name(Topic::ControlModels),
            key: key.as_bytes().to_vec(),
            payload: Some(record.encode_to_vec()),
            schema: MODEL_REGISTRY_V1,
            traceparent: None,
        },
    )
    .await
}

async fn record_stage(
    tx: &mut Transaction<'static, Postgres>,
    version: &str,
    from: Option<Stage>,
    to: Stage,
    actor: &str,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO model_stage_events (version, from_stage, to_stage, actor, reason) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(version)
    .bind(from.map(Stage::as_str))
    .bind(to.as_str())
    .bind(actor)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Registers a checked artifact (see [`check_artifact`]) as the next version of
/// `manifest.name`, in stage `candidate`, and announces it. The same bytes under the same
/// name are the version already registered (`false`), not a new one.
pub async fn register(
    db: &Database,
    topics: &Topics,
    manifest: &ModelManifest,
    artifact: &[u8],
    actor: &str,
) -> Result<(bool, ModelView), UploadError> {
    let mut tx = db.platform_tx().await?;
    // Versions of one name are numbered one at a time.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('nudge.model:' || $1, 0))")
        .bind(&manifest.name)
        .execute(&mut *tx)
        .await?;
    let existing: Option<String> = sqlx::query_scalar("SELECT version FROM models WHERE name = $1 AND sha256 = $2")
        .bind(&manifest.name)
        .bind(&manifest.sha256)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(version) = existing {
        let found = fetch_view(&mut tx, &version).await?.ok_or(DbError::Query(sqlx::Error::RowNotFound))?;
        tx.commit().await?;
        return Ok((false, found));
    }
    let size = i32::try_from(artifact.len())
        .map_err(|_| UploadError::TooLarge { size: artifact.len(), max: MAX_ARTIFACT_BYTES })?;
    sqlx::query(
        "INSERT INTO model_artifacts (sha256, bytes, size_bytes) VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING",
    )
    .bind(&manifest.sha256)
    .bind(artifact)
    .bind(size)
    .execute(&mut *tx)
    .await?;
    let number: i32 = sqlx::query_scalar("SELECT COALESCE(max(number), 0) + 1 FROM models WHERE name = $1")
        .bind(&manifest.name)
        .fetch_one(&mut *tx)
        .await?;
    let version = format!("{}@{number}", manifest.name);
    insert_version(&mut tx, &version, manifest, number, Stage::Candidate, actor).await?;
    record_stage(&mut tx, &version, None, Stage::Candidate, actor, "uploaded").await?;
    announce_model(&mut tx, topics, &version).await?;
    let found = fetch_view(&mut tx, &version).await?.ok_or(DbError::Query(sqlx::Error::RowNotFound))?;
    tx.commit().await?;
    tracing::info!(version, sha256 = %manifest.sha256, actor, "model registered");
    Ok((true, found))
}

async fn insert_version(
    tx: &mut Transaction<'static, Postgres>,
    version: &str,
    manifest: &ModelManifest,
    number: i32,
    stage: Stage,
    actor: &str,
) -> Result<(), UploadError> {
    let metrics = serde_json::to_value(&manifest.metrics).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let lineage = serde_json::to_value(&manifest.lineage).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "INSERT INTO models (version, name, number, sha256, feature_set, feature_names, input_type, metrics,
                             lineage, stage, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(version)
    .bind(&manifest.name)
    .bind(number)
    .bind(&manifest.sha256)
    .bind(FEATURE_SET_VERSION)
    .bind(FEATURE_NAMES.as_slice())
    .bind(format!("float32[N, {N_FEATURES}]"))
    .bind(metrics)
    .bind(lineage)
    .bind(stage.as_str())
    .bind(actor)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Registers the models compiled into the binaries (the ones every cell holds without the
/// registry) in stage `production`, and makes [`DEFAULT_MODEL`] the default when there is
/// none. Idempotent; run at start.
pub async fn register_bundled(db: &Database, topics: &Topics) -> Result<(), UploadError> {
    let mut tx = db.platform_tx().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('nudge.model-bundled', 0))").execute(&mut *tx).await?;
    for b in bundled::MODELS {
        let manifest: ModelManifest = serde_json::from_str(b.manifest)
            .map_err(|e| UploadError::Corrupt(format!("bundled manifest of {}: {e}", b.version)))?;
        let registered: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM models WHERE version = $1)")
            .bind(b.version)
            .fetch_one(&mut *tx)
            .await?;
        if registered {
            continue;
        }
        let number = b
            .version
            .rsplit_once('@')
            .and_then(|(_, n)| n.parse::<i32>().ok())
            .ok_or_else(|| UploadError::Corrupt(format!("bundled version {} is not name@number", b.version)))?;
        sqlx::query(
            "INSERT INTO model_artifacts (sha256, bytes, size_bytes) VALUES ($1, $2, $3)
             ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(b.sha256)
        .bind(b.onnx)
        .bind(b.onnx.len() as i32)
        .execute(&mut *tx)
        .await?;
        insert_version(&mut tx, b.version, &manifest, number, Stage::Production, "system:bundled").await?;
        record_stage(&mut tx, b.version, None, Stage::Production, "system:bundled", "shipped in the binaries").await?;
        announce_model(&mut tx, topics, b.version).await?;
        tracing::info!(version = b.version, "bundled model registered");
    }
    let inserted = sqlx::query(
        "INSERT INTO model_default (version, changed_by) VALUES ($1, 'system:bundled') ON CONFLICT DO NOTHING",
    )
    .bind(DEFAULT_MODEL)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() > 0 {
        announce_default(&mut tx, topics).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Why a stage change or default change was refused.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("no such model version")]
    NotFound,
    #[error("a {from} model cannot become {to}", from = from.as_str(), to = to.as_str())]
    Invalid { from: Stage, to: Stage },
    #[error("{stores} store(s) are scored with or roll out this version")]
    InUse { stores: i64 },
    #[error("this version is the default model")]
    IsDefault,
    #[error("only a production model can be the default (this one is {stage})", stage = .0.as_str())]
    NotProduction(Stage),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for StageError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

/// How many stores, across the main and every dedicated database, are scored with
/// `version` or roll it out.
pub async fn users_of(router: &TenantRouter, version: &str) -> Result<i64, DbError> {
    let mut users: i64 =
        sqlx::query_scalar("SELECT nudge_model_users($1)").bind(version).fetch_one(router.registry().pool()).await?;
    for name in router.dedicated_databases().await? {
        let db = router.pool_for(&name)?;
        users +=
            sqlx::query_scalar::<_, i64>("SELECT nudge_model_users($1)").bind(version).fetch_one(db.pool()).await?;
    }
    Ok(users)
}

/// Moves `version` to `to` (no change when it is there already) and announces it.
pub async fn set_stage(
    router: &TenantRouter,
    topics: &Topics,
    version: &str,
    to: Stage,
    actor: &str,
    reason: &str,
) -> Result<ModelView, StageError> {
    if to == Stage::Archived {
        // Checked before the transaction: stores live in several databases. A store
        // assigned the version meanwhile falls back to the default at the cells (counted).
        let stores = users_of(router, version).await?;
        if stores > 0 {
            return Err(StageError::InUse { stores });
        }
    }
    let mut tx = router.registry().platform_tx().await?;
    let current: Option<String> = sqlx::query_scalar("SELECT stage FROM models WHERE version = $1 FOR UPDATE")
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?;
    let from = current.and_then(|s| Stage::parse(&s)).ok_or(StageError::NotFound)?;
    if from != to {
        if !from.may_become(to) {
            return Err(StageError::Invalid { from, to });
        }
        if to == Stage::Archived {
            let is_default: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM model_default WHERE version = $1)")
                .bind(version)
                .fetch_one(&mut *tx)
                .await?;
            if is_default {
                return Err(StageError::IsDefault);
            }
        }
        sqlx::query("UPDATE models SET stage = $2, stage_changed_at = now() WHERE version = $1")
            .bind(version)
            .bind(to.as_str())
            .execute(&mut *tx)
            .await?;
        record_stage(&mut tx, version, Some(from), to, actor, reason).await?;
        announce_model(&mut tx, topics, version).await?;
        tracing::info!(version, from = from.as_str(), to = to.as_str(), actor, "model stage changed");
    }
    let found = fetch_view(&mut tx, version).await?.ok_or(StageError::NotFound)?;
    tx.commit().await?;
    Ok(found)
}

/// Makes `version` (in stage `production`) the model stores without an assignment are
/// scored with, and announces it.
pub async fn set_default(db: &Database, topics: &Topics, version: &str, actor: &str) -> Result<(), StageError> {
    let mut tx = db.platform_tx().await?;
    let stage: Option<String> = sqlx::query_scalar("SELECT stage FROM models WHERE version = $1 FOR SHARE")
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?;
    let stage = stage.and_then(|s| Stage::parse(&s)).ok_or(StageError::NotFound)?;
    if stage != Stage::Production {
        return Err(StageError::NotProduction(stage));
    }
    sqlx::query(
        "INSERT INTO model_default (version, changed_by) VALUES ($1, $2)
         ON CONFLICT (singleton) DO UPDATE
             SET version = EXCLUDED.version, changed_by = EXCLUDED.changed_by, changed_at = now(),
                 revision = model_default.revision + 1
             WHERE model_default.version <> EXCLUDED.version",
    )
    .bind(version)
    .bind(actor)
    .execute(&mut *tx)
    .await?;
    announce_default(&mut tx, topics).await?;
    tx.commit().await?;
    tracing::info!(version, actor, "default model set");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stages_move_forward_and_archived_versions_come_back_as_candidates() {
        use Stage::*;
        let allowed: Vec<(Stage, Stage)> = Stage::ALL
            .into_iter()
            .flat_map(|from| Stage::ALL.into_iter().map(move |to| (from, to)))
            .filter(|(from, to)| from.may_become(*to))
            .collect();
        assert_eq!(
            allowed,
            [
                (Candidate, Canary),
                (Candidate, Production),
                (Candidate, Archived),
                (Canary, Candidate),
                (Canary, Production),
                (Canary, Archived),
                (Production, Archived),
                (Archived, Candidate),
            ]
        );
        for s in Stage::ALL {
            assert_eq!(Stage::parse(s.as_str()), Some(s));
        }
    }

    fn manifest() -> ModelManifest {
        serde_json::from_str(bundled::MODELS[1].manifest).unwrap()
    }

    #[test]
    fn the_bundled_manifests_pass_and_bad_fields_are_named() {
        for b in bundled::MODELS {
            let m: ModelManifest = serde_json::from_str(b.manifest).unwrap();
            check_manifest(&m).unwrap();
        }
        let mut m = manifest();
        m.name = "9lives".into();
        m.sha256 = "ABC".into();
        m.metrics.insert("auc".into(), f64::NAN);
        m.lineage.code_sha256 = String::new();
        m.lineage.code_commit = Some(String::new());
        let Err(UploadError::Invalid(fields)) = check_manifest(&m) else { panic!("refused") };
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        assert_eq!(names, ["lineage.code_commit", "lineage.code_sha256", "metrics", "name", "sha256"]);
    }

    #[test]
    fn an_artifact_is_checked_before_anything_else_happens() {
        let m = manifest();
        let big = vec![0u8; MAX_ARTIFACT_BYTES + 1];
        assert!(matches!(check_artifact(None, &m, &big), Err(UploadError::TooLarge { .. })));
        let lr = bundled::MODELS[0].onnx;
        assert!(matches!(check_artifact(None, &m, lr), Err(UploadError::Checksum { .. })));
        check_artifact(None, &m, bundled::MODELS[1].onnx).unwrap();
    }
}
