//! At-least-once processing stages with a dead-letter queue.
//!
//! [`run_stage`] consumes a topic in a consumer group and hands each record to a
//! [`Handler`]. The offset is stored for commit only once the handler succeeded or the record
//! went to the DLQ, so a crash replays what was not finished and never skips it. Failures
//! come in two kinds:
//!
//! - [`Failure::Unavailable`]: a dependency is down (Redis, the broker). Retried with backoff
//!   for as long as it takes: an outage must not send every record to the DLQ.
//! - [`Failure::Failed`]: this record failed. Retried until it has been tried
//!   `max_attempts` times, then written to the DLQ as it was, with headers naming the original
//!   topic, partition, offset, the error and the attempts. The partition moves on.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use futures_util::StreamExt;
use nudge_contracts::headers::dlq;
use nudge_platform_telemetry::{Metrics, TraceContext};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};
use rdkafka::{
    Message,
    consumer::{CommitMode, Consumer, StreamConsumer},
    message::{BorrowedMessage, Header, Headers, OwnedHeaders},
    producer::FutureRecord,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{SendError, SharedProducer, headers::trace_of};

/// How long a stage waits for the broker to acknowledge what it produced before it treats
/// the broker as unavailable and tries the record again.
pub const OUTPUT_ACK_TIMEOUT: Duration = Duration::from_secs(5);

impl From<SendError> for Failure {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Unavailable(why) => Failure::Unavailable(why),
            SendError::Rejected(e) => Failure::Failed(format!("the broker rejected an output: {e}")),
        }
    }
}

/// Why a record could not be handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A dependency is unavailable; retry the same record later, without limit.
    Unavailable(String),
    /// The record failed; it counts towards `max_attempts`.
    Failed(String),
}

/// One record, as a handler sees it.
pub struct Record<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// The trace the record was produced under, continued.
    pub trace: TraceContext,
    message: &'a BorrowedMessage<'a>,
}

impl Record<'_> {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::headers::header_str(self.message.headers(), name)
    }
}

pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Failure>> + Send + 'a>>;

/// What a stage does with each record.
pub trait Handler: Send + Sync {
    fn handle<'a>(&'a self, record: &'a Record<'a>) -> HandlerFuture<'a>;
}

/// How a stage retries.
#[derive(Debug, Clone)]
pub struct StagePolicy {
    /// For logs and metrics, e.g. `validator`.
    pub name: &'static str,
    /// Tries of a failing record before it goes to the DLQ.
    pub max_attempts: u32,
    /// Pause between tries of a failing record.
    pub retry_backoff: Duration,
    /// The longest pause while a dependency is unavailable.
    pub max_unavailable_backoff: Duration,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: String,
}

/// Counters of a stage.
#[derive(Clone)]
pub struct StageMetrics {
    handled: Family<StageLabel, Counter>,
    retried: Family<StageLabel, Counter>,
    dead_lettered: Family<StageLabel, Counter>,
}

impl StageMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self { handled: Family::default(), retried: Family::default(), dead_lettered: Family::default() };
        let mut r = metrics.registry();
        r.register("stage_records_handled", "Records handled, by stage", m.handled.clone());
        r.register("stage_records_retried", "Failed tries retried, by stage", m.retried.clone());
        r.register("stage_records_dead_lettered", "Records sent to the DLQ, by stage", m.dead_lettered.clone());
        m
    }
}

/// Writes records that failed for good to the DLQ topic.
#[derive(Clone)]
pub struct DeadLetters {
    producer: SharedProducer,
    topic: String,
}

impl DeadLetters {
    pub fn new(producer: SharedProducer, topic: String) -> Self {
        Self { producer, topic }
    }

