//! Where accepted events go. Ingest answers `202` only after the sink has durably taken
//! every event of the batch; otherwise the client is told to retry and nothing is claimed.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use nudge_contracts::headers::EVENT_V1;
use nudge_platform_kafka::{KafkaConfig, headers::record_headers};
use nudge_platform_telemetry::TraceContext;
use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    producer::{FutureProducer, FutureRecord, Producer},
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
///
/// An idempotent producer can hit a fatal error (the broker lost its producer state, for
/// instance after losing its data); from then on it refuses every record. The sink notices,
/// answers that request with 503, and replaces the producer so the next request can succeed.
pub struct KafkaSink {
    producer: RwLock<Arc<FutureProducer>>,
    kafka: KafkaConfig,
    client_id: String,
    topic: String,
    ack_timeout: Duration,
}

impl KafkaSink {
    /// `ack_timeout` bounds how long a request waits for the broker before answering 503.
    pub fn new(
        kafka: &KafkaConfig,
        client_id: &str,
        topic: String,
        ack_timeout: Duration,
    ) -> nudge_platform_kafka::Result<Self> {
        // A batch refused with 503 after `ack_timeout` may still be delivered: the producer
        // keeps retrying for `kafka.message_timeout_ms`. Cutting that short is not the cure:
        // an idempotent producer that abandons records leaves a sequence gap that brokers
        // without epoch bumping (KIP-360; tansu among them) refuse from then on. So clients
        // resend with the same event ids, and consumers deduplicate by (tenant, event id).
        let kafka = kafka.clone();
        let producer = nudge_platform_kafka::producer(&kafka, client_id)?;
        Ok(Self {
            producer: RwLock::new(Arc::new(producer)),
            kafka,
            client_id: client_id.to_owned(),
            topic,
            ack_timeout,
        })
    }

    fn current(&self) -> Arc<FutureProducer> {
        self.producer.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Replaces `failed` (if it is still the current producer) with a fresh one.
    fn replace(&self, failed: &Arc<FutureProducer>, reason: &str) {
        let mut slot = self.producer.write().unwrap_or_else(PoisonError::into_inner);
        if !Arc::ptr_eq(&slot, failed) {
            return;
        }
        match nudge_platform_kafka::producer(&self.kafka, &self.client_id) {
            Ok(fresh) => {
                tracing::error!(%reason, "event producer hit a fatal error; replaced it");
                *slot = Arc::new(fresh);
            }
            Err(e) => tracing::error!(error = %e, %reason, "event producer failed fatally and cannot be replaced"),
        }
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
            | RDKafkaErrorCode::NotLeaderForPartition
            // The broker failed without saying why: its problem, maybe passing, not the request's.
            | RDKafkaErrorCode::Unknown,
        ) => SinkError::Unavailable(e.to_string()),
        _ => SinkError::Rejected(e),
    }
}

impl EventSink for KafkaSink {
    fn publish(&self, records: Vec<EventRecord>, trace: Option<TraceContext>) -> SinkFuture<'_> {
        Box::pin(async move {
            let producer = self.current();
            if let Some((_, reason)) = producer.client().fatal_error() {
                self.replace(&producer, &reason);
                return Err(SinkError::Unavailable(format!("producer failed fatally: {reason}")));
            }
            let mut deliveries = Vec::with_capacity(records.len());
            for record in &records {
                let headers = record_headers(EVENT_V1, trace.as_ref());
                let r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
                    .key(record.key.as_slice())
                    .payload(record.value.as_slice())
                    .headers(headers);
                let delivery = producer.send_result(r).map_err(|(e, _)| classify(e))?;
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
                    Ok(Err((e, _))) => {
                        if let Some((_, reason)) = producer.client().fatal_error() {
                            self.replace(&producer, &reason);
                            return Err(SinkError::Unavailable(format!("producer failed fatally: {reason}")));
                        }
                        return Err(classify(e));
                    }
                    Err(_) => return Err(SinkError::Unavailable("producer shut down".into())),
                }
            }
            Ok(())
        })
    }
}
