//! `/v1/admin/…`: what platform operators do to tenants. Authenticated with an operator
//! token from `admin.tokens`; the operator's name goes into the audit log.

use axum::{
    Json,
    extract::{FromRef, FromRequestParts, Path, Query, State, rejection::JsonRejection},
    http::{StatusCode, header::AUTHORIZATION, request::Parts},
};
use nudge_contracts::control::{
    AdminErasureRequest, AuditEntryBody, AuditPage, ErasureView, IsolationRequest, IsolationResponse, LimitsBody,
    ModelRequest, ModelResponse, PlanRequest, PlanResponse, RolloutRequest, RolloutResponse, TransitionRequest,
    TransitionResponse,
};
use nudge_control_plane::lifecycle::{self, LifecycleError};
use nudge_control_plane::{
    dedicated::{self, MoveError},
    placement,
    plans::{self, ModelError, PlanError, RolloutError},
    provision::TenantRequest,
    registry,
};
use nudge_platform_http::{ApiError, ErrorBody, current_trace};
use nudge_tenants::{Actor, TenantId, TenantState};
use nudge_tenants::{LimitOverrides, ModelRollout, Plan, RolloutMode};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::{db_error, provision_error};
use crate::{AppState, state::AdminTokens};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(transition))
        .routes(routes!(audit))
        .routes(routes!(set_plan))
        .routes(routes!(set_model))
        .routes(routes!(start_rollout, end_rollout))
        .routes(routes!(promote_rollout))
        .routes(routes!(set_isolation))
        .routes(routes!(file_erasure))
        .routes(routes!(get_erasure))
}

/// An authenticated platform operator.
pub struct Operator(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Operator
where
    AdminTokens: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let tokens = AdminTokens::from_ref(state);
        let unauthorized =
            || ApiError::new(StatusCode::UNAUTHORIZED, "invalid_operator_token", "an operator token is required");
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(unauthorized)?;
        // Compare digests, so the comparison's timing says nothing about the token.
        let presented = Sha256::digest(presented.as_bytes());
        tokens
            .0
            .iter()
            .find(|(_, digest)| digest.as_slice() == presented.as_slice())
            .map(|(name, _)| Operator(name.clone()))
            .ok_or_else(unauthorized)
    }
}

pub(super) fn parse_tenant(raw: &str) -> Result<TenantId, ApiError> {
    // A malformed id names no tenant: the same answer as an unknown one.
    raw.parse().map_err(|_| ApiError::not_found())
}

pub(super) fn lifecycle_error(e: LifecycleError) -> ApiError {
    match e {
        LifecycleError::NotFound => ApiError::not_found(),
        LifecycleError::Invalid(invalid) => {
            ApiError::new(StatusCode::CONFLICT, "invalid_transition", invalid.to_string()).with_details(
                json!({ "current_state": invalid.current.as_str(), "requested_state": invalid.requested.as_str() }),
            )
        }
        LifecycleError::DeletedByPurge => ApiError::new(StatusCode::CONFLICT, "deleted_by_offboarding", e.to_string()),
        LifecycleError::PurgeStarted => ApiError::new(StatusCode::CONFLICT, "purge_started", e.to_string()),
        LifecycleError::Db(db) => db_error(db),
    }
}

