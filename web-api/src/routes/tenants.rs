//! `POST /v1/tenants`: self-service signup.

use axum::{
    Json,
    extract::{State, rejection::JsonRejection},
    http::StatusCode,
};
use nudge_contracts::control::{SignupRequest, SignupResponse};
use nudge_control_plane::{
    placement::record_cell,
    provision::TenantRequest,
    signup::{MAX_ORIGINS, NewTenant, sign_up},
};
use nudge_platform_http::{ApiError, ErrorBody, current_trace};
use nudge_tenants::{AllowedOrigin, Plan, TenantId, TenantName};
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::{db_error, provision_error, signup_error};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create))
}

/// Parses a signup body into domain values, collecting every field error.
fn parse(request: SignupRequest) -> Result<NewTenant, ApiError> {
    let mut errors = serde_json::Map::new();
    let credentials = super::sessions::credentials(&request.email, &request.password).map_err(|e| {
        if let Some(fields) = e.details.as_ref().and_then(|d| d["fields"].as_object()) {
            errors.extend(fields.clone());
        }
    });
    let name = TenantName::parse(&request.name).map_err(|e| errors.insert("name".into(), json!(e.to_string())));
    if request.allowed_origins.is_empty() || request.allowed_origins.len() > MAX_ORIGINS {
        errors.insert("allowed_origins".into(), json!(format!("give between 1 and {MAX_ORIGINS} origins")));
    }
    let mut origins = Vec::new();
    for (i, raw) in request.allowed_origins.iter().enumerate() {
        match AllowedOrigin::parse(raw) {
            Ok(o) if !origins.contains(&o) => origins.push(o),
            Ok(_) => {}
            Err(e) => {
                errors.insert(format!("allowed_origins[{i}]"), json!(e.to_string()));
            }
        }
    }
    match (name, credentials) {
        (Ok(name), Ok((owner_email, owner_password))) if errors.is_empty() => {
            Ok(NewTenant { name, allowed_origins: origins, owner_email, owner_password })
        }
        _ => Err(ApiError::unprocessable("invalid_fields", "some fields are invalid")
            .with_details(json!({ "fields": errors }))),
    }
}

/// Sign up a store. The answer holds the secret key, which is never shown again.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = SignupRequest, responses(
    (status = 201, description = "the store is signed up and placed on a cell", body = SignupResponse),
    (status = 400, description = "`malformed_json`", body = ErrorBody),
    (status = 409, description = "`email_taken`", body = ErrorBody),
    (status = 422, description = "`invalid_fields`, with an error per field (weak password, malformed e-mail, …)", body = ErrorBody),
    (status = 503, description = "`database_unavailable`, `starting`, `no_capacity` (no shared cell has room), `cell_provisioning`, `provisioner_unavailable`; retry after `Retry-After`", body = ErrorBody),
))]
#[tracing::instrument(skip_all)]
async fn create(
    State(state): State<AppState>,
    body: Result<Json<SignupRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<SignupResponse>), ApiError> {
    let Json(request) = body.map_err(|e| ApiError::bad_request("malformed_json", e.body_text()))?;
    let new = parse(request)?;
    if !state.started.load(std::sync::atomic::Ordering::Acquire) {
        return Err(ApiError::unavailable("starting", "the control plane is still starting", 1));
    }
    let trace = current_trace().map(|t| t.to_header());
    let tenant_id = TenantId::new();
    let created = async {
        let cell = state
            .provisioner
            .shared_cell(&TenantRequest { tenant: tenant_id, plan: Plan::Free })
            .await
            .map_err(provision_error)?;
        record_cell(&state.db, &cell, "shared").await.map_err(db_error)?;
        sign_up(&state.db, &state.topics, tenant_id, &cell, new, trace).await.map_err(signup_error)
    }
    .await;
    let created = match created {
        Ok(created) => created,
        Err(e) => {
            // Nothing of the store was committed (and a retry gets a new id): take back what
            // placement wrote for this one, even when placement itself did not finish.
            if let Err(release) = state.provisioner.release(tenant_id).await {
                tracing::error!(tenant_id = %tenant_id, error = %release, "releasing a failed signup's placement failed");
            }
            return Err(e);
        }
    };
    state.wake_outbox();
    tracing::info!(tenant_id = %created.tenant_id, "signup complete");
    Ok((
        StatusCode::CREATED,
        Json(SignupResponse {
            tenant_id: created.tenant_id.to_string(),
            name: created.name.to_string(),
            state: created.state.as_str().to_owned(),
            cell_id: created.cell.id.to_string(),
            cell_url: created.cell.public_url,
            publishable_key: created.publishable_key.to_string(),
            secret_key: created.secret_key.expose().to_owned(),
            allowed_origins: created.allowed_origins.iter().map(|o| o.to_string()).collect(),
            account_id: created.owner.to_string(),
            created_at: created.created_at.to_rfc3339(),
        }),
    ))
}
