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
//!
//! With campaigns, the step also keeps what the delayed channels need (see `crate::sends`):
//! a consent event records the shopper's answer for its channel, an identify carrying an
//! address keeps it sealed with the shopper's data key, a purchase cancels every send
//! pending for the shopper before anything else (the time it took after the cell accepted
//! the purchase is logged and measured), and a campaign's e-mail is scheduled for after
//! its delay. On-site messages are gated here (consent, the channel's and the campaign's
//! caps); every send not made is written to the store's send log with its reason.
//!
//! The stage's counters and histograms are in `metrics`.

mod metrics;

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
use nudge_data_plane_channels::{
    gate::{Candidate, ConsentRecord, Verdict, gate},
    outcomes::{ArmName, OutcomeStore, STORE},
    store::{ChannelStore, ChannelsError, LogEntry, PendingSend, SendContent},
};
use nudge_data_plane_decide::{
    RuleConfig,
    campaigns::{CampaignDecision, CampaignSend, ShopperMoment, decide_campaigns},
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
    headers::HeaderValues,
    stage::{Failure, Handler, HandlerFuture, OUTPUT_ACK_TIMEOUT, Record},
};
use nudge_platform_telemetry::TraceContext;
use nudge_tenants::TenantId;
use prost::Message;
use rdkafka::producer::FutureRecord;
use uuid::Uuid;

pub use self::metrics::PipelineMetrics;

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
    /// Consent, addresses, recent sends, pending sends and the send log.
    pub channels: ChannelStore,
    /// Shoppers' arms and the purchases that count for them.
    pub outcomes: OutcomeStore,
    pub publisher: InterventionPublisher,
    pub producer: SharedProducer,
    pub topics: OutputTopics,
    pub usage: Arc<UsageCounters>,
    pub metrics: PipelineMetrics,
    /// The stores' live events, sampled, for the console.
    pub recent: crate::recent::RecentEventLog,
}

fn channels_failure(e: ChannelsError) -> Failure {
    if e.is_unavailable() { Failure::Unavailable(e.to_string()) } else { Failure::Failed(e.to_string()) }
}

/// The schema name sealed addresses are kept under.
pub const ADDRESS_SCHEMA: &str = "nudge.channels.address.v1";
/// The schema name sealed send contents are kept under.
pub const SEND_SCHEMA: &str = "nudge.channels.send.v1";

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

/// A delayed message to schedule.
struct Delayed {
    channel: &'static str,
    delay_minutes: u32,
    content: SendContent,
}

/// What one moment decided.
#[derive(Default)]
struct Decided {
    /// The on-site message to route.
    on_site: Option<Chosen>,
    /// The campaign whose e-mail or webhook is to be scheduled.
    delayed: Option<CampaignSend>,
    /// Sends not made, for the send log.
    skipped: Vec<LogEntry>,
    /// The winning campaign and the shopper's arm of it (and of the store's holdout).
    assignment: Option<(String, ArmName)>,
}

fn skipped(reason: &str, channel: &str, campaign_id: &str, variant: &str, event_id: &str) -> LogEntry {
    LogEntry {
        at_ms: Utc::now().timestamp_millis(),
        outcome: "skipped".into(),
        reason: reason.into(),
        channel: channel.into(),
        campaign_id: campaign_id.into(),
        variant: variant.into(),
        intervention_id: String::new(),
        cause_event_id: event_id.into(),
        consent: None,
        detail: String::new(),
    }
}

