//! Billing against localstripe (a fake Stripe server): a store that signs up becomes a
//! Stripe customer subscribed to its plan's price; a plan change moves the subscription to
//! the new price; an offboarding cancels it, and a cancelled offboarding subscribes the store
//! again (once it has a card: Stripe refuses a paid plan without one, and the sync says so
//! and retries). Another store's billing answers 404.

mod common;

use std::time::Duration;

use common::ORIGIN;
use nudge_control_plane::config::{BillingConfig, PlanPrices};
use nudge_test_support::{LocalStripe, OPERATOR_TOKEN, Platform, STRIPE_KEY, unique_suffix};
use secrecy::SecretString;
use serde_json::{Value, json};

/// Waits (at most 60 s) until the store's billing satisfies `done`; its last view.
async fn billing_until(
    platform: &Platform,
    tenant: &str,
    token: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let response = platform
            .http
            .get(format!("{}/v1/tenants/{tenant}/billing", platform.control_plane_url))
            .bearer_auth(token)
            .send()
            .await?;
        anyhow::ensure!(response.status() == 200, "billing answered {}", response.status());
        let view: Value = response.json().await?;
        if done(&view) {
            return Ok(view);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "not {what} within 60 s: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Billing through the Stripe API at `url` (localstripe, or what stands in front of it),
/// synced every 200 ms.
fn billing_at(url: String) -> BillingConfig {
    BillingConfig {
        stripe_api_url: url,
        stripe_secret_key: Some(SecretString::from(STRIPE_KEY)),
        // localstripe knows subscription items by their older field.
        item_param: "plan".to_owned(),
        create_prices: true,
        sync_interval_ms: 200,
        ..BillingConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_is_subscribed_at_signup_moved_on_a_plan_change_and_cancelled_when_it_leaves() -> anyhow::Result<()> {
    let stripe = LocalStripe::start().await?;
    let stripe_url = stripe.url();
    let platform = Platform::start_with(|cp, _| {
        cp.billing = billing_at(stripe_url);
    })
    .await?;
    let prices = PlanPrices::default();
    let owner = format!("owner-{}@example.com", unique_suffix());
    let store = platform.sign_up_as("Billed Store", &[ORIGIN], &owner).await?;
    let token = platform.login(&owner, None).await?.access_token;

    // Signed up: a customer, subscribed to the free plan's price.
    let billing =
        billing_until(&platform, &store.tenant_id, &token, "subscribed", |b| b["status"] == "subscribed").await?;
    assert_eq!((billing["plan"].as_str(), billing["monthly_price_cents"].as_u64()), (Some("free"), Some(0)));
    let customer_id = billing["stripe_customer_id"].as_str().expect("a customer").to_owned();
    let subscription_id = billing["stripe_subscription_id"].as_str().expect("a subscription").to_owned();
    let customer = stripe.get(&format!("/v1/customers/{customer_id}")).await?;
    assert_eq!(customer["metadata"]["tenant_id"], store.tenant_id.as_str(), "{customer}");
    assert_eq!(customer["name"], "Billed Store");
    let subscription = stripe.get(&format!("/v1/subscriptions/{subscription_id}")).await?;
    assert_eq!(subscription["status"], "active", "{subscription}");
    assert_eq!(subscription["customer"], customer_id.as_str());
    assert_eq!(subscription["items"]["data"][0]["plan"]["id"], prices.free.as_str(), "{subscription}");
    assert_eq!(subscription["metadata"]["tenant_id"], store.tenant_id.as_str());
    // One customer for the store, however many sweeps ran.
    let customers = stripe.get("/v1/customers?limit=100").await?;
    let named: Vec<&Value> = customers["data"]
        .as_array()
        .expect("customers")
        .iter()
        .filter(|c| c["metadata"]["tenant_id"] == store.tenant_id.as_str())
        .collect();
    assert_eq!(named.len(), 1, "{customers}");

    // A plan change: the same subscription, moved to the growth price.
    let changed = platform
        .http
        .post(format!("{}/v1/admin/tenants/{}/plan", platform.control_plane_url, store.tenant_id))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({ "plan": "growth" }))
        .send()
        .await?;
    assert_eq!(changed.status(), 200, "{}", changed.text().await?);
    let billing = billing_until(&platform, &store.tenant_id, &token, "on growth", |b| {
        b["status"] == "subscribed" && b["subscribed_plan"] == "growth"
    })
    .await?;
    assert_eq!(billing["monthly_price_cents"], 4900);
    assert_eq!(billing["stripe_subscription_id"], subscription_id.as_str());
    let subscription = stripe.get(&format!("/v1/subscriptions/{subscription_id}")).await?;
    assert_eq!(subscription["items"]["data"][0]["plan"]["id"], prices.growth.as_str(), "{subscription}");

    // The store leaves: its subscription is cancelled at once (the grace period bills
    // nothing).
    let offboarding = format!("{}/v1/tenants/{}/offboarding", platform.control_plane_url, store.tenant_id);
    let asked =
        platform.http.post(&offboarding).bearer_auth(&token).json(&json!({ "reason": "closing" })).send().await?;
    assert_eq!(asked.status(), 202, "{}", asked.text().await?);
    let billing =
        billing_until(&platform, &store.tenant_id, &token, "cancelled", |b| b["status"] == "cancelled").await?;
    assert!(billing.get("stripe_subscription_id").is_none(), "{billing}");
    let subscription = stripe.get(&format!("/v1/subscriptions/{subscription_id}")).await?;
    assert_eq!(subscription["status"], "canceled", "{subscription}");

    // It changes its mind: subscribed again, to its plan, under the same customer — once
    // the customer has a card, as Stripe wants for a paid plan (until then the sync says
    // why it waits, and retries).
    let cancelled = platform.http.delete(&offboarding).bearer_auth(&token).send().await?;
    assert_eq!(cancelled.status(), 200, "{}", cancelled.text().await?);
    let waiting = billing_until(&platform, &store.tenant_id, &token, "waiting for a card", |b| {
        b["last_error"].as_str().is_some_and(|e| e.starts_with("stripe_refused"))
    })
    .await?;
    assert_eq!(waiting["status"], "syncing", "{waiting}");
    stripe.add_card(&customer_id).await?;
    let billing =
        billing_until(&platform, &store.tenant_id, &token, "subscribed again", |b| b["status"] == "subscribed").await?;
    let again = billing["stripe_subscription_id"].as_str().expect("a new subscription");
    assert_ne!(again, subscription_id);
    assert_eq!(billing["stripe_customer_id"], customer_id.as_str());
    let subscription = stripe.get(&format!("/v1/subscriptions/{again}")).await?;
    assert_eq!(subscription["items"]["data"][0]["plan"]["id"], prices.growth.as_str(), "{subscription}");

    // Another store sees none of it.
    let other_owner = format!("other-{}@example.com", unique_suffix());
    platform.sign_up_as("Other Store", &["https://other.example.com"], &other_owner).await?;
    let other_token = platform.login(&other_owner, None).await?.access_token;
    let foreign = platform
        .http
        .get(format!("{}/v1/tenants/{}/billing", platform.control_plane_url, store.tenant_id))
        .bearer_auth(&other_token)
        .send()
        .await?;
    assert_eq!(foreign.status(), 404);
    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_is_off_without_a_stripe_key_and_the_store_works_regardless() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let owner = format!("owner-{}@example.com", unique_suffix());
    let store = platform.sign_up_as("Unbilled Store", &[ORIGIN], &owner).await?;
    let token = platform.login(&owner, None).await?.access_token;
    let billing = billing_until(&platform, &store.tenant_id, &token, "off", |b| b["status"] == "off").await?;
    assert_eq!(billing["plan"], "free");
    assert!(billing.get("stripe_customer_id").is_none(), "{billing}");
    let portal = platform
        .http
        .post(format!("{}/v1/tenants/{}/billing/portal", platform.control_plane_url, store.tenant_id))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(portal.status(), 503);
    assert_eq!(portal.json::<Value>().await?["error"]["code"], "billing_off");
    platform.shutdown().await
}

const WEBHOOK_SECRET: &str = "whsec_test_nudge_current";
const OLD_WEBHOOK_SECRET: &str = "whsec_test_nudge_previous";

/// `Stripe-Signature` for `body` at `t`, one `v1` per secret.
fn signature(body: &str, t: i64, secrets: &[&str]) -> String {
    use hmac::{Hmac, Mac};
    let mut header = format!("t={t}");
    for secret in secrets {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(format!("{t}.{body}").as_bytes());
        header.push_str(&format!(",v1={}", hex::encode(mac.finalize().into_bytes())));
    }
    header
}

/// An invoice event of `customer`, as Stripe sends it.
fn invoice_event(id: &str, kind: &str, created: i64, customer: &str, attempts: u64) -> String {
    json!({
        "id": id,
        "object": "event",
        "type": kind,
        "created": created,
        "data": { "object": { "object": "invoice", "customer": customer, "attempt_count": attempts } },
    })
    .to_string()
}

async fn deliver(platform: &Platform, body: &str, signature: Option<String>) -> anyhow::Result<(u16, Value)> {
    let mut request = platform
        .http
        .post(format!("{}/v1/webhooks/stripe", platform.control_plane_url))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("Stripe-Signature", signature);
    }
    let response = request.send().await?;
    Ok((response.status().as_u16(), response.json().await?))
}

/// Waits (at most 60 s) until the cell answers the store's events with `status`.
async fn ingest_answers(platform: &Platform, key: &str, status: u16) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let response = platform.post_events(key, Some(ORIGIN), &common::browsing("shp_dunning")).await?;
        if response.status().as_u16() == status {
            return Ok(response.json().await.unwrap_or(Value::Null));
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "ingest never answered {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_webhooks_are_verified_once_in_order_and_dunning_reaches_the_cell() -> anyhow::Result<()> {
    let stripe = LocalStripe::start().await?;
    let stripe_url = stripe.url();
    let platform = Platform::start_with(|cp, _| {
        cp.billing = BillingConfig {
            webhook_secrets: vec![SecretString::from(WEBHOOK_SECRET), SecretString::from(OLD_WEBHOOK_SECRET)],
            ..billing_at(stripe_url)
        };
    })
    .await?;
    let owner = format!("owner-{}@example.com", unique_suffix());
    let store = platform.sign_up_as("Dunned Store", &[ORIGIN], &owner).await?;
    platform.wait_for_key(&store.publishable_key, ORIGIN).await?;
    let token = platform.login(&owner, None).await?.access_token;
    let billing =
        billing_until(&platform, &store.tenant_id, &token, "subscribed", |b| b["status"] == "subscribed").await?;
    let customer = billing["stripe_customer_id"].as_str().expect("a customer").to_owned();
    let now = chrono::Utc::now().timestamp();
    let suffix = unique_suffix();
    let event = |n: u32, kind: &str, created: i64, attempts: u64| {
        invoice_event(&format!("evt_{suffix}_{n}"), kind, created, &customer, attempts)
    };

    // Refused before anything is read, and nothing changes: unsigned, altered, signed with
    // another secret, stale, from the future.
    let failed = event(1, "invoice.payment_failed", now - 100, 3);
    let refusals = [
        (None, "invalid_signature"),
        (
            Some(signature(&event(99, "invoice.payment_failed", now - 100, 3), now, &[WEBHOOK_SECRET])),
            "invalid_signature",
        ),
        (Some(signature(&failed, now, &["whsec_someone_else"])), "invalid_signature"),
        (Some(signature(&failed, now - 301, &[WEBHOOK_SECRET])), "signature_expired"),
        (Some(signature(&failed, now + 301, &[WEBHOOK_SECRET])), "signature_expired"),
    ];
    for (header, code) in refusals {
        let (status, body) = deliver(&platform, &failed, header).await?;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some(code)), "{body}");
    }
    let billing = billing_until(&platform, &store.tenant_id, &token, "untouched", |_| true).await?;
    assert_eq!(billing["dunning"], "ok", "refused events change nothing: {billing}");

    // A first failed attempt, signed twice (a secret being rolled: the old one matches):
    // the merchant is warned; events still flow. Delivered again: a duplicate.
    let first = event(2, "invoice.payment_failed", now - 100, 1);
    let (status, body) =
        deliver(&platform, &first, Some(signature(&first, now, &["whsec_unknown", OLD_WEBHOOK_SECRET]))).await?;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("applied")), "{body}");
    let billing = billing_until(&platform, &store.tenant_id, &token, "warned", |b| b["dunning"] == "warned").await?;
    assert!(billing["dunning_since"].is_string(), "{billing}");
    let (status, body) = deliver(&platform, &first, Some(signature(&first, now, &[WEBHOOK_SECRET]))).await?;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("duplicate")), "{body}");
    ingest_answers(&platform, &store.publishable_key, 202).await?;

    // The second: the cell refuses the store's events with a clear code.
    let second = event(3, "invoice.payment_failed", now - 90, 2);
    assert_eq!(deliver(&platform, &second, Some(signature(&second, now, &[WEBHOOK_SECRET]))).await?.0, 200);
    let refused = ingest_answers(&platform, &store.publishable_key, 402).await?;
    assert_eq!(refused["error"]["code"], "payment_required", "{refused}");

    // The third: the store is suspended.
    let third = event(4, "invoice.payment_failed", now - 80, 3);
    assert_eq!(deliver(&platform, &third, Some(signature(&third, now, &[WEBHOOK_SECRET]))).await?.0, 200);
    let refused = ingest_answers(&platform, &store.publishable_key, 403).await?;
    assert_eq!(refused["error"]["code"], "tenant_suspended", "{refused}");
    billing_until(&platform, &store.tenant_id, &token, "suspended", |b| b["dunning"] == "suspended").await?;

    // Paid: reactivated. A failure Stripe created before the payment, arriving after it,
    // changes nothing.
    let paid = event(5, "invoice.paid", now - 50, 3);
    assert_eq!(deliver(&platform, &paid, Some(signature(&paid, now, &[WEBHOOK_SECRET]))).await?.0, 200);
    let late = event(6, "invoice.payment_failed", now - 60, 3);
    let (status, body) = deliver(&platform, &late, Some(signature(&late, now, &[WEBHOOK_SECRET]))).await?;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("stale")), "{body}");
    ingest_answers(&platform, &store.publishable_key, 202).await?;
    let billing = billing_until(&platform, &store.tenant_id, &token, "recovered", |b| b["dunning"] == "ok").await?;
    assert!(billing.get("dunning_since").is_none(), "{billing}");
    let audit: Value = platform
        .http
        .get(format!("{}/v1/admin/tenants/{}/audit", platform.control_plane_url, store.tenant_id))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    let by_billing = audit.to_string().matches("system:billing").count();
    assert!(by_billing >= 2, "suspended and reactivated by billing, audited: {audit}");

    // Another account's customer, and a type billing does not act on: received, ignored.
    let stranger = invoice_event(&format!("evt_{suffix}_7"), "invoice.payment_failed", now, "cus_nobody", 3);
    let (status, body) = deliver(&platform, &stranger, Some(signature(&stranger, now, &[WEBHOOK_SECRET]))).await?;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("unknown_customer")), "{body}");
    let other = event(8, "customer.updated", now, 0);
    let (status, body) = deliver(&platform, &other, Some(signature(&other, now, &[WEBHOOK_SECRET]))).await?;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("ignored")), "{body}");
    platform.shutdown().await
}

