//! A producer that replaces itself when it can no longer be trusted to deliver.
//!
//! An idempotent producer carries state the broker must agree with (a producer id and a
//! sequence number per partition). After a broker crash that agreement can be gone for good:
//! brokers without epoch bumping (KIP-360; tansu among them) answer a producer they knew
//! before with errors, or not at all, and one of them (tansu 0.6) can even wedge on it. A
//! fresh producer starts a fresh id and sequence, and costs one `InitProducerId` round trip.
//!
//! So [`SharedProducer`] replaces its producer when
//! - every broker connection was lost (the broker may come back without the producer's state),
//! - the producer reports a fatal error (the client refuses to produce from then on), or
//! - sends have gone unacknowledged for [`STALL_LIMIT`] although the broker is reachable
//!   (twice as long after each such replacement, up to [`MAX_STALL_LIMIT`], until the broker
//!   acknowledges something: a broker that is slow rather than wedged gets time to catch up).
//!
//! Replacing purges what the old producer still held: those records were never acknowledged,
//! so their senders retry them (ingest's clients resend; stages retry the record), and the
//! consumers downstream deduplicate by (tenant, event id). On a real Kafka cluster the same
//! rules hold and cost little: a replacement happens only after an outage.

use std::{
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use rdkafka::{
    ClientContext,
    error::{KafkaError, RDKafkaErrorCode},
    producer::{FutureProducer, FutureRecord, Producer, PurgeConfig},
    util::Timeout,
};

use crate::{KafkaConfig, Result};

/// How long sends may go unacknowledged before the producer is presumed stuck.
pub const STALL_LIMIT: Duration = Duration::from_secs(5);

/// The longest the stall limit grows to: each replacement for a stall doubles it until the
/// broker acknowledges something, so a broker that is only slow is not made slower by a
/// new producer (and its `InitProducerId`) every few seconds.
pub const MAX_STALL_LIMIT: Duration = Duration::from_secs(60);

/// The least time between two replacements, so an outage costs a few producers, not one per send.
const MIN_REPLACEMENT_INTERVAL: Duration = Duration::from_secs(2);

/// Watches the client's global errors for the loss of every broker connection.
#[derive(Default, Clone)]
pub struct Watch {
    brokers_lost: Arc<AtomicBool>,
}

impl ClientContext for Watch {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.brokers_lost.store(true, Ordering::Relaxed);
        }
        tracing::warn!(error = %error, %reason, "kafka producer");
    }
}

/// One producer and what its watch saw.
struct Inner {
    producer: FutureProducer<Watch>,
    watch: Watch,
}

impl Inner {
    fn new(kafka: &KafkaConfig, client_id: &str) -> Result<Self> {
        let watch = Watch::default();
        Ok(Self { producer: crate::client::producer_with(kafka, client_id, watch.clone())?, watch })
    }
}

/// Why records were not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The broker is down, slow or lost this producer; sending again later is right.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused a record for a reason sending again will not fix.
    #[error("broker rejected a record: {0}")]
    Rejected(#[source] KafkaError),
}

/// An idempotent `acks=all` producer, shared by clones, that replaces itself as the module
/// documentation describes.
#[derive(Clone)]
pub struct SharedProducer {
    state: Arc<State>,
}

struct State {
    kafka: KafkaConfig,
    client_id: String,
    current: RwLock<Arc<Inner>>,
    /// When the current run of unacknowledged sends began.
    stalled_since: Mutex<Option<Instant>>,
    /// How long a run of unacknowledged sends may last: [`STALL_LIMIT`], doubled by each
    /// replacement for a stall, back to [`STALL_LIMIT`] on progress.
    stall_limit: Mutex<Duration>,
    /// Records waiting when last looked at; a shrinking backlog is progress.
    last_backlog: Mutex<usize>,
    last_replaced: Mutex<Instant>,
}

impl State {
    /// The broker acknowledged something: the producer is not stuck.
    fn progressed(&self) {
        *self.stalled_since.lock().unwrap_or_else(PoisonError::into_inner) = None;
        *self.stall_limit.lock().unwrap_or_else(PoisonError::into_inner) = STALL_LIMIT;
    }
}

impl SharedProducer {
    pub fn new(kafka: &KafkaConfig, client_id: &str) -> Result<Self> {
        let producer = Inner::new(kafka, client_id)?;
        Ok(Self {
            state: Arc::new(State {
                kafka: kafka.clone(),
                client_id: client_id.to_owned(),
                current: RwLock::new(Arc::new(producer)),
                stalled_since: Mutex::new(None),
                stall_limit: Mutex::new(STALL_LIMIT),
                last_backlog: Mutex::new(0),
                last_replaced: Mutex::new(Instant::now()),
            }),
        })
    }

