//! The overview: getting the store live (the snippet, the first event, a test message to an
//! open page of the shop), an announcement to every open page of the shop, and the last
//! day's ingestion health, with drops by reason.

use std::{convert::Infallible, time::Duration};

use askama::Template;
use axum::{
    Form,
    extract::State,
    http::StatusCode,
    response::{
        Html, IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::stream::{self, Stream};
use nudge_contracts::control::{ApiKeyList, TenantView, UsageView};
use serde::Deserialize;
use serde_json::json;

use super::{Layout, render};
use crate::{
    Console,
    cell::CellError,
    error::ConsoleError,
    session::{Member, Reveal},
};

/// How often the waiting page asks whether the first event has arrived.
const FIRST_EVENT_POLL: Duration = Duration::from_secs(2);
/// An event stream ends after this; the browser opens a new one.
const FIRST_EVENT_STREAM_FOR: Duration = Duration::from_secs(600);

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    layout: Layout,
    store: TenantView,
    /// The secret key made at sign-up, shown this once.
    revealed_secret: Option<String>,
    /// The snippet to paste, when the member's role may read the publishable key.
    snippet: Option<String>,
    usage: UsageView,
    dropped_total: i64,
    /// Whether the member may send test messages and announcements (owners and admins).
    can_send: bool,
    forms: Forms,
}

/// What a send from the overview did, for the page shown again.
#[derive(Default)]
struct Outcome {
    notice: Option<String>,
    problem: Option<String>,
}

/// The overview's forms as the member left them, and what their last send did.
#[derive(Default)]
struct Forms {
    test_shopper: String,
    test: Outcome,
    announce_title: String,
    announce_body: String,
    announcement: Outcome,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AnnounceForm {
    csrf: String,
    title: String,
    body: String,
}

/// The outcome of a request to the store's cell: `notice` from its answer, or the cell's
/// refusal (422 for the member's input, 503 otherwise) with what to do next.
fn sent(
    answer: Result<serde_json::Value, CellError>,
    notice: impl FnOnce(&serde_json::Value) -> String,
) -> (StatusCode, Outcome) {
    match answer {
        Ok(answer) => (StatusCode::OK, Outcome { notice: Some(notice(&answer)), problem: None }),
        Err(e) => {
            let status = match &e {
                CellError::Refused { status, .. } if status.is_client_error() => StatusCode::UNPROCESSABLE_ENTITY,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            (status, Outcome { notice: None, problem: Some(format!("{e}. {}", e.next_step())) })
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct TestForm {
    csrf: String,
    shopper_id: String,
}

/// The snippet a store pastes into every page.
pub fn snippet(cell_url: &str, publishable_key: &str) -> String {
    let cell = cell_url.trim_end_matches('/');
    format!(
        "<script src=\"{cell}/nudge.js\"></script>\n<script>\n  window.nudge = Nudge.init({{ key: \"{publishable_key}\", \
         endpoint: \"{cell}\" }});\n  nudge.track(\"page_view\", {{ url: location.href, referrer: document.referrer }});\n\
         </script>"
    )
}

pub async fn page(State(console): State<Console>, member: Member) -> Result<Html<String>, ConsoleError> {
    overview(&console, &member, Forms::default()).await
}

/// Sends a test message to a shopper's open pages, through the store's cell.
pub async fn test_message(
    State(console): State<Console>,
    member: Member,
    Form(form): Form<TestForm>,
) -> Result<Response, ConsoleError> {
    member.session.check_csrf(&form.csrf)?;
    let store: TenantView = console.api.get(&member.store_path(""), member.token()).await?;
    let shopper = form.shopper_id.trim().to_owned();
    let answer = console
        .cell
        .post(&store.cell_url, "/v1/test-interventions", member.token(), &json!({ "shopper_id": shopper }))
        .await;
    let (status, test) = sent(answer, |answer| {
        tracing::info!(tenant_id = %member.session.tenant_id, "test message sent from the console");
        if answer["gateways"].as_u64().unwrap_or(0) > 0 {
            "Sent. It shows on the shopper's open pages now.".to_owned()
        } else {
            "Sent, but no page of your shop is open right now: it shows on the shopper's next page in the next \
             few minutes."
                .to_owned()
        }
    });
    let forms = Forms { test_shopper: shopper, test, ..Forms::default() };
    Ok((status, overview(&console, &member, forms).await?).into_response())
}

/// Shows an announcement on every page of the shop open now, through the store's cell.
pub async fn announce(
    State(console): State<Console>,
    member: Member,
    Form(form): Form<AnnounceForm>,
) -> Result<Response, ConsoleError> {
    member.session.check_csrf(&form.csrf)?;
    let store: TenantView = console.api.get(&member.store_path(""), member.token()).await?;
    let (title, body) = (form.title.trim().to_owned(), form.body.trim().to_owned());
    let answer = console
        .cell
        .post(&store.cell_url, "/v1/announcements", member.token(), &json!({ "title": title, "body": body }))
        .await;
    let (status, announcement) = sent(answer, |answer| {
        tracing::info!(tenant_id = %member.session.tenant_id, "announcement sent from the console");
        if answer["gateways"].as_u64().unwrap_or(0) > 0 {
            "Announced. Every page of your shop open now shows it.".to_owned()
        } else {
            "Sent, but no page of your shop was open: nobody saw it. Announcements are not kept for later visitors."
                .to_owned()
        }
    });
    // A sent announcement leaves the form empty; a refused one keeps what was typed.
    let forms = if announcement.problem.is_some() {
        Forms { announce_title: title, announce_body: body, announcement, ..Forms::default() }
    } else {
        Forms { announcement, ..Forms::default() }
    };
    Ok((status, overview(&console, &member, forms).await?).into_response())
}

async fn overview(console: &Console, member: &Member, forms: Forms) -> Result<Html<String>, ConsoleError> {
    let token = member.token();
    let (store_path, keys_path, usage_path) =
        (member.store_path(""), member.store_path("/api-keys"), member.store_path("/usage"));
    let (store, keys, usage) = tokio::join!(
        console.api.get::<TenantView>(&store_path, token),
        console.api.get::<ApiKeyList>(&keys_path, token),
        console.api.get::<UsageView>(&usage_path, token),
    );
    let (store, usage) = (store?, usage?);
    let snippet = match keys {
        Ok(keys) => keys
            .items
            .iter()
            .find(|k| k.kind == "publishable" && k.revoked_at.is_none())
            .map(|k| snippet(&store.cell_url, &k.display)),
        // Viewers and analysts may not read keys: the page says whom to ask.
        Err(ConsoleError::Refused(r)) if r.status.as_u16() == 403 => None,
        Err(e) => return Err(e),
    };
    let revealed_secret = console.sessions.take_reveal(&member.id, Reveal::Signup).await?;
    let can_send = matches!(member.session.role.as_str(), "owner" | "admin");
    let dropped_total = usage.dropped.values().sum();
    render(&OverviewPage {
        layout: Layout::new(member, "overview"),
        store,
        revealed_secret,
        snippet,
        usage,
        dropped_total,
        can_send,
        forms,
    })
}

/// `text/event-stream`: `received` (with the count) once the store's cell has reported an
/// accepted event, `signed_out` if the session ends, nothing else but keep-alives. The page
/// asks with `?auto`: waiting does not count as use of the session.
pub async fn first_event(
    State(console): State<Console>,
    member: Member,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let started = tokio::time::Instant::now();
    let stream = stream::unfold(Some((console, member.id)), move |state| async move {
        let (console, id) = state?;
        loop {
            if started.elapsed() > FIRST_EVENT_STREAM_FOR {
                return None;
            }
            let usage = match console.member_again(&id).await {
                Ok(member) => console.api.get::<UsageView>(&member.store_path("/usage"), member.token()).await,
                Err(e) => Err(e),
            };
            match usage {
                Ok(u) if u.accepted > 0 => {
                    let event = Event::default().event("received").data(u.accepted.to_string());
                    return Some((Ok(event), None));
                }
                Ok(_) => {}
                Err(ConsoleError::SignedOut) => return Some((Ok(Event::default().event("signed_out").data("")), None)),
                Err(ConsoleError::TokenRejected(rejected)) => match console.renew_rejected(&id, &rejected).await {
                    Err(ConsoleError::SignedOut) => {
                        return Some((Ok(Event::default().event("signed_out").data("")), None));
                    }
                    Err(e) => tracing::debug!(error = %e, "renewing a rejected token failed; trying again"),
                    Ok(()) => {}
                },
                // A passing outage: keep waiting.
                Err(e) => tracing::debug!(error = %e, "first-event check failed; trying again"),
            }
            tokio::time::sleep(FIRST_EVENT_POLL).await;
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
