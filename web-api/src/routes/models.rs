//! `/v1/admin/models/…`: the model registry, for platform operators. Upload a model (its
//! ONNX artifact and manifest), move versions between stages, choose the default model.

use axum::{
    Json,
    extract::{DefaultBodyLimit, Multipart, Path, State, multipart::MultipartError, rejection::JsonRejection},
    http::StatusCode,
};
use nudge_contracts::control::{
    DefaultModelRequest, DefaultModelResponse, ModelList, ModelManifest, ModelStageHistory, ModelStageRequest,
    ModelUploadResponse, ModelView,
};
use nudge_control_plane::registry::{self, MAX_ARTIFACT_BYTES, Stage, StageError, UploadError};
use nudge_platform_http::{ApiError, ErrorBody};
use nudge_tenants::Actor;
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{admin::Operator, error::db_error};
use crate::AppState;

/// Room for the manifest and the multipart envelope around the largest artifact.
const MAX_UPLOAD_BYTES: usize = MAX_ARTIFACT_BYTES + 256 * 1024;

pub fn router() -> OpenApiRouter<AppState> {
    let upload = OpenApiRouter::new()
        .routes(routes!(upload))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
        .layer(axum::middleware::map_response(close_after_too_large));
    OpenApiRouter::new()
        .merge(upload)
        .routes(routes!(list))
        .routes(routes!(get_default, set_default))
        .routes(routes!(get_model))
        .routes(routes!(history))
        .routes(routes!(set_stage))
}

/// An upload refused for its size was not read to its end, so its connection cannot carry
/// another request: the client is told not to reuse it (otherwise a pooled client may send
/// its next request on a connection the server is closing).
async fn close_after_too_large(mut response: axum::response::Response) -> axum::response::Response {
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        response.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    }
    response
}

fn upload_error(e: UploadError) -> ApiError {
    match e {
        UploadError::Invalid(fields) => ApiError::unprocessable("invalid_fields", "some manifest fields are invalid")
            .with_details(json!({ "fields": fields })),
        e @ UploadError::TooLarge { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "artifact_too_large", e.to_string())
        }
        UploadError::Checksum { declared, actual } => {
            ApiError::unprocessable("checksum_mismatch", "the artifact's SHA-256 is not the one the manifest declares")
                .with_details(json!({ "declared": declared, "actual": actual }))
        }
        e @ UploadError::Schema(_) => ApiError::unprocessable("schema_mismatch", e.to_string()),
        e @ UploadError::Corrupt(_) => ApiError::unprocessable("invalid_artifact", e.to_string()),
        e @ UploadError::ChecksUnavailable(_) => {
            tracing::error!(error = %e, "model upload refused: ONNX Runtime is not available to check it");
            ApiError::unavailable("model_checks_unavailable", "artifacts cannot be checked right now", 30)
        }
        UploadError::Db(db) => db_error(db),
    }
}

fn stage_error(e: StageError) -> ApiError {
    match e {
        StageError::NotFound => ApiError::not_found(),
        e @ StageError::Invalid { .. } => ApiError::new(StatusCode::CONFLICT, "invalid_stage_change", e.to_string()),
        StageError::InUse { stores } => ApiError::new(
            StatusCode::CONFLICT,
            "model_in_use",
            format!("{stores} store(s) are scored with or roll out this version"),
        )
        .with_details(json!({ "stores": stores })),
        e @ StageError::IsDefault => ApiError::new(StatusCode::CONFLICT, "model_is_default", e.to_string()),
        e @ StageError::NotProduction(_) => ApiError::unprocessable("model_not_production", e.to_string()),
        StageError::Db(db) => db_error(db),
    }
}

/// A multipart body that could not be read: too large, or not multipart.
fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "artifact_too_large",
            format!("the upload is larger than {MAX_UPLOAD_BYTES} bytes"),
        )
    } else {
        ApiError::bad_request("malformed_upload", e.body_text())
    }
}

