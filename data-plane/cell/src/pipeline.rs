//! The scoring pipeline: `events.raw` → session features (Redis) → model → decision →
//! intervention routed to the shopper's socket.
//!
//! Records of one shopper share a partition and are handled in order. An offset is stored
//! for commit only after the record's effects are written, so a crash replays rather than
//! loses. The session (with the time of the last intervention) is saved before the
//! intervention is published: a replay after a crash can then miss a reminder, but never
//! sends the shopper a second one.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use futures_util::StreamExt;
use nudge_contracts::{
    InterventionId, ShopperId,
    proto::{events::v1::Event, interventions::v1::Intervention},
};
use nudge_data_plane_decide::{RuleConfig, decide};
use nudge_data_plane_features::store::{SessionKey, SessionStore, StoreError};
use nudge_data_plane_gateway::route::InterventionPublisher;
use nudge_data_plane_inference::{Model, ModelError};
use nudge_platform_kafka::headers::trace_of;
use nudge_platform_telemetry::{Metrics, TraceContext};
use nudge_tenants::TenantId;
use prometheus_client::metrics::{counter::Counter, histogram::Histogram};
use prost::Message as _;
use rdkafka::{
    Message,
    consumer::{Consumer, StreamConsumer},
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Pipeline counters.
#[derive(Clone)]
pub struct PipelineMetrics {
    processed: Counter,
    skipped: Counter,
    interventions: Counter,
    retries: Counter,
    failed: Counter,
    lost: Counter,
    scores: Histogram,
}

impl PipelineMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self {
            processed: Counter::default(),
            skipped: Counter::default(),
            interventions: Counter::default(),
            retries: Counter::default(),
            failed: Counter::default(),
            lost: Counter::default(),
            scores: Histogram::new([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]),
        };
        let mut r = metrics.registry();
        r.register("pipeline_events_processed", "Events scored and decided", m.processed.clone());
        r.register("pipeline_events_skipped", "Records that could not be decoded", m.skipped.clone());
        r.register("pipeline_interventions", "Interventions published", m.interventions.clone());
        r.register("pipeline_retries", "Failed attempts retried", m.retries.clone());
        r.register("pipeline_events_failed", "Events skipped after failing the same way repeatedly", m.failed.clone());
        r.register("pipeline_interventions_lost", "Interventions that could not be routed", m.lost.clone());
        r.register("pipeline_scores", "Abandonment probabilities", m.scores.clone());
        m
    }
}

#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl StepError {
    /// Whether waiting can fix it (Redis unreachable or slow). Anything else (a key of the
    /// wrong type, a model that cannot score) fails the same way every time.
    fn is_transient(&self) -> bool {
        match self {
            Self::Store(StoreError::Redis(e)) => {
                e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
            }
            Self::Model(_) => false,
        }
    }
}

/// Attempts at a record that fails the same way every time before it is set aside, so one
/// bad record cannot stall every tenant behind it.
const MAX_PERMANENT_ATTEMPTS: u32 = 3;

/// The pipeline's parts.
pub struct Pipeline {
    pub consumer: StreamConsumer,
    pub sessions: SessionStore,
    pub model: Arc<Model>,
    pub rule: RuleConfig,
    pub publisher: InterventionPublisher,
    pub metrics: PipelineMetrics,
}

