//! Campaigns through the API: created as drafts, checked with every problem named by field
//! and position, saved as versions guarded by `If-Match`, moved through their lifecycle,
//! read by every member and changed by owners and admins only; another store's campaign
//! answers 404. An active campaign reaches the cell and decides there: the highest
//! priority campaign whose condition holds sends its rendered message over the shopper's
//! socket, a new version takes over, and a store whose campaigns are all stopped gets the
//! default rule again.

mod common;

use std::time::Duration;

use common::{ORIGIN, abandoning_session};
use nudge_contracts::push::{InterventionMessage, PushMessage};
use nudge_test_support::{PASSWORD, Platform, unique_suffix};
use serde_json::{Value, json};

fn campaign(name: &str) -> Value {
    json!({
        "name": name,
        "trigger": { "type": "exit_intent" },
        "condition": "cart_value >= 50 and prediction.abandonment > 0.6 and not checkout_started",
        "priority": 10,
        "variants": [
            { "name": "reminder", "weight": 100, "messages": [
                { "channel": "on_site", "kind": "reminder", "title": "Still there?",
                  "body": "Your {{ cart_items }} items are saved." },
            ]},
        ],
    })
}

struct Response {
    status: u16,
    etag: Option<String>,
    body: Value,
}

async fn call(request: reqwest::RequestBuilder) -> anyhow::Result<Response> {
    let response = request.send().await?;
    let status = response.status().as_u16();
    let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = response.json().await.unwrap_or(Value::Null);
    Ok(Response { status, etag, body })
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaigns_are_checked_versioned_and_moved_by_their_store_only() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let cp = platform.control_plane_url.clone();
    let owner = format!("owner-{}@example.com", unique_suffix());
    let store = platform.sign_up_as("Acme", &[ORIGIN], &owner).await?;
    let token = platform.login(&owner, None).await?.access_token;
    let campaigns = format!("{cp}/v1/tenants/{}/campaigns", store.tenant_id);
    let http = &platform.http;

    // Created as a draft at version 1.
    let created = call(http.post(&campaigns).bearer_auth(&token).json(&campaign("Exit rescue"))).await?;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!((created.body["state"].as_str(), created.body["version"].as_i64()), (Some("draft"), Some(1)));
    assert_eq!(created.etag.as_deref(), Some("\"1\""));
    let id = created.body["campaign_id"].as_str().expect("an id").to_owned();
    assert!(id.starts_with("cmp_"));
    let one = format!("{campaigns}/{id}");

    // Every problem at once, by field, with positions inside conditions and templates.
    let mut bad = campaign("Bad");
    bad["condition"] = json!("cart_value >= 50 and basket > 1");
    bad["variants"][0]["messages"][0]["body"] = json!("Hi {{ shopper.email }}");
    bad["variants"][0]["weight"] = json!(90);
    let refused = call(http.post(&campaigns).bearer_auth(&token).json(&bad)).await?;
    assert_eq!((refused.status, code(&refused.body)), (422, "invalid_campaign"), "{}", refused.body);
    let problems: Vec<(String, String, Option<u64>)> = refused.body["error"]["details"]["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| {
            (
                p["field"].as_str().unwrap_or_default().to_owned(),
                p["code"].as_str().unwrap_or_default().to_owned(),
                p["position"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        problems,
        vec![
            ("condition".to_owned(), "unknown_name".to_owned(), Some(21)),
            ("variants".to_owned(), "invalid_value".to_owned(), None),
            ("variants[0].messages[0].body".to_owned(), "unknown_variable".to_owned(), Some(6)),
        ]
    );
    // An unknown channel is a problem of the campaign too, not of the JSON.
    let mut sms = campaign("Texting");
    sms["variants"][0]["messages"][0]["channel"] = json!("sms");
    let refused = call(http.post(&campaigns).bearer_auth(&token).json(&sms)).await?;
    assert_eq!((refused.status, code(&refused.body)), (422, "invalid_campaign"), "{}", refused.body);
    let refused =
        call(http.post(&campaigns).bearer_auth(&token).header("content-type", "application/json").body("{")).await?;
    assert_eq!((refused.status, code(&refused.body)), (400, "malformed_json"));

    // Saved as version 2; a save naming version 1 since then is refused.
    let mut changed = campaign("Exit rescue");
    changed["priority"] = json!(20);
    let saved = call(http.put(&one).bearer_auth(&token).header("if-match", "\"1\"").json(&changed)).await?;
    assert_eq!((saved.status, saved.body["version"].as_i64()), (200, Some(2)), "{}", saved.body);
    assert_eq!(saved.body["spec"]["priority"], 20);
    let stale = call(http.put(&one).bearer_auth(&token).header("if-match", "\"1\"").json(&campaign("Lost"))).await?;
    assert_eq!((stale.status, code(&stale.body)), (412, "version_conflict"));
    assert_eq!(stale.body["error"]["details"]["current_version"], 2);
    let versions = call(http.get(format!("{one}/versions")).bearer_auth(&token)).await?;
    let listed: Vec<i64> =
        versions.body["versions"].as_array().expect("versions").iter().filter_map(|v| v["version"].as_i64()).collect();
    assert_eq!(listed, vec![2, 1]);
    assert_eq!(versions.body["versions"][1]["spec"]["priority"], 10, "version 1 is kept as it was");

    // The lifecycle: draft → active ⇄ paused → archived, and nothing after.
    let state = |to: &str| http.post(format!("{one}/state")).bearer_auth(&token).json(&json!({ "state": to }));
    assert_eq!(call(state("paused")).await?.status, 409, "a draft is not paused");
    for to in ["active", "paused", "active", "active"] {
        let moved = call(state(to)).await?;
        assert_eq!((moved.status, moved.body["state"].as_str()), (200, Some(to)), "{}", moved.body);
    }
    let bogus = call(state("draft")).await?;
    assert_eq!((bogus.status, code(&bogus.body)), (422, "invalid_fields"));
    assert_eq!(call(state("archived")).await?.status, 200);
    let after = call(state("active")).await?;
    assert_eq!((after.status, code(&after.body)), (409, "invalid_transition"));
    let frozen = call(http.put(&one).bearer_auth(&token).json(&campaign("Again"))).await?;
    assert_eq!((frozen.status, code(&frozen.body)), (409, "campaign_archived"));
    let listed = call(http.get(&campaigns).bearer_auth(&token)).await?;
    assert_eq!(listed.body["campaigns"][0]["state"], "archived");

    // A viewer reads campaigns and changes none.
    let viewer = format!("viewer-{}@example.com", unique_suffix());
    let made =
        call(http.post(format!("{cp}/v1/accounts")).json(&json!({ "email": viewer, "password": PASSWORD }))).await?;
    assert_eq!(made.status, 201, "{}", made.body);
    let added = call(
        http.post(format!("{cp}/v1/tenants/{}/members", store.tenant_id))
            .bearer_auth(&token)
            .json(&json!({ "email": viewer, "role": "viewer" })),
    )
    .await?;
    assert_eq!(added.status, 201, "{}", added.body);
    let viewer_token = platform.login(&viewer, Some(&store.tenant_id)).await?.access_token;
    assert_eq!(call(http.get(&one).bearer_auth(&viewer_token)).await?.status, 200);
    let denied = call(http.post(&campaigns).bearer_auth(&viewer_token).json(&campaign("Mine"))).await?;
    assert_eq!((denied.status, code(&denied.body)), (403, "forbidden"));

    // Another store's owner: the campaign does not exist for them, under either store's id.
    let other_owner = format!("other-{}@example.com", unique_suffix());
    let other = platform.sign_up_as("Other", &["https://other.example.com"], &other_owner).await?;
    let other_token = platform.login(&other_owner, None).await?.access_token;
    assert_eq!(call(http.get(&one).bearer_auth(&other_token)).await?.status, 404);
    let theirs = format!("{cp}/v1/tenants/{}/campaigns/{id}", other.tenant_id);
    assert_eq!(call(http.get(&theirs).bearer_auth(&other_token)).await?.status, 404);
    assert_eq!(call(http.put(&theirs).bearer_auth(&other_token).json(&campaign("Taken"))).await?.status, 404);
    assert_eq!(
        call(http.post(format!("{theirs}/state")).bearer_auth(&other_token).json(&json!({"state": "active"})))
            .await?
            .status,
        404
    );
    assert_eq!(call(http.get(format!("{theirs}/versions")).bearer_auth(&other_token)).await?.status, 404);
    let their_list =
        call(http.get(format!("{cp}/v1/tenants/{}/campaigns", other.tenant_id)).bearer_auth(&other_token)).await?;
    assert_eq!(their_list.body["campaigns"], json!([]));
    platform.shutdown().await
}

/// Plays the abandoning session for new shoppers until one gets an intervention `wanted`
/// accepts (the cell learns of a campaign change moments after the API answers); that
/// intervention.
async fn intervention_until(
    platform: &Platform,
    key: &str,
    what: &str,
    wanted: impl Fn(&InterventionMessage) -> bool,
) -> anyhow::Result<InterventionMessage> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        let shopper = format!("shp_{}", unique_suffix());
        let mut socket = platform.connect_shopper(key, ORIGIN, &shopper).await?;
        let (browsing, exit) = abandoning_session(&shopper);
        for batch in [&browsing, &exit] {
            let r = platform.post_events(key, Some(ORIGIN), batch).await?;
            anyhow::ensure!(r.status() == 202, "{}", r.text().await?);
        }
        if let Some(PushMessage::Intervention(iv)) = socket.next_message(Duration::from_secs(10)).await? {
            if wanted(&iv) {
                return Ok(iv);
            }
            last = Some(iv);
        }
    }
    anyhow::bail!("no intervention {what} within 60 s; the last: {last:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cell_sends_by_the_stores_active_campaigns_and_their_latest_versions() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let cp = platform.control_plane_url.clone();
    let owner = format!("owner-{}@example.com", unique_suffix());
    let store = platform.sign_up_as("Campaigner", &[ORIGIN], &owner).await?;
    platform.wait_for_key(&store.publishable_key, ORIGIN).await?;
    let token = platform.login(&owner, None).await?.access_token;
    let campaigns = format!("{cp}/v1/tenants/{}/campaigns", store.tenant_id);
    let http = &platform.http;
    let key = store.publishable_key.as_str();

    // Before any campaign: the default rule's reminder.
    intervention_until(&platform, key, "from the default rule", |iv| iv.kind == "cart_reminder").await?;

    // Two campaigns: a big-cart one of high priority, and a catch-all below it.
    let on_site =
        |title: &str| json!([{ "channel": "on_site", "kind": "reminder", "title": title, "body": "Saved for you." }]);
    let big = json!({
        "name": "Big carts", "trigger": { "type": "exit_intent" }, "condition": "cart_value >= 100",
        "priority": 20, "control_percent": 0,
        "variants": [{ "name": "a", "weight": 100, "messages": on_site("Your {{ cart_items }} items, {{ cart_value }} EUR") }],
    });
    let catch_all = json!({
        "name": "Everyone", "trigger": { "type": "exit_intent" }, "priority": 5, "control_percent": 0,
        "variants": [{ "name": "a", "weight": 100, "messages": on_site("Before you go") }],
    });
    let mut ids = Vec::new();
    for spec in [&big, &catch_all] {
        let created: Value = http.post(&campaigns).bearer_auth(&token).json(spec).send().await?.json().await?;
        let id = created["campaign_id"].as_str().expect("an id").to_owned();
        let r = http
            .post(format!("{campaigns}/{id}/state"))
            .bearer_auth(&token)
            .json(&json!({"state": "active"}))
            .send()
            .await?;
        assert_eq!(r.status(), 200);
        ids.push(id);
    }
    // The golden cart: two items, 129 EUR; the big-cart campaign wins, its message rendered.
    let iv = intervention_until(&platform, key, "from the big-cart campaign", |iv| {
        iv.kind == "reminder" && iv.title != "Before you go"
    })
    .await?;
    assert_eq!((iv.title.as_str(), iv.body.as_str()), ("Your 2 items, 129 EUR", "Saved for you."));

    // A new version asking for bigger carts: the catch-all sends instead.
    let mut bigger = big.clone();
    bigger["condition"] = json!("cart_value >= 1000");
    let r = http.put(format!("{campaigns}/{}", ids[0])).bearer_auth(&token).json(&bigger).send().await?;
    assert_eq!(r.status(), 200);
    intervention_until(&platform, key, "from the catch-all", |iv| iv.title == "Before you go").await?;

    // Both stopped: the default rule again.
    for (id, to) in [(&ids[0], "archived"), (&ids[1], "paused")] {
        let r =
            http.post(format!("{campaigns}/{id}/state")).bearer_auth(&token).json(&json!({"state": to})).send().await?;
        assert_eq!(r.status(), 200);
    }
    intervention_until(&platform, key, "from the default rule again", |iv| iv.kind == "cart_reminder").await?;
    platform.shutdown().await
}
