//! The scoring stage: `events.validated` → session features (Redis) → model → decision →
//! intervention routed to the shopper's socket, with `features.v1`, `predictions.v1` and
//! `interventions.commands` records along the way.
//!
//! Records arrive sealed with the shopper's data key and leave sealed (`crate::sealing`);
//! a record whose key is gone (the shopper was erased meanwhile) is skipped and counted.
//!
//! Effects happen once per (tenant, event id). Records of one shopper share a partition and
//! are handled in order; a replayed record (after a crash or rebalance) is recognised by its
//! applied marker and skipped. The order of a step is chosen so a crash at any point neither
//! loses an effect nor repeats it:
//!
//! 1. skip if the event was applied already;
//! 2. compute the new session, the score and the decision;
//! 3. produce the output records and wait for the broker (a replay may produce them again:
//!    they carry the event id, and the intervention id is derived from it);
//! 4. in one Redis script, mark the event applied, write the session, count it and set or
//!    clear the shopper's idle-cart timer (see `idle.rs`);
//! 5. route the intervention to the shopper's socket.

use std::sync::Arc;

use chrono::Utc;
use nudge_contracts::{
    InterventionId, ShopperId, email_digest,
    headers::EVENT_V1,
    headers::{FEATURES_V1, INTERVENTION_V1, PREDICTION_V1, SEALED_V1, SchemaRef},
    proto::{
        events::v1::{Event, event::Payload},
        features::v1::FeatureSnapshot,
        interventions::v1::Intervention,
        predictions::v1::Prediction,
    },
};
use nudge_data_plane_decide::{
    RuleConfig,
    campaigns::{CampaignDecision, ShopperMoment, Skip, decide_campaigns},
    decide,
};
use nudge_data_plane_directory::Directory;
use nudge_data_plane_features::{
    FEATURE_NAMES, SessionState,
    store::{IdleTimer, SessionKey, SessionStore, StoreError},
};
use nudge_data_plane_gateway::{hub::ShopperAddress, route::InterventionPublisher};
use nudge_data_plane_inference::{ModelSet, Scorers};
use nudge_data_plane_ingest::usage::{Drop, UsageCounters};
use nudge_data_plane_keyring::{KeyError, Keyring};
use nudge_platform_kafka::{
    SharedProducer,
    headers::record_headers,
    stage::{Failure, Handler, HandlerFuture, OUTPUT_ACK_TIMEOUT, Record},
};
use nudge_platform_telemetry::{Metrics, TraceContext};
use nudge_tenants::TenantId;
use prometheus_client::metrics::{counter::Counter, histogram::Histogram};
use prost::Message;
use rdkafka::producer::FutureRecord;
use uuid::Uuid;

/// Pipeline counters.
#[derive(Clone)]
pub struct PipelineMetrics {
    processed: Counter,
    duplicates: Counter,
    interventions: Counter,
    lost: Counter,
    idle_carts: Counter,
    idle_stale: Counter,
    model_fallbacks: Counter,
    features_defaulted: Counter,
    shadow_scores: Counter,
    campaign_control: Counter,
    scores: Histogram,
}

