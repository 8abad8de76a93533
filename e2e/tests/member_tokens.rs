//! Members' access tokens at a cell: the merchant console reads a store's reports, live
//! events and sends test messages with them. A token reaches only its own store, as far as
//! its role goes; a server's key cannot push text to shoppers' pages.

use std::time::Duration;

use nudge_test_support::{PASSWORD, Platform, unique_suffix};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_reads_reports_for_members_tokens_of_its_own_stores_as_far_as_their_role_reaches() -> anyhow::Result<()>
{
    let platform = Platform::start().await?;
    let cp = &platform.control_plane_url;
    let owner = format!("owner-{}@example.com", unique_suffix());
    let store = platform.sign_up_as("Tokens Co.", &["https://tokens.example"], &owner).await?;
    platform.wait_for_key(&store.publishable_key, "https://tokens.example").await?;
    let owner_token = platform.login(&owner, None).await?.access_token;

    // A viewer of the same store.
    let viewer = format!("viewer-{}@example.com", unique_suffix());
    let made = platform
        .http
        .post(format!("{cp}/v1/accounts"))
        .json(&json!({"email": viewer, "password": PASSWORD}))
        .send()
        .await?;
    anyhow::ensure!(made.status().is_success(), "account: {}", made.status());
    let added = platform
        .http
        .post(format!("{cp}/v1/tenants/{}/members", store.tenant_id))
        .bearer_auth(&owner_token)
        .json(&json!({"email": viewer, "role": "viewer"}))
        .send()
        .await?;
    anyhow::ensure!(added.status() == StatusCode::CREATED, "member: {}", added.status());
    let viewer_token = platform.login(&viewer, Some(&store.tenant_id)).await?.access_token;

    let cell = |path: &str, token: &str| {
        let request = platform.http.get(format!("{}{path}", platform.cell_url)).bearer_auth(token.to_owned());
        async move {
            let r = request.send().await?;
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            anyhow::Ok((status, body))
        }
    };
    // The owner reads the store's lift and send log; the report is the token's store's.
    let (status, lift) = cell("/v1/lift", &owner_token).await?;
    assert_eq!(status, StatusCode::OK, "{lift}");
    assert_eq!(lift["campaign_id"], json!("_store"));
    assert_eq!(cell("/v1/sends", &owner_token).await?.0, StatusCode::OK);
    // A viewer reads reports, not the send log.
    assert_eq!(cell("/v1/lift", &viewer_token).await?.0, StatusCode::OK);
    let (status, refused) = cell("/v1/sends", &viewer_token).await?;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("missing_scope")));
    // The live events: a page view sent now is there, by its path alone, for every member;
    // another store sees none of it.
    let sent = platform
        .post_events(
            &store.publishable_key,
            Some("https://tokens.example"),
            &json!({"events": [{"event_id": "e-live-1", "type": "page_view", "shopper_id": "shp_live",
                "occurred_at": chrono::Utc::now().to_rfc3339(),
                "properties": {"url": "https://tokens.example/tents/alpine?email=x@y.example"}}]}),
        )
        .await?;
    anyhow::ensure!(sent.status().is_success(), "events: {}", sent.status());
    let mut live = Value::Null;
    for _ in 0..100 {
        live = cell("/v1/events/recent", &viewer_token).await?.1;
        if live["events"].as_array().is_some_and(|e| !e.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(live["events"][0]["type"], json!("page_view"), "{live}");
    assert_eq!(live["events"][0]["path"], json!("/tents/alpine"), "no query string: {live}");
    assert!(!live.to_string().contains("shp_live") && !live.to_string().contains("x@y"), "{live}");
    let other = format!("other-{}@example.com", unique_suffix());
    let other_store = platform.sign_up_as("Other Co.", &["https://other.example"], &other).await?;
    platform.wait_for_key(&other_store.publishable_key, "https://other.example").await?;
    let other_token = platform.login(&other, None).await?.access_token;
    let (status, theirs) = cell("/v1/events/recent", &other_token).await?;
    assert_eq!((status, theirs["events"].clone()), (StatusCode::OK, json!([])), "another store's list is its own");

    // A test message: owners and admins only, to a well-formed shopper id, within the store.
    let test = |token: &str, shopper: &str| {
        let request = platform
            .http
            .post(format!("{}/v1/test-interventions", platform.cell_url))
            .bearer_auth(token.to_owned())
            .json(&json!({ "shopper_id": shopper }));
        async move {
            let r = request.send().await?;
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            anyhow::Ok((status, body))
        }
    };
    let (status, sent) = test(&owner_token, "shp_tester").await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{sent}");
    assert!(sent["intervention_id"].as_str().is_some_and(|id| id.starts_with("test_")), "{sent}");
    let (status, refused) = test(&viewer_token, "shp_tester").await?;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("missing_scope")));
    // Nor may a viewer announce to every page of the shop.
    let announced = platform
        .http
        .post(format!("{}/v1/announcements", platform.cell_url))
        .bearer_auth(&viewer_token)
        .json(&json!({"title": "Not mine to say", "body": "x"}))
        .send()
        .await?;
    assert_eq!(announced.status(), StatusCode::FORBIDDEN);
    let refused: Value = announced.json().await?;
    assert_eq!(refused["error"]["code"], "missing_scope");
    let (status, refused) = test(&owner_token, "").await?;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_shopper_id"))
    );
    // A server's secret key cannot push text to shoppers' pages.
    let (status, refused) = test(&store.secret_key, "shp_tester").await?;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("members_only")));
    // Ten a minute per store.
    let mut limited = None;
    for _ in 0..12 {
        let (status, answer) = test(&owner_token, "shp_tester").await?;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = answer["error"]["code"].as_str().map(str::to_owned);
            break;
        }
    }
    assert_eq!(limited.as_deref(), Some("rate_limited"));
    // Not a token, a token of another control plane's key, or none at all.
    let (status, bad) = cell("/v1/lift", "v4.public.not-a-token").await?;
    assert_eq!((status, bad["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_token")));
    let foreign_key = nudge_control_plane::auth::tokens::TokenKeys::new(None, Duration::from_secs(60))?;
    let forged = foreign_key.issue(&nudge_control_plane::auth::tokens::AccessClaims {
        account: nudge_tenants::AccountId::new(),
        tenant: store.tenant_id.parse()?,
        role: nudge_tenants::Role::Owner,
    })?;
    let (status, bad) = cell("/v1/lift", &forged).await?;
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token")),
        "signed elsewhere"
    );
    platform.shutdown().await
}
