//! Erasure requests and legal holds: `/v1/tenants/{tenant_id}/erasures…`,
//! `/v1/tenants/{tenant_id}/legal-holds…`, for a store's owners and admins; and the public
//! keys that check receipts, `/v1/erasure-receipts/keys`. Another store's request or hold
//! answers 404, exactly as one that does not exist.

use axum::{
    Json,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
};
use nudge_contracts::control::{
    ErasureAuditView, ErasureList, ErasureReceiptView, ErasureRequestBody, ErasureStepView, ErasureView, LegalHoldList,
    LegalHoldRequest, LegalHoldView, ReceiptKeysView, ShopperRecordsView, SuppressionView,
};
use nudge_control_plane::erasure::{self, ErasureError, ErasureRequest, LegalHold};
use nudge_platform_http::{ApiError, ErrorBody, current_trace};
use nudge_platform_vault::VaultError;
use nudge_tenants::TenantId;
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{error::db_error, merchant::Merchant, store::shopper_of};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_erasures, request_erasure))
        .routes(routes!(get_erasure))
        .routes(routes!(get_receipt))
        .routes(routes!(list_holds, place_hold))
        .routes(routes!(release_hold))
        .routes(routes!(receipt_keys))
        .routes(routes!(export_shopper))
}

fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub(super) fn view(r: ErasureRequest) -> ErasureView {
    ErasureView {
        request_id: r.request_id.to_string(),
        scope: r.scope,
        subject_digest: r.subject_digest,
        requested_by: r.requested_by,
        requested_at: time(r.requested_at),
        deadline_at: time(r.deadline_at),
        status: r.status,
        completed_at: r.completed_at.map(time),
        steps: r
            .steps
            .into_iter()
            .map(|s| ErasureStepView {
                store: s.store,
                status: s.status,
                removed: s.removed,
                finished_at: s.finished_at.map(time),
                subjects: s.subjects,
                held_subjects: s.held_subjects,
            })
            .collect(),
        audit: r
            .audit
            .into_iter()
            .map(|a| ErasureAuditView { at: time(a.at), actor: a.actor, action: a.action, detail: a.detail })
            .collect(),
    }
}

fn hold_view(h: LegalHold) -> LegalHoldView {
    LegalHoldView {
        hold_id: h.hold_id.to_string(),
        name: h.name,
        subject_digest: h.subject_digest,
        placed_by: h.placed_by,
        placed_at: time(h.placed_at),
        released_at: h.released_at.map(time),
    }
}

pub(super) fn vault_error(e: VaultError) -> ApiError {
    match e {
        VaultError::Unavailable(_) => {
            ApiError::unavailable("vault_unavailable", "the key vault is unavailable; retry in a moment", 5)
        }
        other => {
            tracing::error!(error = %other, "the vault refused a request");
            ApiError::unavailable("vault_unavailable", "the key vault refused the request; an operator must look", 60)
        }
    }
}

pub(super) fn erasure_error(e: ErasureError) -> ApiError {
    match e {
        ErasureError::Db(db) => db_error(db),
        ErasureError::NotFound => ApiError::not_found(),
        ErasureError::Vault(v) => vault_error(v),
        e @ (ErasureError::Dedicated(_) | ErasureError::BadReport(_)) => ApiError::internal(&e),
        ErasureError::LegalHold { hold_id, name } => ApiError::new(
            StatusCode::CONFLICT,
            "legal_hold",
            format!("legal hold \"{name}\" prevents erasure; release it first"),
        )
        .with_details(json!({ "hold_id": hold_id.to_string(), "name": name })),
    }
}

/// Whom a request body names, as digests.
pub(super) enum Named {
    Shopper(String),
    Email(String),
}

/// The fields a request body may name its subject with; exactly one is given.
#[derive(Default)]
pub(super) struct Names<'a> {
    pub shopper_id: Option<&'a str>,
    pub subject_digest: Option<&'a str>,
    pub email_sha256: Option<&'a str>,
    /// Operators only.
    pub email_digest: Option<&'a str>,
}

