//! `POST /v1/dry-run`: a campaign (a draft, say) replayed over the store's last days of
//! events, for its servers (a secret key with `reports:read`): what it would have sent, on
//! which channel, to how many shoppers, and how many of those bought anyway.
//!
//! The cell reads `events.validated` from its start (the topic keeps 7 days) to where it
//! ends now, opens the store's records (a shopper erased since is unreadable, so left out),
//! and replays each shopper's events from the window's start into a fresh session, scored by
//! the store's model and decided with the campaign alone, as the pipeline would (cooldown,
//! control group, triggers, condition, discounts worth their cost). Nothing is sent or
//! stored. Bounded: at most `MAX_RECORDS` records read and `TIME_LIMIT` spent; a report cut
//! short says so.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Json,
    extract::{State, rejection::JsonRejection},
    http::HeaderMap,
};
use nudge_campaigns::model::CampaignSpec;
use nudge_contracts::{
    headers::EVENT_V1,
    proto::events::v1::{Event, event::Payload},
    topics::Topic,
};
use nudge_data_plane_decide::campaigns::{ActiveCampaign, CampaignDecision, ShopperMoment, decide_campaigns};
use nudge_data_plane_directory::{Directory, auth::authorize_server_request};
use nudge_data_plane_features::SessionState;
use nudge_data_plane_inference::{ModelSet, Scorers};
use nudge_data_plane_keyring::{KeyError, Keyring};
use nudge_platform_http::{ApiError, ErrorBody};
use nudge_platform_kafka::KafkaConfig;
use prost::Message as _;
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{Consumer, StreamConsumer},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

/// The scope a secret key needs.
pub const SCOPE: &str = "reports:read";
/// Most records one dry run reads.
pub const MAX_RECORDS: u64 = 2_000_000;
/// Longest one dry run takes.
pub const TIME_LIMIT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct DryRunState {
    pub directory: Arc<Directory>,
    pub keyring: Arc<Keyring>,
    pub models: Arc<ModelSet>,
    pub scorers: Arc<Scorers>,
    pub kafka: KafkaConfig,
    pub cooldown_ms: i64,
    /// One dry run at a time per process: each reads the whole topic and scores through
    /// the pipeline's models.
    pub running: Arc<tokio::sync::Semaphore>,
}

