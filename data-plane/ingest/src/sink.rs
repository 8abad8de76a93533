//! Where accepted events go. Ingest answers `202` only after the sink has durably taken
//! every event of the batch; otherwise the client is told to retry and nothing is claimed.

use std::{future::Future, pin::Pin, time::Duration};

use nudge_contracts::headers::EVENT_V1;
use nudge_platform_kafka::headers::record_headers;
use nudge_platform_telemetry::TraceContext;
use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    producer::{FutureProducer, FutureRecord},
};

/// One record for `events.raw`.
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// Encoded `ShopperKey`.
    pub key: Vec<u8>,
    /// Encoded `Event`.
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

/// Publishes to `events.raw` with an idempotent `acks=all` producer.
pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
    ack_timeout: Duration,
}

impl KafkaSink {
    /// `ack_timeout` bounds how long a request waits for the broker before answering 503.
    pub fn new(producer: FutureProducer, topic: String, ack_timeout: Duration) -> Self {
        Self { producer, topic, ack_timeout }
    }
}

fn classify(e: KafkaError) -> SinkError {
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::QueueFull
            | RDKafkaErrorCode::MessageTimedOut
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::NotEnoughReplicas
            | RDKafkaErrorCode::NotEnoughReplicasAfterAppend
            | RDKafkaErrorCode::LeaderNotAvailable
            | RDKafkaErrorCode::NotLeaderForPartition,
        ) => SinkError::Unavailable(e.to_string()),
        _ => SinkError::Rejected(e),
    }
}

impl EventSink for KafkaSink {
    fn publish(&self, records: Vec<EventRecord>, trace: Option<TraceContext>) -> SinkFuture<'_> {
        Box::pin(async move {
            let mut deliveries = Vec::with_capacity(records.len());
            for record in &records {
                let headers = record_headers(EVENT_V1, trace.as_ref());
                let r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
                    .key(record.key.as_slice())
                    .payload(record.value.as_slice())
                    .headers(headers);
                let delivery = self.producer.send_result(r).map_err(|(e, _)| classify(e))?;
                deliveries.push(delivery);
            }
            let acks = tokio::time::timeout(self.ack_timeout, futures_util::future::join_all(deliveries))
                .await
                .map_err(|_| {
                    SinkError::Unavailable(format!("no acknowledgement within {} ms", self.ack_timeout.as_millis()))
                })?;
            for ack in acks {
                match ack {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => return Err(classify(e)),
                    Err(_) => return Err(SinkError::Unavailable("producer shut down".into())),
                }
            }
            Ok(())
        })
    }
}
