//! Unsubscribe links: every campaign e-mail carries one (in its text, its HTML and its
//! `List-Unsubscribe` header, with RFC 8058 one-click `POST`), and following it records the
//! shopper's refusal of e-mail for the store — the same consent record every send is
//! checked against, with `unsubscribe_link` as its source.
//!
//! A link is `{public_url}/v1/unsubscribe/{token}`: the store, the shopper and the channel,
//! signed with the cell's session secret (the first signs, every one verifies, so the
//! secrets can be rotated); it names no address and expires with nothing (a shopper may
//! unsubscribe from an old e-mail).

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use nudge_data_plane_channels::{gate::ConsentRecord, store::ChannelStore};
use nudge_data_plane_directory::Directory;
use nudge_tenants::TenantId;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use utoipa_axum::{router::OpenApiRouter, routes};

const PURPOSE: &str = "nudge.unsubscribe.v1";

/// Makes and checks unsubscribe links.
pub struct UnsubscribeLinks {
    secrets: Vec<SecretString>,
    /// Where shoppers reach this cell (`channels.public_url`).
    base: String,
}

fn mac(secret: &SecretString, payload: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(format!("{PURPOSE}:{payload}").as_bytes());
    mac
}

impl UnsubscribeLinks {
    pub fn new(secrets: Vec<SecretString>, public_url: &str) -> Self {
        Self { secrets, base: public_url.trim_end_matches('/').to_owned() }
    }

    /// The link that unsubscribes `shopper` of `tenant` from `channel`; `None` without a
    /// signing secret.
    pub fn link(&self, tenant: TenantId, shopper: &str, channel: &str) -> Option<String> {
        let secret = self.secrets.first()?;
        let payload = URL_SAFE_NO_PAD.encode(format!("{tenant}|{shopper}|{channel}"));
        let signature = URL_SAFE_NO_PAD.encode(mac(secret, &payload).finalize().into_bytes());
        Some(format!("{}/v1/unsubscribe/{payload}.{signature}", self.base))
    }

    /// The store, shopper and channel a token names, if one of the secrets signed it.
    pub fn verify(&self, token: &str) -> Option<(TenantId, String, String)> {
        let (payload, signature) = token.split_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        if !self.secrets.iter().any(|s| mac(s, payload).verify_slice(&signature).is_ok()) {
            return None;
        }
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        let mut parts = text.splitn(3, '|');
        let tenant = parts.next()?.parse().ok()?;
        Some((tenant, parts.next()?.to_owned(), parts.next()?.to_owned()))
    }
}

#[derive(Clone)]
pub struct UnsubscribeState {
    pub links: Arc<UnsubscribeLinks>,
    pub directory: Arc<Directory>,
    pub store: ChannelStore,
}

pub fn router() -> OpenApiRouter<UnsubscribeState> {
    OpenApiRouter::new().routes(routes!(unsubscribe_page, unsubscribe_one_click))
}

/// Records the refusal; whether the link was good.
async fn unsubscribe(state: &UnsubscribeState, token: &str) -> Result<bool, StatusCode> {
    let Some((tenant, shopper, channel)) = state.links.verify(token) else { return Ok(false) };
    let Some(entry) = state.directory.by_tenant(tenant) else { return Ok(false) };
    let now = chrono::Utc::now().timestamp_millis();
    let refusal = ConsentRecord {
        granted: false,
        at_ms: now,
        event_id: "unsubscribe-link".into(),
        source: "unsubscribe_link".into(),
    };
    let ttl = i64::from(entry.limits.retention_days.max(1)) * 86_400;
    state.store.record_consent(tenant, &shopper, &channel, &refusal, ttl).await.map_err(|e| {
        tracing::warn!(tenant_id = %tenant, error = %e, "an unsubscribe could not be recorded");
        StatusCode::SERVICE_UNAVAILABLE
    })?;
    tracing::info!(tenant_id = %tenant, %channel, "a shopper unsubscribed");
    Ok(true)
}

fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width\"><title>{title}</title></head><body><main><h1>{title}</h1><p>{text}</p>\
         </main></body></html>"
    );
    let mut response = (status, Html(body)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

/// The page an unsubscribe link opens: the refusal is recorded at once.
#[utoipa::path(get, path = "/v1/unsubscribe/{token}", tag = "campaigns",
    params(("token" = String, Path, description = "from the e-mail's link")),
    responses(
        (status = 200, description = "unsubscribed (an HTML page)"),
        (status = 400, description = "a link this cell did not make (an HTML page)"),
        (status = 503, description = "the refusal could not be recorded now; try again"),
    ))]
async fn unsubscribe_page(State(state): State<UnsubscribeState>, Path(token): Path<String>) -> Response {
    match unsubscribe(&state, &token).await {
        Ok(true) => page(StatusCode::OK, "Unsubscribed", "You will get no more of these e-mails from this store."),
        Ok(false) => page(StatusCode::BAD_REQUEST, "Link not recognised", "This unsubscribe link is not valid."),
        Err(status) => page(status, "Please try again", "Your choice could not be saved just now; try again shortly."),
    }
}

/// One-click unsubscribe (RFC 8058), as mail clients send it.
#[utoipa::path(post, path = "/v1/unsubscribe/{token}", tag = "campaigns",
    params(("token" = String, Path, description = "from the e-mail's `List-Unsubscribe` header")),
    responses(
        (status = 200, description = "unsubscribed"),
        (status = 400, description = "a link this cell did not make"),
        (status = 503, description = "the refusal could not be recorded now; try again"),
    ))]
async fn unsubscribe_one_click(State(state): State<UnsubscribeState>, Path(token): Path<String>) -> StatusCode {
    match unsubscribe(&state, &token).await {
        Ok(true) => StatusCode::OK,
        Ok(false) => StatusCode::BAD_REQUEST,
        Err(status) => status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_verifies_with_any_secret_and_not_when_changed() {
        let tenant = TenantId::new();
        let old =
            UnsubscribeLinks::new(vec![SecretString::from("first-secret-0123456789abcdef0123")], "https://c.example/");
        let link = old.link(tenant, "shp_1", "email").unwrap_or_default();
        assert!(link.starts_with("https://c.example/v1/unsubscribe/"));
        let token = link.rsplit('/').next().unwrap_or_default();
        assert_eq!(old.verify(token), Some((tenant, "shp_1".into(), "email".into())));
        let rotated = UnsubscribeLinks::new(
            vec![
                SecretString::from("second-secret-0123456789abcdef012"),
                SecretString::from("first-secret-0123456789abcdef0123"),
            ],
            "https://c.example",
        );
        assert!(rotated.verify(token).is_some(), "an old link still works after a rotation");
        let forged = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(format!("{tenant}|shp_2|email")),
            token.split_once('.').map_or("", |t| t.1)
        );
        assert_eq!(old.verify(&forged), None, "another shopper's name under the same signature");
        assert!(UnsubscribeLinks::new(Vec::new(), "https://c.example").link(tenant, "shp_1", "email").is_none());
    }
}