impl Named {
    pub(super) fn of(tenant: TenantId, names: Names<'_>, exactly_one: &str) -> Result<Self, ApiError> {
        let invalid = |field: &str, why: &str| {
            ApiError::unprocessable("invalid_fields", "some fields are invalid")
                .with_details(json!({ "fields": { field: why } }))
        };
        let given = [names.shopper_id, names.subject_digest, names.email_sha256, names.email_digest];
        if given.iter().filter(|n| n.is_some()).count() != 1 {
            return Err(invalid("subject", exactly_one));
        }
        if let Some(shopper) = names.shopper_id {
            return Ok(Self::Shopper(nudge_contracts::subject_digest(tenant.as_uuid(), &shopper_of(shopper)?)));
        }
        if let Some(digest) = names.subject_digest {
            return match erasure::is_digest(digest) {
                true => Ok(Self::Shopper(digest.to_owned())),
                false => Err(invalid("subject_digest", "64 lowercase hex digits")),
            };
        }
        if let Some(digest) = names.email_digest {
            return match erasure::is_digest(digest) {
                true => Ok(Self::Email(digest.to_owned())),
                false => Err(invalid("email_digest", "64 lowercase hex digits")),
            };
        }
        match names.email_sha256 {
            Some(hash) if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(Self::Email(nudge_contracts::email_digest(tenant.as_uuid(), &hash.to_ascii_lowercase())))
            }
            _ => Err(invalid("email_sha256", "the SHA-256 of the trimmed, lowercased address: 64 hex digits")),
        }
    }

    pub(super) fn subject(&self) -> erasure::Subject<'_> {
        match self {
            Self::Shopper(d) => erasure::Subject::Shopper(d),
            Self::Email(d) => erasure::Subject::Email(d),
        }
    }
}

fn id_of(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found())
}

/// Forget one of the store's shoppers, or everyone the store identified with one e-mail
/// address (`email_sha256`). They are suppressed at once (their events are dropped,
/// counted; an address's shoppers as soon as their cell has found them), then erased from
/// every store Nudge wrote them to; the request completes with a signed receipt. Filing it
/// again answers the same request (200). A legal hold on the shopper or the store refuses
/// it; for an address, shoppers under a hold are kept and named in the receipt.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/erasures", tag = "privacy",
    params(("tenant_id" = String, Path)), request_body = ErasureRequestBody, security(("access_token" = [])),
    responses(
        (status = 202, description = "filed; in progress", body = ErasureView),
        (status = 200, description = "filed before: the same request", body = ErasureView),
        (status = 403, description = "`forbidden`: owners and admins only", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`legal_hold`: a hold (named in details) prevents it", body = ErrorBody),
        (status = 422, description = "`invalid_fields`, `malformed_json`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`, `vault_unavailable`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn request_erasure(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
    body: Result<Json<ErasureRequestBody>, JsonRejection>,
) -> Result<(StatusCode, Json<ErasureView>), ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    merchant.require(merchant.role().manages_keys())?;
    let Json(body) = body.map_err(|e| ApiError::bad_request("malformed_json", e.body_text()))?;
    let names = Names {
        shopper_id: body.shopper_id.as_deref(),
        subject_digest: body.subject_digest.as_deref(),
        email_sha256: body.email_sha256.as_deref(),
        email_digest: None,
    };
    let named = Named::of(tenant, names, "give exactly one of shopper_id, subject_digest and email_sha256")?;
    let actor = format!("account:{}", merchant.0.account);
    let trace = current_trace().map(|t| t.to_header());
    let (request, new) =
        erasure::request(&state.router, &state.topics, &state.receipts, tenant, named.subject(), &actor, trace)
            .await
            .map_err(erasure_error)?;
    state.wake_outbox();
    tracing::info!(request_id = %request.request_id, new, "erasure requested");
    Ok((if new { StatusCode::ACCEPTED } else { StatusCode::OK }, Json(view(request))))
}

/// The store's erasure requests, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/erasures", tag = "privacy",
    params(("tenant_id" = String, Path)), security(("access_token" = [])),
    responses((status = 200, body = ErasureList), (status = 404, description = "`not_found`", body = ErrorBody)))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn list_erasures(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
) -> Result<Json<ErasureList>, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    merchant.require(merchant.role().manages_keys())?;
    let items = erasure::list(&state.router, tenant).await.map_err(erasure_error)?;
    Ok(Json(ErasureList { items: items.into_iter().map(view).collect() }))
}

