//! Privacy: erasure requests (filed by shopper id or e-mail address, followed to their signed
//! receipts), legal holds, and a shopper's export.
//!
//! An e-mail address typed here is hashed in the console (SHA-256 of the trimmed, lower-cased
//! address, as the snippet's `identify` sends it); only the digest reaches the API, and
//! neither is logged.

use askama::Template;
use axum::{
    Form,
    extract::{Path, State},
    http::{HeaderValue, Method, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
};
use nudge_contracts::control::{
    ErasureList, ErasureReceiptView, ErasureRequestBody, ErasureView, LegalHoldList, LegalHoldView, TenantView,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{Layout, id_segment, render, short_time};
use crate::{Console, api::Refusal, error::ConsoleError, session::Member};

struct ErasureRow {
    request: ErasureView,
    requested: String,
    deadline: String,
    completed: Option<String>,
}

impl ErasureRow {
    fn new(request: ErasureView) -> Self {
        Self {
            requested: short_time(&request.requested_at),
            deadline: short_time(&request.deadline_at),
            completed: request.completed_at.as_deref().map(short_time),
            request,
        }
    }
}

#[derive(Template)]
#[template(path = "privacy.html")]
struct PrivacyPage {
    layout: Layout,
    erasures: Vec<ErasureRow>,
    holds: Vec<LegalHoldView>,
    /// Days the store's data is kept.
    retention_days: u32,
    /// What was typed, when the form is shown again.
    kind: String,
    value: String,
    problem: Option<String>,
    export_shopper: String,
    export_problem: Option<String>,
}

#[derive(Template)]
#[template(path = "erasure.html")]
struct ErasurePage {
    layout: Layout,
    row: ErasureRow,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ErasureForm {
    csrf: String,
    /// `shopper` or `email`.
    kind: String,
    value: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ExportForm {
    csrf: String,
    shopper_id: String,
}

/// The SHA-256 (hex) of a trimmed, lower-cased e-mail address.
pub fn email_sha256(address: &str) -> String {
    hex::encode(Sha256::digest(address.trim().to_lowercase().as_bytes()))
}

async fn privacy_page(console: &Console, member: &Member, form: PrivacyForm) -> Result<Html<String>, ConsoleError> {
    let (erasures_path, holds_path) = (member.store_path("/erasures"), member.store_path("/legal-holds"));
    let store_path = member.store_path("");
    let (erasures, holds, store) = tokio::join!(
        console.api.get::<ErasureList>(&erasures_path, member.token()),
        console.api.get::<LegalHoldList>(&holds_path, member.token()),
        console.api.get::<TenantView>(&store_path, member.token()),
    );
    render(&PrivacyPage {
        layout: Layout::new(member, "privacy"),
        erasures: erasures?.items.into_iter().map(ErasureRow::new).collect(),
        holds: holds?.items.into_iter().filter(|h| h.released_at.is_none()).collect(),
        retention_days: store?.retention_days,
        kind: form.kind,
        value: form.value,
        problem: form.problem,
        export_shopper: form.export_shopper,
        export_problem: form.export_problem,
    })
}

/// What a re-shown privacy page carries over.
#[derive(Default)]
struct PrivacyForm {
    kind: String,
    value: String,
    problem: Option<String>,
    export_shopper: String,
    export_problem: Option<String>,
}

pub async fn page(State(console): State<Console>, member: Member) -> Result<Html<String>, ConsoleError> {
    privacy_page(&console, &member, PrivacyForm { kind: "shopper".into(), ..PrivacyForm::default() }).await
}

/// What a refusal says about one field, or in general.
fn problem(r: &Refusal, field: &str) -> String {
    r.field(field).map_or_else(|| r.message.clone(), |e| format!("{field}: {e}"))
}

pub async fn file_erasure(
    State(console): State<Console>,
    member: Member,
    Form(form): Form<ErasureForm>,
) -> Result<Response, ConsoleError> {
    member.session.check_csrf(&form.csrf)?;
    let value = form.value.trim();
    let (body, field) = match form.kind.as_str() {
        "email" if value.contains('@') => {
            (ErasureRequestBody { email_sha256: Some(email_sha256(value)), ..Default::default() }, "email_sha256")
        }
        "email" => {
            let page = PrivacyForm {
                kind: form.kind.clone(),
                value: form.value.clone(),
                problem: Some("Give the shopper's e-mail address, as they gave it to your shop.".into()),
                ..PrivacyForm::default()
            };
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, privacy_page(&console, &member, page).await?).into_response());
        }
        _ => (ErasureRequestBody { shopper_id: Some(value.to_owned()), ..Default::default() }, "shopper_id"),
    };
    match console
        .api
        .call::<ErasureView>(Method::POST, &member.store_path("/erasures"), Some(member.token()), Some(&body))
        .await
    {
        Ok(request) => {
            tracing::info!(tenant_id = %member.session.tenant_id, request_id = %request.request_id, "erasure filed in the console");
            Ok(Redirect::to(&format!("/console/privacy/erasures/{}", request.request_id)).into_response())
        }
        Err(ConsoleError::Refused(r)) if matches!(r.status.as_u16(), 409 | 422) => {
            let page = PrivacyForm {
                kind: form.kind.clone(),
                // An address is not shown back: it need not travel more than once.
                value: if form.kind == "email" { String::new() } else { form.value.clone() },
                problem: Some(problem(&r, field)),
                ..PrivacyForm::default()
            };
            Ok((r.status, privacy_page(&console, &member, page).await?).into_response())
        }
        Err(e) => Err(e),
    }
}

pub async fn erasure(
    State(console): State<Console>,
    member: Member,
    Path(request_id): Path<String>,
) -> Result<Html<String>, ConsoleError> {
    let request_id = id_segment(&request_id)?;
    let request: ErasureView =
        console.api.get(&member.store_path(&format!("/erasures/{request_id}")), member.token()).await?;
    render(&ErasurePage { layout: Layout::new(&member, "privacy"), row: ErasureRow::new(request) })
}

/// A JSON file to download.
fn attachment(name: &str, body: Vec<u8>) -> Result<Response, ConsoleError> {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
            .map_err(|e| ConsoleError::Internal(e.to_string()))?,
    );
    Ok(response)
}

/// The signed receipt as a file: the receipt exactly as signed, the signature, and which
/// key checks it (`GET /v1/erasure-receipts/keys`).
pub async fn receipt(
    State(console): State<Console>,
    member: Member,
    Path(request_id): Path<String>,
) -> Result<Response, ConsoleError> {
    let request_id = id_segment(&request_id)?;
    let receipt: ErasureReceiptView =
        console.api.get(&member.store_path(&format!("/erasures/{request_id}/receipt")), member.token()).await?;
    let body = serde_json::to_vec_pretty(&receipt).map_err(|e| ConsoleError::Internal(e.to_string()))?;
    attachment(&format!("erasure-receipt-{request_id}.json"), body)
}

/// What the control plane keeps about a shopper, as a file.
pub async fn export(
    State(console): State<Console>,
    member: Member,
    Form(form): Form<ExportForm>,
) -> Result<Response, ConsoleError> {
    member.session.check_csrf(&form.csrf)?;
    let shopper = form.shopper_id.trim();
    let refused = |problem: String| PrivacyForm {
        kind: "shopper".into(),
        export_shopper: form.shopper_id.clone(),
        export_problem: Some(problem),
        ..PrivacyForm::default()
    };
    let valid = !shopper.is_empty()
        && shopper.len() <= 64
        && shopper.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
    if !valid {
        let page = refused(
            "A shopper id is 1 to 64 letters, digits, _, -, . and :, as your snippet or servers sent it.".into(),
        );
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, privacy_page(&console, &member, page).await?).into_response());
    }
    let path = member.store_path(&format!("/shoppers/{}/export", super::path_segment(shopper)));
    match console.api.send(Method::GET, &path, Some(member.token()), None).await? {
        (status, body, _) if status.is_success() => {
            let body = serde_json::to_vec_pretty(&body).map_err(|e| ConsoleError::Internal(e.to_string()))?;
            attachment(&format!("shopper-export-{}.json", super::path_segment(shopper)), body)
        }
        (status, body, _) if status == StatusCode::UNPROCESSABLE_ENTITY => {
            let message = body["error"]["details"]["fields"]["shopper_id"].as_str().unwrap_or("not a shopper id");
            let page = refused(format!("shopper id: {message}"));
            Ok((status, privacy_page(&console, &member, page).await?).into_response())
        }
        (status, body, retry_after) => Err(crate::api::refusal(status, &body, retry_after, Some(member.token()))),
    }
}
