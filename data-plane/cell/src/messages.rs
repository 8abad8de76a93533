//! Messages a store sends to shoppers' open pages itself, decided by no campaign:
//!
//! - `POST /v1/test-interventions`: a test message to one shopper (the console's "send a
//!   test message", a store checking its installation). It goes the way every on-site
//!   message goes (the shopper's history, the gateways holding the store's sockets): it is
//!   not logged as a send, counts in no report, and the shopper's feedback on it is ignored.
//! - `POST /v1/announcements`: one message to every page of the shop open now ("free
//!   shipping until midnight"). Each gateway holding the store's sockets renders it once and
//!   writes the same bytes to all of them. It is kept in no history, so a page opened later
//!   does not see it; browsers neither acknowledge it nor report feedback on it, and it
//!   counts in no usage meter.
//!
//! Only owners and admins, with their access tokens: a server's secret key cannot push text
//! to shoppers' pages. Each store may send [`TEST_MESSAGES`] test messages a minute and
//! [`ANNOUNCEMENTS`] announcements an hour, counted in Redis across the cell's processes; a
//! send that could not be routed takes its place back.

use std::{sync::Arc, time::Duration};

use axum::{Json, extract::State, extract::rejection::JsonRejection, http::HeaderMap, http::StatusCode};
use chrono::Utc;
use nudge_contracts::{ShopperId, proto::interventions::v1::Intervention};
use nudge_data_plane_directory::{Directory, auth::authorize_member_request};
use nudge_data_plane_gateway::{
    hub::ShopperAddress,
    route::{ANNOUNCEMENT_PREFIX, InterventionPublisher, TEST_INTERVENTION_PREFIX},
};
use nudge_platform_http::{ApiError, ErrorBody, current_trace};
use nudge_tenants::TenantId;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

/// The scope a member's role must reach (owners and admins).
pub const SCOPE: &str = "events:write";
/// Test messages a store may send, and in how long.
pub const TEST_MESSAGES: (usize, Duration) = (10, Duration::from_secs(60));
/// Announcements a store may send, and in how long: each reaches every open page.
pub const ANNOUNCEMENTS: (usize, Duration) = (10, Duration::from_secs(3600));
const MAX_TITLE: usize = 120;
const MAX_BODY: usize = 1000;

/// How many sends each store made lately, against a limit over a sliding window, kept in
/// Redis so every process of the cell counts against the same limit
/// (`t:{tenant}:sent-window:{kind}`, a sorted set of send ids by time).
#[derive(Clone)]
pub struct SendWindow {
    kind: &'static str,
    limit: usize,
    window: Duration,
    redis: ConnectionManager,
    prefix: String,
}

// KEYS: the store's window. ARGV: now (ms), the window (ms), the limit, the send's id.
// 0 when the send is counted; otherwise the milliseconds until the oldest leaves the window.
const TAKE: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + tonumber(ARGV[2]) - tonumber(ARGV[1]))
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0
"#;

/// Why a send was not counted.
enum Refused {
    /// The window is full: this long until a place frees.
    Full(Duration),
    Unavailable(redis::RedisError),
}

impl SendWindow {
    pub fn new(kind: &'static str, (limit, window): (usize, Duration), redis: ConnectionManager, prefix: &str) -> Self {
        Self { kind, limit, window, redis, prefix: prefix.to_owned() }
    }

    fn key(&self, tenant: TenantId) -> String {
        format!("{}t:{tenant}:sent-window:{}", self.prefix, self.kind)
    }

    /// Counts send `id` by `tenant` now, or says how long until it may send.
    async fn take(&self, tenant: TenantId, id: &str) -> Result<(), Refused> {
        let mut conn = self.redis.clone();
        let now = chrono::Utc::now().timestamp_millis();
        let window = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
        let wait: i64 = redis::Script::new(TAKE)
            .key(self.key(tenant))
            .arg(now)
            .arg(window)
            .arg(self.limit)
            .arg(id)
            .invoke_async(&mut conn)
            .await
            .map_err(Refused::Unavailable)?;
        if wait == 0 { Ok(()) } else { Err(Refused::Full(Duration::from_millis(wait.unsigned_abs()))) }
    }

    /// Takes back send `id`, which did not go out: it holds no place in the window.
    async fn give_back(&self, tenant: TenantId, id: &str) {
        let mut conn = self.redis.clone();
        let removed: Result<(), redis::RedisError> =
            redis::cmd("ZREM").arg(self.key(tenant)).arg(id).query_async(&mut conn).await;
        if let Err(e) = removed {
            tracing::warn!(tenant_id = %tenant, error = %e, "a send that did not go out still holds its place in the window");
        }
    }
}

