//! The feature read API a store's servers call: one shopper's features as they stand now,
//! or many shoppers' at once. The tenant is the secret key's (`features:read`); a shopper
//! id is looked up only in that tenant's keys, so another store's shopper is simply not
//! found.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
};
use nudge_contracts::ShopperId;
use nudge_data_plane_directory::{Directory, auth::authorize_server_request};
use nudge_platform_http::{ApiError, ErrorBody};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    FEATURE_NAMES, FEATURE_SET_VERSION,
    store::{SessionKey, SessionStore},
};

/// The scope a secret key needs to read features.
pub const SCOPE: &str = "features:read";
/// Shoppers per batched read.
pub const MAX_BATCH: usize = 100;

#[derive(Clone)]
pub struct FeaturesState {
    pub directory: Arc<Directory>,
    pub store: SessionStore,
}

pub fn router() -> OpenApiRouter<FeaturesState> {
    OpenApiRouter::new().routes(routes!(read_one)).routes(routes!(read_many))
}

/// One shopper's features.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ShopperFeatures {
    pub shopper_id: String,
    /// The feature set (names, order, meaning) these values follow.
    pub feature_set: String,
    /// The moment the values are for (now, in milliseconds since the epoch).
    pub as_of_ms: i64,
    /// When the shopper's last event happened.
    pub last_event_ms: i64,
    /// Name → value, for every feature of the set.
    pub features: BTreeMap<String, f32>,
}

/// `POST /v1/shoppers/features`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeaturesRequest {
    /// Up to 100 shopper ids.
    pub shopper_ids: Vec<String>,
}

/// The requested shoppers the store has a session for, in request order, and the ids it
/// has none for (never seen, or expired).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FeaturesResponse {
    pub shoppers: Vec<ShopperFeatures>,
    pub not_found: Vec<String>,
}

/// A shopper's current features. 404 when the store has no session for this shopper.
#[utoipa::path(get, path = "/v1/shoppers/{shopper_id}/features", tag = "features",
    params(("shopper_id" = String, Path, description = "the store's shopper id")),
    security(("secret_key" = [])),
    responses(
        (status = 200, description = "the shopper's features as they stand now", body = ShopperFeatures),
        (status = 401, description = "`missing_key`, `invalid_key`", body = ErrorBody),
        (status = 403, description = "`missing_scope` (needs `features:read`), `tenant_suspended`, `tenant_inactive`", body = ErrorBody),
        (status = 404, description = "`shopper_not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_shopper_id`", body = ErrorBody),
        (status = 503, description = "`feature_store_unavailable`, `cell_starting`; retry after `Retry-After`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn read_one(
    State(state): State<FeaturesState>,
    headers: HeaderMap,
    Path(shopper_id): Path<String>,
) -> Result<Json<ShopperFeatures>, ApiError> {
    let tenant = authorize(&state, &headers)?;
    let shopper = parse_shopper(&shopper_id)?;
    read(&state, tenant, shopper, now_ms()).await?.map(Json).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "shopper_not_found", "this store has no session for that shopper")
    })
}

/// Many shoppers' current features at once, in request order.
#[utoipa::path(post, path = "/v1/shoppers/features", tag = "features", request_body = FeaturesRequest,
    security(("secret_key" = [])),
    responses(
        (status = 200, description = "the shoppers with a session, and the ids without one", body = FeaturesResponse),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 401, description = "`missing_key`, `invalid_key`", body = ErrorBody),
        (status = 403, description = "`missing_scope` (needs `features:read`), `tenant_suspended`, `tenant_inactive`", body = ErrorBody),
        (status = 422, description = "`invalid_shopper_id` (which, in details), `too_many_shoppers`, `no_shoppers`", body = ErrorBody),
        (status = 503, description = "`feature_store_unavailable`, `cell_starting`; retry after `Retry-After`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn read_many(
    State(state): State<FeaturesState>,
    headers: HeaderMap,
    body: Result<Json<FeaturesRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<FeaturesResponse>, ApiError> {
    let tenant = authorize(&state, &headers)?;
    let Json(request) = body.map_err(|e| ApiError::bad_request("malformed_json", e.body_text()))?;
    if request.shopper_ids.is_empty() {
        return Err(ApiError::unprocessable("no_shoppers", "name at least one shopper id"));
    }
    if request.shopper_ids.len() > MAX_BATCH {
        return Err(ApiError::unprocessable(
            "too_many_shoppers",
            format!("at most {MAX_BATCH} shoppers per request, {} given", request.shopper_ids.len()),
        ));
    }
    let shoppers: Vec<ShopperId> = request.shopper_ids.iter().map(|s| parse_shopper(s)).collect::<Result<_, _>>()?;
    let now = now_ms();
    let keys: Vec<SessionKey> = shoppers.into_iter().map(|shopper| SessionKey { tenant, shopper }).collect();
    let sessions = state.store.load_many(&keys).await.map_err(store_unavailable)?;
    let mut response = FeaturesResponse { shoppers: Vec::with_capacity(keys.len()), not_found: Vec::new() };
    for ((raw, key), session) in request.shopper_ids.into_iter().zip(&keys).zip(&sessions) {
        match features_of(key, session, now) {
            Some(features) => response.shoppers.push(features),
            None => response.not_found.push(raw),
        }
    }
    Ok(Json(response))
}

fn authorize(state: &FeaturesState, headers: &HeaderMap) -> Result<nudge_tenants::TenantId, ApiError> {
    let tenant = authorize_server_request(&state.directory, headers, SCOPE)?;
    tracing::Span::current().record("tenant_id", tracing::field::display(tenant.tenant_id));
    Ok(tenant.tenant_id)
}

fn parse_shopper(raw: &str) -> Result<ShopperId, ApiError> {
    ShopperId::parse(raw).map_err(|e| {
        ApiError::unprocessable("invalid_shopper_id", format!("not a shopper id: {e}"))
            .with_details(serde_json::json!({ "shopper_id": raw }))
    })
}

async fn read(
    state: &FeaturesState,
    tenant: nudge_tenants::TenantId,
    shopper: ShopperId,
    now: i64,
) -> Result<Option<ShopperFeatures>, ApiError> {
    let key = SessionKey { tenant, shopper };
    let session = state.store.load(&key).await.map_err(store_unavailable)?;
    Ok(features_of(&key, &session, now))
}

fn store_unavailable(e: crate::store::StoreError) -> ApiError {
    tracing::warn!(error = %e, "feature store unavailable");
    ApiError::unavailable("feature_store_unavailable", "the feature store cannot be reached", 1)
}

/// The answer for one shopper; `None` without a session.
fn features_of(key: &SessionKey, session: &crate::SessionState, now: i64) -> Option<ShopperFeatures> {
    if session.is_new() {
        return None;
    }
    let values = session.features_at(now);
    Some(ShopperFeatures {
        shopper_id: key.shopper.to_string(),
        feature_set: FEATURE_SET_VERSION.to_owned(),
        as_of_ms: now.max(session.last_seen_ms),
        last_event_ms: session.last_seen_ms,
        features: FEATURE_NAMES.iter().map(|n| (*n).to_owned()).zip(values).collect(),
    })
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
