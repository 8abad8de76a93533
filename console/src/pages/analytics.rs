//! Analytics: what the store's campaigns did, read from the store's cell with the member's
//! token. The store against its global holdout (recovered revenue with its interval), each
//! campaign against its control group (conversion lift with its 95 % interval), the on-site
//! funnel (treated, shown, clicked, bought), and the send log's last entries by channel
//! (delayed channels' sends, every channel's skips). Charts are
//! SVG drawn here: no script, no inline style.

use std::collections::BTreeMap;

use askama::Template;
use axum::{extract::State, response::Html};
use futures_util::future::join_all;
use nudge_contracts::control::{StoreModelView, TenantView};
use serde_json::Value;

use super::{Layout, render};
use crate::{Console, cell::CellError, error::ConsoleError, session::Member};

/// Campaigns with a report on one page (the newest first); older ones stay in the API.
const MAX_CAMPAIGNS: usize = 20;
/// Decisions the channel summary counts.
const RECENT_DECISIONS: usize = 1_000;
/// Width of a chart's drawing area, in SVG units.
const CHART_WIDTH: f64 = 320.0;

/// An estimate with its 95 % interval, in words and as a chart.
struct Interval {
    text: String,
    /// The SVG's marks: interval from `low_x` to `high_x`, the estimate at `value_x`, zero at
    /// `zero_x`.
    low_x: String,
    high_x: String,
    value_x: String,
    zero_x: String,
    /// Whether the whole interval lies above zero (the effect is there) or below.
    verdict: &'static str,
}

impl Interval {
    fn of(e: &Value, as_text: impl Fn(f64) -> String) -> Option<Self> {
        let (value, low, high) = (e["value"].as_f64()?, e["low"].as_f64()?, e["high"].as_f64()?);
        let (min, max) = (low.min(0.0), high.max(0.0));
        let span = if max - min > 0.0 { max - min } else { 1.0 };
        let x = |v: f64| format!("{:.1}", 10.0 + (v - min) / span * (CHART_WIDTH - 20.0));
        let verdict = if low > 0.0 {
            "above"
        } else if high < 0.0 {
            "below"
        } else {
            "unclear"
        };
        Some(Self {
            text: format!("{} (95 % interval {} to {})", as_text(value), as_text(low), as_text(high)),
            low_x: x(low),
            high_x: x(high),
            value_x: x(value),
            zero_x: x(0.0),
            verdict,
        })
    }
}

/// One bar of a funnel.
struct Bar {
    label: &'static str,
    count: u64,
    width: String,
    y: usize,
}

struct Report {
    name: String,
    campaign_id: String,
    /// `control` or `holdout`.
    against: String,
    treated: u64,
    baseline: u64,
    treated_rate: String,
    baseline_rate: String,
    conversion_lift: Option<Interval>,
    recovered: Option<Interval>,
    /// The currencies purchases came in, when there were several: no revenue is shown.
    mixed_currencies: Option<String>,
    funnel: Vec<Bar>,
    funnel_height: usize,
}

fn percent(rate: f64) -> String {
    format!("{:.1} %", rate * 100.0)
}

fn points(rate: f64) -> String {
    format!("{:+.1} points", rate * 100.0)
}

/// Hundredths of `currency` in its major unit, with its code when known.
fn money(minor: f64, currency: &str) -> String {
    format!("{:.2} {currency}", minor / 100.0).trim_end().to_owned()
}