/// A meter event as the recorder saw it: its idempotency key and form fields.
#[derive(Debug, Clone)]
struct Sent {
    path: &'static str,
    idempotency_key: Option<String>,
    form: std::collections::BTreeMap<String, String>,
}

/// Stands in for Stripe's meter-event endpoint, which localstripe lacks: records every
/// request and answers as Stripe does, except that it loses its answer to the first one
/// (a 500 after recording it), as a network might.
async fn meter_recorder() -> anyhow::Result<(String, std::sync::Arc<std::sync::Mutex<Vec<Sent>>>)> {
    use std::sync::{Arc, Mutex};
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let seen = sent.clone();
    let app = axum::Router::new().route(
        "/v1/billing/meter_events",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let form = form_urlencoded::parse(&body).into_owned().collect();
                let idempotency_key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
                let mut all = seen.lock().unwrap_or_else(|e| e.into_inner());
                all.push(Sent { path: "/v1/billing/meter_events", idempotency_key, form });
                if all.len() == 1 {
                    return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({ "error": {} })));
                }
                (axum::http::StatusCode::OK, axum::Json(json!({ "object": "billing.meter_event" })))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, sent))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_is_sent_to_stripes_meters_once_late_usage_as_the_difference_and_reconciles() -> anyhow::Result<()> {
    use chrono::{DurationRound, Utc};
    use nudge_contracts::proto::usage::v1::UsageReport;
    use std::str::FromStr;
    let stripe = LocalStripe::start().await?;
    let (recorder, sent) = meter_recorder().await?;
    let stripe_url = stripe.url();
    let platform = Platform::start_with(|cp, _| {
        cp.billing = BillingConfig {
            report_usage: true,
            meter_events_url: Some(recorder),
            // An hour is sent as soon as it has ended.
            meter_delay_secs: 0,
            ..billing_at(stripe_url)
        };
    })
    .await?;
    let owner = format!("owner-{}@example.com", unique_suffix());
    let store = platform.sign_up_as("Metered Store", &[ORIGIN], &owner).await?;
    let token = platform.login(&owner, None).await?.access_token;
    let billing =
        billing_until(&platform, &store.tenant_id, &token, "subscribed", |b| b["status"] == "subscribed").await?;
    let customer = billing["stripe_customer_id"].as_str().expect("a customer").to_owned();

    // Usage of two ended hours and of one that has not ended (the next: it cannot end while
    // the test runs, whenever it runs), as the cells report it.
    let db = nudge_control_plane::Database::connect_lazy(
        sqlx::postgres::PgConnectOptions::from_str(&platform.db.app_url)?,
        2,
        Duration::from_secs(30),
    );
    let router = nudge_control_plane::routing::TenantRouter::new(db, Default::default());
    let now = Utc::now().duration_trunc(chrono::Duration::hours(1))?;
    let (two_ago, one_ago) = (now - chrono::Duration::hours(2), now - chrono::Duration::hours(1));
    let next = now + chrono::Duration::hours(1);
    let report = |id: &str, at: chrono::DateTime<Utc>, accepted: u64| UsageReport {
        tenant_id: store.tenant_id.clone(),
        cell_id: "shared-1".into(),
        start_ms: at.timestamp_millis() + 60_000,
        end_ms: at.timestamp_millis() + 120_000,
        accepted,
        report_id: format!("{id}-{}", unique_suffix()),
        predictions: accepted / 2,
        ..UsageReport::default()
    };
    let metrics = nudge_control_plane::usage::UsageMetrics::default();
    let topics = platform.cell_config.kafka.topics();
    let reports =
        [report("a", two_ago, 100), report("b", two_ago, 20), report("c", one_ago, 7), report("d", next, 999)];
    nudge_control_plane::usage::record_reports(&router, &topics, &metrics, &reports).await?;

    // Per ended hour and meter, one event for the quantity, retried under the same
    // identifier and key when its answer was lost; the hour not ended waits.
    let events = |sent: &std::sync::Mutex<Vec<Sent>>| sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let unique = |all: &[Sent]| {
        all.iter().map(|s| s.form["identifier"].clone()).collect::<std::collections::BTreeSet<_>>().len()
    };
    while unique(&events(&sent)) < 4 {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "usage never sent: {:?}", events(&sent));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = events(&sent);
    assert_eq!(all[0].form, all[1].form, "the lost send is repeated as the same event: {all:?}");
    assert_eq!(all[0].idempotency_key, all[1].idempotency_key);
    assert!(all.iter().all(|s| s.idempotency_key.as_deref() == Some(s.form["identifier"].as_str())));
    let mut counted: std::collections::BTreeMap<String, Sent> = std::collections::BTreeMap::new();
    for s in all {
        counted.entry(s.form["identifier"].clone()).or_insert(s);
    }
    let value = |meter: &str, hour: chrono::DateTime<Utc>| -> i64 {
        counted
            .values()
            .filter(|s| {
                s.form["event_name"] == format!("nudge_{meter}") && s.form["timestamp"] == hour.timestamp().to_string()
            })
            .map(|s| s.form["payload[value]"].parse::<i64>().unwrap_or(0))
            .sum()
    };
    assert_eq!((value("events", two_ago), value("predictions", two_ago)), (120, 60));
    assert_eq!((value("events", one_ago), value("predictions", one_ago)), (7, 3));
    assert_eq!(value("events", next), 0, "an hour not ended is not sent");
    assert!(counted.values().all(|s| s.form["payload[stripe_customer_id]"] == customer));

    // Late usage for an ended hour: the difference, as an event of its own.
    nudge_control_plane::usage::record_reports(&router, &topics, &metrics, &[report("e", two_ago, 5)]).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while unique(&events(&sent)) < 6 {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "late usage never sent: {:?}", events(&sent));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let late: Vec<Sent> = events(&sent)
        .into_iter()
        .filter(|s| s.form["identifier"].ends_with(":120") && s.form["event_name"] == "nudge_events")
        .collect();
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0].form["payload[value]"], "5");

    // The reconciliation: every ended hour wholly sent; the other not yet.
    let reconciled: Value = platform
        .http
        .get(format!("{}/v1/admin/tenants/{}/billing/reconciliation", platform.control_plane_url, store.tenant_id))
        .query(&[("to", (next + chrono::Duration::hours(1)).to_rfc3339())])
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    let rows = reconciled["rows"].as_array().expect("rows");
    let ended =
        |r: &&Value| r["hour"].as_str() != Some(next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true).as_str());
    assert!(rows.iter().filter(ended).all(|r| r["difference"] == 0), "{reconciled}");
    assert_eq!(reconciled["unsent"], 999 + 499, "{reconciled}");
    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_is_warned_near_its_monthly_events_and_refused_past_them_until_its_plan_grows() -> anyhow::Result<()> {
    use std::str::FromStr;
    let platform = Platform::start().await?;
    let owner = format!("owner-{}@example.com", unique_suffix());
    let store = platform.sign_up_as("Busy Store", &[ORIGIN], &owner).await?;
    platform.wait_for_key(&store.publishable_key, ORIGIN).await?;
    let token = platform.login(&owner, None).await?.access_token;
    let billing = billing_until(&platform, &store.tenant_id, &token, "read", |_| true).await?;
    assert_eq!((billing["quota"].as_str(), billing["monthly_events_included"].as_u64()), (Some("ok"), Some(100_000)));

    // The cells' reports of this hour, as they would count the store's events.
    let db = nudge_control_plane::Database::connect_lazy(
        sqlx::postgres::PgConnectOptions::from_str(&platform.db.app_url)?,
        2,
        Duration::from_secs(30),
    );
    let router = nudge_control_plane::routing::TenantRouter::new(db, Default::default());
    let topics = platform.cell_config.kafka.topics();
    let metrics = nudge_control_plane::usage::UsageMetrics::default();
    let events = |accepted: u64| nudge_contracts::proto::usage::v1::UsageReport {
        tenant_id: store.tenant_id.clone(),
        cell_id: "shared-1".into(),
        start_ms: chrono::Utc::now().timestamp_millis(),
        end_ms: chrono::Utc::now().timestamp_millis(),
        accepted,
        report_id: format!("busy-{}", unique_suffix()),
        ..Default::default()
    };

    // 85 % of the month's events: the merchant is warned; events still flow.
    nudge_control_plane::usage::record_reports(&router, &topics, &metrics, &[events(85_000)]).await?;
    let billing = billing_until(&platform, &store.tenant_id, &token, "warned", |b| b["quota"] == "soft_limit").await?;
    assert!(billing["monthly_events_used"].as_i64().is_some_and(|n| n >= 85_000), "{billing}");
    ingest_answers(&platform, &store.publishable_key, 202).await?;

    // Past them: the cell refuses the store's events with a clear code, until next month.
    nudge_control_plane::usage::record_reports(&router, &topics, &metrics, &[events(20_000)]).await?;
    billing_until(&platform, &store.tenant_id, &token, "over", |b| b["quota"] == "hard_limit").await?;
    let refused = ingest_answers(&platform, &store.publishable_key, 429).await?;
    assert_eq!(refused["error"]["code"], "quota_exceeded", "{refused}");

    // The plan grows: the store's events flow again at once.
    let changed = platform
        .http
        .post(format!("{}/v1/admin/tenants/{}/plan", platform.control_plane_url, store.tenant_id))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({ "plan": "growth" }))
        .send()
        .await?;
    assert_eq!(changed.status(), 200);
    ingest_answers(&platform, &store.publishable_key, 202).await?;
    let billing = billing_until(&platform, &store.tenant_id, &token, "ok", |b| b["quota"] == "ok").await?;
    assert_eq!(billing["monthly_events_included"], 5_000_000);
    platform.shutdown().await
}

