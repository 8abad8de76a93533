//! The transactional outbox.
//!
//! A change and the record announcing it are written in one transaction ([`enqueue`]); the
//! [`Relay`] later publishes committed rows in id order and marks them published. A crash
//! between publish and mark publishes a row twice, never zero times: consumers keep the
//! highest `revision` per key, so a repeat is harmless.

use std::{sync::Arc, time::Duration};

use nudge_contracts::headers::SchemaRef;
use nudge_platform_kafka::{KafkaConfig, SendError, SharedProducer, headers::record_headers};
use nudge_platform_telemetry::TraceContext;
use rdkafka::{producer::FutureRecord, types::RDKafkaErrorCode};
use sqlx::{Postgres, Row, Transaction};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::db::{Database, DbError};

/// One record to publish.
#[derive(Debug, Clone)]
pub struct OutboxRecord {
    pub topic: String,
    pub key: Vec<u8>,
    /// `None` publishes a tombstone.
    pub payload: Option<Vec<u8>>,
    pub schema: SchemaRef,
    pub traceparent: Option<String>,
}

/// Adds `record` to the outbox inside the caller's transaction.
pub async fn enqueue(tx: &mut Transaction<'static, Postgres>, record: &OutboxRecord) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox (topic, record_key, payload, schema_name, schema_version, traceparent)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&record.topic)
    .bind(&record.key)
    .bind(record.payload.as_deref())
    .bind(record.schema.name)
    .bind(record.schema.version as i32)
    .bind(record.traceparent.as_deref())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("publishing outbox row {id}: {source}")]
    Publish { id: i64, source: SendError },
}

impl From<sqlx::Error> for RelayError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

/// Publishes outbox rows to Kafka.
pub struct Relay {
    db: Database,
    producer: SharedProducer,
    batch_size: i64,
    poll_interval: Duration,
    wake: Arc<Notify>,
    keep_published: Duration,
}

/// How often the relay deletes published rows past [`Relay::keeping_published`].
const PRUNE_EVERY: Duration = Duration::from_secs(600);

impl Relay {
    pub fn new(
        db: Database,
        kafka: &KafkaConfig,
        batch_size: i64,
        poll_interval: Duration,
    ) -> Result<Self, nudge_platform_kafka::Error> {
        Ok(Self {
            db,
            producer: SharedProducer::new(kafka, "nudge-control-plane-outbox")?,
            batch_size,
            poll_interval,
            wake: Arc::new(Notify::new()),
            keep_published: Duration::from_secs(24 * 3600),
        })
    }

    /// How long published rows stay (for inspection) before the relay deletes them; they
    /// can be large (model artifacts travel through the outbox).
    pub fn keeping_published(mut self, keep: Duration) -> Self {
        self.keep_published = keep;
        self
    }

    /// Deletes rows published longer ago than the relay keeps them; how many.
    pub async fn prune_published(&self) -> Result<u64, RelayError> {
        let deleted = sqlx::query("DELETE FROM outbox WHERE published_at < now() - make_interval(secs => $1)")
            .bind(self.keep_published.as_secs_f64())
            .execute(self.db.pool())
            .await?;
        Ok(deleted.rows_affected())
    }

    /// Wakes the relay early; signal it after committing an outbox row.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Shares another relay's wake-up signal (one signal wakes the relays of every database).
    pub fn woken_by(mut self, wake: Arc<Notify>) -> Self {
        self.wake = wake;
        self
    }

