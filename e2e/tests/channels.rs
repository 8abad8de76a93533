//! Campaign e-mails end to end, through a real SMTP server (aiosmtpd): a campaign's e-mail is
//! scheduled at the shopper's moment and sent after its delay to the address the store
//! identified them with, unless they buy first — the purchase cancels it, and the time that
//! took is measured. Every send not made is in the store's send log with its reason: no
//! consent, a refusal, the frequency cap, quiet hours in the shopper's own time zone, a
//! campaign of higher priority.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::ORIGIN;
use nudge_data_plane_channels::email::SmtpConfig;
use nudge_test_support::{MailServer, Platform, unique_suffix};
use serde_json::{Value, json};

/// A store with `policy` and the given campaigns active; its publishable key, a secret key
/// reading the send log, and the owner's token.
struct Store {
    key: String,
    /// Reads the send log and the lift reports.
    sends_key: String,
    token: String,
    tenant: String,
    campaigns: Vec<String>,
}

async fn store_with(platform: &Platform, policy: Value, campaigns: &[Value]) -> anyhow::Result<Store> {
    let owner = format!("owner-{}@example.com", unique_suffix());
    let store = platform.sign_up_as("Mailer", &[ORIGIN], &owner).await?;
    platform.wait_for_key(&store.publishable_key, ORIGIN).await?;
    let token = platform.login(&owner, None).await?.access_token;
    let cp = &platform.control_plane_url;
    let tenant = store.tenant_id.clone();
    let r = platform
        .http
        .put(format!("{cp}/v1/tenants/{tenant}/messaging-policy"))
        .bearer_auth(&token)
        .json(&policy)
        .send()
        .await?;
    anyhow::ensure!(r.status() == 200, "policy: {}", r.text().await?);
    let mut ids = Vec::new();
    for spec in campaigns {
        let created: Value = platform
            .http
            .post(format!("{cp}/v1/tenants/{tenant}/campaigns"))
            .bearer_auth(&token)
            .json(spec)
            .send()
            .await?
            .json()
            .await?;
        let id = created["campaign_id"].as_str().ok_or_else(|| anyhow::anyhow!("not created: {created}"))?;
        let r = platform
            .http
            .post(format!("{cp}/v1/tenants/{tenant}/campaigns/{id}/state"))
            .bearer_auth(&token)
            .json(&json!({"state": "active"}))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 200, "activating: {}", r.text().await?);
        ids.push(id.to_owned());
    }
    let sends_key = platform.create_secret_key(&owner, &tenant, &["sends:read", "reports:read"]).await?;
    Ok(Store { key: store.publishable_key, sends_key, token, tenant, campaigns: ids })
}

fn email_campaign(name: &str, priority: u16, delay_minutes: u32) -> Value {
    json!({
        "name": name, "trigger": { "type": "exit_intent" }, "priority": priority, "control_percent": 0,
        "variants": [{ "name": "mail", "weight": 100, "messages": [{
            "channel": "email", "delay_minutes": delay_minutes,
            "subject": "Your {{ cart_items }} items are waiting",
            "html": "<p>You left {{ cart_items }} items worth {{ cart_value }} EUR.</p>",
            "text": "You left {{ cart_items }} items worth {{ cart_value }} EUR.",
        }]}],
    })
}

/// A shopper's moment, `ago_s` seconds back: they identify with `email` (consent to e-mail
/// given, refused, or neither), put a tent in the cart and move to leave. The exit's event
/// id.
async fn exit_with_cart(
    platform: &Platform,
    store: &Store,
    shopper: &str,
    email: &str,
    consent: Option<bool>,
    time_zone: Option<&str>,
    ago_s: i64,
) -> anyhow::Result<String> {
    let at = |offset: i64| (Utc::now() - chrono::Duration::seconds(ago_s - offset)).to_rfc3339();
    let tag = unique_suffix();
    let mut events = vec![
        json!({"event_id": format!("{tag}-id"), "type": "identify", "shopper_id": shopper, "occurred_at": at(0),
               "properties": {"customer_ref": format!("c-{shopper}"), "email": email}}),
        json!({"event_id": format!("{tag}-add"), "type": "add_to_cart", "shopper_id": shopper, "occurred_at": at(2),
               "properties": {"product_id": "tent-2p", "price": 79.0, "currency": "EUR", "quantity": 1}}),
    ];
    if let Some(granted) = consent {
        events.push(json!({"event_id": format!("{tag}-consent"), "type": "consent", "shopper_id": shopper,
            "occurred_at": at(1), "properties": {"channel": "email", "granted": granted, "source": "checkout_checkbox"}}));
    }
    let exit = format!("{tag}-exit");
    events.push(json!({"event_id": exit, "type": "exit_intent", "shopper_id": shopper, "occurred_at": at(3)}));
    if let Some(zone) = time_zone {
        for e in &mut events {
            e["time_zone"] = json!(zone);
        }
    }
    let r = platform.post_events(&store.key, Some(ORIGIN), &json!({ "events": events })).await?;
    anyhow::ensure!(r.status() == 202, "{}", r.text().await?);
    Ok(exit)
}

