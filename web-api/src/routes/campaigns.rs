//! `/v1/tenants/{tenant_id}/campaigns`: a store's campaigns. Every member reads them;
//! owners and admins create, save (each save a new version, `If-Match` naming the version
//! it replaces) and move them through their lifecycle. A campaign id of another store
//! answers 404, like one that does not exist.

use axum::{
    Json,
    extract::{
        Path, State,
        rejection::{JsonRejection, JsonSyntaxError},
    },
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use nudge_campaigns::model::CampaignSpec;
use nudge_control_plane::campaigns::{self, Campaign, CampaignError, CampaignState};
use nudge_platform_http::{ApiError, ErrorBody};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{error::db_error, merchant::Merchant};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_campaign, list_campaigns))
        .routes(routes!(get_campaign, save_campaign))
        .routes(routes!(move_campaign))
        .routes(routes!(campaign_versions))
}

/// A campaign and its version in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignView {
    /// `cmp_…`.
    pub campaign_id: String,
    /// `draft`, `active`, `paused` or `archived`.
    pub state: String,
    pub version: i32,
    pub spec: CampaignSpec,
    pub created_at: String,
    pub updated_at: String,
}

/// The store's campaigns, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignList {
    pub campaigns: Vec<CampaignView>,
}

/// A move through the lifecycle.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignMove {
    /// `active`, `paused` or `archived`.
    pub state: String,
}

/// One saved version.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignVersionView {
    pub version: i32,
    /// `account:…`.
    pub saved_by: String,
    pub saved_at: String,
    pub spec: CampaignSpec,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignVersions {
    pub versions: Vec<CampaignVersionView>,
}

fn campaign_id(id: Uuid) -> String {
    campaigns::campaign_id_text(id)
}

/// The campaign named in the path; anything that is not a campaign id answers 404.
fn parse_campaign(text: &str) -> Result<Uuid, ApiError> {
    text.strip_prefix("cmp_").and_then(|hex| Uuid::try_parse(hex).ok()).ok_or_else(ApiError::not_found)
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn view(c: Campaign) -> CampaignView {
    CampaignView {
        campaign_id: campaign_id(c.id),
        state: c.state.as_str().to_owned(),
        version: c.version,
        spec: c.spec,
        created_at: rfc3339(c.created_at),
        updated_at: rfc3339(c.updated_at),
    }
}

/// The campaign with its version as its entity tag.
fn with_etag(status: StatusCode, c: Campaign) -> Response {
    let tag = HeaderValue::from_str(&format!("\"{}\"", c.version)).ok();
    let mut response = (status, Json(view(c))).into_response();
    if let Some(tag) = tag {
        response.headers_mut().insert(header::ETAG, tag);
    }
    response
}

fn campaign_error(e: CampaignError) -> ApiError {
    match e {
        CampaignError::NotFound => ApiError::not_found(),
        CampaignError::Invalid(problems) => {
            ApiError::unprocessable("invalid_campaign", "the campaign has problems; each is named by its field")
                .with_details(json!({ "problems": problems }))
        }
        CampaignError::VersionConflict { current } => ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "version_conflict",
            format!("the campaign was saved since (it is at version {current}); reload it and save again"),
        )
        .with_details(json!({ "current_version": current })),
        e @ CampaignError::InvalidTransition { .. } => {
            ApiError::new(StatusCode::CONFLICT, "invalid_transition", e.to_string())
        }
        CampaignError::Archived => ApiError::new(
            StatusCode::CONFLICT,
            "campaign_archived",
            "an archived campaign cannot change; create a new one",
        ),
        e @ CampaignError::TooMany => ApiError::new(StatusCode::CONFLICT, "too_many_campaigns", e.to_string()),
        CampaignError::Db(db) => db_error(db),
    }
}

