//! The store's live events, sampled: what the merchant console's "live events" page shows.
//! After the pipeline has applied an event, at most one per store every
//! [`SAMPLE_EVERY`] is kept in a short list in Redis (the newest [`KEEP`], gone an hour after
//! the last), as its type, time, page path (no query string; segments that may name someone
//! masked) and a short pseudonym of the shopper: enough to see a shop is live, nothing to profile anyone. A store's whole-store
//! erasure removes the list with its other keys; a shopper's entries expire within the hour.
//! `GET /v1/events/recent` reads it (every member, or a secret key with `reports:read`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use axum::{Json, extract::State, http::HeaderMap};
use nudge_contracts::proto::events::v1::{Event, event::Payload};
use nudge_data_plane_directory::{Directory, auth::authorize_server_request};
use nudge_platform_http::{ApiError, ErrorBody};
use nudge_tenants::TenantId;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

/// At most one event per store is kept this often.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Events kept per store.
pub const KEEP: isize = 50;
/// The list is gone this long after its last event.
const TTL_MS: u64 = 3_600_000;
/// The scope a secret key needs.
pub const SCOPE: &str = "reports:read";

/// One sampled event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RecentEvent {
    /// When the cell accepted it (Unix milliseconds).
    pub at_ms: i64,
    /// `page_view`, `add_to_cart`, `purchase`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The page's path, without its query string, for page views.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// A short pseudonym of the shopper in this store (8 hex digits): tells sessions apart.
    pub shopper: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RecentEvents {
    /// Newest first.
    pub events: Vec<RecentEvent>,
}

/// Keeps and reads the stores' sampled events.
#[derive(Clone)]
pub struct RecentEventLog {
    redis: ConnectionManager,
    prefix: String,
    last: Arc<Mutex<HashMap<TenantId, Instant>>>,
}

impl RecentEventLog {
    pub fn new(redis: ConnectionManager, prefix: String) -> Self {
        Self { redis, prefix, last: Arc::new(Mutex::new(HashMap::new())) }
    }

    fn key(&self, tenant: TenantId) -> String {
        format!("{}t:{tenant}:recent-events", self.prefix)
    }

    /// Keeps `event` of `tenant`'s `shopper` when the store's last sample is old enough. A
    /// failure is only logged: the sample is a view, never part of the event's effects.
    pub async fn note(&self, tenant: TenantId, shopper: &str, event: &Event) {
        let now = Instant::now();
        {
            let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            if last.get(&tenant).is_some_and(|at| now.duration_since(*at) < SAMPLE_EVERY) {
                return;
            }
            last.insert(tenant, now);
        }
        let entry = RecentEvent {
            at_ms: event.received_at_ms,
            kind: kind_of(event).to_owned(),
            path: match &event.payload {
                Some(Payload::PageView(view)) => path_of(&view.url),
                _ => String::new(),
            },
            shopper: pseudonym(tenant, shopper),
        };
        let Ok(json) = serde_json::to_string(&entry) else { return };
        let key = self.key(tenant);
        let written = redis::pipe()
            .cmd("LPUSH")
            .arg(&key)
            .arg(json)
            .ignore()
            .cmd("LTRIM")
            .arg(&key)
            .arg(0)
            .arg(KEEP - 1)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(TTL_MS)
            .ignore()
            .query_async::<()>(&mut self.redis.clone())
            .await;
        if let Err(e) = written {
            tracing::debug!(tenant_id = %tenant, error = %e, "a live event sample was not kept");
        }
    }

    /// The store's kept events, newest first.
    pub async fn read(&self, tenant: TenantId) -> Result<Vec<RecentEvent>, redis::RedisError> {
        let raw: Vec<String> = redis::cmd("LRANGE")
            .arg(self.key(tenant))
            .arg(0)
            .arg(KEEP - 1)
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(raw.iter().filter_map(|r| serde_json::from_str(r).ok()).collect())
    }
}