impl Pipeline {
    /// Decides for the shopper at this moment: with the store's active campaigns, or the
    /// default rule when it has none.
    async fn decide(
        &self,
        tenant: TenantId,
        shopper: &str,
        event: &Event,
        session: &mut SessionState,
        features: &nudge_data_plane_features::FeatureVector,
        score: f32,
    ) -> Result<Decided, Failure> {
        let campaigns = self.campaigns.of(tenant);
        if campaigns.is_empty() {
            return Ok(match decide(&self.rule, event, session, score) {
                Ok(action) => Decided {
                    on_site: Some(Chosen {
                        kind: action.kind.to_owned(),
                        title: action.title,
                        body: action.body,
                        campaign: None,
                    }),
                    ..Decided::default()
                },
                Err(hold) => {
                    tracing::debug!(?hold, score, "no intervention");
                    Decided::default()
                }
            });
        }
        let entry = self.directory.by_tenant(tenant);
        let policy = entry.as_ref().map(|t| t.messaging.clone()).unwrap_or_default();
        let tenant_text = tenant.to_string();
        let moment = ShopperMoment { tenant: &tenant_text, shopper, event, session, features, score };
        let event_id = event.event_id.as_str();
        let mut decided = Decided::default();
        let outranked = |decided: &mut Decided, ids: &[String]| {
            for id in ids {
                decided.skipped.push(skipped("outranked", "", id, "", event_id));
            }
        };
        match decide_campaigns(&campaigns, &moment, self.rule.cooldown_ms, policy.holdout_percent) {
            CampaignDecision::Send(send) => {
                decided.assignment = Some((send.campaign_id.clone(), ArmName::Treated));
                outranked(&mut decided, &send.outranked);
                if let Some(on_site) = &send.on_site {
                    let candidate = Candidate {
                        channel: "on_site",
                        campaign_id: &send.campaign_id,
                        transactional: send.transactional,
                        campaign_cap: send.frequency_cap,
                    };
                    let consent = self.channels.consent(tenant, shopper, "on_site").await.map_err(channels_failure)?;
                    let now = Utc::now().timestamp_millis();
                    let sent = self.channels.sent(tenant, shopper, now).await.map_err(channels_failure)?;
                    // The shopper is on the page now: quiet hours would only ever skip.
                    match gate(&policy.on_site, candidate, consent.as_ref(), &sent, now, &event.time_zone) {
                        Verdict::Go => {
                            if let Some(incentive) = &send.incentive {
                                // The offer's inputs, on the record of the decision.
                                let mut entry = skipped("", "on_site", &send.campaign_id, &send.variant, event_id);
                                entry.outcome = "offered".into();
                                entry.detail = incentive.to_string();
                                decided.skipped.push(entry);
                            }
                            decided.on_site = Some(Chosen {
                                kind: on_site.kind.to_owned(),
                                title: on_site.title.clone(),
                                body: on_site.body.clone(),
                                campaign: Some((send.campaign_id.clone(), send.version, send.variant.clone())),
                            });
                        }
                        Verdict::Skip(reason) => {
                            let mut entry = skipped(reason, "on_site", &send.campaign_id, &send.variant, event_id);
                            entry.consent = consent;
                            decided.skipped.push(entry);
                        }
                        Verdict::Defer { .. } => {
                            decided.skipped.push(skipped(
                                "quiet_hours",
                                "on_site",
                                &send.campaign_id,
                                &send.variant,
                                event_id,
                            ));
                        }
                    }
                }
                if decided.on_site.is_some() || send.email.is_some() || send.webhook.is_some() {
                    session.last_intervention_ms = event.occurred_at_ms;
                }
                if send.email.is_some() || send.webhook.is_some() {
                    decided.delayed = Some(send);
                }
            }
            CampaignDecision::Holdout { campaign_id, outranked: others, .. } => {
                // Held back as if sent, so the holdout's exposure matches.
                session.last_intervention_ms = event.occurred_at_ms;
                decided.assignment = Some((campaign_id.clone(), ArmName::Holdout));
                outranked(&mut decided, &others);
                decided.skipped.push(skipped("global_holdout", "", &campaign_id, "", event_id));
            }
            CampaignDecision::Control { campaign_id, outranked: others, .. } => {
                session.last_intervention_ms = event.occurred_at_ms;
                decided.assignment = Some((campaign_id.clone(), ArmName::Control));
                self.metrics.campaign_control.inc();
                outranked(&mut decided, &others);
                decided.skipped.push(skipped("control_group", "", &campaign_id, "", event_id));
            }
            CampaignDecision::Declined { campaign_id, variant, outranked: others, incentive, .. } => {
                session.last_intervention_ms = event.occurred_at_ms;
                decided.assignment = Some((campaign_id.clone(), ArmName::Treated));
                outranked(&mut decided, &others);
                let mut entry = skipped("discount_not_worth_it", "on_site", &campaign_id, &variant, event_id);
                entry.detail = incentive.to_string();
                decided.skipped.push(entry);
            }
            CampaignDecision::Nothing(skip) => {
                tracing::debug!(tenant_id = %tenant, reason = skip.reason(), "no campaign sends");
            }
        }
        Ok(decided)
    }

