//! A store's own API, for its signed-in members: `/v1/tenants/{tenant_id}/…`. Another
//! store's id answers 404, exactly as an id that does not exist.

use axum::{
    Json,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
};
use nudge_contracts::{
    ShopperId,
    control::{
        AddMemberRequest, ApiKeyList, ApiKeyView, ChangeRoleRequest, CreateKeyRequest, CreatedKey, MemberList,
        MemberView, MembershipChangeList, MembershipChangeView, StoreModelView, StoreRolloutView, SuppressionList,
        SuppressionRequest, SuppressionView, TenantView, UsageView,
    },
};
use nudge_control_plane::{
    accounts,
    keys::{self, KeyInfo, SCOPES},
    registry, store, suppressions, usage,
};
use nudge_platform_http::{ApiError, ErrorBody, current_trace};
use nudge_tenants::{AccountId, Email, KeyId, Role};
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    error::{account_error, db_error, key_error},
    merchant::Merchant,
};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_tenant))
        .routes(routes!(get_model))
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
        .routes(routes!(list_members, add_member))
        .routes(routes!(change_member_role, remove_member))
        .routes(routes!(membership_changes))
        .routes(routes!(list_suppressions, add_suppression))
        .routes(routes!(remove_suppression))
        .routes(routes!(get_usage))
}

fn view(k: KeyInfo) -> ApiKeyView {
    ApiKeyView {
        key_id: k.key_id.to_string(),
        kind: k.kind,
        name: k.name,
        display: k.display,
        scopes: k.scopes,
        created_at: k.created_at.to_rfc3339(),
        revoked_at: k.revoked_at.map(|t| t.to_rfc3339()),
    }
}

/// The store.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}", tag = "store",
    params(("tenant_id" = String, Path)), security(("access_token" = [])),
    responses(
        (status = 200, body = TenantView),
        (status = 401, description = "`missing_token`, `invalid_token`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn get_tenant(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
) -> Result<Json<TenantView>, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    let p = store::profile(&state.router, tenant).await.map_err(db_error)?.ok_or_else(ApiError::not_found)?;
    Ok(Json(TenantView {
        tenant_id: p.tenant.to_string(),
        name: p.name,
        state: p.state.as_str().to_owned(),
        cell_id: p.cell_id,
        cell_url: p.cell_url,
        allowed_origins: p.allowed_origins,
        created_at: p.created_at.to_rfc3339(),
        retention_days: p.retention_days,
    }))
}

/// The model the store's events are scored with, and a candidate being tried beside it.
/// Every member reads it; the platform's operators choose and roll out models.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/model", tag = "store",
    params(("tenant_id" = String, Path)), security(("access_token" = [])),
    responses(
        (status = 200, body = StoreModelView),
        (status = 401, description = "`missing_token`, `invalid_token`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn get_model(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
) -> Result<Json<StoreModelView>, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    let (chosen, rollout) =
        store::model(&state.router, tenant).await.map_err(db_error)?.ok_or_else(ApiError::not_found)?;
    let effective = match &chosen {
        Some(version) => version.clone(),
        None => registry::default_version(state.router.registry()).await.map_err(db_error)?,
    };
    Ok(Json(StoreModelView {
        model_version: chosen,
        effective_model_version: effective,
        rollout: rollout.map(|r| StoreRolloutView {
            candidate_model_version: r.candidate,
            mode: match r.mode {
                nudge_tenants::RolloutMode::Canary => "canary",
                nudge_tenants::RolloutMode::Shadow => "shadow",
            }
            .to_owned(),
            canary_percent: f64::from(r.canary_basis_points) / 100.0,
        }),
    }))
}