/// Reads a campaign from the body: malformed JSON is 400; a campaign whose fields do not
/// fit (an unknown channel, trigger or field, a wrong type) is 422 like any other problem.
fn spec_of(body: Result<Json<CampaignSpec>, JsonRejection>) -> Result<CampaignSpec, ApiError> {
    match body {
        Ok(Json(spec)) => Ok(spec),
        Err(JsonRejection::JsonSyntaxError(e)) => Err(syntax(&e)),
        Err(JsonRejection::JsonDataError(e)) => {
            Err(ApiError::unprocessable("invalid_campaign", "the campaign has problems; each is named by its field")
                .with_details(
                    json!({ "problems": [{ "field": "", "code": "invalid_value", "message": e.body_text() }] }),
                ))
        }
        Err(other) => Err(ApiError::bad_request("malformed_json", other.body_text())),
    }
}

fn syntax(e: &JsonSyntaxError) -> ApiError {
    ApiError::bad_request("malformed_json", e.body_text())
}

/// Owners and admins change campaigns; analysts and viewers read them.
fn require_editor(merchant: &Merchant) -> Result<(), ApiError> {
    merchant.require(merchant.role().manages_keys())
}

fn actor(merchant: &Merchant) -> String {
    format!("account:{}", merchant.0.account)
}