/// One erasure request: its status in every store, deadline and audit trail.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/erasures/{request_id}", tag = "privacy",
    params(("tenant_id" = String, Path), ("request_id" = String, Path)), security(("access_token" = [])),
    responses((status = 200, body = ErasureView), (status = 404, description = "`not_found`", body = ErrorBody)))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn get_erasure(
    State(state): State<AppState>,
    merchant: Merchant,
    Path((tenant_id, request_id)): Path<(String, String)>,
) -> Result<Json<ErasureView>, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    merchant.require(merchant.role().manages_keys())?;
    let request = erasure::get(&state.router, tenant, id_of(&request_id)?).await.map_err(erasure_error)?;
    Ok(Json(view(request)))
}

/// The signed deletion receipt of a completed request.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/erasures/{request_id}/receipt", tag = "privacy",
    params(("tenant_id" = String, Path), ("request_id" = String, Path)), security(("access_token" = [])),
    responses(
        (status = 200, body = ErasureReceiptView),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`erasure_in_progress`: no receipt yet", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn get_receipt(
    State(state): State<AppState>,
    merchant: Merchant,
    Path((tenant_id, request_id)): Path<(String, String)>,
) -> Result<Json<ErasureReceiptView>, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    merchant.require(merchant.role().manages_keys())?;
    let receipt = erasure::receipt(&state.router, tenant, id_of(&request_id)?).await.map_err(erasure_error)?;
    let Some(r) = receipt else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "erasure_in_progress",
            "the request is still in progress; its receipt is signed when every store has finished",
        ));
    };
    Ok(Json(ErasureReceiptView {
        receipt: r.receipt,
        signature: r.signature,
        signing_key: r.signing_key,
        key_version: r.key_version,
    }))
}

/// The store's legal holds, active first.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/legal-holds", tag = "privacy",
    params(("tenant_id" = String, Path)), security(("access_token" = [])),
    responses((status = 200, body = LegalHoldList), (status = 404, description = "`not_found`", body = ErrorBody)))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn list_holds(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
) -> Result<Json<LegalHoldList>, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    merchant.require(merchant.role().manages_keys())?;
    let items = erasure::holds(&state.router, tenant).await.map_err(erasure_error)?;
    Ok(Json(LegalHoldList { items: items.into_iter().map(hold_view).collect() }))
}