    /// Publishes until `shutdown`. Failures are logged and retried with backoff; rows stay
    /// in the outbox until published.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut next_prune = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_prune {
                next_prune += PRUNE_EVERY;
                match self.prune_published().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rows = n, "published outbox rows pruned"),
                    Err(e) => tracing::warn!(error = %e, "pruning published outbox rows failed"),
                }
            }
            let wait = match self.publish_batch().await {
                Ok(n) if n as i64 == self.batch_size => Duration::ZERO,
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    self.poll_interval
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "outbox relay failed");
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    wait
                }
            };
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Publishes the oldest unpublished rows; how many.
    pub async fn publish_batch(&self) -> Result<usize, RelayError> {
        let mut tx = self.db.platform_tx().await?;
        // SKIP LOCKED lets several control-plane replicas relay without blocking each other.
        let rows = sqlx::query(
            "SELECT id, topic, record_key, payload, schema_name, schema_version, traceparent, attempts
             FROM outbox WHERE published_at IS NULL AND parked_at IS NULL
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(self.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }

        struct Pending {
            id: i64,
            attempts: i32,
            topic: String,
            key: Vec<u8>,
            payload: Option<Vec<u8>>,
            headers: rdkafka::message::OwnedHeaders,
        }
        let mut pending = Vec::with_capacity(rows.len());
        for row in &rows {
            let schema_name: String = row.try_get("schema_name")?;
            let schema_version: i32 = row.try_get("schema_version")?;
            let traceparent: Option<String> = row.try_get("traceparent")?;
            let trace = traceparent.as_deref().and_then(|t| TraceContext::parse(t).ok());
            pending.push(Pending {
                id: row.try_get("id")?,
                attempts: row.try_get("attempts")?,
                topic: row.try_get("topic")?,
                key: row.try_get("record_key")?,
                payload: row.try_get("payload")?,
                headers: record_headers(
                    SchemaRef { name: known_schema(&schema_name), version: schema_version as u32 },
                    trace.as_ref(),
                ),
            });
        }
        // The batch is in flight at once; order within a partition is kept by the
        // idempotent producer.
        let records = pending.iter().map(|p| {
            let record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&p.topic).key(p.key.as_slice()).headers(p.headers.clone());
            match p.payload.as_deref() {
                Some(payload) => record.payload(payload),
                None => record,
            }
        });
        let outcomes = self.producer.send_each(records, ACK_TIMEOUT).await;

        let mut published = Vec::with_capacity(pending.len());
        let mut transient = None;
        for (p, outcome) in pending.iter().zip(outcomes) {
            let (id, attempts) = (p.id, p.attempts);
            match outcome {
                Ok(()) => published.push(id),
                Err(e) if is_permanent(&e) || attempts + 1 >= MAX_ATTEMPTS => {
                    tracing::error!(outbox_id = id, error = %e, "outbox row cannot be published; parked");
                    sqlx::query(
                        "UPDATE outbox SET attempts = attempts + 1, last_error = $2, parked_at = now() WHERE id = $1",
                    )
                    .bind(id)
                    .bind(e.to_string())
                    .execute(&mut *tx)
                    .await?;
                }
                Err(e) => {
                    sqlx::query("UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1")
                        .bind(id)
                        .bind(e.to_string())
                        .execute(&mut *tx)
                        .await?;
                    transient.get_or_insert(RelayError::Publish { id, source: e });
                }
            }
        }
        sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
            .bind(&published)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::debug!(rows = published.len(), "outbox rows published");
        match transient {
            Some(e) => Err(e),
            None => Ok(rows.len()),
        }
    }
}

/// How long a batch waits for the broker's acknowledgements before its rows are retried.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts before a row that keeps failing is parked (about 10 minutes of backoff).
const MAX_ATTEMPTS: i32 = 200;

/// Errors that publishing again will not fix.
fn is_permanent(e: &SendError) -> bool {
    let SendError::Rejected(e) = e else { return false };
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidTopic
        )
    )
}

/// The static schema name matching a row's text; anything unexpected is carried as "unknown".
fn known_schema(name: &str) -> &'static str {
    use nudge_contracts::headers::{CAMPAIGN_V1, EVENT_V1, MODEL_REGISTRY_V1, TENANT_CONFIG_V1};
    [TENANT_CONFIG_V1.name, MODEL_REGISTRY_V1.name, CAMPAIGN_V1.name, EVENT_V1.name]
        .into_iter()
        .find(|n| *n == name)
        .unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use nudge_contracts::headers::{CAMPAIGN_V1, MODEL_REGISTRY_V1, TENANT_CONFIG_V1};

    #[test]
    fn every_schema_the_control_plane_enqueues_keeps_its_name() {
        for schema in [TENANT_CONFIG_V1, MODEL_REGISTRY_V1, CAMPAIGN_V1] {
            assert_eq!(super::known_schema(schema.name), schema.name);
        }
        assert_eq!(super::known_schema("something.Else"), "unknown");
    }
}