impl PipelineMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self {
            processed: Counter::default(),
            duplicates: Counter::default(),
            interventions: Counter::default(),
            lost: Counter::default(),
            idle_carts: Counter::default(),
            idle_stale: Counter::default(),
            model_fallbacks: Counter::default(),
            features_defaulted: Counter::default(),
            shadow_scores: Counter::default(),
            campaign_control: Counter::default(),
            scores: Histogram::new([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]),
        };
        let mut r = metrics.registry();
        r.register("pipeline_events_processed", "Events whose effects were applied", m.processed.clone());
        r.register("pipeline_events_duplicate", "Replayed events skipped (already applied)", m.duplicates.clone());
        r.register("pipeline_interventions", "Interventions routed to sockets", m.interventions.clone());
        r.register(
            "pipeline_campaign_control",
            "Moments a campaign would have sent at, held back for its control group",
            m.campaign_control.clone(),
        );
        r.register("pipeline_interventions_lost", "Interventions that could not be routed", m.lost.clone());
        r.register("pipeline_carts_idle", "Carts found idle (server-side abandonment detection)", m.idle_carts.clone());
        r.register(
            "pipeline_carts_idle_stale",
            "Idle-cart events dropped because the shopper was active after the timer fired",
            m.idle_stale.clone(),
        );
        r.register(
            "pipeline_model_fallbacks",
            "Events of tenants assigned a model this cell does not hold, scored with the default",
            m.model_fallbacks.clone(),
        );
        r.register(
            "pipeline_features_defaulted",
            "Features scored at their declared default because the stored session lacked a field they come from",
            m.features_defaulted.clone(),
        );
        r.register(
            "pipeline_shadow_scores",
            "Scores by a shadow model, logged and not acted on",
            m.shadow_scores.clone(),
        );
        r.register("pipeline_scores", "Abandonment probabilities", m.scores.clone());
        m
    }
}

/// Topics the stage writes.
#[derive(Debug, Clone)]
pub struct OutputTopics {
    pub features: String,
    pub predictions: String,
    pub interventions: String,
}

/// The scoring stage's parts.
pub struct Pipeline {
    pub sessions: SessionStore,
    /// The models by version; each tenant is scored with the one its record names.
    pub models: Arc<ModelSet>,
    /// A micro-batching worker per model: concurrent steps share scoring calls.
    pub scorers: Arc<Scorers>,
    pub directory: Arc<Directory>,
    /// Opens the events and seals the outputs.
    pub keyring: Arc<Keyring>,
    pub rule: RuleConfig,
    /// The stores' active campaigns; a store with none gets the default rule.
    pub campaigns: Arc<crate::campaigns::CampaignBook>,
    pub publisher: InterventionPublisher,
    pub producer: SharedProducer,
    pub topics: OutputTopics,
    pub usage: Arc<UsageCounters>,
    pub metrics: PipelineMetrics,
}

fn store_failure(e: StoreError) -> Failure {
    let StoreError::Redis(ref r) = e;
    if r.is_io_error() || r.is_timeout() || r.is_connection_dropped() || r.is_connection_refusal() {
        Failure::Unavailable(e.to_string())
    } else {
        Failure::Failed(e.to_string())
    }
}

/// The intervention id for an event: derived, so a replay routes the same id and the
/// snippet shows it once.
fn intervention_id(tenant: TenantId, event_id: &str) -> InterventionId {
    InterventionId::from_uuid(Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("{tenant}/{event_id}").as_bytes()))
}

/// What the decision sends.
struct Chosen {
    kind: String,
    title: String,
    body: String,
    /// The campaign, its version and variant; `None` for the default rule.
    campaign: Option<(String, i32, String)>,
}