fn report(name: String, lift: &Value) -> Report {
    let against =
        lift["lift"]["against"].as_str().unwrap_or(if lift["control"].is_null() { "holdout" } else { "control" });
    let baseline = if against == "control" { &lift["control"] } else { &lift["holdout"] };
    let treated = &lift["treated"];
    let shoppers = treated["shoppers"].as_u64().unwrap_or(0);
    let engagement = &lift["engagement"];
    let counts = [
        ("Treated shoppers", shoppers),
        ("Shown a message", engagement["shown"].as_u64().unwrap_or(0)),
        ("Clicked", engagement["clicked"].as_u64().unwrap_or(0)),
        ("Bought", treated["converted"].as_u64().unwrap_or(0)),
    ];
    let top = counts.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let funnel = counts
        .iter()
        .enumerate()
        .map(|(i, (label, count))| Bar {
            label,
            count: *count,
            // Labels take the first 120 units, the count the last 40.
            width: format!("{:.1}", (*count as f64 / top as f64) * (CHART_WIDTH - 160.0)),
            y: i * 24,
        })
        .collect();
    // Recovered revenue: the lift in revenue per shopper over the treated shoppers, when its
    // purchases were in one currency.
    let currencies: Vec<&str> =
        lift["currencies"].as_array().map(|c| c.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let currency = if currencies.len() == 1 { currencies[0].to_owned() } else { String::new() };
    let mixed_currencies = (currencies.len() > 1).then(|| currencies.join(", "));
    let recovered = {
        let per = &lift["lift"]["revenue_per_shopper_minor"];
        let scaled = |key: &str| per[key].as_f64().map(|v| v * shoppers as f64);
        match (scaled("value"), scaled("low"), scaled("high")) {
            (Some(value), Some(low), Some(high)) => {
                Interval::of(&serde_json::json!({ "value": value, "low": low, "high": high }), |v| money(v, &currency))
            }
            _ => None,
        }
    };
    let rate = |arm: &Value| match arm["shoppers"].as_u64() {
        Some(n) if n > 0 => percent(arm["conversion_rate"].as_f64().unwrap_or(0.0)),
        _ => "—".to_owned(),
    };
    Report {
        name,
        campaign_id: lift["campaign_id"].as_str().unwrap_or_default().to_owned(),
        against: against.to_owned(),
        treated: shoppers,
        baseline: baseline["shoppers"].as_u64().unwrap_or(0),
        treated_rate: rate(treated),
        baseline_rate: rate(baseline),
        conversion_lift: Interval::of(&lift["lift"]["conversion"], points),
        recovered,
        mixed_currencies,
        funnel,
        funnel_height: counts.len() * 24,
    }
}

/// One channel's recent decisions.
struct Channel {
    name: String,
    sent: u64,
    skipped: u64,
    other: u64,
}

#[derive(Template)]
#[template(path = "analytics.html")]
struct AnalyticsPage {
    layout: Layout,
    store: Option<Report>,
    campaigns: Vec<Report>,
    channels: Vec<Channel>,
    /// Decisions counted for the channel summary.
    decisions: usize,
    attribution_days: u64,
    /// Why the reports are missing, and what to do.
    problem: Option<(String, &'static str)>,
    channels_problem: Option<String>,
    /// Campaigns beyond those reported here.
    more: usize,
    /// The model scoring the store's events, and any rollout beside it.
    model: StoreModelView,
}

pub async fn page(State(console): State<Console>, member: Member) -> Result<Html<String>, ConsoleError> {
    let token = member.token();
    let (store_path, campaigns_path, model_path) =
        (member.store_path(""), member.store_path("/campaigns"), member.store_path("/model"));
    let (store, campaigns, model) = tokio::join!(
        console.api.get::<TenantView>(&store_path, token),
        console.api.get::<Value>(&campaigns_path, token),
        console.api.get::<StoreModelView>(&model_path, token),
    );
    let (store, campaigns, model) = (store?, campaigns?, model?);
    let mut listed: Vec<(String, String)> = campaigns["campaigns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["state"] != "draft")
        .map(|c| {
            (
                c["campaign_id"].as_str().unwrap_or_default().to_owned(),
                c["spec"]["name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .filter(|(id, _)| super::id_segment(id).is_ok())
        .collect();
    let more = listed.len().saturating_sub(MAX_CAMPAIGNS);
    listed.truncate(MAX_CAMPAIGNS);

    let cell = &console.cell;
    let campaign_paths: Vec<String> = listed.iter().map(|(id, _)| format!("/v1/lift?campaign_id={id}")).collect();
    let sends_path = format!("/v1/sends?limit={RECENT_DECISIONS}");
    let overall = cell.get(&store.cell_url, "/v1/lift", token);
    let per_campaign = join_all(campaign_paths.iter().map(|path| cell.get(&store.cell_url, path, token)));
    let sends = cell.get(&store.cell_url, &sends_path, token);
    let (overall, per_campaign, sends) = tokio::join!(overall, per_campaign, sends);

    let mut problem = None;
    let mut note = |e: &CellError| {
        if problem.is_none() {
            tracing::info!(tenant_id = %member.session.tenant_id, error = %e, "a report could not be read from the cell");
            problem = Some((e.to_string(), e.next_step()));
        }
    };
    let attribution_days = overall.as_ref().ok().and_then(|r| r["attribution_days"].as_u64()).unwrap_or(7);
    let store_report = match &overall {
        Ok(lift) => Some(report("All campaigns".into(), lift)),
        Err(e) => {
            note(e);
            None
        }
    };
    let mut reports = Vec::new();
    for ((_, name), lift) in listed.into_iter().zip(per_campaign) {
        match lift {
            Ok(lift) => reports.push(report(name, &lift)),
            Err(e) => note(&e),
        }
    }
    let (channels, decisions, channels_problem) = match sends {
        Ok(log) => {
            let entries = log["entries"].as_array().cloned().unwrap_or_default();
            let mut by: BTreeMap<String, Channel> = BTreeMap::new();
            for entry in &entries {
                let name = entry["channel"].as_str().unwrap_or("unknown").to_owned();
                let channel = by.entry(name.clone()).or_insert(Channel { name, sent: 0, skipped: 0, other: 0 });
                match entry["outcome"].as_str().unwrap_or_default() {
                    "sent" => channel.sent += 1,
                    "skipped" | "cancelled" => channel.skipped += 1,
                    _ => channel.other += 1,
                }
            }
            (by.into_values().collect(), entries.len(), None)
        }
        // Viewers do not read the send log; the rest of the page stands.
        Err(e) => (Vec::new(), 0, Some(format!("{e}. {}", e.next_step()))),
    };
    render(&AnalyticsPage {
        layout: Layout::new(&member, "analytics"),
        store: store_report,
        campaigns: reports,
        channels,
        decisions,
        attribution_days,
        problem,
        channels_problem,
        more,
        model,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_report_reads_the_cells_answer() {
        let lift = json!({
            "campaign_id": "cmp_1", "attribution_days": 7, "currencies": ["EUR"],
            "treated": { "shoppers": 200, "converted": 30, "conversion_rate": 0.15, "revenue_minor": 90000.0, "revenue_per_shopper_minor": 450.0 },
            "control": { "shoppers": 20, "converted": 2, "conversion_rate": 0.10, "revenue_minor": 5000.0, "revenue_per_shopper_minor": 250.0 },
            "holdout": { "shoppers": 0, "converted": 0, "conversion_rate": 0.0, "revenue_minor": 0.0, "revenue_per_shopper_minor": 0.0 },
            "engagement": { "shown": 180, "clicked": 40, "dismissed": 20 },
            "lift": { "against": "control",
                "conversion": { "value": 0.05, "low": 0.01, "high": 0.09 },
                "revenue_per_shopper_minor": { "value": 200.0, "low": -10.0, "high": 410.0 } }
        });
        let r = report("Come back".into(), &lift);
        assert_eq!((r.treated, r.baseline, r.against.as_str()), (200, 20, "control"));
        assert_eq!((r.treated_rate.as_str(), r.baseline_rate.as_str()), ("15.0 %", "10.0 %"));
        let conversion = r.conversion_lift.expect("an interval");
        assert_eq!(conversion.verdict, "above");
        assert!(conversion.text.starts_with("+5.0 points"), "{}", conversion.text);
        let recovered = r.recovered.expect("recovered revenue");
        assert_eq!(recovered.verdict, "unclear", "its interval crosses zero");
        assert!(recovered.text.starts_with("400.00 EUR"), "{}", recovered.text);
        assert!(r.mixed_currencies.is_none());
        // Purchases in several currencies: no revenue figure, and the page says why.
        let mut mixed = lift.clone();
        mixed["currencies"] = json!(["EUR", "USD"]);
        if let Some(lift) = mixed["lift"].as_object_mut() {
            lift.remove("revenue_per_shopper_minor");
        }
        let r = report("Come back".into(), &mixed);
        assert!(r.recovered.is_none());
        assert_eq!(r.mixed_currencies.as_deref(), Some("EUR, USD"));
        let counts: Vec<u64> = r.funnel.iter().map(|b| b.count).collect();
        assert_eq!(counts, vec![200, 180, 40, 30]);
    }

    #[test]
    fn a_report_without_a_comparison_has_no_interval() {
        let lift = json!({ "campaign_id": "_store", "treated": { "shoppers": 3 }, "holdout": { "shoppers": 0 }, "engagement": {} });
        let r = report("All campaigns".into(), &lift);
        assert!(r.conversion_lift.is_none() && r.recovered.is_none());
        assert_eq!((r.treated_rate.as_str(), r.baseline_rate.as_str()), ("0.0 %", "—"), "no shoppers: no rate");
        assert_eq!(r.against, "holdout");
    }
}