    /// The store's attribution window.
    fn attribution_window_ms(&self, tenant: TenantId) -> i64 {
        self.directory
            .by_tenant(tenant)
            .map(|t| t.messaging.attribution_window_ms())
            .unwrap_or_else(|| nudge_campaigns::policy::MessagingPolicy::default().attribution_window_ms())
    }

    /// Appends to the store's send log; a failure is logged and counted, never fails the
    /// step whose effects are already applied.
    async fn log_send(&self, tenant: TenantId, entry: &LogEntry) {
        if entry.outcome == "skipped" {
            self.metrics.sends_skipped.inc();
            tracing::info!(
                tenant_id = %tenant,
                campaign_id = %entry.campaign_id,
                channel = %entry.channel,
                reason = %entry.reason,
                "campaign send skipped"
            );
        }
        if let Err(e) = self.channels.log(tenant, entry).await {
            self.metrics.log_failures.inc();
            tracing::warn!(tenant_id = %tenant, error = %e, "a send-log entry could not be written");
        }
    }

    /// Keeps what a consent or an identify tells the channels about the shopper (not an
    /// address erased meanwhile).
    async fn remember_reach(
        &self,
        key: &SessionKey,
        subject: &str,
        event: &Event,
        address_erased: bool,
    ) -> Result<(), Failure> {
        let ttl = i64::try_from(self.keyring.key_lifetime_seconds(key.tenant)).unwrap_or(i64::MAX);
        match &event.payload {
            Some(Payload::Consent(consent)) => {
                let record = ConsentRecord {
                    granted: consent.granted,
                    at_ms: event.occurred_at_ms,
                    event_id: event.event_id.clone(),
                    source: consent.source.clone(),
                };
                self.channels
                    .record_consent(key.tenant, key.shopper.as_str(), &consent.channel, &record, ttl)
                    .await
                    .map_err(channels_failure)
            }
            Some(Payload::Identify(identify)) if !identify.email.is_empty() && !address_erased => {
                let sealed =
                    match self.keyring.seal(key.tenant, subject, ADDRESS_SCHEMA, identify.email.as_bytes()).await {
                        Ok(sealed) => sealed,
                        // Erased meanwhile: nothing is kept.
                        Err(KeyError::Shredded) => return Ok(()),
                        Err(e) => return Err(crate::sealing::failure(e)),
                    };
                self.channels
                    .set_address(key.tenant, key.shopper.as_str(), &sealed.encode_to_vec(), ttl)
                    .await
                    .map_err(channels_failure)
            }
            _ => Ok(()),
        }
    }

    /// A purchase: every send pending for the shopper is cancelled, each logged with the
    /// time since the cell accepted the purchase.
    async fn cancel_pending(&self, key: &SessionKey, event: &Event) -> Result<(), Failure> {
        let cancelled =
            self.channels.cancel_shopper(key.tenant, key.shopper.as_str()).await.map_err(channels_failure)?;
        if cancelled.is_empty() {
            return Ok(());
        }
        let now = Utc::now().timestamp_millis();
        let delay_ms = now.saturating_sub(event.received_at_ms).max(0);
        self.metrics.sends_cancelled.inc_by(cancelled.len() as u64);
        self.metrics.cancel_delay.observe(delay_ms as f64 / 1000.0);
        tracing::info!(tenant_id = %key.tenant, sends = cancelled.len(), delay_ms, "pending sends cancelled by a purchase");
        for c in cancelled {
            let entry = LogEntry {
                at_ms: now,
                outcome: "cancelled".into(),
                reason: "purchased".into(),
                channel: c.channel,
                campaign_id: c.campaign_id,
                variant: String::new(),
                intervention_id: c.intervention_id,
                cause_event_id: c.cause_event_id,
                consent: None,
                detail: format!("{delay_ms} ms after the purchase {} was accepted", event.event_id),
            };
            self.log_send(key.tenant, &entry).await;
        }
        Ok(())
    }

