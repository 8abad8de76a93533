//! The overview: getting the store live (the snippet, the first event) and the last day's
//! ingestion health, with drops by reason.

use std::{convert::Infallible, time::Duration};

use askama::Template;
use axum::{
    extract::State,
    response::{
        Html,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::stream::{self, Stream};
use nudge_contracts::control::{ApiKeyList, TenantView, UsageView};

use super::{Layout, render};
use crate::{
    Console,
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
    let dropped_total = usage.dropped.values().sum();
    render(&OverviewPage {
        layout: Layout::new(&member, "overview"),
        store,
        revealed_secret,
        snippet,
        usage,
        dropped_total,
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
                Err(ConsoleError::TokenRejected) => match console.renew_rejected(&id).await {
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