/// The store's API keys (publishable and secret; never a secret itself).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/api-keys", tag = "store",
    params(("tenant_id" = String, Path)), security(("access_token" = [])),
    responses(
        (status = 200, body = ApiKeyList),
        (status = 403, description = "`forbidden`: owners and admins only", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn list_keys(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
) -> Result<Json<ApiKeyList>, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    merchant.require(merchant.role().manages_keys())?;
    let keys = keys::list(&state.router, tenant).await.map_err(key_error)?;
    Ok(Json(ApiKeyList { items: keys.into_iter().map(view).collect() }))
}

/// Create a secret key for the store's servers. Cells accept it within seconds.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/api-keys", tag = "store",
    params(("tenant_id" = String, Path)), request_body = CreateKeyRequest, security(("access_token" = [])),
    responses(
        (status = 201, body = CreatedKey),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_fields`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn create_key(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
    body: Result<Json<CreateKeyRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    merchant.require(merchant.role().manages_keys())?;
    let Json(request) = body.map_err(|e| ApiError::bad_request("malformed_json", e.body_text()))?;
    let name = request.name.trim();
    let mut fields = serde_json::Map::new();
    if name.is_empty() || name.chars().count() > 100 {
        fields.insert("name".into(), json!("1-100 characters"));
    }
    if request.scopes.is_empty() || request.scopes.iter().any(|s| !SCOPES.contains(&s.as_str())) {
        fields.insert("scopes".into(), json!(format!("one or more of {}", SCOPES.join(", "))));
    }
    if !fields.is_empty() {
        return Err(ApiError::unprocessable("invalid_fields", "some fields are invalid")
            .with_details(json!({ "fields": fields })));
    }
    let trace = current_trace().map(|t| t.to_header());
    let (info, secret) =
        keys::create_secret(&state.router, &state.topics, tenant, name, &request.scopes, merchant.0.account, trace)
            .await
            .map_err(key_error)?;
    state.wake_outbox();
    Ok((StatusCode::CREATED, Json(CreatedKey { key: view(info), secret_key: secret.expose().to_owned() })))
}

/// Revoke a key. Cells stop accepting it within seconds. Revoking twice is harmless.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/api-keys/{key_id}", tag = "store",
    params(("tenant_id" = String, Path), ("key_id" = String, Path)), security(("access_token" = [])),
    responses(
        (status = 204, description = "revoked"),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn revoke_key(
    State(state): State<AppState>,
    merchant: Merchant,
    Path((tenant_id, key_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    merchant.require(merchant.role().manages_keys())?;
    let key_id: KeyId = key_id.parse().map_err(|_| ApiError::not_found())?;
    let trace = current_trace().map(|t| t.to_header());
    keys::revoke(&state.router, &state.topics, tenant, key_id, trace).await.map_err(key_error)?;
    state.wake_outbox();
    Ok(StatusCode::NO_CONTENT)
}

/// The store's members.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/members", tag = "store",
    params(("tenant_id" = String, Path)), security(("access_token" = [])),
    responses((status = 200, body = MemberList), (status = 404, description = "`not_found`", body = ErrorBody)))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn list_members(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
) -> Result<Json<MemberList>, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    let members = accounts::members(&state.db, tenant).await.map_err(db_error)?;
    Ok(Json(MemberList {
        items: members
            .into_iter()
            .map(|m| MemberView { account_id: m.account.to_string(), email: m.email, role: m.role.as_str().to_owned() })
            .collect(),
    }))
}

/// Add an existing account to the store.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/members", tag = "store",
    params(("tenant_id" = String, Path)), request_body = AddMemberRequest, security(("access_token" = [])),
    responses(
        (status = 201, body = MemberView),
        (status = 403, description = "`forbidden`: only owners add owners; analysts and viewers add no one", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`already_member`", body = ErrorBody),
        (status = 422, description = "`invalid_fields`, `unknown_account`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn add_member(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
    body: Result<Json<AddMemberRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<MemberView>), ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    let Json(request) = body.map_err(|e| ApiError::bad_request("malformed_json", e.body_text()))?;
    let (email, role) = (Email::parse(&request.email), Role::parse(&request.role));
    let (Ok(email), Some(role)) = (email.clone(), role) else {
        let mut fields = serde_json::Map::new();
        if let Err(e) = email {
            fields.insert("email".into(), json!(e.to_string()));
        }
        if role.is_none() {
            fields.insert("role".into(), json!("owner, admin, analyst or viewer"));
        }
        return Err(ApiError::unprocessable("invalid_fields", "some fields are invalid")
            .with_details(json!({ "fields": fields })));
    };
    merchant.require(merchant.role().manages_member(role))?;
    let member = accounts::add_member(&state.router, tenant, &email, role).await.map_err(account_error)?;
    Ok((
        StatusCode::CREATED,
        Json(MemberView {
            account_id: member.account.to_string(),
            email: member.email,
            role: member.role.as_str().to_owned(),
        }),
    ))
}

fn member_view(m: accounts::Member) -> MemberView {
    MemberView { account_id: m.account.to_string(), email: m.email, role: m.role.as_str().to_owned() }
}

/// A member of the store by account id; any other id answers 404.
fn account_of(raw: &str) -> Result<AccountId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found())
}

/// The store's latest changes to its memberships (roles changed, members removed or
/// left), newest first, at most 200: who did what to whom. Owners and admins.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/members/changes", tag = "store",
    params(("tenant_id" = String, Path)), security(("access_token" = [])),
    responses(
        (status = 200, body = MembershipChangeList),
        (status = 403, description = "`forbidden`: analysts and viewers", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn membership_changes(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
) -> Result<Json<MembershipChangeList>, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    merchant.require(merchant.role().manages_member(Role::Viewer))?;
    let changes = accounts::membership_changes(&state.db, tenant, 200).await.map_err(db_error)?;
    Ok(Json(MembershipChangeList {
        items: changes
            .into_iter()
            .map(|c| MembershipChangeView {
                actor_account_id: c.actor.to_string(),
                account_id: c.account.to_string(),
                from_role: c.from_role.as_str().to_owned(),
                to_role: c.to_role.map(|r| r.as_str().to_owned()),
                at: c.at.to_rfc3339(),
            })
            .collect(),
    }))
}

/// Change a member's role. Owners change anyone's; admins change admins', analysts' and
/// viewers' (and make no owners). The store's last owner cannot step down. It takes effect
/// at the member's next request here, and in their next access token.
#[utoipa::path(patch, path = "/v1/tenants/{tenant_id}/members/{account_id}", tag = "store",
    params(("tenant_id" = String, Path), ("account_id" = String, Path)), request_body = ChangeRoleRequest,
    security(("access_token" = [])),
    responses(
        (status = 200, body = MemberView),
        (status = 403, description = "`forbidden`: the caller's role does not manage the member's present or new role", body = ErrorBody),
        (status = 404, description = "`not_found`: no such member of this store", body = ErrorBody),
        (status = 409, description = "`last_owner`: a store keeps at least one owner", body = ErrorBody),
        (status = 422, description = "`invalid_fields`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn change_member_role(
    State(state): State<AppState>,
    merchant: Merchant,
    Path((tenant_id, account_id)): Path<(String, String)>,
    body: Result<Json<ChangeRoleRequest>, JsonRejection>,
) -> Result<Json<MemberView>, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    let account = account_of(&account_id)?;
    let Json(request) = body.map_err(|e| ApiError::bad_request("malformed_json", e.body_text()))?;
    let role = Role::parse(&request.role).ok_or_else(|| {
        ApiError::unprocessable("invalid_fields", "some fields are invalid")
            .with_details(json!({ "fields": { "role": "owner, admin, analyst or viewer" } }))
    })?;
    let member =
        accounts::change_role(&state.router, tenant, merchant.actor(), account, role).await.map_err(account_error)?;
    tracing::info!(tenant_id = %tenant, account_id = %account, role = role.as_str(), "member's role changed");
    Ok(Json(member_view(member)))
}

/// End a membership: owners remove anyone, admins remove admins, analysts and viewers, and
/// every member may leave. The store's last owner cannot. The account stays (it may belong
/// to other stores); its sessions in this store end: its next request here answers 401
/// `membership_ended`, and its refresh token no longer works.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/members/{account_id}", tag = "store",
    params(("tenant_id" = String, Path), ("account_id" = String, Path)), security(("access_token" = [])),
    responses(
        (status = 204, description = "removed"),
        (status = 403, description = "`forbidden`: the caller's role does not manage the member's", body = ErrorBody),
        (status = 404, description = "`not_found`: no such member of this store", body = ErrorBody),
        (status = 409, description = "`last_owner`: a store keeps at least one owner", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn remove_member(
    State(state): State<AppState>,
    merchant: Merchant,
    Path((tenant_id, account_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    let account = account_of(&account_id)?;
    accounts::remove_member(&state.router, tenant, merchant.actor(), account).await.map_err(account_error)?;
    tracing::info!(tenant_id = %tenant, account_id = %account, "member removed");
    Ok(StatusCode::NO_CONTENT)
}

pub(super) fn shopper_of(raw: &str) -> Result<ShopperId, ApiError> {
    ShopperId::parse(raw).map_err(|e| {
        ApiError::unprocessable("invalid_fields", "some fields are invalid")
            .with_details(json!({ "fields": { "shopper_id": e.to_string() } }))
    })
}

/// The store's suppressed shoppers.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/suppressions", tag = "store",
    params(("tenant_id" = String, Path)), security(("access_token" = [])),
    responses((status = 200, body = SuppressionList), (status = 404, description = "`not_found`", body = ErrorBody)))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn list_suppressions(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
) -> Result<Json<SuppressionList>, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    let items = suppressions::list(&state.router, tenant).await.map_err(db_error)?;
    Ok(Json(SuppressionList {
        items: items
            .into_iter()
            .map(|s| SuppressionView {
                subject_digest: s.subject_digest,
                shopper_id: s.shopper_id,
                reason: s.reason,
                created_at: s.created_at.to_rfc3339(),
            })
            .collect(),
    }))
}

/// Stop acting on a shopper's events: the cell drops them at ingest (and counts them)
/// within seconds. Suppressing twice is harmless.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/suppressions", tag = "store",
    params(("tenant_id" = String, Path)), request_body = SuppressionRequest, security(("access_token" = [])),
    responses(
        (status = 201, description = "suppressed", body = SuppressionView),
        (status = 403, description = "`forbidden`: owners and admins only", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_fields`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn add_suppression(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
    body: Result<Json<SuppressionRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<SuppressionView>), ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    merchant.require(merchant.role().manages_keys())?;
    let Json(request) = body.map_err(|e| ApiError::bad_request("malformed_json", e.body_text()))?;
    let shopper = shopper_of(&request.shopper_id)?;
    let reason = request.reason.unwrap_or_else(|| "merchant".to_owned());
    if !["opt_out", "merchant"].contains(&reason.as_str()) {
        return Err(ApiError::unprocessable("invalid_fields", "some fields are invalid")
            .with_details(json!({ "fields": { "reason": "opt_out or merchant" } })));
    }
    let trace = current_trace().map(|t| t.to_header());
    suppressions::add(&state.router, &state.topics, tenant, &shopper, &reason, trace).await.map_err(db_error)?;
    state.wake_outbox();
    Ok((
        StatusCode::CREATED,
        Json(SuppressionView {
            subject_digest: nudge_contracts::subject_digest(tenant.as_uuid(), &shopper),
            shopper_id: Some(shopper.to_string()),
            reason,
            created_at: chrono::Utc::now().to_rfc3339(),
        }),
    ))
}

/// Lift a shopper's suppression.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/suppressions/{shopper_id}", tag = "store",
    params(("tenant_id" = String, Path), ("shopper_id" = String, Path)), security(("access_token" = [])),
    responses(
        (status = 204, description = "lifted"),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn remove_suppression(
    State(state): State<AppState>,
    merchant: Merchant,
    Path((tenant_id, shopper_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    merchant.require(merchant.role().manages_keys())?;
    let shopper = ShopperId::parse(&shopper_id).map_err(|_| ApiError::not_found())?;
    let trace = current_trace().map(|t| t.to_header());
    let removed =
        suppressions::remove(&state.router, &state.topics, tenant, &shopper, trace).await.map_err(db_error)?;
    if !removed {
        return Err(ApiError::not_found());
    }
    state.wake_outbox();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, serde::Deserialize)]
struct Period {
    from: Option<String>,
    to: Option<String>,
}

/// What happened to the store's events: accepted, and dropped by reason. Reported by its
/// cells every few seconds.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/usage", tag = "store",
    params(
        ("tenant_id" = String, Path),
        ("from" = Option<String>, Query, description = "RFC 3339; default 24 hours ago"),
        ("to" = Option<String>, Query, description = "RFC 3339; default now"),
    ),
    security(("access_token" = [])),
    responses(
        (status = 200, body = UsageView),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_period`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn get_usage(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
    axum::extract::Query(period): axum::extract::Query<Period>,
) -> Result<Json<UsageView>, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    let parse = |v: Option<&str>, default: chrono::DateTime<chrono::Utc>| -> Result<_, ApiError> {
        match v {
            None => Ok(default),
            Some(t) => chrono::DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| ApiError::unprocessable("invalid_period", "from and to are RFC 3339 timestamps")),
        }
    };
    let now = chrono::Utc::now();
    let (from, to) =
        (parse(period.from.as_deref(), now - chrono::Duration::hours(24))?, parse(period.to.as_deref(), now)?);
    if from >= to {
        return Err(ApiError::unprocessable("invalid_period", "from must be before to"));
    }
    let totals = usage::totals(&state.router, tenant, from, to).await.map_err(db_error)?;
    Ok(Json(UsageView {
        tenant_id: tenant.to_string(),
        from: from.to_rfc3339(),
        to: to.to_rfc3339(),
        accepted: totals.accepted,
        dropped: totals.dropped,
        predictions: totals.predictions,
        interventions: totals.interventions,
        peak_connections: totals.peak_connections,
    }))
}