impl Pipeline {
    /// Decides for the shopper at this moment: with the store's active campaigns, or the
    /// default rule when it has none. Every campaign send skipped is logged with its reason.
    fn decide(
        &self,
        tenant: TenantId,
        shopper: &str,
        event: &Event,
        session: &mut SessionState,
        features: &nudge_data_plane_features::FeatureVector,
        score: f32,
    ) -> Option<Chosen> {
        let campaigns = self.campaigns.of(tenant);
        if campaigns.is_empty() {
            return match decide(&self.rule, event, session, score) {
                Ok(action) => Some(Chosen {
                    kind: action.kind.to_owned(),
                    title: action.title,
                    body: action.body,
                    campaign: None,
                }),
                Err(hold) => {
                    tracing::debug!(?hold, score, "no intervention");
                    None
                }
            };
        }
        let tenant_text = tenant.to_string();
        let moment = ShopperMoment { tenant: &tenant_text, shopper, event, session, features, score };
        match decide_campaigns(&campaigns, &moment, self.rule.cooldown_ms) {
            CampaignDecision::Send(m) => Some(Chosen {
                kind: m.kind.to_owned(),
                title: m.title,
                body: m.body,
                campaign: Some((m.campaign_id, m.version, m.variant)),
            }),
            CampaignDecision::Control { campaign_id, version } => {
                // Held back as if sent, so the control group's exposure matches.
                session.last_intervention_ms = event.occurred_at_ms;
                self.metrics.campaign_control.inc();
                tracing::info!(tenant_id = %tenant, %campaign_id, version, reason = "control_group", "campaign send skipped");
                None
            }
            CampaignDecision::Nothing(skip @ Skip::NoOnSiteMessage { .. }) => {
                if let Skip::NoOnSiteMessage { campaign_id, variant } = &skip {
                    tracing::info!(tenant_id = %tenant, %campaign_id, %variant, reason = skip.reason(), "campaign send skipped");
                }
                None
            }
            CampaignDecision::Nothing(skip) => {
                tracing::debug!(tenant_id = %tenant, reason = skip.reason(), "campaign send skipped");
                None
            }
        }
    }
}

impl Handler for Pipeline {
    fn handle<'a>(&'a self, record: &'a Record<'a>) -> HandlerFuture<'a> {
        Box::pin(async move {
            let payload = record.payload.ok_or_else(|| Failure::Failed("the record has no value".into()))?;
            let (tenant, sealed) = crate::sealing::envelope(payload)?;
            if self.directory.by_tenant(tenant).is_some_and(|t| t.is_suppressed_subject(&sealed.subject_digest)) {
                // Suppressed after ingest accepted the event: nothing of it is stored or acted
                // on (the cell is erasing what it held). Not even opened.
                self.usage.dropped(tenant, Drop::Suppressed, 1);
                return Ok(());
            }
            let Some(opened) = crate::sealing::open::<Event>(&self.keyring, &sealed, EVENT_V1).await? else {
                // The shopper's data key was erased: the event is unreadable, by design.
                self.usage.dropped(tenant, Drop::Suppressed, 1);
                return Ok(());
            };
            let event = opened.message;
            let Ok(shopper) = ShopperId::parse(&event.shopper_id) else {
                return Err(Failure::Failed("invalid shopper id".into()));
            };
            if event.tenant_id != sealed.tenant_id {
                return Err(Failure::Failed("the event is not the tenant's its envelope names".into()));
            }
            self.step(&event, SessionKey { tenant, shopper }, &opened.subject_digest, &record.trace).await
        })
    }
}