    async fn send(&self, record: &Record<'_>, stage: &str, error: &str, attempts: u32) -> Result<(), Failure> {
        let mut headers = OwnedHeaders::new();
        if let Some(original) = record.message.headers() {
            for h in original.iter() {
                headers = headers.insert(Header { key: h.key, value: h.value });
            }
        }
        let (partition, offset, attempts) =
            (record.partition.to_string(), record.offset.to_string(), attempts.to_string());
        for (key, value) in [
            (dlq::ORIGINAL_TOPIC, record.topic),
            (dlq::ORIGINAL_PARTITION, partition.as_str()),
            (dlq::ORIGINAL_OFFSET, offset.as_str()),
            (dlq::ERROR, error),
            (dlq::ATTEMPTS, attempts.as_str()),
            (dlq::STAGE, stage),
        ] {
            headers = headers.insert(Header { key, value: Some(value) });
        }
        let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
        if let Some(k) = record.key {
            out = out.key(k);
        }
        if let Some(p) = record.payload {
            out = out.payload(p);
        }
        // Even a rejection is retried: a record must not be skipped without a DLQ copy.
        self.producer
            .send_all([out], OUTPUT_ACK_TIMEOUT)
            .await
            .map_err(|e| Failure::Unavailable(format!("writing to the DLQ: {e}")))
    }
}

/// Runs `handler` over `consumer`'s records until `shutdown`, then commits what is done.
pub async fn run_stage(
    consumer: StreamConsumer,
    handler: Arc<dyn Handler>,
    dead_letters: DeadLetters,
    policy: StagePolicy,
    metrics: StageMetrics,
    shutdown: CancellationToken,
) {
    let label = StageLabel { stage: policy.name.to_owned() };
    {
        let mut stream = consumer.stream();
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => break,
                m = stream.next() => m,
            };
            let message = match next {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!(stage = policy.name, error = %e, "reading records");
                    continue;
                }
                Some(Ok(m)) => m,
            };
            let record = Record {
                topic: message.topic(),
                partition: message.partition(),
                offset: message.offset(),
                key: message.key(),
                payload: message.payload(),
                trace: trace_of(message.headers()),
                message: &message,
            };
            let span = tracing::info_span!("stage", stage = policy.name, trace_id = %record.trace.trace_id());
            let done =
                process(&record, &*handler, &dead_letters, &policy, &metrics, &label, &shutdown).instrument(span).await;
            if !done {
                break;
            }
            metrics.handled.get_or_create(&label).inc();
            if let Err(e) = consumer.store_offset_from_message(&message) {
                tracing::error!(stage = policy.name, error = %e, "storing an offset");
            }
        }
    }
    // Commit what is done, nothing more, before leaving the group.
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(stage = policy.name, error = %e, "final offset commit");
    }
}

/// Handles one record to the end (success or DLQ); false when shutdown interrupted it.
async fn process(
    record: &Record<'_>,
    handler: &dyn Handler,
    dead_letters: &DeadLetters,
    policy: &StagePolicy,
    metrics: &StageMetrics,
    label: &StageLabel,
    shutdown: &CancellationToken,
) -> bool {
    let mut attempts = 0u32;
    let mut unavailable_backoff = Duration::from_millis(50);
    loop {
        let outcome = match handler.handle(record).await {
            Ok(()) => return true,
            Err(Failure::Failed(error)) => {
                attempts += 1;
                if attempts >= policy.max_attempts {
                    // The DLQ write itself retries while the broker is away.
                    loop {
                        match dead_letters.send(record, policy.name, &error, attempts).await {
                            Ok(()) => {
                                metrics.dead_lettered.get_or_create(label).inc();
                                tracing::error!(
                                    stage = policy.name, partition = record.partition, offset = record.offset,
                                    attempts, %error, "record sent to the DLQ"
                                );
                                return true;
                            }
                            Err(e) => {
                                tracing::warn!(stage = policy.name, error = ?e, "DLQ unavailable; retrying");
                                if !pause(shutdown, policy.max_unavailable_backoff).await {
                                    return false;
                                }
                            }
                        }
                    }
                }
                metrics.retried.get_or_create(label).inc();
                tracing::warn!(stage = policy.name, attempts, %error, "record failed; retrying");
                policy.retry_backoff
            }
            Err(Failure::Unavailable(why)) => {
                tracing::warn!(stage = policy.name, reason = %why, "dependency unavailable; waiting");
                let wait = unavailable_backoff;
                unavailable_backoff = (unavailable_backoff * 2).min(policy.max_unavailable_backoff);
                wait
            }
        };
        if !pause(shutdown, outcome).await {
            return false;
        }
    }
}

/// Sleeps, unless shutdown comes first (false).
async fn pause(shutdown: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}