/// The event's type as the store sent it.
fn kind_of(event: &Event) -> &'static str {
    match &event.payload {
        Some(Payload::PageView(_)) => "page_view",
        Some(Payload::ProductView(_)) => "product_view",
        Some(Payload::AddToCart(_)) => "add_to_cart",
        Some(Payload::RemoveFromCart(_)) => "remove_from_cart",
        Some(Payload::CheckoutStart(_)) => "checkout_start",
        Some(Payload::Purchase(_)) => "purchase",
        Some(Payload::ExitIntent(_)) => "exit_intent",
        Some(Payload::Identify(_)) => "identify",
        Some(Payload::CartIdle(_)) => "cart_idle",
        Some(Payload::Consent(_)) => "consent",
        Some(Payload::InterventionFeedback(_)) => "intervention",
        None => "unknown",
    }
}

/// A URL's path, without scheme, host, query or fragment, and with every segment that may
/// name someone (an e-mail address, a long number, a token) replaced by `:id`; at most 100
/// characters.
fn path_of(url: &str) -> String {
    let after_host = url.split_once("://").map_or(url, |(_, rest)| rest.find('/').map_or("/", |i| &rest[i..]));
    let path = after_host.split(['?', '#']).next().unwrap_or("/");
    let masked: Vec<&str> = path
        .split('/')
        .map(|segment| {
            let digits = segment.bytes().filter(u8::is_ascii_digit).count();
            if segment.contains('@') || segment.contains('%') || digits >= 5 || segment.len() > 32 {
                ":id"
            } else {
                segment
            }
        })
        .collect();
    masked.join("/").chars().take(100).collect()
}

/// 8 hex digits of the shopper's digest in this store.
fn pseudonym(tenant: TenantId, shopper: &str) -> String {
    let digest = Sha256::new().chain_update(tenant.as_uuid().as_bytes()).chain_update(shopper.as_bytes()).finalize();
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone)]
pub struct RecentState {
    pub directory: Arc<Directory>,
    pub log: RecentEventLog,
}

pub fn router() -> OpenApiRouter<RecentState> {
    OpenApiRouter::new().routes(routes!(recent))
}

/// The store's latest events, sampled (at most four a second are kept; the newest 50).
#[utoipa::path(get, path = "/v1/events/recent", tag = "reports",
    security(("secret_key" = [])),
    responses(
        (status = 200, description = "newest first", body = RecentEvents),
        (status = 401, description = "`missing_key`, `invalid_key`, `invalid_token`", body = ErrorBody),
        (status = 403, description = "`missing_scope`, `tenant_suspended`, `tenant_inactive`", body = ErrorBody),
        (status = 503, description = "`recent_events_unavailable`; retry after `Retry-After`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn recent(State(state): State<RecentState>, headers: HeaderMap) -> Result<Json<RecentEvents>, ApiError> {
    let tenant = authorize_server_request(&state.directory, &headers, SCOPE)?.tenant_id;
    tracing::Span::current().record("tenant_id", tracing::field::display(tenant));
    let events = state.log.read(tenant).await.map_err(|e| {
        tracing::warn!(error = %e, "recent events unavailable");
        ApiError::unavailable("recent_events_unavailable", "the recent events cannot be read now", 1)
    })?;
    Ok(Json(RecentEvents { events }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_named_by_its_path_alone() {
        assert_eq!(path_of("https://shop.example/cart?email=a@b.example#x"), "/cart");
        assert_eq!(path_of("https://shop.example"), "/");
        assert_eq!(path_of("/products/tent?ref=1"), "/products/tent");
        assert_eq!(path_of(&format!("https://s.example/{}", "ab/".repeat(100))).len(), 100);
        assert_eq!(path_of("https://s.example/orders/123456/track"), "/orders/:id/track");
        assert_eq!(path_of("https://s.example/u/jo@example.com"), "/u/:id");
        assert_eq!(path_of("https://s.example/reset/0f3c9a7be21d44a08c1e5b6f9d2a7c3e11"), "/reset/:id");
    }

    #[test]
    fn pseudonyms_differ_by_store() {
        let (a, b) = (TenantId::new(), TenantId::new());
        assert_eq!(pseudonym(a, "shp_1").len(), 8);
        assert_ne!(pseudonym(a, "shp_1"), pseudonym(b, "shp_1"));
        assert_eq!(pseudonym(a, "shp_1"), pseudonym(a, "shp_1"));
    }
}
