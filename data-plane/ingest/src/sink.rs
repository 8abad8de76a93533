//! Where accepted events go. Ingest answers `202` only after the sink has durably taken
//! every event of the batch; otherwise the client is told to retry and nothing is claimed.

use std::{future::Future, pin::Pin, time::Duration};

use nudge_contracts::headers::SEALED_V1;
use nudge_platform_kafka::{KafkaConfig, SendError, SharedProducer, headers::HeaderValues};
use nudge_platform_telemetry::TraceContext;
use rdkafka::{error::KafkaError, producer::FutureRecord};

/// One record for `events.raw`.
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// Encoded `SubjectKey` (tenant and subject digest).
    pub key: Vec<u8>,
    /// Encoded `Sealed` holding an `Event`.
    pub value: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The broker is down or too slow; retrying later is right.
    #[error("event broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused a record for a reason retrying will not fix.
    #[error("event broker rejected a record: {0}")]
    Rejected(#[source] KafkaError),
}

pub type SinkFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

/// The port ingest hands validated events to.
pub trait EventSink: Send + Sync {
    /// Resolves once every record is durably stored, or fails as a whole.
    fn publish(&self, records: Vec<EventRecord>, trace: Option<TraceContext>) -> SinkFuture<'_>;
}

/// Publishes to `events.raw` through a [`SharedProducer`] (idempotent, `acks=all`), which
/// replaces itself when the broker lost its state; a request that meets such a moment is
/// answered 503 and its client sends the batch again.
pub struct KafkaSink {
    producer: SharedProducer,
    topic: String,
    ack_timeout: Duration,
    max_queued: usize,
}

impl KafkaSink {
    /// `ack_timeout` bounds how long a request waits for the broker before answering 503;
    /// `max_queued` bounds the records waiting for it (beyond it, 503 at once).
    pub fn new(
        kafka: &KafkaConfig,
        client_id: &str,
        topic: String,
        ack_timeout: Duration,
        max_queued: usize,
    ) -> nudge_platform_kafka::Result<Self> {
        // A batch refused with 503 after `ack_timeout` may still be delivered: the producer
        // keeps retrying for `kafka.message_timeout_ms`. Cutting that short is not the cure:
        // an idempotent producer that abandons records leaves a sequence gap that brokers
        // without epoch bumping (KIP-360; tansu among them) refuse from then on. So clients
        // resend with the same event ids, and consumers deduplicate by (tenant, event id).
        Ok(Self { producer: SharedProducer::new(kafka, client_id)?, topic, ack_timeout, max_queued })
    }
}

fn sink_error(e: SendError) -> SinkError {
    match e {
        SendError::Unavailable(why) => SinkError::Unavailable(why),
        SendError::Rejected(e) => SinkError::Rejected(e),
    }
}

impl EventSink for KafkaSink {
    fn publish(&self, records: Vec<EventRecord>, trace: Option<TraceContext>) -> SinkFuture<'_> {
        Box::pin(async move {
            // Bounded: a broker that is behind gets no more work from requests that would
            // only time out, and their retries would add to the backlog.
            self.producer.ensure_room(records.len(), self.max_queued).map_err(sink_error)?;
            let headers = HeaderValues::new(SEALED_V1, trace.as_ref());
            let out = records.iter().map(|record| {
                FutureRecord::<'_, [u8], [u8]>::to(&self.topic)
                    .key(record.key.as_slice())
                    .payload(record.value.as_slice())
                    .headers(headers.headers())
            });
            self.producer.send_all(out, self.ack_timeout).await.map_err(sink_error)
        })
    }
}