/// Stands in front of localstripe and answers what it lacks, Stripe's hosted pages (billing
/// portal and Checkout sessions) as Stripe documents them, recording each request;
/// everything else goes through to localstripe.
async fn hosted_pages_proxy(
    localstripe: String,
) -> anyhow::Result<(String, std::sync::Arc<std::sync::Mutex<Vec<Sent>>>)> {
    use std::sync::{Arc, Mutex};
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let record = |path: &'static str, answer: fn(usize) -> Value| {
        let seen = sent.clone();
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let form = form_urlencoded::parse(&body).into_owned().collect();
                let idempotency_key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
                let mut all = seen.lock().unwrap_or_else(|e| e.into_inner());
                all.push(Sent { path, idempotency_key, form });
                axum::Json(answer(all.len()))
            }
        })
    };
    let http = reqwest::Client::new();
    let app = axum::Router::new()
        .route(
            "/v1/billing_portal/sessions",
            record(
                "/v1/billing_portal/sessions",
                |_| json!({ "object": "billing_portal.session", "url": "https://billing.stripe.com/p/session/test_1" }),
            ),
        )
        .route(
            "/v1/checkout/sessions",
            record("/v1/checkout/sessions", |n| {
                json!({
                    "id": format!("cs_test_{n}_{}", unique_suffix()),
                    "object": "checkout.session",
                    "mode": "setup",
                    "status": "open",
                    "url": format!("https://checkout.stripe.com/c/pay/cs_test_{n}"),
                    "expires_at": chrono::Utc::now().timestamp() + 86_400,
                })
            }),
        )
        .fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: axum::http::HeaderMap,
                  body: axum::body::Bytes| {
                let (http, base) = (http.clone(), localstripe.clone());
                async move {
                    let path = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
                    let mut request = http.request(method, format!("{base}{path}")).body(body);
                    for name in ["authorization", "content-type", "idempotency-key"] {
                        if let Some(value) = headers.get(name) {
                            request = request.header(name, value);
                        }
                    }
                    match request.send().await {
                        Ok(r) => {
                            let status = axum::http::StatusCode::from_u16(r.status().as_u16())
                                .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
                            (status, r.bytes().await.unwrap_or_default().to_vec())
                        }
                        Err(_) => (axum::http::StatusCode::BAD_GATEWAY, Vec::new()),
                    }
                }
            },
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, sent))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_gets_a_billing_portal_link_for_its_own_customer() -> anyhow::Result<()> {
    let stripe = LocalStripe::start().await?;
    let (proxy, sent) = hosted_pages_proxy(stripe.url()).await?;
    let platform = Platform::start_with(|cp, _| {
        cp.billing =
            BillingConfig { portal_return_url: "https://console.example.com/billing".to_owned(), ..billing_at(proxy) };
    })
    .await?;
    let owner = format!("owner-{}@example.com", unique_suffix());
    let store = platform.sign_up_as("Portal Store", &[ORIGIN], &owner).await?;
    let token = platform.login(&owner, None).await?.access_token;
    let billing =
        billing_until(&platform, &store.tenant_id, &token, "subscribed", |b| b["status"] == "subscribed").await?;
    let portal = format!("{}/v1/tenants/{}/billing/portal", platform.control_plane_url, store.tenant_id);
    let response = platform.http.post(&portal).bearer_auth(&token).send().await?;
    assert_eq!(response.status(), 200);
    let link: Value = response.json().await?;
    assert_eq!(link["url"], "https://billing.stripe.com/p/session/test_1");
    // The request Stripe would get: the store's own customer, back to the console.
    let requests = sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].form["customer"], billing["stripe_customer_id"].as_str().expect("a customer"));
    assert_eq!(requests[0].form["return_url"], "https://console.example.com/billing");
    assert!(requests[0].idempotency_key.is_some());

    // Another store's owner cannot get one for this store.
    let other = format!("other-{}@example.com", unique_suffix());
    platform.sign_up_as("Other Store", &["https://other.example.com"], &other).await?;
    let other_token = platform.login(&other, None).await?.access_token;
    assert_eq!(platform.http.post(&portal).bearer_auth(&other_token).send().await?.status(), 404);
    platform.shutdown().await
}