/// The send log's entries for decisions at `event`, newest first.
async fn log_of(platform: &Platform, store: &Store, event: &str) -> anyhow::Result<Vec<Value>> {
    let r = platform
        .http
        .get(format!("{}/v1/sends?limit=1000&cause_event_id={event}", platform.cell_url))
        .bearer_auth(&store.sends_key)
        .send()
        .await?;
    anyhow::ensure!(r.status() == 200, "send log: {}", r.status());
    let body: Value = r.json().await?;
    Ok(body["entries"].as_array().cloned().unwrap_or_default())
}

/// Waits for an entry of `event` with `outcome` (and `campaign` when given).
async fn wait_entry(
    platform: &Platform,
    store: &Store,
    event: &str,
    outcome: &str,
    wait: Duration,
) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let entries = log_of(platform, store, event).await?;
        if let Some(e) = entries.iter().find(|e| e["outcome"] == outcome) {
            return Ok(e.clone());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no `{outcome}` entry for {event} within {wait:?}; the log has {entries:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A platform whose cell sends e-mail through `mail`, looking for due sends often.
async fn platform_with(mail: &MailServer) -> anyhow::Result<Platform> {
    let port = mail.port();
    Platform::start_with(|_, cell| {
        cell.channels.smtp = Some(SmtpConfig { port, ..SmtpConfig::default() });
        cell.channels.scan_interval_ms = 100;
        // Every moment of a shopper may decide (the caps are what this test is about).
        cell.decide.cooldown_ms = 0;
    })
    .await
}

/// Plays moments for new shoppers until the cell schedules one (it learns the store's
/// campaigns moments after the API answers).
async fn until_scheduling(platform: &Platform, store: &Store) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        let shopper = format!("shp_probe_{}", unique_suffix());
        let exit = exit_with_cart(platform, store, &shopper, "probe@example.com", Some(true), None, 0).await?;
        if wait_entry(platform, store, &exit, "scheduled", Duration::from_secs(5)).await.is_ok() {
            return Ok(());
        }
    }
    anyhow::bail!("the cell never scheduled a campaign e-mail")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_cancels_the_scheduled_email_and_the_others_arrive() -> anyhow::Result<()> {
    let mail = MailServer::start().await?;
    let platform = platform_with(&mail).await?;
    // E-mail: consent required, no quiet hours or caps in the way of this test.
    let policy = json!({ "email": { "requires_consent": true }, "attribution_days": 3 });
    let store = store_with(&platform, policy, &[email_campaign("Come back", 10, 1)]).await?;
    until_scheduling(&platform, &store).await?;

    // Two shoppers leave with a cart 50 s ago: their e-mails are due in about 10 s.
    let buyer = format!("shp_buyer_{}", unique_suffix());
    let waiter = format!("shp_waiter_{}", unique_suffix());
    let buyer_exit = exit_with_cart(&platform, &store, &buyer, "buyer@example.com", Some(true), None, 50).await?;
    let waiter_exit = exit_with_cart(&platform, &store, &waiter, "waiter@example.com", Some(true), None, 50).await?;
    let scheduled = wait_entry(&platform, &store, &buyer_exit, "scheduled", Duration::from_secs(20)).await?;
    wait_entry(&platform, &store, &waiter_exit, "scheduled", Duration::from_secs(20)).await?;

    // More buyers, for the figure: each buys (like the buyer) while their e-mail waits.
    let mut others = Vec::new();
    for n in 0..8 {
        let shopper = format!("shp_more_{n}_{}", unique_suffix());
        let exit =
            exit_with_cart(&platform, &store, &shopper, &format!("more{n}@example.com"), Some(true), None, 0).await?;
        others.push((shopper, exit));
    }
    for (_, exit) in &others {
        wait_entry(&platform, &store, exit, "scheduled", Duration::from_secs(20)).await?;
    }

    // The buyer buys before theirs is due: the time from posting the purchase to the send
    // being cancelled (by the cell's clock, the same machine's) is measured for each buyer.
    let mut took = Vec::new();
    let buyers = std::iter::once((buyer.clone(), buyer_exit.clone())).chain(others.clone());
    for (n, (shopper, exit)) in buyers.enumerate() {
        let purchase = json!({"events": [{"event_id": format!("{shopper}-order"), "type": "purchase", "shopper_id": shopper,
            "properties": {"order_id": format!("o-{n}"), "value": 79.0, "currency": "EUR"}}]});
        let posted_at = Utc::now().timestamp_millis();
        let r = platform.post_events(&store.key, Some(ORIGIN), &purchase).await?;
        assert_eq!(r.status(), 202);
        let cancelled = wait_entry(&platform, &store, &exit, "cancelled", Duration::from_secs(10)).await?;
        assert_eq!((cancelled["reason"].as_str(), cancelled["channel"].as_str()), (Some("purchased"), Some("email")));
        took.push(cancelled["at_ms"].as_i64().unwrap_or_default() - posted_at);
        if n == 0 {
            assert_eq!(cancelled["intervention_id"], scheduled["intervention_id"]);
        }
    }
    took.sort_unstable();
    println!(
        "purchase posted to pending e-mail cancelled, {} buyers: median {} ms, min {} ms, max {} ms",
        took.len(),
        took[took.len() / 2],
        took[0],
        took[took.len() - 1]
    );

    // The other shopper's e-mail arrives, rendered, with the send's id as its Message-ID.
    let got = mail.wait_for("waiter@example.com", Duration::from_secs(30)).await?;
    assert_eq!(got.subject, "Your 1 items are waiting");
    assert!(got.raw.contains("You left 1 items worth 79 EUR."), "{}", got.raw);
    let sent = wait_entry(&platform, &store, &waiter_exit, "sent", Duration::from_secs(10)).await?;
    assert_eq!(sent["consent"]["granted"], true, "the consent it went by is logged: {sent}");
    assert_eq!(sent["consent"]["source"], "checkout_checkbox");
    assert!(got.message_id.starts_with('<') && got.message_id.ends_with("@nudge>"), "{}", got.message_id);

    // It carries an unsubscribe link (header, one-click, and in the text); following it
    // records the refusal, and the shopper's next e-mail is skipped for it.
    let header = got
        .raw
        .lines()
        .find_map(|l| l.strip_prefix("List-Unsubscribe: "))
        .map(|v| v.trim().trim_start_matches('<').trim_end_matches('>').to_owned())
        .unwrap_or_default();
    assert!(header.starts_with(&format!("{}/v1/unsubscribe/", platform.cell_url)), "{}", got.raw);
    assert!(got.raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
    // The text part may be quoted-printable, its long lines broken softly.
    let unfolded = got.raw.replace("=\r\n", "").replace("=\n", "");
    assert!(unfolded.contains(&format!("To stop these e-mails: {header}")), "{}", got.raw);
    let forged = format!("{header}x");
    assert_eq!(platform.http.post(&forged).send().await?.status(), 400);
    assert_eq!(platform.http.post(&header).send().await?.status(), 200);
    let page = platform.http.get(&header).send().await?;
    assert_eq!(page.status(), 200);
    assert!(page.text().await?.contains("Unsubscribed"));
    let again = exit_with_cart(&platform, &store, &waiter, "waiter@example.com", None, None, 55).await?;
    let skipped = wait_sent_or_skipped(&platform, &store, &again).await?;
    assert_eq!(
        (skipped["reason"].as_str(), skipped["consent"]["source"].as_str()),
        (Some("consent_refused"), Some("unsubscribe_link"))
    );

    // Well past the buyer's due time, and past the dispatcher's next rounds: nothing for them.
    let due: i64 =
        scheduled["detail"].as_str().and_then(|d| d.strip_prefix("due at ")).and_then(|d| d.parse().ok()).unwrap_or(0);
    while Utc::now().timestamp_millis() < due + 2_000 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(mail.received_by("buyer@example.com")?.is_empty(), "the buyer got an e-mail");
    let outcomes: Vec<String> = log_of(&platform, &store, &buyer_exit)
        .await?
        .iter()
        .filter_map(|e| e["outcome"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(outcomes, ["cancelled", "scheduled"], "newest first");

    // The campaign's report: the shoppers it treated (the probes too), the buyer's order
    // counted for them within the attribution window; no control group in this campaign.
    let report: Value = platform
        .http
        .get(format!("{}/v1/lift?campaign_id={}", platform.cell_url, store.campaigns[0]))
        .bearer_auth(&store.sends_key)
        .send()
        .await?
        .json()
        .await?;
    assert!(report["treated"]["shoppers"].as_u64().unwrap_or(0) >= 11, "{report}");
    assert_eq!(
        (report["treated"]["converted"].as_u64(), report["treated"]["revenue_minor"].as_f64()),
        (Some(9), Some(9.0 * 7900.0)),
        "the nine buyers' orders"
    );
    assert_eq!(report["control"]["shoppers"], 0);
    assert_eq!(report["lift"], Value::Null, "no control group, no lift");
    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_caps_quiet_hours_and_priority_each_skip_a_send_with_its_reason() -> anyhow::Result<()> {
    let mail = MailServer::start().await?;
    let platform = platform_with(&mail).await?;
    // Quiet two hours around this moment for a shopper six hours east of UTC: shoppers in
    // UTC are far outside the window, whatever the time of day the test runs.
    let east = Utc::now() + chrono::Duration::hours(6);
    let hhmm = |t: chrono::DateTime<Utc>| t.format("%H:%M").to_string();
    let policy = json!({
        "email": {
            "requires_consent": true,
            "frequency_cap": { "max": 1, "per_hours": 24 },
            "quiet_hours": { "start": hhmm(east - chrono::Duration::hours(1)), "end": hhmm(east + chrono::Duration::hours(1)), "then": "skip" },
        },
    });
    let high = email_campaign("High", 20, 0);
    let low = json!({
        "name": "Low", "trigger": { "type": "exit_intent" }, "priority": 5, "control_percent": 0,
        "variants": [{ "name": "a", "weight": 100, "messages": [
            { "channel": "on_site", "kind": "reminder", "title": "Still there?", "body": "Saved." }]}],
    });
    let store = store_with(&platform, policy, &[high, low]).await?;

    // The policy reads back; a bad one is refused field by field, and a viewer or another
    // store's owner changes nothing.
    let cp = &platform.control_plane_url;
    let url = format!("{cp}/v1/tenants/{}/messaging-policy", store.tenant);
    let read: Value = platform.http.get(&url).bearer_auth(&store.token).send().await?.json().await?;
    assert_eq!(read["policy"]["email"]["frequency_cap"]["max"], 1, "{read}");
    assert_eq!(read["policy"]["email"]["quiet_hours"]["then"], "skip");
    let bad = json!({ "holdout_percent": 80, "email": { "quiet_hours": { "start": "25:00", "end": "08:00" } } });
    let refused = platform.http.put(&url).bearer_auth(&store.token).json(&bad).send().await?;
    assert_eq!(refused.status(), 422);
    let refused: Value = refused.json().await?;
    assert_eq!(refused["error"]["code"], "invalid_policy");
    let fields: Vec<&str> = refused["error"]["details"]["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["field"].as_str())
        .collect();
    assert_eq!(fields, ["holdout_percent", "email.quiet_hours.start"]);
    let other_owner = format!("other-{}@example.com", unique_suffix());
    platform.sign_up_as("Other", &["https://other.example.com"], &other_owner).await?;
    let other_token = platform.login(&other_owner, None).await?.access_token;
    assert_eq!(platform.http.get(&url).bearer_auth(&other_token).send().await?.status(), 404);
    assert_eq!(platform.http.put(&url).bearer_auth(&other_token).json(&json!({})).send().await?.status(), 404);

    until_scheduling(&platform, &store).await?;
    let shopper = |tag: &str| format!("shp_{tag}_{}", unique_suffix());

    // Priority: the high campaign's e-mail is scheduled, the low one is outranked.
    let (first, silent, refusing, quiet) = (shopper("first"), shopper("silent"), shopper("refusing"), shopper("quiet"));
    let exit = exit_with_cart(&platform, &store, &first, "first@example.com", Some(true), None, 0).await?;
    let outranked = wait_entry(&platform, &store, &exit, "skipped", Duration::from_secs(20)).await?;
    assert_eq!(outranked["reason"], "outranked");
    mail.wait_for("first@example.com", Duration::from_secs(30)).await?;
    wait_entry(&platform, &store, &exit, "sent", Duration::from_secs(10)).await?;

    // The frequency cap: the same shopper's next moment is capped (one e-mail a day).
    let again = exit_with_cart(&platform, &store, &first, "first@example.com", Some(true), None, 0).await?;
    let capped = wait_sent_or_skipped(&platform, &store, &again).await?;
    assert_eq!(
        (capped["outcome"].as_str(), capped["reason"].as_str()),
        (Some("skipped"), Some("frequency_cap")),
        "{capped}"
    );

    // No consent recorded, and a refusal (logged with the evidence).
    let exit = exit_with_cart(&platform, &store, &silent, "silent@example.com", None, None, 0).await?;
    let skipped = wait_sent_or_skipped(&platform, &store, &exit).await?;
    assert_eq!(skipped["reason"], "no_consent", "{skipped}");
    let exit = exit_with_cart(&platform, &store, &refusing, "refusing@example.com", Some(false), None, 0).await?;
    let skipped = wait_sent_or_skipped(&platform, &store, &exit).await?;
    assert_eq!(skipped["reason"], "consent_refused", "{skipped}");
    assert_eq!(
        (skipped["consent"]["granted"].as_bool(), skipped["consent"]["source"].as_str()),
        (Some(false), Some("checkout_checkbox"))
    );

    // Quiet hours in the shopper's time zone (UTC+6 here).
    let exit = exit_with_cart(&platform, &store, &quiet, "quiet@example.com", Some(true), Some("Etc/GMT-6"), 0).await?;
    let skipped = wait_sent_or_skipped(&platform, &store, &exit).await?;
    assert_eq!(skipped["reason"], "quiet_hours", "{skipped}");

    for address in ["silent@example.com", "refusing@example.com", "quiet@example.com"] {
        assert!(mail.received_by(address)?.is_empty(), "{address} got an e-mail");
    }
    assert_eq!(mail.received_by("first@example.com")?.len(), 1, "the capped one was not sent");
    platform.shutdown().await
}

/// The e-mail's final entry for decisions at `event`: sent, or skipped by the dispatcher
/// (the outranked on-site campaign's entry is not it).
async fn wait_sent_or_skipped(platform: &Platform, store: &Store, event: &str) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let entries = log_of(platform, store, event).await?;
        if let Some(e) =
            entries.iter().find(|e| e["channel"] == "email" && (e["outcome"] == "sent" || e["outcome"] == "skipped"))
        {
            return Ok(e.clone());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no outcome for {event}; the log has {entries:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discount_is_offered_or_declined_with_the_inputs_on_record() -> anyhow::Result<()> {
    let mail = MailServer::start().await?;
    let platform = platform_with(&mail).await?;
    let discount = json!({
        "name": "Ten off", "trigger": { "type": "exit_intent" }, "control_percent": 0,
        "variants": [{ "name": "ten", "weight": 100, "messages": [
            { "channel": "on_site", "kind": "discount_code", "title": "{{ discount.percent }} % off", "body": "Use {{ discount.code }}",
              "discount": { "percent": 10, "code": "SAVE10", "margin_percent": 40, "expected_uplift_percent": 5 } }]}],
    });
    let store = store_with(&platform, json!({}), &[discount]).await?;
    // Shoppers until the cell has the campaign: each moment is an offer or a refusal, and
    // either names the model's probability, the uplift, the margin and the discount.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut exits = Vec::new();
    let entry = 'found: loop {
        let shopper = format!("shp_deal_{}", unique_suffix());
        exits.push(exit_with_cart(&platform, &store, &shopper, "deal@example.com", None, None, 0).await?);
        tokio::time::sleep(Duration::from_millis(500)).await;
        for exit in &exits {
            let entries = log_of(&platform, &store, exit).await?;
            if let Some(e) =
                entries.into_iter().find(|e| e["outcome"] == "offered" || e["reason"] == "discount_not_worth_it")
            {
                break 'found e;
            }
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no decision on the discount within 60 s");
    };
    let detail = entry["detail"].as_str().unwrap_or_default();
    for input in ["abandonment", "uplift 0.050", "margin 0.40", "discount 0.10"] {
        assert!(detail.contains(input), "{input} in {entry}");
    }
    assert_eq!(entry["channel"], "on_site");
    platform.shutdown().await
}

/// What a local webhook endpoint received, and how it answers: `fail_first` 503s, then 200s.
#[derive(Clone, Default)]
struct Endpoint {
    received: std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>,
    fail_first: usize,
}

async fn serve_endpoint(fail_first: usize) -> anyhow::Result<(String, Endpoint)> {
    use axum::{extract::State, http::HeaderMap};
    let endpoint = Endpoint { fail_first, ..Endpoint::default() };
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(|State(e): State<Endpoint>, headers: HeaderMap, body: String| async move {
                let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                let mut received = e.received.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                received.push((header("nudge-delivery"), header("nudge-signature"), body));
                if received.len() <= e.fail_first {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                } else {
                    axum::http::StatusCode::OK
                }
            }),
        )
        .with_state(endpoint.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, endpoint))
}

/// `Nudge-Signature` checked as a merchant would: HMAC-SHA256 of `t.body` with the secret,
/// against any of the header's `v1=` signatures.
fn signature_holds(secret: &str, header: &str, body: &str) -> bool {
    use hmac::Mac;
    let mut parts = header.split(',');
    let Some(t) = parts.next().and_then(|p| p.strip_prefix("t=")) else { return false };
    parts.filter_map(|p| p.strip_prefix("v1=")).any(|v1| {
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else { return false };
        mac.update(format!("{t}.{body}").as_bytes());
        hex::decode(v1).is_ok_and(|given| mac.verify_slice(&given).is_ok())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_with_backoff_and_a_failing_endpoint_is_flagged() -> anyhow::Result<()> {
    let (flaky_url, flaky) = serve_endpoint(2).await?;
    let (down_url, down) = serve_endpoint(usize::MAX).await?;
    let platform = Platform::start_with(|_, cell| {
        cell.channels.scan_interval_ms = 100;
        cell.channels.retry_backoff_ms = 200;
        cell.channels.webhooks.flag_after_failures = 3;
        cell.channels.webhooks.secret_refresh_ms = 100;
        cell.decide.cooldown_ms = 0;
    })
    .await?;
    let hook = |name: &str, trigger: &str, url: &str| {
        json!({
            "name": name, "trigger": { "type": trigger }, "control_percent": 0,
            "variants": [{ "name": "a", "weight": 100, "messages": [{ "channel": "webhook", "url": url }]}],
        })
    };
    let store = store_with(
        &platform,
        json!({}),
        &[hook("Flaky", "exit_intent", &flaky_url), hook("Down", "product_view", &down_url)],
    )
    .await?;
    let cp = &platform.control_plane_url;
    let secret_url = format!("{cp}/v1/tenants/{}/webhook-secret", store.tenant);
    let status: Value = platform.http.get(&secret_url).bearer_auth(&store.token).send().await?.json().await?;
    assert_eq!(status["configured"], false);
    let made = platform.http.post(&secret_url).bearer_auth(&store.token).send().await?;
    assert_eq!(made.status(), 201);
    let secret = made.json::<Value>().await?["secret"].as_str().unwrap_or_default().to_owned();
    assert!(secret.starts_with("whsec_"));
    let status: Value = platform.http.get(&secret_url).bearer_auth(&store.token).send().await?.json().await?;
    assert_eq!((status["configured"].as_bool(), status.get("secret")), (Some(true), None), "never shown again");

    // The flaky endpoint answers 503 twice, then 200: the first delivery takes three
    // attempts, each with the same delivery id and a valid signature.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let shopper = format!("shp_hook_{}", unique_suffix());
        let exit = exit_with_cart(&platform, &store, &shopper, "hook@example.com", None, None, 0).await?;
        if wait_entry(&platform, &store, &exit, "scheduled", Duration::from_secs(5)).await.is_ok() {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no webhook scheduled within 60 s");
    }
    // Every scheduled delivery of the flaky campaign settled (earlier shoppers' too).
    let flaky_id = store.campaigns[0].clone();
    let entries = loop {
        let r = platform
            .http
            .get(format!("{}/v1/sends?limit=1000", platform.cell_url))
            .bearer_auth(&store.sends_key)
            .send()
            .await?;
        let all: Vec<Value> = r.json::<Value>().await?["entries"].as_array().cloned().unwrap_or_default();
        let of = |outcome: &str| all.iter().filter(|e| e["campaign_id"] == flaky_id && e["outcome"] == outcome).count();
        if of("scheduled") > 0 && of("sent") == of("scheduled") {
            break all;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the flaky endpoint's deliveries did not settle: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let flaky_entries: Vec<&Value> = entries.iter().filter(|e| e["campaign_id"] == flaky_id).collect();
    let scheduled = flaky_entries.iter().filter(|e| e["outcome"] == "scheduled").count();
    let retrying: Vec<&&Value> = flaky_entries.iter().filter(|e| e["outcome"] == "retrying").collect();
    assert_eq!(retrying.len(), 2, "{flaky_entries:?}");
    assert!(retrying.iter().all(|e| e["reason"] == "endpoint_unavailable" && e["channel"] == "webhook"));
    let received = flaky.received.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    assert_eq!(received.len(), scheduled + 2, "each delivery once, and two retries");
    // Retries keep their delivery id: one id per scheduled delivery.
    let ids: std::collections::BTreeSet<&str> = received.iter().map(|(delivery, _, _)| delivery.as_str()).collect();
    assert_eq!(ids.len(), scheduled, "one delivery id per delivery");
    assert!(!ids.contains(""));
    for (_, signature, body) in &received {
        assert!(signature_holds(&secret, signature, body), "{signature}");
        assert!(!signature_holds("whsec_other", signature, body));
    }
    let body: Value = serde_json::from_str(&received[2].2)?;
    assert_eq!(
        (body["type"].as_str(), body["campaign_id"].as_str()),
        (Some("campaign.message"), Some(flaky_id.as_str()))
    );

    // A new secret: the one it replaces signs beside it (24 hours unless told otherwise), so
    // an endpoint that still knows only the old one keeps accepting webhooks meanwhile.
    let rotated = platform.http.post(&secret_url).bearer_auth(&store.token).send().await?;
    assert_eq!(rotated.status(), 201);
    let rotated: Value = rotated.json().await?;
    let newer = rotated["secret"].as_str().unwrap_or_default().to_owned();
    let until = rotated["previous_signs_until"].as_str().unwrap_or_default().to_owned();
    let hours =
        (chrono::DateTime::parse_from_rfc3339(&until)?.to_utc() - chrono::Utc::now()).num_minutes() as f64 / 60.0;
    assert!((23.9..=24.0).contains(&hours), "{rotated}");
    let status: Value = platform.http.get(&secret_url).bearer_auth(&store.token).send().await?.json().await?;
    assert_eq!(status["previous_signs_until"].as_str(), Some(until.as_str()), "{status}");
    // The next webhook (the cells read the secrets again within 100 ms here).
    let next_webhook = || async {
        let before = flaky.received.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let shopper = format!("shp_hook_{}", unique_suffix());
            exit_with_cart(&platform, &store, &shopper, "hook@example.com", None, None, 0).await?;
            for _ in 0..50 {
                if let Some(last) =
                    flaky.received.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(before).cloned()
                {
                    return anyhow::Ok(last);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "no webhook within 60 s");
        }
    };
    let (_, signature, body) = next_webhook().await?;
    assert_eq!(signature.matches(",v1=").count(), 2, "{signature}");
    assert!(signature_holds(&newer, &signature, &body) && signature_holds(&secret, &signature, &body));
    // Another, replacing the previous at once: only the newest signs.
    let sharp =
        platform.http.post(format!("{secret_url}?keep_previous_hours=0")).bearer_auth(&store.token).send().await?;
    assert_eq!(sharp.status(), 201);
    let sharp: Value = sharp.json().await?;
    assert!(sharp.get("previous_signs_until").is_none(), "{sharp}");
    let newest = sharp["secret"].as_str().unwrap_or_default().to_owned();
    let (_, signature, body) = next_webhook().await?;
    assert_eq!(signature.matches(",v1=").count(), 1, "{signature}");
    assert!(signature_holds(&newest, &signature, &body));
    assert!(!signature_holds(&newer, &signature, &body) && !signature_holds(&secret, &signature, &body));
    for bad in ["keep_previous_hours=169", "keep_previous_hours=-1", "keep_previous_hours=soon"] {
        let refused = platform.http.post(format!("{secret_url}?{bad}")).bearer_auth(&store.token).send().await?;
        let code = if bad.ends_with("169") { 422 } else { 400 };
        assert_eq!(refused.status(), code, "{bad}");
    }

    // The endpoint that is down: retried with backoff, then the campaign is flagged after
    // three failures in a row, and its next webhook is given up without calling it.
    let view = |shopper: &str| {
        json!({"events": [{"event_id": format!("{shopper}-view"), "type": "product_view", "shopper_id": shopper,
            "properties": {"product_id": "tent-2p", "price": 79.0, "currency": "EUR"}}]})
    };
    let first = format!("shp_down_{}", unique_suffix());
    assert_eq!(platform.post_events(&store.key, Some(ORIGIN), &view(&first)).await?.status(), 202);
    let failed = wait_entry(&platform, &store, &format!("{first}-view"), "failed", Duration::from_secs(30)).await?;
    assert_eq!(failed["reason"], "endpoint_flagged", "{failed}");
    let calls = down.received.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len();
    assert_eq!(calls, 3);
    let second = format!("shp_down_{}", unique_suffix());
    assert_eq!(platform.post_events(&store.key, Some(ORIGIN), &view(&second)).await?.status(), 202);
    let given_up = wait_entry(&platform, &store, &format!("{second}-view"), "skipped", Duration::from_secs(30)).await?;
    assert_eq!(given_up["reason"], "endpoint_flagged");
    assert_eq!(down.received.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len(), 3, "not called again");
    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_replays_a_draft_over_the_stores_events() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    // No active campaign: the shoppers meet the default rule, and the draft only replays.
    let store = store_with(&platform, json!({}), &[]).await?;
    let mut exits = Vec::new();
    for tag in ["a", "b", "c"] {
        let shopper = format!("shp_dry_{tag}_{}", unique_suffix());
        exit_with_cart(&platform, &store, &shopper, "dry@example.com", Some(true), None, 30).await?;
        exits.push(shopper);
    }
    let buyer = &exits[0];
    let purchase = json!({"events": [{"event_id": format!("{buyer}-order"), "type": "purchase", "shopper_id": buyer,
        "properties": {"order_id": "o-dry", "value": 79.0, "currency": "EUR"}}]});
    assert_eq!(platform.post_events(&store.key, Some(ORIGIN), &purchase).await?.status(), 202);

    let draft = email_campaign("Draft", 1, 30);
    let dry_run = |body: Value| {
        platform.http.post(format!("{}/v1/dry-run", platform.cell_url)).bearer_auth(&store.sends_key).json(&body).send()
    };
    // Until every event (four per shopper, and the purchase) has reached the validated topic.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let report = loop {
        let r = dry_run(json!({ "campaign": draft, "days": 1 })).await?;
        if r.status() == 200 {
            let report: Value = r.json().await?;
            if report["events"].as_u64() == Some(13) {
                break report;
            }
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the dry run never saw the thirteen events");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(report["shoppers_seen"], 3, "{report}");
    assert_eq!((report["moments_sent"].as_u64(), report["sends"]["email"].as_u64()), (Some(3), Some(3)), "{report}");
    assert_eq!(report["shoppers_reached"], 3);
    assert_eq!(report["reached_then_bought"], 1, "the buyer bought anyway: {report}");
    assert_eq!(report["truncated"], false);
    // Nothing was sent or scheduled by it.
    let log: Value = platform
        .http
        .get(format!("{}/v1/sends?limit=1000", platform.cell_url))
        .bearer_auth(&store.sends_key)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(log["entries"], json!([]), "a dry run sends and logs nothing");

    let mut bad = draft.clone();
    bad["condition"] = json!("basket > 1");
    let refused = dry_run(json!({ "campaign": bad, "days": 1 })).await?;
    assert_eq!(refused.status(), 422);
    assert_eq!(refused.json::<Value>().await?["error"]["code"], "invalid_campaign");
    let refused = dry_run(json!({ "campaign": draft, "days": 30 })).await?;
    assert_eq!(refused.json::<Value>().await?["error"]["code"], "invalid_days");
    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_shoppers_do_with_on_site_messages_is_counted_once_for_the_campaign() -> anyhow::Result<()> {
    use nudge_contracts::push::PushMessage;
    let platform = Platform::start().await?;
    let reminder = json!({
        "name": "Reminder", "trigger": { "type": "exit_intent" }, "control_percent": 0,
        "variants": [{ "name": "a", "weight": 100, "messages": [
            { "channel": "on_site", "kind": "reminder", "title": "Still there?", "body": "Saved for you." }]}],
    });
    let store = store_with(&platform, json!({}), &[reminder]).await?;
    // A shopper on the page until the campaign's message reaches them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (shopper, iv) = loop {
        let shopper = format!("shp_seen_{}", unique_suffix());
        let mut socket = platform.connect_shopper(&store.key, ORIGIN, &shopper).await?;
        exit_with_cart(&platform, &store, &shopper, "seen@example.com", None, None, 0).await?;
        if let Some(PushMessage::Intervention(iv)) = socket.next_message(Duration::from_secs(10)).await?
            && iv.title == "Still there?"
        {
            break (shopper, iv);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the campaign's message never arrived");
    };
    // The snippet reports it shown (twice: a reload), clicked, and one id of nobody's.
    let feedback = |n: usize, id: &str, action: &str| {
        json!({"event_id": format!("{shopper}-fb-{n}"), "type": "intervention", "shopper_id": shopper,
               "properties": {"intervention_id": id, "action": action}})
    };
    let events = json!({"events": [
        feedback(1, &iv.intervention_id, "shown"),
        feedback(2, &iv.intervention_id, "shown"),
        feedback(3, &iv.intervention_id, "clicked"),
        feedback(4, "00000000-0000-0000-0000-000000000000", "dismissed"),
    ]});
    assert_eq!(platform.post_events(&store.key, Some(ORIGIN), &events).await?.status(), 202);
    let url = format!("{}/v1/lift?campaign_id={}", platform.cell_url, store.campaigns[0]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let report: Value = platform.http.get(&url).bearer_auth(&store.sends_key).send().await?.json().await?;
        if report["engagement"]["clicked"] == 1 {
            assert_eq!(report["engagement"], json!({"shown": 1, "clicked": 1, "dismissed": 0}), "{report}");
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the feedback was never counted: {report}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    platform.shutdown().await
}