pub fn router() -> OpenApiRouter<DryRunState> {
    OpenApiRouter::new().routes(routes!(dry_run))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRunRequest {
    pub campaign: CampaignSpec,
    /// Days back, 1 to 7 (the events topic keeps a week).
    pub days: u32,
}

/// Would-be sends on each channel.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ChannelCounts {
    pub on_site: u64,
    pub email: u64,
    pub webhook: u64,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct DryRunReport {
    pub days: u32,
    /// The store's events in the window that were replayed.
    pub events: u64,
    pub shoppers_seen: u64,
    /// Moments the campaign would have sent at.
    pub moments_sent: u64,
    /// Moments its control group would have been held back at.
    pub moments_control: u64,
    /// Moments its discount would not have paid for itself.
    pub moments_declined: u64,
    pub sends: ChannelCounts,
    /// Shoppers it would have sent something to.
    pub shoppers_reached: u64,
    /// Of those, the shoppers who bought after the first would-be send anyway.
    pub reached_then_bought: u64,
    /// The read stopped at `MAX_RECORDS` or the time limit; the figures cover what was read.
    pub truncated: bool,
}

#[derive(Default)]
struct Shopper {
    session: SessionState,
    reached: bool,
    bought_after: bool,
}

/// Replay a campaign over the store's last days of events.
#[utoipa::path(post, path = "/v1/dry-run", tag = "reports", request_body = DryRunRequest,
    security(("secret_key" = [])),
    responses(
        (status = 200, description = "what the campaign would have done", body = DryRunReport),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 401, description = "`missing_key`, `invalid_key`", body = ErrorBody),
        (status = 403, description = "`missing_scope` (needs `reports:read`), `tenant_suspended`, `tenant_inactive`", body = ErrorBody),
        (status = 422, description = "`invalid_campaign` (`details.problems`), `invalid_days`", body = ErrorBody),
        (status = 503, description = "`events_unavailable` (the broker or the vault), `dry_run_busy`, `cell_starting`; retry after `Retry-After`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn dry_run(
    State(state): State<DryRunState>,
    headers: HeaderMap,
    body: Result<Json<DryRunRequest>, JsonRejection>,
) -> Result<Json<DryRunReport>, ApiError> {
    let entry = authorize_server_request(&state.directory, &headers, SCOPE)?;
    let tenant = entry.tenant_id;
    tracing::Span::current().record("tenant_id", tracing::field::display(tenant));
    let Ok(_running) = state.running.clone().try_acquire_owned() else {
        return Err(ApiError::unavailable("dry_run_busy", "another dry run is under way here; try again shortly", 10));
    };
    let Json(request) = body.map_err(|e| match e {
        JsonRejection::JsonDataError(e) => ApiError::unprocessable("invalid_campaign", e.body_text()),
        other => ApiError::bad_request("malformed_json", other.body_text()),
    })?;
    if !(1..=7).contains(&request.days) {
        return Err(ApiError::unprocessable("invalid_days", "days is 1 to 7"));
    }
    let problems = request.campaign.validate(&nudge_data_plane_features::names::vocabulary_with(true));
    if !problems.is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_campaign",
            "the campaign has problems; each is named by its field",
        )
        .with_details(serde_json::json!({ "problems": problems })));
    }
    let campaign = ActiveCampaign::new("cmp_dry_run", 0, 0, &request.campaign)
        .map_err(|e| ApiError::unprocessable("invalid_campaign", e))?;
    let unavailable = |e: String| {
        tracing::warn!(error = %e, "a dry run could not read the events");
        ApiError::unavailable("events_unavailable", "the store's events cannot be read now", 5)
    };
    let since = chrono::Utc::now().timestamp_millis() - i64::from(request.days) * 86_400_000;
    let mut report = DryRunReport { days: request.days, ..DryRunReport::default() };
    let consumer = Arc::new(
        nudge_platform_kafka::reader_consumer(&state.kafka, &format!("dry-run-{tenant}"))
            .map_err(|e| unavailable(e.to_string()))?,
    );
    let topic = state.kafka.topics().name(Topic::EventsValidated);
    let assigning = consumer.clone();
    let mut remaining = tokio::task::spawn_blocking(move || assign_whole_topic(&assigning, &topic))
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .map_err(unavailable)?;
    let campaigns = [Arc::new(campaign)];
    let tenant_text = tenant.to_string();
    let entry_model = (entry.model_version.clone(), entry.rollout.clone());
    let mut shoppers: HashMap<String, Shopper> = HashMap::new();
    let started = Instant::now();
    let mut read = 0u64;
    while !remaining.is_empty() {
        if read >= MAX_RECORDS || started.elapsed() > TIME_LIMIT {
            report.truncated = true;
            break;
        }
        let message = tokio::time::timeout(Duration::from_secs(10), consumer.recv())
            .await
            .map_err(|_| unavailable("the events topic stopped delivering".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
        read += 1;
        let partition = message.partition();
        if remaining.get(&partition).is_some_and(|end| message.offset() + 1 >= *end) {
            remaining.remove(&partition);
        }
        let Some(payload) = message.payload() else { continue };
        let Ok((owner, sealed)) = crate::sealing::envelope(payload) else { continue };
        if owner != tenant {
            continue;
        }
        let event = match state.keyring.open(&sealed, EVENT_V1.name).await {
            Ok(bytes) => match Event::decode(bytes.as_slice()) {
                Ok(event) => event,
                Err(_) => continue,
            },
            // Erased since: left out, by design.
            Err(KeyError::Shredded) => continue,
            Err(e) => return Err(unavailable(e.to_string())),
        };
        if event.occurred_at_ms < since {
            continue;
        }
        report.events += 1;
        let shopper = shoppers.entry(event.shopper_id.clone()).or_default();
        if matches!(event.payload, Some(Payload::Purchase(_))) && shopper.reached {
            shopper.bought_after = true;
        }
        let features = shopper.session.apply(&event);
        let routing = state.models.route(tenant, &event.shopper_id, entry_model.0.as_deref(), entry_model.1.as_ref());
        let score = state.scorers.score(&routing.acting, features).await.map_err(|e| unavailable(e.to_string()))?;
        let moment = ShopperMoment {
            tenant: &tenant_text,
            shopper: &event.shopper_id,
            event: &event,
            session: &shopper.session,
            features: &features,
            score,
        };
        match decide_campaigns(&campaigns, &moment, state.cooldown_ms, entry.messaging.holdout_percent) {
            CampaignDecision::Send(send) => {
                report.moments_sent += 1;
                report.sends.on_site += u64::from(send.on_site.is_some());
                report.sends.email += u64::from(send.email.is_some());
                report.sends.webhook += u64::from(send.webhook.is_some());
                shopper.reached = true;
                shopper.session.last_intervention_ms = event.occurred_at_ms;
            }
            CampaignDecision::Control { .. } | CampaignDecision::Holdout { .. } => {
                report.moments_control += 1;
                shopper.session.last_intervention_ms = event.occurred_at_ms;
            }
            CampaignDecision::Declined { .. } => {
                report.moments_declined += 1;
                shopper.session.last_intervention_ms = event.occurred_at_ms;
            }
            CampaignDecision::Nothing(_) => {}
        }
    }
    report.shoppers_seen = shoppers.len() as u64;
    report.shoppers_reached = shoppers.values().filter(|s| s.reached).count() as u64;
    report.reached_then_bought = shoppers.values().filter(|s| s.bought_after).count() as u64;
    tracing::info!(
        tenant_id = %tenant,
        events = report.events,
        reached = report.shoppers_reached,
        truncated = report.truncated,
        "dry run"
    );
    Ok(Json(report))
}

/// Assigns every partition of `topic` from its start; where each ends now (blocking).
fn assign_whole_topic(consumer: &StreamConsumer, topic: &str) -> Result<HashMap<i32, i64>, String> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).map_err(|e| e.to_string())?;
    let mut ends = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for t in metadata.topics().iter().filter(|m| m.name() == topic) {
        for p in t.partitions() {
            let (low, high) =
                consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).map_err(|e| e.to_string())?;
            if high > low {
                ends.insert(p.id(), high);
            }
            assignment.add_partition_offset(topic, p.id(), Offset::Beginning).map_err(|e| e.to_string())?;
        }
    }
    consumer.assign(&assignment).map_err(|e| e.to_string())?;
    Ok(ends)
}