/// Reads the `manifest` (JSON) and `artifact` (bytes) parts.
async fn read_parts(mut multipart: Multipart) -> Result<(ModelManifest, Vec<u8>), ApiError> {
    let (mut manifest, mut artifact) = (None, None);
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = field.bytes().await.map_err(multipart_error)?;
        match name.as_str() {
            "manifest" => {
                let parsed: ModelManifest = serde_json::from_slice(&bytes).map_err(|e| {
                    ApiError::unprocessable("invalid_manifest", format!("the manifest is not a model manifest: {e}"))
                })?;
                manifest = Some(parsed);
            }
            "artifact" => artifact = Some(bytes.to_vec()),
            other => {
                return Err(ApiError::bad_request(
                    "malformed_upload",
                    format!("unexpected part `{other}`; send `manifest` and `artifact`"),
                ));
            }
        }
    }
    match (manifest, artifact) {
        (Some(m), Some(a)) => Ok((m, a)),
        (m, a) => {
            let mut fields = serde_json::Map::new();
            if m.is_none() {
                fields.insert("manifest".into(), json!("required: the model's manifest.json"));
            }
            if a.is_none() {
                fields.insert("artifact".into(), json!("required: the ONNX file"));
            }
            Err(ApiError::unprocessable("invalid_fields", "parts are missing")
                .with_details(json!({ "fields": fields })))
        }
    }
}

/// Upload a model: `multipart/form-data` with a `manifest` part (`manifest.json` as
/// `model/train.py` writes it: name, SHA-256, metrics, lineage) and an `artifact` part (the
/// ONNX file, at most 8 MiB). The artifact is checked as a cell would load it — checksum,
/// ONNX Runtime opens and runs it, its declared feature set and names are the cells' — and
/// registered as the next version of its name, in stage `candidate`. The same bytes under
/// the same name answer the version already registered.
#[utoipa::path(post, path = "/v1/admin/models", tag = "models",
    request_body(content_type = "multipart/form-data", description = "`manifest` (JSON) and `artifact` (ONNX)"),
    security(("operator_token" = [])),
    responses(
        (status = 201, description = "a new version", body = ModelUploadResponse),
        (status = 200, description = "these bytes were registered under this name already", body = ModelUploadResponse),
        (status = 400, description = "`malformed_upload`", body = ErrorBody),
        (status = 401, description = "`invalid_operator_token`", body = ErrorBody),
        (status = 413, description = "`artifact_too_large`", body = ErrorBody),
        (status = 422, description = "`invalid_manifest`, `invalid_fields`, `checksum_mismatch`, `schema_mismatch` or `invalid_artifact`", body = ErrorBody),
        (status = 503, description = "`model_checks_unavailable`, `database_unavailable`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all)]
async fn upload(
    State(state): State<AppState>,
    operator: Operator,
    multipart: Multipart,
) -> Result<(StatusCode, Json<ModelUploadResponse>), ApiError> {
    let (manifest, artifact) = read_parts(multipart).await?;
    registry::check_manifest(&manifest).map_err(upload_error)?;
    // ONNX Runtime builds a session: seconds of CPU at worst, off the async workers.
    let library = state.onnxruntime_library.clone();
    let (manifest, artifact) = tokio::task::spawn_blocking(move || {
        registry::check_artifact(library.as_deref().map(|p| p.as_path()), &manifest, &artifact)
            .map(|()| (manifest, artifact))
    })
    .await
    .map_err(|e| ApiError::internal(&e))?
    .map_err(|e| {
        tracing::warn!(error = %e, operator = %operator.0, "model upload refused");
        upload_error(e)
    })?;
    let actor = Actor::Operator(operator.0.clone()).to_string();
    let (created, model) = registry::register(state.router.registry(), &state.topics, &manifest, &artifact, &actor)
        .await
        .map_err(upload_error)?;
    if created {
        state.wake_outbox();
    }
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(ModelUploadResponse { created, model })))
}

/// Every model version in the registry, by name then number.
#[utoipa::path(get, path = "/v1/admin/models", tag = "models",
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "the registry", body = ModelList),
        (status = 401, description = "`invalid_operator_token`", body = ErrorBody),
    ))]
async fn list(State(state): State<AppState>, _operator: Operator) -> Result<Json<ModelList>, ApiError> {
    let models = registry::list(state.router.registry()).await.map_err(db_error)?;
    Ok(Json(ModelList { models }))
}

/// One model version: artifact address, input schema, metrics, lineage, stage.
#[utoipa::path(get, path = "/v1/admin/models/{version}", tag = "models",
    params(("version" = String, Path, description = "`name@number`")),
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "the version", body = ModelView),
        (status = 401, description = "`invalid_operator_token`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn get_model(
    State(state): State<AppState>,
    _operator: Operator,
    Path(version): Path<String>,
) -> Result<Json<ModelView>, ApiError> {
    let found = registry::get(state.router.registry(), &version).await.map_err(db_error)?;
    found.map(Json).ok_or_else(ApiError::not_found)
}