#[derive(Clone)]
pub struct MessagesState {
    pub directory: Arc<Directory>,
    pub publisher: InterventionPublisher,
    pub test_messages: SendWindow,
    pub announcements: SendWindow,
}

impl MessagesState {
    pub fn new(
        directory: Arc<Directory>,
        publisher: InterventionPublisher,
        redis: ConnectionManager,
        prefix: &str,
    ) -> Self {
        Self {
            directory,
            publisher,
            test_messages: SendWindow::new("test-messages", TEST_MESSAGES, redis.clone(), prefix),
            announcements: SendWindow::new("announcements", ANNOUNCEMENTS, redis, prefix),
        }
    }
}

pub fn router() -> OpenApiRouter<MessagesState> {
    OpenApiRouter::new().routes(routes!(send_test)).routes(routes!(announce))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestInterventionRequest {
    /// The shopper whose open pages show it (`nudge.shopperId` in a page of the shop).
    pub shopper_id: String,
    /// 1 to 120 characters; a default when absent.
    #[serde(default)]
    pub title: Option<String>,
    /// 1 to 1000 characters; a default when absent.
    #[serde(default)]
    pub body: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TestInterventionSent {
    pub intervention_id: String,
    /// Gateway processes that held a socket of the store when it was sent: 0 means no page
    /// of the store was open there; the shopper sees it on their next page within the
    /// history's time to live.
    pub gateways: usize,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnnouncementRequest {
    /// 1 to 120 characters.
    pub title: String,
    /// 1 to 1000 characters.
    pub body: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AnnouncementSent {
    /// `ann_…`.
    pub announcement_id: String,
    /// Gateway processes that held a socket of the store when it was sent: 0 means no page
    /// of the store was open, and no one will see it.
    pub gateways: usize,
}

/// The store an owner's or admin's request is for.
fn member_store(state: &MessagesState, headers: &HeaderMap) -> Result<TenantId, ApiError> {
    let tenant = authorize_member_request(&state.directory, headers, SCOPE)?.tenant_id;
    tracing::Span::current().record("tenant_id", tracing::field::display(tenant));
    Ok(tenant)
}

/// Counts send `id`, ready to go, against `window`: a request refused for its content
/// takes no place in it.
async fn admit(window: &SendWindow, tenant: TenantId, id: &str, what: &str) -> Result<(), ApiError> {
    window.take(tenant, id).await.map_err(|refused| match refused {
        Refused::Full(wait) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("{} {what} per store every {} s", window.limit, window.window.as_secs()),
        )
        .with_retry_after(u32::try_from(wait.as_secs().max(1)).unwrap_or(u32::MAX)),
        Refused::Unavailable(e) => unroutable(e, what),
    })
}

/// A title or body: trimmed, `default` when absent or empty (an error without one), at
/// most `max` characters.
fn text(value: Option<String>, default: Option<&str>, max: usize, field: &str) -> Result<String, ApiError> {
    let value = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let Some(value) = value.or_else(|| default.map(str::to_owned)) else {
        return Err(ApiError::unprocessable("invalid_text", format!("{field} is 1 to {max} characters")));
    };
    if value.chars().count() > max {
        return Err(ApiError::unprocessable("invalid_text", format!("{field} is 1 to {max} characters")));
    }
    Ok(value)
}

fn unroutable(e: redis::RedisError, what: &str) -> ApiError {
    tracing::warn!(error = %e, "{what} could not be routed");
    ApiError::unavailable("routing_unavailable", "the message cannot be routed now", 1)
}

/// A message decided by no campaign, from no model.
fn store_message(id: &str, tenant: TenantId, shopper: &str, kind: &str, title: String, body: String) -> Intervention {
    Intervention {
        intervention_id: id.to_owned(),
        tenant_id: tenant.to_string(),
        shopper_id: shopper.to_owned(),
        kind: kind.into(),
        title,
        body,
        decided_at_ms: Utc::now().timestamp_millis(),
        traceparent: current_trace().map(|t| t.to_header()).unwrap_or_default(),
        ..Default::default()
    }
}

/// Sends a test message to a shopper's open pages.
#[utoipa::path(post, path = "/v1/test-interventions", tag = "events", request_body = TestInterventionRequest,
    security(("access_token" = [])),
    responses(
        (status = 202, description = "sent", body = TestInterventionSent),
        (status = 429, description = "`rate_limited`: ten a minute per store; retry after `Retry-After`", body = ErrorBody),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 401, description = "`members_only`, `invalid_token`, `members_not_accepted`", body = ErrorBody),
        (status = 403, description = "`missing_scope`, `tenant_suspended`, `tenant_inactive`", body = ErrorBody),
        (status = 422, description = "`invalid_shopper_id`, `invalid_text`", body = ErrorBody),
        (status = 503, description = "`routing_unavailable`; retry after `Retry-After`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn send_test(
    State(state): State<MessagesState>,
    headers: HeaderMap,
    body: Result<Json<TestInterventionRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<TestInterventionSent>), ApiError> {
    let tenant = member_store(&state, &headers)?;
    let Json(request) = body.map_err(|e| ApiError::bad_request("malformed_json", e.body_text()))?;
    let shopper = ShopperId::parse(request.shopper_id.trim())
        .map_err(|e| ApiError::unprocessable("invalid_shopper_id", e.to_string()))?;
    let title = text(request.title, Some("Nudge is installed"), MAX_TITLE, "title")?;
    let body = text(request.body, Some("This test message reached your shop's page."), MAX_BODY, "body")?;
    let intervention_id = format!("{TEST_INTERVENTION_PREFIX}{}", uuid::Uuid::new_v4().simple());
    admit(&state.test_messages, tenant, &intervention_id, "test messages").await?;
    let iv = store_message(&intervention_id, tenant, shopper.as_str(), "message", title, body);
    let published = state.publisher.publish(&ShopperAddress { tenant, shopper }, &iv).await;
    let gateways = match published {
        Ok(gateways) => gateways,
        Err(e) => {
            state.test_messages.give_back(tenant, &intervention_id).await;
            return Err(unroutable(e, "a test message"));
        }
    };
    tracing::info!(intervention_id = %intervention_id, gateways, "test message sent");
    Ok((StatusCode::ACCEPTED, Json(TestInterventionSent { intervention_id, gateways })))
}

/// Shows a message on every page of the shop open now.
#[utoipa::path(post, path = "/v1/announcements", tag = "events", request_body = AnnouncementRequest,
    security(("access_token" = [])),
    responses(
        (status = 202, description = "sent to the pages open now", body = AnnouncementSent),
        (status = 429, description = "`rate_limited`: ten an hour per store; retry after `Retry-After`", body = ErrorBody),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 401, description = "`members_only`, `invalid_token`, `members_not_accepted`", body = ErrorBody),
        (status = 403, description = "`missing_scope`, `tenant_suspended`, `tenant_inactive`", body = ErrorBody),
        (status = 422, description = "`invalid_text`", body = ErrorBody),
        (status = 503, description = "`routing_unavailable`; retry after `Retry-After`", body = ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(tenant_id))]
async fn announce(
    State(state): State<MessagesState>,
    headers: HeaderMap,
    body: Result<Json<AnnouncementRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<AnnouncementSent>), ApiError> {
    let tenant = member_store(&state, &headers)?;
    let Json(request) = body.map_err(|e| ApiError::bad_request("malformed_json", e.body_text()))?;
    let title = text(Some(request.title), None, MAX_TITLE, "title")?;
    let body = text(Some(request.body), None, MAX_BODY, "body")?;
    let announcement_id = format!("{ANNOUNCEMENT_PREFIX}{}", uuid::Uuid::new_v4().simple());
    admit(&state.announcements, tenant, &announcement_id, "announcements").await?;
    let announcement = store_message(&announcement_id, tenant, "", "announcement", title, body);
    let gateways = match state.publisher.announce(&tenant, &announcement).await {
        Ok(gateways) => gateways,
        Err(e) => {
            // It may have reached some pages (a timeout after Redis published it); the
            // snippet shows an announcement id once, so sending it again repeats nothing.
            state.announcements.give_back(tenant, &announcement_id).await;
            return Err(unroutable(e, "an announcement"));
        }
    };
    tracing::info!(announcement_id = %announcement_id, gateways, "announcement sent");
    Ok((StatusCode::ACCEPTED, Json(AnnouncementSent { announcement_id, gateways })))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_trimmed_defaulted_and_bounded() {
        assert_eq!(text(Some("  hi ".into()), None, 5, "title").unwrap(), "hi");
        assert_eq!(text(None, Some("default"), 10, "title").unwrap(), "default");
        assert_eq!(text(Some("   ".into()), Some("default"), 10, "title").unwrap(), "default");
        assert_eq!(text(Some("  ".into()), None, 5, "title").unwrap_err().code, "invalid_text");
        assert_eq!(text(Some("é".repeat(6)), None, 5, "body").unwrap_err().code, "invalid_text");
        assert!(text(Some("é".repeat(5)), None, 5, "body").is_ok(), "characters, not bytes");
    }
}