impl Pipeline {
    async fn step(&self, event: &Event, key: SessionKey, subject: &str, trace: &TraceContext) -> Result<(), Failure> {
        if self.sessions.already_applied(&key, &event.event_id).await.map_err(store_failure)? {
            self.metrics.duplicates.inc();
            // The store's duplicate count is of what it sent; a cart_idle is the cell's own.
            if !matches!(event.payload, Some(Payload::CartIdle(_))) {
                self.usage.dropped(key.tenant, Drop::Duplicate, 1);
            }
            return Ok(());
        }
        let tenant = self.directory.by_tenant(key.tenant);
        // The e-mail address an identify names, by its digest in this store.
        let email = match &event.payload {
            Some(Payload::Identify(i)) if !i.email_sha256.is_empty() => {
                Some(email_digest(key.tenant.as_uuid(), &i.email_sha256))
            }
            _ => None,
        };
        if let Some(email) = &email
            && tenant.as_ref().is_some_and(|t| t.is_suppressed_email_digest(email))
        {
            // The address was erased after ingest accepted the event: it links nothing.
            self.usage.dropped(key.tenant, Drop::Suppressed, 1);
            return Ok(());
        }
        let mut session = self.sessions.load(&key).await.map_err(store_failure)?;
        if let Some(Payload::CartIdle(idle)) = &event.payload
            && (session.last_seen_ms != idle.last_activity_ms || !session.has_open_cart())
        {
            // The scanner saw a timer this shopper has since moved on from (an event it had
            // not yet applied): not abandonment.
            self.metrics.idle_stale.inc();
            return Ok(());
        }
        let features = session.apply(event);
        let defaulted = session.defaulted();
        if defaulted > 0 {
            self.metrics.features_defaulted.inc_by(defaulted as u64);
            tracing::warn!(tenant_id = %key.tenant, defaulted, "a stored session lacked fields; their features took their declared defaults");
        }
        let assigned = tenant.as_ref().and_then(|t| t.model_version.as_deref());
        let rollout = tenant.as_ref().and_then(|t| t.rollout.as_ref());
        let routing = self.models.route(key.tenant, key.shopper.as_str(), assigned, rollout);
        if routing.fell_back {
            self.metrics.model_fallbacks.inc();
            tracing::warn!(tenant_id = %key.tenant, ?assigned, "a model the tenant names is not held here; scoring without it");
        }
        let model = &routing.acting;
        let scoring = |e: nudge_data_plane_inference::ModelError| Failure::Failed(format!("scoring: {e}"));
        let score = self.scorers.score(model, features).await.map_err(scoring)?;
        let shadow = match &routing.shadow {
            Some(m) => Some((m.version().to_owned(), self.scorers.score(m, features).await.map_err(scoring)?)),
            None => None,
        };
        self.metrics.scores.observe(f64::from(score));
        let decided = self.decide(key.tenant, key.shopper.as_str(), event, &mut session, &features, score);
        let intervention = decided.map(|chosen| {
            session.last_intervention_ms = event.occurred_at_ms;
            let (campaign_id, campaign_version, variant) = chosen.campaign.unwrap_or_default();
            Intervention {
                intervention_id: intervention_id(key.tenant, &event.event_id).to_string(),
                tenant_id: key.tenant.to_string(),
                shopper_id: key.shopper.to_string(),
                kind: chosen.kind,
                title: chosen.title,
                body: chosen.body,
                score: f64::from(score),
                model_version: model.version().to_owned(),
                cause_event_id: event.event_id.clone(),
                decided_at_ms: Utc::now().timestamp_millis(),
                traceparent: trace.to_header(),
                campaign_id,
                campaign_version,
                variant,
            }
        });

        // Outputs first: a crash after them replays the step, never skips them.
        let subject_key = crate::sealing::record_key(key.tenant, subject);
        let now = Utc::now().timestamp_millis();
        let snapshot = FeatureSnapshot {
            tenant_id: key.tenant.to_string(),
            shopper_id: key.shopper.to_string(),
            names: FEATURE_NAMES.iter().map(|n| (*n).to_owned()).collect(),
            values: features.to_vec(),
            event_id: event.event_id.clone(),
            as_of_ms: event.occurred_at_ms,
        };
        let prediction = Prediction {
            tenant_id: key.tenant.to_string(),
            shopper_id: key.shopper.to_string(),
            event_id: event.event_id.clone(),
            score: f64::from(score),
            model_version: model.version().to_owned(),
            scored_at_ms: now,
            shadow: false,
        };
        let keyring = &self.keyring;
        let mut plain: Vec<(&String, SchemaRef, Vec<u8>)> = vec![
            (&self.topics.features, FEATURES_V1, snapshot.encode_to_vec()),
            (&self.topics.predictions, PREDICTION_V1, prediction.encode_to_vec()),
        ];
        if let Some((version, shadow_score)) = shadow {
            let logged =
                Prediction { score: f64::from(shadow_score), model_version: version, shadow: true, ..prediction };
            plain.push((&self.topics.predictions, PREDICTION_V1, logged.encode_to_vec()));
        }
        if let Some(iv) = &intervention {
            plain.push((&self.topics.interventions, INTERVENTION_V1, iv.encode_to_vec()));
        }
        let mut outputs = Vec::with_capacity(plain.len());
        for (topic, schema, bytes) in plain {
            match keyring.seal(key.tenant, subject, schema.name, &bytes).await {
                Ok(sealed) => outputs.push((topic, sealed.encode_to_vec())),
                Err(KeyError::Shredded) => {
                    // Suppressed or erased while this event was being scored: nothing of it
                    // is written or acted on.
                    self.usage.dropped(key.tenant, Drop::Suppressed, 1);
                    return Ok(());
                }
                Err(e) => return Err(crate::sealing::failure(e)),
            }
        }
        self.produce(&subject_key, outputs, trace).await?;

        // The effect, once. An idle-cart event is not activity: the timer it came from is
        // settled by the scanner; any other event restarts the timer or, with an empty
        // cart, clears it.
        let idle = matches!(event.payload, Some(Payload::CartIdle(_)));
        let timer = match (idle, session.has_open_cart()) {
            (true, _) => IdleTimer::Keep,
            (false, true) => IdleTimer::Set { last_activity_ms: session.last_seen_ms },
            (false, false) => IdleTimer::Clear,
        };
        // An address erased while this event was being scored links nothing. The link comes
        // before the effect is marked applied, so a crash between them links again.
        if let Some(email) = &email
            && !self.directory.by_tenant(key.tenant).is_some_and(|t| t.is_suppressed_email_digest(email))
        {
            let ttl = i64::try_from(self.keyring.key_lifetime_seconds(key.tenant)).unwrap_or(i64::MAX);
            self.sessions.link_email(key.tenant, subject, email, ttl).await.map_err(store_failure)?;
        }
        if !self.sessions.commit(&key, &event.event_id, &session, timer).await.map_err(store_failure)? {
            self.metrics.duplicates.inc();
            return Ok(());
        }
        self.metrics.processed.inc();
        self.usage.predicted(key.tenant, if routing.shadow.is_some() { 2 } else { 1 });
        if routing.shadow.is_some() {
            self.metrics.shadow_scores.inc();
        }
        if idle {
            self.metrics.idle_carts.inc();
            tracing::info!(tenant_id = %key.tenant, score, "cart found idle");
        }
        if let Some(iv) = intervention {
            // Counted as delivered by the gateway, once a browser acknowledges it.
            self.route(&ShopperAddress { tenant: key.tenant, shopper: key.shopper.clone() }, &iv).await;
        }
        Ok(())
    }

