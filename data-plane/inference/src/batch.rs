//! Micro-batching: concurrent single-row scores of one model become one batched call.
//!
//! Each model gets a worker. A caller queues its row and waits for its score; the worker
//! takes the first row waiting, then every row that arrives within `max_wait` (none waited
//! for when it is zero: only what is already queued), up to `max_rows`, and scores them in
//! one call. Under load many rows share a call (ONNX Runtime's per-call overhead is most of
//! a single row's cost); an idle worker adds at most `max_wait`.

use std::{
    collections::HashMap,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use nudge_data_plane_features::FeatureVector;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::{Model, ModelError, ModelSet};

/// `[inference.batching]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct BatchConfig {
    /// Most rows in one call.
    pub max_rows: usize,
    /// How long the worker waits for more rows after the first (microseconds).
    pub max_wait_us: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self { max_rows: 64, max_wait_us: 0 }
    }
}

struct Job {
    row: FeatureVector,
    reply: oneshot::Sender<Result<f32, ModelError>>,
}

/// What a worker has done: rows scored and calls made (rows / calls is the mean batch).
#[derive(Debug, Default)]
pub struct BatchStats {
    pub rows: AtomicU64,
    pub calls: AtomicU64,
}

/// One model's batching worker.
#[derive(Clone)]
pub struct BatchScorer {
    jobs: mpsc::Sender<Job>,
    stats: Arc<BatchStats>,
}

impl BatchScorer {
    /// Starts the worker on the current Tokio runtime; it stops when the last clone is dropped.
    pub fn spawn(model: Arc<Model>, config: &BatchConfig) -> Self {
        let (jobs, queue) = mpsc::channel(config.max_rows.max(1) * 16);
        let stats = Arc::new(BatchStats::default());
        tokio::spawn(work(
            model,
            queue,
            config.max_rows.max(1),
            Duration::from_micros(config.max_wait_us),
            stats.clone(),
        ));
        Self { jobs, stats }
    }

    /// The score of `row`, batched with whatever else is waiting.
    pub async fn score(&self, row: FeatureVector) -> Result<f32, ModelError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || ModelError::Ort("the scoring worker has stopped".into());
        self.jobs.send(Job { row, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }
}

async fn work(
    model: Arc<Model>,
    mut queue: mpsc::Receiver<Job>,
    max_rows: usize,
    max_wait: Duration,
    stats: Arc<BatchStats>,
) {
    while let Some(first) = queue.recv().await {
        let mut jobs = vec![first];
        let deadline = tokio::time::Instant::now() + max_wait;
        while jobs.len() < max_rows {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) if max_wait.is_zero() => break,
                Err(_) => match tokio::time::timeout_at(deadline, queue.recv()).await {
                    Ok(Some(job)) => jobs.push(job),
                    _ => break,
                },
            }
        }
        let rows: Vec<FeatureVector> = jobs.iter().map(|j| j.row).collect();
        stats.rows.fetch_add(rows.len() as u64, Ordering::Relaxed);
        stats.calls.fetch_add(1, Ordering::Relaxed);
        match model.score(&rows) {
            Ok(scores) if scores.len() == jobs.len() => {
                for (job, score) in jobs.into_iter().zip(scores) {
                    // A caller that stopped waiting has nobody to tell.
                    let _ = job.reply.send(Ok(score));
                }
            }
            Ok(scores) => {
                let e = ModelError::Schema(format!("{} scores for {} rows", scores.len(), jobs.len()));
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// A batching worker for every model of a [`ModelSet`], kept in step with it by
/// [`Scorers::sync`] as the registry adds and drops models.
pub struct Scorers {
    config: BatchConfig,
    by_version: RwLock<HashMap<String, (Arc<Model>, BatchScorer)>>,
}

impl Scorers {
    /// Starts a worker per model; call within the Tokio runtime.
    pub fn spawn(models: &ModelSet, config: &BatchConfig) -> Self {
        let scorers = Self { config: config.clone(), by_version: RwLock::default() };
        scorers.sync(models);
        scorers
    }

    /// Starts a worker for each model the set gained and stops those of models it dropped;
    /// call within the Tokio runtime.
    pub fn sync(&self, models: &ModelSet) {
        let held = models.models();
        let mut by_version = self.by_version.write().unwrap_or_else(PoisonError::into_inner);
        by_version.retain(|v, (m, _)| held.iter().any(|h| h.version() == v && Arc::ptr_eq(h, m)));
        for model in held {
            by_version
                .entry(model.version().to_owned())
                .or_insert_with(|| (model.clone(), BatchScorer::spawn(model.clone(), &self.config)));
        }
    }

    /// `row`'s score by `model` (batched with other callers of the same model).
    pub async fn score(&self, model: &Arc<Model>, row: FeatureVector) -> Result<f32, ModelError> {
        let scorer = {
            let by_version = self.by_version.read().unwrap_or_else(PoisonError::into_inner);
            by_version.get(model.version()).filter(|(m, _)| Arc::ptr_eq(m, model)).map(|(_, s)| s.clone())
        };
        match scorer {
            Some(scorer) => scorer.score(row).await,
            // A model without a worker (just swapped in or out): score it alone.
            None => model.score(&[row])?.first().copied().ok_or_else(|| ModelError::Schema("no score".into())),
        }
    }
}
