//! API keys: the store's keys, a new secret key (its secret shown once), revoking one.

use askama::Template;
use axum::{
    Form,
    body::Bytes,
    extract::{Path, Query, State},
    http::{Method, StatusCode},
    response::{Html, IntoResponse, Redirect, Response},
};
use nudge_contracts::control::{ApiKeyList, ApiKeyView, CreateKeyRequest, CreatedKey};
use serde::Deserialize;

use super::{Layout, auth::CsrfForm, id_segment, path_segment, render, short_time};
use crate::{
    Console,
    api::Empty,
    error::ConsoleError,
    session::{Member, Reveal},
};

/// The scopes a secret key may have, with what each allows.
pub const SCOPES: [(&str, &str); 5] = [
    ("events:write", "Send events from your servers"),
    ("features:read", "Read shoppers' current features"),
    ("shoppers:export", "Export what is kept about a shopper"),
    ("sends:read", "Read the send log of campaigns"),
    ("reports:read", "Read lift reports and run dry runs"),
];

struct KeyRow {
    key: ApiKeyView,
    created: String,
    revoked: Option<String>,
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    layout: Layout,
    keys: Vec<KeyRow>,
    scopes: &'static [(&'static str, &'static str)],
    name: String,
    chosen: Vec<String>,
    errors: Vec<(String, String)>,
    notice: Option<&'static str>,
}

impl KeysPage {
    fn error(&self, field: &str) -> Option<&str> {
        self.errors.iter().find(|(f, _)| f == field).map(|(_, e)| e.as_str())
    }

    fn is_chosen(&self, scope: &str) -> bool {
        self.chosen.iter().any(|s| s == scope)
    }
}

#[derive(Template)]
#[template(path = "key_created.html")]
struct CreatedPage {
    layout: Layout,
    secret: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Notice {
    done: String,
}

async fn keys_page(
    console: &Console,
    member: &Member,
    name: String,
    chosen: Vec<String>,
    errors: Vec<(String, String)>,
    notice: Option<&'static str>,
) -> Result<Html<String>, ConsoleError> {
    let keys: ApiKeyList = console.api.get(&member.store_path("/api-keys"), member.token()).await?;
    let keys = keys
        .items
        .into_iter()
        .map(|key| KeyRow {
            created: short_time(&key.created_at),
            revoked: key.revoked_at.as_deref().map(short_time),
            key,
        })
        .collect();
    render(&KeysPage { layout: Layout::new(member, "keys"), keys, scopes: &SCOPES, name, chosen, errors, notice })
}

pub async fn page(
    State(console): State<Console>,
    member: Member,
    Query(notice): Query<Notice>,
) -> Result<Html<String>, ConsoleError> {
    let notice = match notice.done.as_str() {
        "revoked" => Some("The key is revoked. Cells refuse it within seconds."),
        _ => None,
    };
    keys_page(&console, &member, String::new(), Vec::new(), Vec::new(), notice).await
}

/// A new secret key: `name`, one `scope` field per chosen scope, `csrf`.
pub async fn create(State(console): State<Console>, member: Member, body: Bytes) -> Result<Response, ConsoleError> {
    let (mut csrf, mut name, mut scopes) = (String::new(), String::new(), Vec::new());
    for (k, v) in form_urlencoded::parse(&body) {
        match k.as_ref() {
            "csrf" => csrf = v.into_owned(),
            "name" => name = v.into_owned(),
            "scope" => scopes.push(v.into_owned()),
            _ => {}
        }
    }
    member.session.check_csrf(&csrf)?;
    let request = CreateKeyRequest { name: name.clone(), scopes: scopes.clone() };
    match console
        .api
        .call::<CreatedKey>(Method::POST, &member.store_path("/api-keys"), Some(member.token()), Some(&request))
        .await
    {
        Ok(created) => {
            tracing::info!(tenant_id = %member.session.tenant_id, key_id = %created.key.key_id, "secret key created in the console");
            let key_id = &created.key.key_id;
            console.sessions.put_reveal(&member.id, Reveal::Key(key_id), &created.secret_key).await?;
            Ok(Redirect::to(&format!("/console/keys/created?key={}", path_segment(key_id))).into_response())
        }
        Err(ConsoleError::Refused(r)) if r.status == StatusCode::UNPROCESSABLE_ENTITY => {
            let page = keys_page(&console, &member, name, scopes, r.fields, None).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(e) => Err(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CreatedQuery {
    key: String,
}

/// The new key's secret, shown once: reading it removes it. Each key has its own slot, so
/// keys made in two tabs are each shown where they were made.
pub async fn created(
    State(console): State<Console>,
    member: Member,
    Query(query): Query<CreatedQuery>,
) -> Result<Html<String>, ConsoleError> {
    let secret = match id_segment(&query.key) {
        Ok(key_id) => console.sessions.take_reveal(&member.id, Reveal::Key(key_id)).await?,
        Err(_) => None,
    };
    render(&CreatedPage { layout: Layout::new(&member, "keys"), secret })
}

pub async fn revoke(
    State(console): State<Console>,
    member: Member,
    Path(key_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ConsoleError> {
    member.session.check_csrf(&form.csrf)?;
    let key_id = id_segment(&key_id)?;
    console
        .api
        .call::<Empty>(
            Method::DELETE,
            &member.store_path(&format!("/api-keys/{key_id}")),
            Some(member.token()),
            None::<&()>,
        )
        .await?;
    tracing::info!(tenant_id = %member.session.tenant_id, key_id, "key revoked in the console");
    Ok(Redirect::to("/console/keys?done=revoked").into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_console_offers_exactly_the_scopes_the_api_accepts() {
        let offered: Vec<&str> = super::SCOPES.iter().map(|(s, _)| *s).collect();
        assert_eq!(offered, nudge_control_plane::keys::SCOPES.to_vec());
    }
}