    /// Sends each (topic, sealed value) under the subject's key and waits for the broker's
    /// acknowledgements.
    async fn produce(&self, key: &[u8], outputs: Vec<(&String, Vec<u8>)>, trace: &TraceContext) -> Result<(), Failure> {
        let records = outputs.iter().map(|(topic, value)| {
            FutureRecord::<'_, [u8], [u8]>::to(topic)
                .key(key)
                .payload(value.as_slice())
                .headers(record_headers(SEALED_V1, Some(trace)))
        });
        Ok(self.producer.send_all(records, OUTPUT_ACK_TIMEOUT).await?)
    }

    /// Routes to the shopper's socket, with a few quick retries. An on-site message is worth
    /// sending only while the shopper is on the page; after that it is counted as lost (it
    /// is on `interventions.commands` for the record).
    async fn route(&self, to: &ShopperAddress, iv: &Intervention) {
        for attempt in 1..=3u64 {
            match self.publisher.publish(to, iv).await {
                Ok(receivers) => {
                    self.metrics.interventions.inc();
                    tracing::info!(
                        intervention_id = %iv.intervention_id, score = iv.score, receivers, "intervention decided"
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "routing an intervention failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                }
            }
        }
        self.metrics.lost.inc();
        tracing::error!(intervention_id = %iv.intervention_id, "intervention lost");
    }
}