    /// Schedules a campaign's delayed message for after its delay (from the moment it was
    /// decided at), sealed with the shopper's data key; its log entry, `None` when it was
    /// scheduled already or the shopper was erased meanwhile.
    async fn schedule(
        &self,
        key: &SessionKey,
        subject: &str,
        event: &Event,
        intervention_id: &str,
        send: &CampaignSend,
        delayed: Delayed,
    ) -> Result<Option<LogEntry>, Failure> {
        let Delayed { channel, delay_minutes, content } = delayed;
        let json = serde_json::to_vec(&content).map_err(|e| Failure::Failed(e.to_string()))?;
        let sealed = match self.keyring.seal(key.tenant, subject, SEND_SCHEMA, &json).await {
            Ok(sealed) => sealed,
            Err(KeyError::Shredded) => return Ok(None),
            Err(e) => return Err(crate::sealing::failure(e)),
        };
        let now = Utc::now().timestamp_millis();
        let due_ms = event.occurred_at_ms.saturating_add(i64::from(delay_minutes) * 60_000).max(now);
        let pending = PendingSend {
            id: Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("{intervention_id}/{channel}").as_bytes()).to_string(),
            tenant: key.tenant,
            shopper: key.shopper.to_string(),
            subject: subject.to_owned(),
            channel: channel.into(),
            campaign_id: send.campaign_id.clone(),
            version: send.version,
            variant: send.variant.clone(),
            transactional: send.transactional,
            campaign_cap: send.frequency_cap,
            intervention_id: intervention_id.to_owned(),
            cause_event_id: event.event_id.clone(),
            decided_at_ms: now,
            due_ms,
            attempts: 0,
            sealed: sealed.encode_to_vec(),
        };
        if !self.channels.schedule_send(&pending).await.map_err(channels_failure)? {
            return Ok(None);
        }
        Ok(Some(LogEntry {
            at_ms: now,
            outcome: "scheduled".into(),
            reason: String::new(),
            channel: channel.into(),
            campaign_id: send.campaign_id.clone(),
            variant: send.variant.clone(),
            intervention_id: intervention_id.to_owned(),
            cause_event_id: event.event_id.clone(),
            consent: None,
            detail: format!("due at {due_ms}"),
        }))
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
        if let Some(Payload::Purchase(purchase)) = &event.payload {
            // First of all: nothing pending may go to a shopper who bought.
            self.cancel_pending(&key, event).await?;
            // Then the purchase counts for every arm the shopper is in (once, however often
            // this step runs).
            let window = self.attribution_window_ms(key.tenant);
            self.outcomes
                .purchase(
                    key.tenant,
                    key.shopper.as_str(),
                    &nudge_contracts::id_digest(&event.event_id),
                    purchase.value_minor,
                    &purchase.currency,
                    event.occurred_at_ms,
                    window,
                )
                .await
                .map_err(channels_failure)?;
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
        let mut decided = self.decide(key.tenant, key.shopper.as_str(), event, &mut session, &features, score).await?;
        let intervention_id = intervention_id(key.tenant, &event.event_id).to_string();
        let intervention = decided.on_site.take().map(|chosen| {
            session.last_intervention_ms = event.occurred_at_ms;
            let (campaign_id, campaign_version, variant) = chosen.campaign.unwrap_or_default();
            Intervention {
                intervention_id: intervention_id.clone(),
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
        // An address erased while this event was being scored is not kept either.
        let address_erased = email
            .as_ref()
            .is_some_and(|e| self.directory.by_tenant(key.tenant).is_some_and(|t| t.is_suppressed_email_digest(e)));
        self.remember_reach(&key, subject, event, address_erased).await?;
        if let Some((campaign, arm)) = &decided.assignment {
            let window = self.attribution_window_ms(key.tenant);
            let shopper = key.shopper.as_str();
            let at = event.occurred_at_ms;
            let store_arm = if *arm == ArmName::Holdout { ArmName::Holdout } else { ArmName::Treated };
            for (name, arm) in [(campaign.as_str(), *arm), (STORE, store_arm)] {
                self.outcomes.assign(key.tenant, shopper, name, arm, at, window).await.map_err(channels_failure)?;
            }
        }
        // Scheduled before the effect is marked applied: a crash between them schedules the
        // same send again, which the store recognises.
        let mut scheduled = Vec::new();
        if let Some(send) = &decided.delayed {
            if let Some(email) = &send.email {
                let content = SendContent::Email {
                    subject: email.subject.clone(),
                    html: email.html.clone(),
                    text: email.text.clone(),
                };
                let at = Delayed { channel: "email", delay_minutes: email.delay_minutes, content };
                scheduled.extend(self.schedule(&key, subject, event, &intervention_id, send, at).await?);
            }
            if let Some(webhook) = &send.webhook {
                let body = serde_json::json!({
                    "type": "campaign.message",
                    "tenant_id": key.tenant.to_string(),
                    "campaign_id": send.campaign_id,
                    "campaign_version": send.version,
                    "variant": send.variant,
                    "intervention_id": intervention_id,
                    "shopper_id": key.shopper.as_str(),
                    "cause_event_id": event.event_id,
                    "decided_at_ms": Utc::now().timestamp_millis(),
                    "abandonment_probability": score,
                    "cart_value_minor": session.cart_value_minor,
                    "cart_items": session.cart_items,
                });
                let content = SendContent::Webhook { url: webhook.url.clone(), body: body.to_string() };
                let at = Delayed { channel: "webhook", delay_minutes: webhook.delay_minutes, content };
                scheduled.extend(self.schedule(&key, subject, event, &intervention_id, send, at).await?);
            }
        }
        if !self
            .sessions
            .commit(&key, &event.event_id, &session, timer, &event.time_zone)
            .await
            .map_err(store_failure)?
        {
            self.metrics.duplicates.inc();
            return Ok(());
        }
        self.metrics.processed.inc();
        self.recent.note(key.tenant, key.shopper.as_str(), event).await;
        self.usage.predicted(key.tenant, if routing.shadow.is_some() { 2 } else { 1 });
        if routing.shadow.is_some() {
            self.metrics.shadow_scores.inc();
        }
        if idle {
            self.metrics.idle_carts.inc();
            tracing::info!(tenant_id = %key.tenant, score, "cart found idle");
        }
        for entry in &scheduled {
            self.metrics.sends_scheduled.inc();
            self.log_send(key.tenant, entry).await;
        }
        for entry in &decided.skipped {
            self.log_send(key.tenant, entry).await;
        }
        if let Some(Payload::InterventionFeedback(feedback)) = &event.payload {
            let window = self.attribution_window_ms(key.tenant);
            let counted = self.outcomes.feedback(key.tenant, &feedback.intervention_id, &feedback.action, window).await;
            if let Err(e) = counted {
                tracing::warn!(tenant_id = %key.tenant, error = %e, "intervention feedback could not be counted");
            }
        }
        if let Some(iv) = intervention {
            if !iv.campaign_id.is_empty() {
                let window = self.attribution_window_ms(key.tenant);
                let noted =
                    self.outcomes.note_intervention(key.tenant, &iv.intervention_id, &iv.campaign_id, window).await;
                if let Err(e) = noted {
                    tracing::warn!(tenant_id = %key.tenant, error = %e, "an intervention's campaign could not be noted");
                }
                // Counted for the caps, whether or not the page was still open.
                let counted = self
                    .channels
                    .record_sent(key.tenant, key.shopper.as_str(), "on_site", &iv.campaign_id, &iv.intervention_id, now)
                    .await;
                if let Err(e) = counted {
                    tracing::warn!(tenant_id = %key.tenant, error = %e, "an on-site send could not be counted for the caps");
                }
            }
            // Counted as delivered by the gateway, once a browser acknowledges it.
            self.route(&ShopperAddress { tenant: key.tenant, shopper: key.shopper.clone() }, &iv).await;
        }
        Ok(())
    }

    /// Sends each (topic, sealed value) under the subject's key and waits for the broker's
    /// acknowledgements.
    async fn produce(&self, key: &[u8], outputs: Vec<(&String, Vec<u8>)>, trace: &TraceContext) -> Result<(), Failure> {
        let headers = HeaderValues::new(SEALED_V1, Some(trace));
        let records = outputs.iter().map(|(topic, value)| {
            FutureRecord::<'_, [u8], [u8]>::to(topic).key(key).payload(value.as_slice()).headers(headers.headers())
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