/// Move a tenant through its lifecycle. Requesting the state it is in changes nothing.
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant_id}/transitions", tag = "admin",
    params(("tenant_id" = String, Path, description = "`tnt_…`")),
    request_body = TransitionRequest,
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "the tenant's state now", body = TransitionResponse),
        (status = 401, description = "`invalid_operator_token`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`invalid_transition`, naming the current state; `deleted_by_offboarding` (a store is deleted only by its offboarding's purge); `purge_started` (too late to cancel an offboarding)", body = ErrorBody),
        (status = 422, description = "`invalid_fields`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id))]
async fn transition(
    State(state): State<AppState>,
    operator: Operator,
    Path(tenant_id): Path<String>,
    body: Result<Json<TransitionRequest>, JsonRejection>,
) -> Result<Json<TransitionResponse>, ApiError> {
    let tenant = parse_tenant(&tenant_id)?;
    let Json(request) = body.map_err(|e| ApiError::bad_request("malformed_json", e.body_text()))?;
    let to = TenantState::parse(&request.to).filter(|s| !matches!(s, TenantState::Pending | TenantState::Provisioning));
    let reason = request.reason.trim();
    if to.is_none() || reason.is_empty() || reason.len() > 1000 {
        let mut fields = serde_json::Map::new();
        if to.is_none() {
            fields.insert("to".into(), json!("one of active, suspended, offboarding, deleted"));
        }
        if reason.is_empty() || reason.len() > 1000 {
            fields.insert("reason".into(), json!("1-1000 characters"));
        }
        return Err(ApiError::unprocessable("invalid_fields", "some fields are invalid")
            .with_details(json!({ "fields": fields })));
    }
    let to = to.ok_or_else(ApiError::not_found)?;
    let trace = current_trace().map(|t| t.to_header());
    let done = lifecycle::transition(
        &state.router,
        &state.topics,
        tenant,
        to,
        &Actor::Operator(operator.0),
        reason,
        state.offboarding_grace,
        trace,
    )
    .await
    .map_err(lifecycle_error)?;
    if done.changed {
        state.wake_outbox();
    }
    Ok(Json(TransitionResponse {
        tenant_id: done.tenant_id.to_string(),
        state: done.state.as_str().to_owned(),
        revision: done.revision,
        changed: done.changed,
    }))
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    cursor: Option<String>,
    limit: Option<i64>,
}

const CURSOR_PREFIX: &str = "aud_";

/// A tenant's lifecycle audit log, oldest first.
#[utoipa::path(get, path = "/v1/admin/tenants/{tenant_id}/audit", tag = "admin",
    params(
        ("tenant_id" = String, Path, description = "`tnt_…`"),
        ("cursor" = Option<String>, Query, description = "from a previous page's `next_cursor`"),
        ("limit" = Option<i64>, Query, description = "entries per page, 1-200 (default 50)"),
    ),
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "a page of entries", body = AuditPage),
        (status = 401, description = "`invalid_operator_token`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_cursor`, `invalid_limit`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id))]
async fn audit(
    State(state): State<AppState>,
    _operator: Operator,
    Path(tenant_id): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let tenant = parse_tenant(&tenant_id)?;
    let limit = page.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::unprocessable("invalid_limit", "limit is 1-200"));
    }
    let after = match page.cursor.as_deref() {
        None => 0,
        Some(c) => c
            .strip_prefix(CURSOR_PREFIX)
            .and_then(|hex| i64::from_str_radix(hex, 16).ok())
            .ok_or_else(|| ApiError::unprocessable("invalid_cursor", "the cursor is not one this API gave out"))?,
    };
    // One more than asked tells whether another page follows.
    let mut entries = lifecycle::audit_log(&state.router, tenant, after, limit + 1).await.map_err(lifecycle_error)?;
    let more = entries.len() as i64 > limit;
    entries.truncate(limit as usize);
    let next_cursor = more.then(|| entries.last().map(|e| format!("{CURSOR_PREFIX}{:x}", e.seq))).flatten();
    Ok(Json(AuditPage {
        entries: entries
            .into_iter()
            .map(|e| AuditEntryBody {
                actor: e.actor,
                from: e.from.map(|s| s.as_str().to_owned()),
                to: e.to.as_str().to_owned(),
                reason: e.reason,
                at: e.at.to_rfc3339(),
            })
            .collect(),
        next_cursor,
    }))
}