    /// The producer to send with, replaced first if it has lost its brokers or failed fatally.
    /// While the brokers stay unreachable (the replacement lost them too), sending fails at
    /// once rather than after the acknowledgement timeout.
    fn producer(&self) -> Result<Arc<Inner>, SendError> {
        let current = self.state.current.read().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some((_, reason)) = current.producer.client().fatal_error() {
            self.replace(&current, &format!("fatal error: {reason}"), true);
        } else if current.watch.brokers_lost.load(Ordering::Relaxed) {
            self.replace(&current, "every broker connection was lost", false);
        } else {
            return Ok(current);
        }
        let current = self.state.current.read().unwrap_or_else(PoisonError::into_inner).clone();
        if current.watch.brokers_lost.load(Ordering::Relaxed) {
            return Err(SendError::Unavailable("no broker is reachable".into()));
        }
        Ok(current)
    }

    /// Replaces `failed` if it is still the current producer (and, unless `now`, if the last
    /// replacement is not too recent). True if it was replaced.
    fn replace(&self, failed: &Arc<Inner>, reason: &str, now: bool) -> bool {
        let mut last = self.state.last_replaced.lock().unwrap_or_else(PoisonError::into_inner);
        if !now && last.elapsed() < MIN_REPLACEMENT_INTERVAL {
            return false;
        }
        let mut slot = self.state.current.write().unwrap_or_else(PoisonError::into_inner);
        if !Arc::ptr_eq(&slot, failed) {
            return false;
        }
        match Inner::new(&self.state.kafka, &self.state.client_id) {
            Ok(fresh) => {
                tracing::warn!(client = %self.state.client_id, %reason, "producer replaced");
                let old = std::mem::replace(&mut *slot, Arc::new(fresh));
                *last = Instant::now();
                *self.state.stalled_since.lock().unwrap_or_else(PoisonError::into_inner) = None;
                // What it still holds fails now, so its senders retry with the new one.
                old.producer.purge(PurgeConfig::default().queue().inflight());
                // Dropping a producer waits for its queue; not on an async worker.
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => drop(runtime.spawn_blocking(move || drop(old))),
                    Err(_) => drop(old),
                }
                true
            }
            Err(e) => {
                tracing::error!(client = %self.state.client_id, error = %e, %reason, "producer cannot be replaced");
                false
            }
        }
    }

    /// Sends `records` and waits until the broker has acknowledged every one, at most
    /// `ack_timeout`. Records are enqueued in order, so records with one key keep their order.
    pub async fn send_all<'a, K, P>(
        &self,
        records: impl IntoIterator<Item = FutureRecord<'a, K, P>>,
        ack_timeout: Duration,
    ) -> Result<(), SendError>
    where
        K: rdkafka::message::ToBytes + ?Sized + 'a,
        P: rdkafka::message::ToBytes + ?Sized + 'a,
    {
        let producer = self.producer()?;
        let mut deliveries = Vec::new();
        for record in records {
            deliveries.push(producer.producer.send_result(record).map_err(|(e, _)| classify(e))?);
        }
        let mut all = futures_util::future::join_all(deliveries);
        let acks = tokio::select! {
            acks = &mut all => acks,
            _ = tokio::time::sleep(ack_timeout) => {
                // The records may still be delivered; if any is, the broker is making progress.
                let state = self.state.clone();
                tokio::spawn(async move {
                    if all.await.iter().any(|ack| matches!(ack, Ok(Ok(_)))) {
                        state.progressed();
                    }
                });
                self.unacknowledged(&producer);
                return Err(SendError::Unavailable(format!("no acknowledgement within {} ms", ack_timeout.as_millis())));
            }
        };
        for ack in acks {
            match ack {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    if let Some((_, reason)) = producer.producer.client().fatal_error() {
                        self.replace(&producer, &format!("fatal error: {reason}"), true);
                        return Err(SendError::Unavailable(format!("the producer failed fatally: {reason}")));
                    }
                    return Err(classify(e));
                }
                Err(_) => return Err(SendError::Unavailable("the producer was replaced".into())),
            }
        }
        self.state.progressed();
        Ok(())
    }

    /// Sends `records` and answers each one's outcome, waiting at most `ack_timeout` for
    /// all of them (a record not acknowledged by then is [`SendError::Unavailable`]). For
    /// callers that settle records one by one, such as an outbox.
    pub async fn send_each<'a, K, P>(
        &self,
        records: impl IntoIterator<Item = FutureRecord<'a, K, P>>,
        ack_timeout: Duration,
    ) -> Vec<Result<(), SendError>>
    where
        K: rdkafka::message::ToBytes + ?Sized + 'a,
        P: rdkafka::message::ToBytes + ?Sized + 'a,
    {
        let producer = match self.producer() {
            Ok(p) => p,
            Err(e) => return records.into_iter().map(|_| Err(SendError::Unavailable(e.to_string()))).collect(),
        };
        let deliveries: Vec<_> =
            records.into_iter().map(|r| producer.producer.send_result(r).map_err(|(e, _)| classify(e))).collect();
        let deadline = tokio::time::Instant::now() + ack_timeout;
        let mut outcomes = Vec::with_capacity(deliveries.len());
        let (mut acknowledged, mut timed_out) = (false, false);
        for delivery in deliveries {
            let outcome = match delivery {
                Err(e) => Err(e),
                Ok(future) => match tokio::time::timeout_at(deadline, future).await {
                    Ok(Ok(Ok(_))) => {
                        acknowledged = true;
                        Ok(())
                    }
                    Ok(Ok(Err((e, _)))) => Err(classify(e)),
                    Ok(Err(_)) => Err(SendError::Unavailable("the producer was replaced".into())),
                    Err(_) => {
                        timed_out = true;
                        Err(SendError::Unavailable(format!("no acknowledgement within {} ms", ack_timeout.as_millis())))
                    }
                },
            };
            outcomes.push(outcome);
        }
        if acknowledged {
            self.state.progressed();
        } else if timed_out {
            self.unacknowledged(&producer);
        }
        if let Some((_, reason)) = producer.producer.client().fatal_error() {
            self.replace(&producer, &format!("fatal error: {reason}"), true);
        }
        outcomes
    }

    /// Notes a send that got no acknowledgement in time; replaces a producer that has gone
    /// the stall limit without acknowledgement of anything, and doubles the limit.
    fn unacknowledged(&self, producer: &Arc<Inner>) {
        let stalled_for = {
            let mut since = self.state.stalled_since.lock().unwrap_or_else(PoisonError::into_inner);
            since.get_or_insert_with(Instant::now).elapsed()
        };
        let limit = *self.state.stall_limit.lock().unwrap_or_else(PoisonError::into_inner);
        if stalled_for >= limit && self.replace(producer, "no acknowledgement for several seconds", false) {
            let mut limit = self.state.stall_limit.lock().unwrap_or_else(PoisonError::into_inner);
            *limit = (*limit * 2).min(MAX_STALL_LIMIT);
        }
    }

    /// Refuses `incoming` more records while `max` or more would be waiting for the broker:
    /// a broker that is behind gets no more work from requests that would only time out.
    /// A backlog that does not move for the stall limit counts as a stall.
    pub fn ensure_room(&self, incoming: usize, max: usize) -> Result<(), SendError> {
        let producer = self.state.current.read().unwrap_or_else(PoisonError::into_inner).clone();
        let queued = usize::try_from(producer.producer.in_flight_count()).unwrap_or(0);
        let shrinking = {
            let mut last = self.state.last_backlog.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::replace(&mut *last, queued) > queued
        };
        if queued + incoming <= max {
            return Ok(());
        }
        if shrinking {
            self.state.progressed();
        } else {
            self.unacknowledged(&producer);
        }
        Err(SendError::Unavailable(format!("the broker is behind ({queued} records waiting)")))
    }

    /// Waits up to `timeout` for queued records to be delivered (before shutting down).
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        let producer = self.state.current.read().unwrap_or_else(PoisonError::into_inner).clone();
        producer.producer.flush(Timeout::After(timeout))?;
        Ok(())
    }
}

/// Whether a failed send is worth repeating.
pub fn classify(e: KafkaError) -> SendError {
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
            | RDKafkaErrorCode::PurgeQueue
            | RDKafkaErrorCode::PurgeInflight
            | RDKafkaErrorCode::OutOfOrderSequenceNumber
            | RDKafkaErrorCode::UnknownProducerId
            // The broker failed without saying why: its problem, maybe passing, not the record's.
            | RDKafkaErrorCode::Unknown,
        ) => SendError::Unavailable(e.to_string()),
        _ => SendError::Rejected(e),
    }
}
