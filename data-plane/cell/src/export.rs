//! `GET /v1/shoppers/{shopper_id}/export`: everything this cell keeps about one of a store's
//! shoppers, as JSON, for the store's servers (a secret key with `shoppers:export`) to answer
//! a shopper's access or portability request: whether they are suppressed, their stored
//! feature session (every stored field, as stored), their idle-cart timer, the interventions
//! kept for resuming and the last one acknowledged, and the e-mail addresses (as digests)
//! the store identified them with. What it does not read — the cell's Kafka
//! topics (events, features snapshots, predictions, decisions, dead letters), each with its
//! retention from the topic catalogue — is named in `not_included`.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
};
use nudge_contracts::ShopperId;
use nudge_data_plane_directory::{Directory, auth};
use nudge_data_plane_features::store::{SessionKey, emails_key, idle_member};
use nudge_platform_http::{ApiError, ErrorBody};
use redis::aio::ConnectionManager;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::erase::Places;

/// The scope a secret key needs.
pub const SCOPE: &str = "shoppers:export";

#[derive(Clone)]
pub struct ExportState {
    pub directory: Arc<Directory>,
    pub redis: ConnectionManager,
    pub places: Arc<Places>,
}

pub fn router() -> OpenApiRouter<ExportState> {
    OpenApiRouter::new().routes(routes!(export))
}

/// One shopper's data at this cell.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShopperExport {
    pub tenant_id: String,
    pub shopper_id: String,
    /// RFC 3339.
    pub exported_at: String,
    /// On the store's suppression list: their events are dropped and their data erased.
    pub suppressed: bool,
    /// The feature session's stored fields, as stored; absent when there is none.
    pub session: Option<BTreeMap<String, String>>,
    /// When the shopper's cart went quiet (ms since the epoch), while a timer is set.
    pub idle_cart_since_ms: Option<i64>,
    /// The interventions kept for resuming, oldest first, as they were pushed.
    #[schema(value_type = Vec<Object>)]
    pub interventions: Vec<serde_json::Value>,
    /// The last intervention the shopper's browser acknowledged.
    pub last_acknowledged: Option<String>,
    /// The e-mail addresses the store identified the shopper with, as this store's digests
    /// of them (`nudge.email.v1`, see the `identify` event): an erasure by e-mail finds the
    /// shopper through them. The addresses, and the store's hashes of them, are not kept.
    pub email_links: Vec<String>,
    /// The shopper's answers about messages, by channel, with when and where they gave them.
    #[schema(value_type = Object)]
    pub consent: BTreeMap<String, nudge_data_plane_channels::gate::ConsentRecord>,
    /// Whether an address to e-mail them is kept (sealed with their data key; the store
    /// that sent it knows it).
    pub email_address_kept: bool,
    /// Campaign sends to them in the last 30 days, by channel (for the frequency caps).
    pub recent_sends: BTreeMap<String, u64>,
    /// Sends scheduled for them and not yet made.
    pub pending_sends: u64,
    /// The campaigns they are assigned to for lift reports, with their arm (`treated`,
    /// `control`, `holdout`; `_store` is the store's global holdout or not).
    pub campaign_arms: BTreeMap<String, String>,
    /// What is stored elsewhere and not in this export.
    pub not_included: Vec<String>,
}

/// The control plane's records of the shopper, and the cell's Kafka topics, which hold
/// shopper records this export does not read: each with how long it keeps them (from the
/// topic catalogue).
fn not_included() -> Vec<String> {
    use nudge_contracts::topics::{Cleanup, Scope, catalogue};
    let control_plane = "the control plane's records of the shopper (their suppression, erasure requests and legal \
                         holds): GET /v1/tenants/{tenant_id}/shoppers/{shopper_id}/export on the control plane, for \
                         the store's owners and admins"
        .to_owned();
    std::iter::once(control_plane)
        .chain(catalogue().iter().filter(|t| t.scope == Scope::Cell).map(|t| match t.cleanup {
            Cleanup::Compact => {
                format!("Kafka {}: the latest record per shopper, kept until a tombstone removes it", t.name)
            }
            Cleanup::Delete => format!("Kafka {}: kept {} hours, not indexed by shopper", t.name, t.retention_hours),
        }))
        .collect()
}

fn unavailable(e: &redis::RedisError) -> ApiError {
    tracing::warn!(error = %e, "export: the cell's Redis is unavailable");
    ApiError::unavailable("feature_store_unavailable", "the cell's store is unavailable; retry", 1)
}