/// Put a store on a plan, with negotiated exceptions to its limits. Its cell enforces the
/// new limits within seconds.
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant_id}/plan", tag = "admin",
    params(("tenant_id" = String, Path, description = "`tnt_…`")),
    request_body = PlanRequest,
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "the plan and limits now in force", body = PlanResponse),
        (status = 401, description = "`invalid_operator_token`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_fields`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id))]
async fn set_plan(
    State(state): State<AppState>,
    operator: Operator,
    Path(tenant_id): Path<String>,
    body: Result<Json<PlanRequest>, JsonRejection>,
) -> Result<Json<PlanResponse>, ApiError> {
    let tenant = parse_tenant(&tenant_id)?;
    let Json(request) = body.map_err(|e| ApiError::bad_request("malformed_json", e.body_text()))?;
    let plan = Plan::parse(&request.plan).ok_or_else(|| {
        ApiError::unprocessable("invalid_fields", "some fields are invalid")
            .with_details(json!({ "fields": { "plan": "free, growth or enterprise" } }))
    })?;
    let o = &request.overrides;
    if o.retention_days.is_some_and(|d| d < nudge_tenants::MIN_RETENTION_DAYS) {
        return Err(ApiError::unprocessable("invalid_fields", "some fields are invalid").with_details(json!({
            "fields": { "overrides.retention_days": format!(
                "at least {} days: the event topics keep a week of records", nudge_tenants::MIN_RETENTION_DAYS
            ) }
        })));
    }
    let overrides = LimitOverrides {
        events_per_second: o.events_per_second,
        burst_events: o.burst_events,
        connections: o.connections,
        retention_days: o.retention_days,
        seats: o.seats,
    };
    let trace = current_trace().map(|t| t.to_header());
    let limits =
        plans::set_plan(&state.router, &state.topics, tenant, plan, &overrides, trace).await.map_err(|e| match e {
            PlanError::NotFound => ApiError::not_found(),
            PlanError::Db(db) => db_error(db),
        })?;
    state.wake_outbox();
    tracing::info!(tenant_id = %tenant, plan = plan.as_str(), operator = %operator.0, "plan set");
    Ok(Json(PlanResponse {
        tenant_id: tenant.to_string(),
        plan: plan.as_str().to_owned(),
        limits: LimitsBody {
            events_per_second: Some(limits.events_per_second),
            burst_events: Some(limits.burst_events),
            connections: Some(limits.connections),
            retention_days: Some(limits.retention_days),
            seats: Some(limits.seats),
        },
    }))
}

/// Choose the model a store's events are scored with: a registered version in stage
/// `production`, or `null` for the registry's default. Its cell scores with it within
/// seconds; predictions name it.
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant_id}/model", tag = "admin",
    params(("tenant_id" = String, Path, description = "`tnt_…`")),
    request_body = ModelRequest,
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "the model now assigned", body = ModelResponse),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 401, description = "`invalid_operator_token`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`unknown_model`: the registry has no such version; `model_not_production`: it is not in stage production", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id))]
async fn set_model(
    State(state): State<AppState>,
    operator: Operator,
    Path(tenant_id): Path<String>,
    body: Result<Json<ModelRequest>, JsonRejection>,
) -> Result<Json<ModelResponse>, ApiError> {
    let tenant = parse_tenant(&tenant_id)?;
    let Json(request) = body.map_err(|e| ApiError::bad_request("malformed_json", e.body_text()))?;
    let model = request.model_version.as_deref();
    let trace = current_trace().map(|t| t.to_header());
    plans::set_model(&state.router, &state.topics, tenant, model, trace).await.map_err(|e| match e {
        ModelError::NotFound => ApiError::not_found(),
        e @ ModelError::UnknownModel(_) => ApiError::unprocessable("unknown_model", e.to_string()),
        e @ ModelError::NotProduction { .. } => ApiError::unprocessable("model_not_production", e.to_string()),
        ModelError::Db(db) => db_error(db),
    })?;
    state.wake_outbox();
    tracing::info!(tenant_id = %tenant, model = model.unwrap_or("default"), operator = %operator.0, "model assigned");
    let effective = match model {
        Some(m) => m.to_owned(),
        None => registry::default_version(state.router.registry()).await.map_err(db_error)?,
    };
    Ok(Json(ModelResponse {
        tenant_id: tenant.to_string(),
        model_version: request.model_version.clone(),
        effective_model_version: effective,
    }))
}

fn rollout_error(e: RolloutError) -> ApiError {
    match e {
        RolloutError::NotFound => ApiError::not_found(),
        RolloutError::Invalid(m) => ApiError::unprocessable("invalid_rollout", m),
        RolloutError::NoRollout => {
            ApiError::new(StatusCode::CONFLICT, "no_rollout", "the store has no rollout to promote")
        }
        RolloutError::Db(db) => db_error(db),
    }
}

/// Roll a candidate model out beside a store's own: as a canary (it scores and acts for a
/// share of shoppers, each shopper always on the same side) or in shadow (it scores every
/// event beside production, logged to `predictions.v1` with `shadow`, and never acts).
/// Replaces any rollout in progress; the cell follows within seconds.
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant_id}/rollout", tag = "admin",
    params(("tenant_id" = String, Path, description = "`tnt_…`")),
    request_body = RolloutRequest,
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "the rollout now in force", body = RolloutResponse),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 401, description = "`invalid_operator_token`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_rollout`: an unknown model, mode or share", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id))]
async fn start_rollout(
    State(state): State<AppState>,
    operator: Operator,
    Path(tenant_id): Path<String>,
    body: Result<Json<RolloutRequest>, JsonRejection>,
) -> Result<Json<RolloutResponse>, ApiError> {
    let tenant = parse_tenant(&tenant_id)?;
    let Json(request) = body.map_err(|e| ApiError::bad_request("malformed_json", e.body_text()))?;
    let invalid = |m: &str| ApiError::unprocessable("invalid_rollout", m.to_owned());
    let (mode, basis_points) = match (request.mode.as_str(), request.canary_percent) {
        ("canary", Some(p)) if (0.0..=100.0).contains(&p) => (RolloutMode::Canary, (p * 100.0).round() as u32),
        ("canary", _) => return Err(invalid("a canary needs canary_percent between 0 and 100")),
        ("shadow", None) => (RolloutMode::Shadow, 0),
        ("shadow", Some(_)) => return Err(invalid("a shadow rollout takes no canary_percent")),
        _ => return Err(invalid("mode is canary or shadow")),
    };
    let rollout =
        ModelRollout { candidate: request.candidate_model_version.clone(), mode, canary_basis_points: basis_points };
    let trace = current_trace().map(|t| t.to_header());
    let actor = Actor::Operator(operator.0.clone()).to_string();
    plans::set_rollout(&state.router, &state.topics, tenant, Some(&rollout), &actor, trace)
        .await
        .map_err(rollout_error)?;
    state.wake_outbox();
    tracing::info!(tenant_id = %tenant, candidate = %rollout.candidate, mode = %request.mode, basis_points, operator = %operator.0, "rollout started");
    Ok(Json(RolloutResponse {
        tenant_id: tenant.to_string(),
        candidate_model_version: rollout.candidate,
        mode: request.mode,
        canary_percent: f64::from(basis_points) / 100.0,
    }))
}