/// Place a legal hold on one shopper, or on the whole store: erasure requests it covers are
/// refused, naming it, until it is released.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/legal-holds", tag = "privacy",
    params(("tenant_id" = String, Path)), request_body = LegalHoldRequest, security(("access_token" = [])),
    responses(
        (status = 201, body = LegalHoldView),
        (status = 403, description = "`forbidden`: owners and admins only", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_fields`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn place_hold(
    State(state): State<AppState>,
    merchant: Merchant,
    Path(tenant_id): Path<String>,
    body: Result<Json<LegalHoldRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<LegalHoldView>), ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    merchant.require(merchant.role().manages_keys())?;
    let Json(body) = body.map_err(|e| ApiError::bad_request("malformed_json", e.body_text()))?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::unprocessable("invalid_fields", "some fields are invalid")
            .with_details(json!({ "fields": { "name": "1 to 200 characters" } })));
    }
    let shopper = body.shopper_id.as_deref().map(shopper_of).transpose()?;
    let actor = format!("account:{}", merchant.0.account);
    let hold = erasure::place_hold(&state.router, &state.topics, tenant, name, shopper.as_ref(), &actor)
        .await
        .map_err(erasure_error)?;
    state.wake_outbox();
    Ok((StatusCode::CREATED, Json(hold_view(hold))))
}

/// Release a legal hold.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/legal-holds/{hold_id}", tag = "privacy",
    params(("tenant_id" = String, Path), ("hold_id" = String, Path)), security(("access_token" = [])),
    responses(
        (status = 204, description = "released"),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`not_found`: no active hold by that id", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn release_hold(
    State(state): State<AppState>,
    merchant: Merchant,
    Path((tenant_id, hold_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    merchant.require(merchant.role().manages_keys())?;
    let actor = format!("account:{}", merchant.0.account);
    erasure::release_hold(&state.router, &state.topics, tenant, id_of(&hold_id)?, &actor)
        .await
        .map_err(erasure_error)?;
    state.wake_outbox();
    Ok(StatusCode::NO_CONTENT)
}

/// The public keys that check erasure receipts, by version. Public by design.
#[utoipa::path(get, path = "/v1/erasure-receipts/keys", tag = "privacy",
    responses(
        (status = 200, body = ReceiptKeysView),
        (status = 503, description = "`vault_unavailable`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all)]
async fn receipt_keys(State(state): State<AppState>) -> Result<Json<ReceiptKeysView>, ApiError> {
    let keys = state.receipts.public_keys().await.map_err(vault_error)?;
    Ok(Json(ReceiptKeysView {
        signing_key: state.receipts.key().to_owned(),
        algorithm: "ed25519".into(),
        public_keys: keys.into_iter().map(|(v, k)| (v.to_string(), k)).collect(),
    }))
}

/// What the control plane keeps about one of the store's shoppers, for their access or
/// portability request (owners and admins): their suppression, erasure requests and legal
/// holds. What the store's cell keeps about them (their behaviour data) is the cell's
/// export, named in `cell_export`; the two together are everything Nudge stores about them.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/shoppers/{shopper_id}/export", tag = "privacy",
    params(("tenant_id" = String, Path), ("shopper_id" = String, Path)), security(("access_token" = [])),
    responses(
        (status = 200, body = ShopperRecordsView),
        (status = 403, description = "`forbidden`: owners and admins only", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_fields`: not a shopper id", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn export_shopper(
    State(state): State<AppState>,
    merchant: Merchant,
    Path((tenant_id, shopper_id)): Path<(String, String)>,
) -> Result<Json<ShopperRecordsView>, ApiError> {
    let tenant = merchant.tenant(&tenant_id)?;
    merchant.require(merchant.role().manages_keys())?;
    let shopper = shopper_of(&shopper_id)?;
    let digest = nudge_contracts::subject_digest(tenant.as_uuid(), &shopper);
    let records = erasure::subject_records(&state.router, tenant, &digest).await.map_err(erasure_error)?;
    let cell_url = nudge_control_plane::placement::cell_url_of(&state.router, tenant).await.map_err(db_error)?;
    Ok(Json(ShopperRecordsView {
        tenant_id: tenant.to_string(),
        shopper_id: shopper.as_str().to_owned(),
        subject_digest: digest,
        exported_at: time(chrono::Utc::now()),
        suppression: records.suppression.map(|s| SuppressionView {
            subject_digest: s.subject_digest,
            shopper_id: s.shopper_id,
            reason: s.reason,
            created_at: time(s.created_at),
        }),
        erasure_requests: records.requests.into_iter().map(view).collect(),
        legal_holds: records.holds.into_iter().map(hold_view).collect(),
        cell_export: match cell_url {
            Some(url) => format!(
                "GET {}/v1/shoppers/{}/export with a secret key with the shoppers:export scope",
                url.trim_end_matches('/'),
                shopper.as_str()
            ),
            None => "the store has no cell: it keeps no behaviour data".to_owned(),
        },
    }))
}