impl Pipeline {
    /// Consumes until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut stream = self.consumer.stream();
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => break,
                m = stream.next() => m,
            };
            let message = match next {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "reading events.raw");
                    continue;
                }
                Some(Ok(m)) => m,
            };
            let trace = trace_of(message.headers());
            let span = tracing::info_span!("pipeline", trace_id = %trace.trace_id(), tenant_id = tracing::field::Empty);
            let handled = self.handle(message.payload().unwrap_or_default(), trace, &shutdown).instrument(span).await;
            if !handled {
                break;
            }
            if let Err(e) = self.consumer.store_offset_from_message(&message) {
                tracing::error!(error = %e, "storing offset");
            }
        }
        drop(stream);
        // Commit what is done before leaving the group.
        if let Err(e) = self.consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
            tracing::debug!(error = %e, "final offset commit");
        }
    }

    /// Handles one record, retrying transient failures. False when shutdown interrupted it
    /// (the offset must not be stored).
    async fn handle(&self, payload: &[u8], trace: TraceContext, shutdown: &CancellationToken) -> bool {
        let event = match Event::decode(payload) {
            Ok(e) => e,
            Err(e) => {
                self.metrics.skipped.inc();
                tracing::error!(error = %e, "undecodable event skipped");
                return true;
            }
        };
        let (Ok(tenant), Ok(shopper)) = (event.tenant_id.parse::<TenantId>(), ShopperId::parse(&event.shopper_id))
        else {
            self.metrics.skipped.inc();
            tracing::error!(event_id = %event.event_id, "event with invalid tenant or shopper id skipped");
            return true;
        };
        tracing::Span::current().record("tenant_id", tracing::field::display(tenant));
        let key = SessionKey { tenant, shopper };
        let mut backoff = Duration::from_millis(50);
        let mut permanent_failures = 0;
        loop {
            match self.step(&key, &event, &trace).await {
                Ok(intervention) => {
                    self.metrics.processed.inc();
                    if let Some(iv) = intervention {
                        self.publish(&iv, shutdown).await;
                    }
                    return true;
                }
                Err(e) if !e.is_transient() && permanent_failures + 1 >= MAX_PERMANENT_ATTEMPTS => {
                    // Set aside with its cause; the DLQ (issue 4) will keep it for replay.
                    self.metrics.failed.inc();
                    tracing::error!(error = %e, event_id = %event.event_id, "event failed repeatedly; skipped");
                    return true;
                }
                Err(e) => {
                    if !e.is_transient() {
                        permanent_failures += 1;
                    }
                    self.metrics.retries.inc();
                    tracing::warn!(error = %e, event_id = %event.event_id, "pipeline step failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Updates the session and decides. The session is saved before anything is sent, so a
    /// retry of this step never applies an event twice once it has succeeded.
    async fn step(
        &self,
        key: &SessionKey,
        event: &Event,
        trace: &TraceContext,
    ) -> Result<Option<Intervention>, StepError> {
        let mut session = self.sessions.load(key).await?;
        let features = session.apply(event);
        let score = self.model.score(&[features])?.first().copied().unwrap_or(0.0);
        self.metrics.scores.observe(f64::from(score));
        let decision = decide(&self.rule, event, &session, score);
        if decision.is_ok() {
            session.last_intervention_ms = event.occurred_at_ms;
        }
        self.sessions.save(key, &session).await?;
        Ok(match decision {
            Ok(action) => Some(Intervention {
                intervention_id: InterventionId::new().to_string(),
                tenant_id: key.tenant.to_string(),
                shopper_id: key.shopper.to_string(),
                kind: action.kind.to_owned(),
                title: action.title,
                body: action.body,
                score: f64::from(score),
                model_version: self.model.version().to_owned(),
                cause_event_id: event.event_id.clone(),
                decided_at_ms: Utc::now().timestamp_millis(),
                traceparent: trace.to_header(),
            }),
            Err(hold) => {
                tracing::debug!(?hold, score, event_id = %event.event_id, "no intervention");
                None
            }
        })
    }

    /// Publishes with a few quick retries. An on-site message is worth sending only while the
    /// shopper is still on the page, so after that it is counted as lost and logged.
    async fn publish(&self, iv: &Intervention, shutdown: &CancellationToken) {
        for attempt in 1..=3u32 {
            match self.publisher.publish(iv).await {
                Ok(receivers) => {
                    self.metrics.interventions.inc();
                    tracing::info!(
                        intervention_id = %iv.intervention_id, score = iv.score, receivers,
                        event_id = %iv.cause_event_id, "intervention decided"
                    );
                    return;
                }
                Err(e) if attempt < 3 => {
                    tracing::warn!(error = %e, attempt, "publishing intervention failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))) => {}
                    }
                }
                Err(e) => tracing::error!(error = %e, intervention_id = %iv.intervention_id, "intervention lost"),
            }
        }
        self.metrics.lost.inc();
    }
}