/// Roll back: end the store's rollout; every shopper is scored by the store's own model
/// again within seconds.
#[utoipa::path(delete, path = "/v1/admin/tenants/{tenant_id}/rollout", tag = "admin",
    params(("tenant_id" = String, Path, description = "`tnt_…`")),
    security(("operator_token" = [])),
    responses(
        (status = 204, description = "no rollout any more"),
        (status = 401, description = "`invalid_operator_token`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id))]
async fn end_rollout(
    State(state): State<AppState>,
    operator: Operator,
    Path(tenant_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tenant = parse_tenant(&tenant_id)?;
    let trace = current_trace().map(|t| t.to_header());
    let actor = Actor::Operator(operator.0.clone()).to_string();
    plans::set_rollout(&state.router, &state.topics, tenant, None, &actor, trace).await.map_err(rollout_error)?;
    state.wake_outbox();
    tracing::info!(tenant_id = %tenant, operator = %operator.0, "rollout ended");
    Ok(StatusCode::NO_CONTENT)
}

/// Promote: the rollout's candidate becomes the store's model and the rollout ends, in one
/// step.
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant_id}/rollout/promote", tag = "admin",
    params(("tenant_id" = String, Path, description = "`tnt_…`")),
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "the store's model now", body = ModelResponse),
        (status = 401, description = "`invalid_operator_token`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`no_rollout`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id))]
async fn promote_rollout(
    State(state): State<AppState>,
    operator: Operator,
    Path(tenant_id): Path<String>,
) -> Result<Json<ModelResponse>, ApiError> {
    let tenant = parse_tenant(&tenant_id)?;
    let trace = current_trace().map(|t| t.to_header());
    let actor = Actor::Operator(operator.0.clone()).to_string();
    let promoted =
        plans::promote_rollout(&state.router, &state.topics, tenant, &actor, trace).await.map_err(rollout_error)?;
    state.wake_outbox();
    tracing::info!(tenant_id = %tenant, model = %promoted, operator = %operator.0, "rollout promoted");
    Ok(Json(ModelResponse {
        tenant_id: tenant.to_string(),
        model_version: Some(promoted.clone()),
        effective_model_version: promoted,
    }))
}

/// Move a store to a database and a cell of its own. Its writes are refused (503
/// `tenant_moving`) for the moment of the copy; nothing is lost or duplicated. Then the
/// provisioner brings the store's cell up and the store is routed to it (the shared cell
/// forgets it from the same announcement). Repeating the call finishes what an earlier one
/// left (a cell still starting answers 503 `cell_provisioning`). Moving back is not offered.
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant_id}/isolation", tag = "admin",
    params(("tenant_id" = String, Path, description = "`tnt_…`")),
    request_body = IsolationRequest,
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "the store lives in its own database", body = IsolationResponse),
        (status = 401, description = "`invalid_operator_token`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_fields`", body = ErrorBody),
        (status = 503, description = "`cell_provisioning` (the store's cell is still starting; repeat the call), `provisioning_unavailable`, `provisioner_unavailable`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id = %tenant_id))]
async fn set_isolation(
    State(state): State<AppState>,
    operator: Operator,
    Path(tenant_id): Path<String>,
    body: Result<Json<IsolationRequest>, JsonRejection>,
) -> Result<Json<IsolationResponse>, ApiError> {
    let tenant = parse_tenant(&tenant_id)?;
    let Json(request) = body.map_err(|e| ApiError::bad_request("malformed_json", e.body_text()))?;
    if request.isolation != "dedicated" {
        return Err(ApiError::unprocessable("invalid_fields", "some fields are invalid")
            .with_details(json!({ "fields": { "isolation": "dedicated (moving back to shared is not offered)" } })));
    }
    let moved = dedicated::move_to_dedicated(&state.router, tenant).await.map_err(|e| match e {
        MoveError::NotFound => ApiError::not_found(),
        MoveError::Router(db) => db_error(db),
        other => ApiError::internal(&other),
    })?;
    state.wake_outbox();
    tracing::info!(tenant_id = %tenant, database = %moved.database, moved = moved.moved, operator = %operator.0, "database isolated");
    let plan = placement::plan_of(&state.router, tenant).await.map_err(db_error)?.ok_or_else(ApiError::not_found)?;
    let cell = state
        .provisioner
        .dedicated_cell(&TenantRequest { tenant, plan }, &moved.database)
        .await
        .map_err(provision_error)?;
    let trace = current_trace().map(|t| t.to_header());
    if !placement::route_to(&state.router, &state.topics, tenant, &cell, "dedicated", trace).await.map_err(db_error)? {
        return Err(ApiError::not_found());
    }
    state.wake_outbox();
    tracing::info!(tenant_id = %tenant, cell_id = %cell.id, operator = %operator.0, "isolation set");
    Ok(Json(IsolationResponse {
        tenant_id: tenant.to_string(),
        isolation: "dedicated".into(),
        database: moved.database,
        moved: moved.moved,
        rows: moved.rows.into_iter().collect(),
        cell_id: cell.id.to_string(),
        cell_url: cell.public_url,
    }))
}

/// File an erasure request for one of a tenant's shoppers, by shopper id or subject digest.
/// Filing it again answers the same request (200).
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant_id}/erasures", tag = "admin",
    params(("tenant_id" = String, Path)), request_body = AdminErasureRequest, security(("operator_token" = [])),
    responses(
        (status = 202, description = "filed; in progress", body = ErasureView),
        (status = 200, description = "filed before: the same request", body = ErasureView),
        (status = 401, description = "`invalid_operator_token`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`legal_hold`", body = ErrorBody),
        (status = 422, description = "`invalid_fields`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn file_erasure(
    State(state): State<AppState>,
    operator: Operator,
    Path(tenant_id): Path<String>,
    body: Result<Json<AdminErasureRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<ErasureView>), ApiError> {
    let tenant = parse_tenant(&tenant_id)?;
    let Json(body) = body.map_err(|e| ApiError::bad_request("malformed_json", e.body_text()))?;
    let names = super::erasures::Names {
        shopper_id: body.shopper_id.as_deref(),
        subject_digest: body.subject_digest.as_deref(),
        email_sha256: body.email_sha256.as_deref(),
        email_digest: body.email_digest.as_deref(),
    };
    let named = super::erasures::Named::of(
        tenant,
        names,
        "give exactly one of shopper_id, subject_digest, email_sha256 and email_digest",
    )?;
    let actor = format!("operator:{}", operator.0);
    let trace = current_trace().map(|t| t.to_header());
    let (request, new) = nudge_control_plane::erasure::request(
        &state.router,
        &state.topics,
        &state.receipts,
        tenant,
        named.subject(),
        &actor,
        trace,
    )
    .await
    .map_err(super::erasures::erasure_error)?;
    state.wake_outbox();
    Ok((if new { StatusCode::ACCEPTED } else { StatusCode::OK }, Json(super::erasures::view(request))))
}

/// One of a tenant's erasure requests, with its steps and audit trail.
#[utoipa::path(get, path = "/v1/admin/tenants/{tenant_id}/erasures/{request_id}", tag = "admin",
    params(("tenant_id" = String, Path), ("request_id" = String, Path)), security(("operator_token" = [])),
    responses(
        (status = 200, body = ErasureView),
        (status = 401, description = "`invalid_operator_token`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn get_erasure(
    State(state): State<AppState>,
    _operator: Operator,
    Path((tenant_id, request_id)): Path<(String, String)>,
) -> Result<Json<ErasureView>, ApiError> {
    let tenant = parse_tenant(&tenant_id)?;
    let request_id = request_id.parse().map_err(|_| ApiError::not_found())?;
    let request = nudge_control_plane::erasure::get(&state.router, tenant, request_id)
        .await
        .map_err(super::erasures::erasure_error)?;
    Ok(Json(super::erasures::view(request)))
}