/// A completed setup-mode Checkout session of `customer`, as Stripe sends it.
fn checkout_completed(id: &str, created: i64, session: &str, customer: &str, setup_intent: &str) -> String {
    json!({
        "id": id,
        "object": "event",
        "type": "checkout.session.completed",
        "created": created,
        "data": { "object": {
            "id": session, "object": "checkout.session", "mode": "setup", "status": "complete",
            "customer": customer, "setup_intent": setup_intent,
        } },
    })
    .to_string()
}

/// What the merchant does on Stripe's Checkout page, done against localstripe: a setup
/// intent for `customer` confirmed with a test card; the intent's id and its payment method.
async fn give_a_card(localstripe: &str, customer: &str) -> anyhow::Result<(String, String)> {
    let http = reqwest::Client::new();
    let intent: Value = http
        .post(format!("{localstripe}/v1/setup_intents"))
        .bearer_auth(STRIPE_KEY)
        .form(&[("customer", customer)])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = intent["id"].as_str().expect("an intent id").to_owned();
    let confirmed: Value = http
        .post(format!("{localstripe}/v1/setup_intents/{id}/confirm"))
        .bearer_auth(STRIPE_KEY)
        .form(&[
            ("payment_method_data[type]", "card"),
            ("payment_method_data[card][number]", "4242424242424242"),
            ("payment_method_data[card][exp_month]", "12"),
            ("payment_method_data[card][exp_year]", "2034"),
            ("payment_method_data[card][cvc]", "123"),
        ])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(confirmed["status"], "succeeded", "{confirmed}");
    let method = confirmed["payment_method"].as_str().expect("a payment method").to_owned();
    Ok((id, method))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_upgrades_through_checkout_and_moves_between_self_service_plans() -> anyhow::Result<()> {
    let stripe = LocalStripe::start().await?;
    let (proxy, sent) = hosted_pages_proxy(stripe.url()).await?;
    let platform = Platform::start_with(|cp, _| {
        cp.billing = BillingConfig {
            portal_return_url: "https://console.example.com/billing".to_owned(),
            webhook_secrets: vec![SecretString::from(WEBHOOK_SECRET)],
            ..billing_at(proxy)
        };
    })
    .await?;
    let owner = format!("owner-{}@example.com", unique_suffix());
    let store = platform.sign_up_as("Upgrading Store", &[ORIGIN], &owner).await?;
    let token = platform.login(&owner, None).await?.access_token;
    let billing =
        billing_until(&platform, &store.tenant_id, &token, "subscribed", |b| b["status"] == "subscribed").await?;
    assert_eq!(billing["plan"], "free");
    assert_eq!(billing["payment_method_on_file"], false);
    let customer = billing["stripe_customer_id"].as_str().expect("a customer").to_owned();
    let base = format!("{}/v1/tenants/{}/billing", platform.control_plane_url, store.tenant_id);
    let post = |path: &str, plan: &str, token: &str| {
        platform.http.post(format!("{base}/{path}")).bearer_auth(token).json(&json!({ "plan": plan })).send()
    };
    let code = |v: Value| v["error"]["code"].as_str().unwrap_or_default().to_owned();

    // A paid plan without a card is refused with the way forward; enterprise is not
    // self-service; the plan the store is on is no change.
    let r = post("plan", "growth", &token).await?;
    assert_eq!(r.status(), 402);
    assert_eq!(code(r.json().await?), "payment_method_required");
    let r = post("checkout", "enterprise", &token).await?;
    assert_eq!(r.status(), 422);
    assert_eq!(code(r.json().await?), "plan_not_self_service");
    let r = post("checkout", "free", &token).await?;
    assert_eq!(r.status(), 409);
    assert_eq!(code(r.json().await?), "already_on_plan");
    let r = post("checkout", "platinum", &token).await?;
    assert_eq!(r.status(), 422);
    assert_eq!(code(r.json().await?), "invalid_fields");

    // The Checkout link: setup mode for the store's own customer, back to the console.
    let r = post("checkout", "growth", &token).await?;
    assert_eq!(r.status(), 200);
    let link: Value = r.json().await?;
    let session = link["session_id"].as_str().expect("a session").to_owned();
    assert!(link["url"].as_str().is_some_and(|u| u.starts_with("https://checkout.stripe.com/")), "{link}");
    let requests: Vec<Sent> = sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let request = requests.iter().find(|s| s.path == "/v1/checkout/sessions").expect("a Checkout request");
    assert_eq!(request.form["mode"], "setup");
    assert_eq!(request.form["customer"], customer);
    assert_eq!(request.form["metadata[tenant_id]"], store.tenant_id);
    assert_eq!(request.form["metadata[plan]"], "growth");
    assert!(request.form["success_url"].starts_with("https://console.example.com/billing?checkout=complete"));
    assert_eq!(request.form["cancel_url"], "https://console.example.com/billing?checkout=cancelled");
    assert!(request.idempotency_key.is_some());

    // The merchant gives a card on Stripe's page; Stripe reports the session completed.
    let (intent, method) = give_a_card(&stripe.url(), &customer).await?;
    let now = chrono::Utc::now().timestamp();
    let suffix = unique_suffix();
    let sign = |body: &str| Some(signature(body, chrono::Utc::now().timestamp(), &[WEBHOOK_SECRET]));

    // A session this platform never made for the store changes nothing, nor does the
    // store's session claimed for another store's customer.
    let forged = checkout_completed(&format!("evt_{suffix}_1"), now, "cs_test_forged", &customer, &intent);
    assert_eq!(deliver(&platform, &forged, sign(&forged)).await?.1["outcome"], "ignored");
    let other_owner = format!("other-{}@example.com", unique_suffix());
    let other = platform.sign_up_as("Other Store", &["https://other.example.com"], &other_owner).await?;
    let other_token = platform.login(&other_owner, None).await?.access_token;
    let other_billing =
        billing_until(&platform, &other.tenant_id, &other_token, "subscribed", |b| b["status"] == "subscribed").await?;
    let other_customer = other_billing["stripe_customer_id"].as_str().expect("a customer");
    let crossed = checkout_completed(&format!("evt_{suffix}_2"), now, &session, other_customer, &intent);
    assert_eq!(deliver(&platform, &crossed, sign(&crossed)).await?.1["outcome"], "ignored");
    let view = billing_until(&platform, &store.tenant_id, &token, "unchanged", |_| true).await?;
    assert_eq!(view["plan"], "free");
    assert_eq!(view["payment_method_on_file"], false);
    let other_view = billing_until(&platform, &other.tenant_id, &other_token, "unchanged", |_| true).await?;
    assert_eq!(
        (other_view["plan"].clone(), other_view["payment_method_on_file"].clone()),
        (json!("free"), json!(false))
    );

    // The real completion: the card is the customer's default, the store on growth, and
    // Stripe's subscription follows.
    let completed = checkout_completed(&format!("evt_{suffix}_3"), now, &session, &customer, &intent);
    let (status, answer) = deliver(&platform, &completed, sign(&completed)).await?;
    assert_eq!((status, answer["outcome"].clone()), (200, json!("applied")), "{answer}");
    let view = billing_until(&platform, &store.tenant_id, &token, "billed on growth", |b| {
        b["plan"] == "growth" && b["subscribed_plan"] == "growth" && b["status"] == "subscribed"
    })
    .await?;
    assert_eq!(view["payment_method_on_file"], true);
    let stripe_customer: Value = reqwest::Client::new()
        .get(format!("{}/v1/customers/{customer}", stripe.url()))
        .bearer_auth(STRIPE_KEY)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(stripe_customer["invoice_settings"]["default_payment_method"], method.as_str());

    let r = post("checkout", "free", &token).await?;
    assert_eq!(r.status(), 422);
    assert_eq!(code(r.json().await?), "no_payment_needed");

    // Delivered again, or completed again under another event id: applied once only.
    assert_eq!(deliver(&platform, &completed, sign(&completed)).await?.1["outcome"], "duplicate");
    let again = checkout_completed(&format!("evt_{suffix}_4"), now, &session, &customer, &intent);
    assert_eq!(deliver(&platform, &again, sign(&again)).await?.1["outcome"], "ignored");

    // Down to free at once, and back up without another Checkout: the card is on file.
    let r = post("plan", "free", &token).await?;
    assert_eq!(r.status(), 200);
    billing_until(&platform, &store.tenant_id, &token, "billed on free", |b| b["subscribed_plan"] == "free").await?;
    let r = post("plan", "growth", &token).await?;
    assert_eq!(r.status(), 200);
    billing_until(&platform, &store.tenant_id, &token, "billed on growth again", |b| b["subscribed_plan"] == "growth")
        .await?;

    // Not the other store's owner's to change: 404 as for any store that is not theirs.
    let r = post("plan", "free", &other_token).await?;
    assert_eq!(r.status(), 404);
    let r = post("checkout", "growth", &other_token).await?;
    assert_eq!(r.status(), 404);
    platform.shutdown().await
}
