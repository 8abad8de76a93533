//! Live events: the store's latest events as its cell keeps them (sampled: at most four a
//! second, the newest 50), read with the member's token. The page refreshes itself while it
//! is open, as automatic loads that do not keep the session alive.

use askama::Template;
use axum::{extract::State, response::Html};
use nudge_contracts::control::TenantView;
use serde_json::Value;

use super::{Layout, render};
use crate::{Console, error::ConsoleError, session::Member};

struct Row {
    time: String,
    kind: String,
    path: String,
    shopper: String,
}

#[derive(Template)]
#[template(path = "events.html")]
struct EventsPage {
    layout: Layout,
    events: Vec<Row>,
    problem: Option<(String, &'static str)>,
}

/// Unix milliseconds as a UTC time of day.
fn time_of(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02} UTC")
}

pub async fn page(State(console): State<Console>, member: Member) -> Result<Html<String>, ConsoleError> {
    let store: TenantView = console.api.get(&member.store_path(""), member.token()).await?;
    let (events, problem) = match console.cell.get(&store.cell_url, "/v1/events/recent", member.token()).await {
        Ok(answer) => {
            let rows = answer["events"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e: &Value| Row {
                    time: time_of(e["at_ms"].as_i64().unwrap_or(0)),
                    kind: e["type"].as_str().unwrap_or("unknown").to_owned(),
                    path: e["path"].as_str().unwrap_or_default().to_owned(),
                    shopper: e["shopper"].as_str().unwrap_or_default().to_owned(),
                })
                .collect();
            (rows, None)
        }
        Err(e) => (Vec::new(), Some((e.to_string(), e.next_step()))),
    };
    render(&EventsPage { layout: Layout::new(&member, "events"), events, problem })
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_read_as_utc_clock_times() {
        assert_eq!(super::time_of(0), "00:00:00 UTC");
        assert_eq!(super::time_of(1_764_370_861_000), "23:01:01 UTC");
    }
}