/// Create a campaign, as a draft at version 1. Every problem is reported at once, each
/// named by its field (and, inside a condition or a template, the character position).
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/campaigns", tag = "campaigns",
    params(("tenant_id" = String, Path)), security(("access_token" = [])),
    request_body = CampaignSpec,
    responses(
        (status = 201, description = "created; `ETag` is its version", body = CampaignView),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`: owners and admins only", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`too_many_campaigns`", body = ErrorBody),
        (status = 422, description = "`invalid_campaign`: `details.problems`, each `{field, code, message, position?}`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn create_campaign(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
    body: Result<Json<CampaignSpec>, JsonRejection>,
) -> Result<Response, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    require_editor(&merchant)?;
    let spec = spec_of(body)?;
    let campaign = campaigns::create(&state.router, tenant, &spec, state.loopback_webhooks, &actor(&merchant))
        .await
        .map_err(campaign_error)?;
    Ok(with_etag(StatusCode::CREATED, campaign))
}

/// The store's campaigns, newest first, archived ones included.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/campaigns", tag = "campaigns",
    params(("tenant_id" = String, Path)), security(("access_token" = [])),
    responses(
        (status = 200, body = CampaignList),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn list_campaigns(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
) -> Result<Json<CampaignList>, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    let all = campaigns::list(&state.router, tenant).await.map_err(campaign_error)?;
    Ok(Json(CampaignList { campaigns: all.into_iter().map(view).collect() }))
}

/// One campaign and its version in force (`ETag`).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/campaigns/{campaign_id}", tag = "campaigns",
    params(("tenant_id" = String, Path), ("campaign_id" = String, Path, description = "`cmp_…`")),
    security(("access_token" = [])),
    responses(
        (status = 200, body = CampaignView),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn get_campaign(
    State(state): State<AppState>,
    merchant: Merchant,
    Path((tenant_id, campaign_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    let id = parse_campaign(&campaign_id)?;
    let campaign = campaigns::get(&state.router, tenant, id).await.map_err(campaign_error)?;
    Ok(with_etag(StatusCode::OK, campaign))
}

/// The version `If-Match` names: `"3"` (or `3`); absent or `*`, the save replaces
/// whatever is in force.
fn expected_version(headers: &HeaderMap) -> Result<Option<i32>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    text.parse::<i32>().map(Some).map_err(|_| {
        ApiError::bad_request("invalid_if_match", "If-Match names one version of the campaign, e.g. \"3\", or *")
    })
}

/// Save a new version of the campaign, in force at once (an active campaign sends by it
/// from then on). With `If-Match: "<version>"` the save is refused (412) when someone
/// saved since.
#[utoipa::path(put, path = "/v1/tenants/{tenant_id}/campaigns/{campaign_id}", tag = "campaigns",
    params(
        ("tenant_id" = String, Path), ("campaign_id" = String, Path, description = "`cmp_…`"),
        ("If-Match" = Option<String>, Header, description = "the version this save replaces, e.g. `\"3\"`"),
    ),
    security(("access_token" = [])),
    request_body = CampaignSpec,
    responses(
        (status = 200, description = "saved; `ETag` is the new version", body = CampaignView),
        (status = 400, description = "`malformed_json`, `invalid_if_match`", body = ErrorBody),
        (status = 403, description = "`forbidden`: owners and admins only", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`campaign_archived`", body = ErrorBody),
        (status = 412, description = "`version_conflict`: `details.current_version`", body = ErrorBody),
        (status = 422, description = "`invalid_campaign`: `details.problems`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn save_campaign(
    State(state): State<AppState>,
    merchant: Merchant,
    Path((tenant_id, campaign_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Json<CampaignSpec>, JsonRejection>,
) -> Result<Response, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    let id = parse_campaign(&campaign_id)?;
    require_editor(&merchant)?;
    let expected = expected_version(&headers)?;
    let spec = spec_of(body)?;
    let campaign = campaigns::save(
        &state.router,
        &state.topics,
        tenant,
        id,
        &spec,
        expected,
        state.loopback_webhooks,
        &actor(&merchant),
    )
    .await
    .map_err(campaign_error)?;
    state.wake_outbox();
    Ok(with_etag(StatusCode::OK, campaign))
}

/// Move the campaign: `draft` → `active`; `active` ⇄ `paused`; any of them → `archived`
/// (final). Moving it where it is changes nothing.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/campaigns/{campaign_id}/state", tag = "campaigns",
    params(("tenant_id" = String, Path), ("campaign_id" = String, Path, description = "`cmp_…`")),
    security(("access_token" = [])),
    request_body = CampaignMove,
    responses(
        (status = 200, body = CampaignView),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`: owners and admins only", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`invalid_transition`", body = ErrorBody),
        (status = 422, description = "`invalid_fields`: `state` is not one of them", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn move_campaign(
    State(state): State<AppState>,
    merchant: Merchant,
    Path((tenant_id, campaign_id)): Path<(String, String)>,
    body: Result<Json<CampaignMove>, JsonRejection>,
) -> Result<Response, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    let id = parse_campaign(&campaign_id)?;
    require_editor(&merchant)?;
    let Json(request) = body.map_err(|e| ApiError::bad_request("malformed_json", e.body_text()))?;
    let to = CampaignState::parse(&request.state).filter(|s| *s != CampaignState::Draft).ok_or_else(|| {
        ApiError::unprocessable("invalid_fields", "some fields are invalid")
            .with_details(json!({ "fields": { "state": "active, paused or archived" } }))
    })?;
    let campaign = campaigns::set_state(&state.router, &state.topics, tenant, id, to, &actor(&merchant))
        .await
        .map_err(campaign_error)?;
    state.wake_outbox();
    Ok(with_etag(StatusCode::OK, campaign))
}

/// Every saved version of the campaign, newest first: who saved what, when.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/campaigns/{campaign_id}/versions", tag = "campaigns",
    params(("tenant_id" = String, Path), ("campaign_id" = String, Path, description = "`cmp_…`")),
    security(("access_token" = [])),
    responses(
        (status = 200, body = CampaignVersions),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn campaign_versions(
    State(state): State<AppState>,
    merchant: Merchant,
    Path((tenant_id, campaign_id)): Path<(String, String)>,
) -> Result<Json<CampaignVersions>, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    let id = parse_campaign(&campaign_id)?;
    let saved = campaigns::versions(&state.router, tenant, id).await.map_err(campaign_error)?;
    Ok(Json(CampaignVersions {
        versions: saved
            .into_iter()
            .map(|v| CampaignVersionView {
                version: v.version,
                saved_by: v.saved_by,
                saved_at: rfc3339(v.saved_at),
                spec: v.spec,
            })
            .collect(),
    }))
}