/// Everything this cell keeps about one of the store's shoppers. 404 when it keeps nothing
/// (never seen, expired, or erased).
#[utoipa::path(get, path = "/v1/shoppers/{shopper_id}/export", tag = "privacy",
    params(("shopper_id" = String, Path, description = "the store's shopper id")),
    security(("secret_key" = [])),
    responses(
        (status = 200, description = "what the cell keeps about the shopper", body = ShopperExport),
        (status = 401, description = "`missing_key`, `invalid_key`", body = ErrorBody),
        (status = 403, description = "`missing_scope` (needs `shoppers:export`), `tenant_suspended`, `tenant_inactive`", body = ErrorBody),
        (status = 404, description = "`shopper_not_found`: nothing kept here", body = ErrorBody),
        (status = 422, description = "`invalid_shopper_id`", body = ErrorBody),
        (status = 503, description = "`feature_store_unavailable`, `cell_starting`; retry after `Retry-After`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn export(
    State(state): State<ExportState>,
    headers: HeaderMap,
    Path(shopper_id): Path<String>,
) -> Result<Json<ShopperExport>, ApiError> {
    let tenant = auth::authorize_server_request(&state.directory, &headers, SCOPE)?;
    tracing::Span::current().record("tenant_id", tracing::field::display(tenant.tenant_id));
    let shopper = ShopperId::parse(&shopper_id)
        .map_err(|_| ApiError::unprocessable("invalid_shopper_id", "not a shopper id this store could have sent"))?;
    let [session_key, history_key, acked_key, reach_key, sent_key, assignments_key] =
        state.places.keys_of(tenant.tenant_id, &shopper);
    let member = idle_member(&SessionKey { tenant: tenant.tenant_id, shopper: shopper.clone() });
    let digest = nudge_contracts::subject_digest(tenant.tenant_id.as_uuid(), &shopper);
    let mut pipe = redis::pipe();
    pipe.hgetall(&session_key)
        .zscore(&state.places.idle_schedule, &member)
        .lrange(&history_key, 0, -1)
        .get(&acked_key)
        .smembers(emails_key(&state.places.prefix, tenant.tenant_id, &digest))
        .hgetall(&reach_key)
        .zrange(&sent_key, 0, -1)
        .scard(nudge_data_plane_channels::store::pending_key(&state.places.prefix, tenant.tenant_id, shopper.as_str()))
        .hgetall(&assignments_key);
    let mut conn = state.redis.clone();
    #[allow(clippy::type_complexity)]
    let (session, idle, history, acked, mut email_links, reach, sends, pending_sends, assignments): (
        BTreeMap<String, String>,
        Option<f64>,
        Vec<String>,
        Option<String>,
        Vec<String>,
        BTreeMap<String, Vec<u8>>,
        Vec<String>,
        u64,
        BTreeMap<String, String>,
    ) = pipe.query_async(&mut conn).await.map_err(|e| unavailable(&e))?;
    // Campaign → arm (`_store`: the store's holdout or not).
    let campaign_arms: BTreeMap<String, String> = assignments
        .into_iter()
        .filter_map(|(campaign, value)| Some((campaign, value.split('|').next()?.to_owned())))
        .collect();
    let consent: BTreeMap<String, nudge_data_plane_channels::gate::ConsentRecord> = reach
        .iter()
        .filter_map(|(field, value)| {
            let channel = field.strip_prefix("consent:")?;
            Some((channel.to_owned(), serde_json::from_slice(value).ok()?))
        })
        .collect();
    let email_address_kept = reach.contains_key("email");
    let mut recent_sends = BTreeMap::new();
    for member in &sends {
        if let Some((channel, _)) = member.split_once('|') {
            *recent_sends.entry(channel.to_owned()).or_insert(0_u64) += 1;
        }
    }
    email_links.sort_unstable();
    let interventions: Vec<serde_json::Value> = history
        .iter()
        .filter_map(|entry| entry.split_once('|'))
        .filter_map(|(_, frame)| serde_json::from_str(frame).ok())
        .collect();
    let suppressed = tenant.is_suppressed(shopper.as_str());
    let nothing = session.is_empty()
        && idle.is_none()
        && interventions.is_empty()
        && acked.is_none()
        && reach.is_empty()
        && sends.is_empty()
        && pending_sends == 0
        && campaign_arms.is_empty();
    if nothing && email_links.is_empty() && !suppressed {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "shopper_not_found",
            "this cell keeps nothing about that shopper",
        ));
    }
    Ok(Json(ShopperExport {
        tenant_id: tenant.tenant_id.to_string(),
        shopper_id: shopper.to_string(),
        exported_at: chrono::Utc::now().to_rfc3339(),
        suppressed,
        session: (!session.is_empty()).then_some(session),
        // Scores are whole milliseconds, well inside f64's exact range.
        idle_cart_since_ms: idle.map(|score| score.round() as i64),
        interventions,
        last_acknowledged: acked,
        email_links,
        consent,
        email_address_kept,
        recent_sends,
        pending_sends,
        campaign_arms,
        not_included: not_included(),
    }))
}