/// A version's stage changes, oldest first, with who made each and why.
#[utoipa::path(get, path = "/v1/admin/models/{version}/stages", tag = "models",
    params(("version" = String, Path, description = "`name@number`")),
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "the history", body = ModelStageHistory),
        (status = 401, description = "`invalid_operator_token`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
async fn history(
    State(state): State<AppState>,
    _operator: Operator,
    Path(version): Path<String>,
) -> Result<Json<ModelStageHistory>, ApiError> {
    let events = registry::history(state.router.registry(), &version).await.map_err(db_error)?;
    if events.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(Json(ModelStageHistory { version, events }))
}

/// Move a version to another stage: `candidate` → `canary` | `production` | `archived`;
/// `canary` → `candidate` | `production` | `archived`; `production` → `archived`;
/// `archived` → `candidate`. Archiving unloads it from every cell, so a version that is the
/// default or that a store is scored with or rolls out cannot be archived.
#[utoipa::path(post, path = "/v1/admin/models/{version}/stage", tag = "models",
    params(("version" = String, Path, description = "`name@number`")),
    request_body = ModelStageRequest,
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "the version now", body = ModelView),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 401, description = "`invalid_operator_token`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`invalid_stage_change`, `model_in_use` or `model_is_default`", body = ErrorBody),
        (status = 422, description = "`invalid_fields`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(version = %version))]
async fn set_stage(
    State(state): State<AppState>,
    operator: Operator,
    Path(version): Path<String>,
    body: Result<Json<ModelStageRequest>, JsonRejection>,
) -> Result<Json<ModelView>, ApiError> {
    let Json(request) = body.map_err(|e| ApiError::bad_request("malformed_json", e.body_text()))?;
    let stage = Stage::parse(&request.stage);
    let reason = request.reason.trim();
    if stage.is_none() || reason.is_empty() || reason.len() > 1000 {
        let mut fields = serde_json::Map::new();
        if stage.is_none() {
            fields.insert("stage".into(), json!("one of candidate, canary, production, archived"));
        }
        if reason.is_empty() || reason.len() > 1000 {
            fields.insert("reason".into(), json!("1-1000 characters"));
        }
        return Err(ApiError::unprocessable("invalid_fields", "some fields are invalid")
            .with_details(json!({ "fields": fields })));
    }
    let Some(stage) = stage else { return Err(ApiError::not_found()) };
    let actor = Actor::Operator(operator.0.clone()).to_string();
    let model = registry::set_stage(&state.router, &state.topics, &version, stage, &actor, reason)
        .await
        .map_err(stage_error)?;
    state.wake_outbox();
    Ok(Json(model))
}

/// The model stores without an assignment are scored with.
#[utoipa::path(get, path = "/v1/admin/models/default", tag = "models",
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "the default", body = DefaultModelResponse),
        (status = 401, description = "`invalid_operator_token`", body = ErrorBody),
    ))]
async fn get_default(
    State(state): State<AppState>,
    _operator: Operator,
) -> Result<Json<DefaultModelResponse>, ApiError> {
    let version = registry::default_version(state.router.registry()).await.map_err(db_error)?;
    Ok(Json(DefaultModelResponse { version }))
}

/// Choose the default model: a version in stage `production`. Every cell switches within
/// seconds; stores with an assignment of their own keep it.
#[utoipa::path(put, path = "/v1/admin/models/default", tag = "models",
    request_body = DefaultModelRequest,
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "the default now", body = DefaultModelResponse),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 401, description = "`invalid_operator_token`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such version", body = ErrorBody),
        (status = 422, description = "`model_not_production`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all)]
async fn set_default(
    State(state): State<AppState>,
    operator: Operator,
    body: Result<Json<DefaultModelRequest>, JsonRejection>,
) -> Result<Json<DefaultModelResponse>, ApiError> {
    let Json(request) = body.map_err(|e| ApiError::bad_request("malformed_json", e.body_text()))?;
    let actor = Actor::Operator(operator.0.clone()).to_string();
    registry::set_default(state.router.registry(), &state.topics, &request.version, &actor)
        .await
        .map_err(stage_error)?;
    state.wake_outbox();
    Ok(Json(DefaultModelResponse { version: request.version }))
}
