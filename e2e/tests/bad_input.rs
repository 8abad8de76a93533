//! Bad input at the edges gets a clear status and a stable code, and never costs events that
//! were already accepted.

mod common;

use std::time::Duration;

use nudge_contracts::push::PushMessage;
use nudge_test_support::{PASSWORD, Platform};
use serde_json::{Value, json};

use common::abandoning_session;

const ORIGIN: &str = "https://shop.example.com";

async fn error_of(r: reqwest::Response) -> anyhow::Result<(u16, String, Value)> {
    let status = r.status().as_u16();
    anyhow::ensure!(r.headers().contains_key("x-trace-id"), "every response carries its trace id");
    let body: Value = r.json().await?;
    let code = body["error"]["code"].as_str().unwrap_or_default().to_owned();
    anyhow::ensure!(body["error"]["trace_id"].as_str().is_some_and(|t| t.len() == 32), "error names its trace: {body}");
    Ok((status, code, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_refuses_bad_requests_with_codes_and_keeps_what_it_accepted() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let tenant = platform.sign_up_ready("Acme", ORIGIN).await?;
    let key = tenant.publishable_key.as_str();
    let shopper = "shp_bad_input";
    let mut socket = platform.connect_shopper(key, ORIGIN, shopper).await?;

    // A good batch first: it must survive everything that follows.
    let (browsing, exit) = abandoning_session(shopper);
    assert_eq!(platform.post_events(key, Some(ORIGIN), &browsing).await?.status(), 202);

    let url = format!("{}/v1/events", platform.cell_url);
    let raw = |body: &'static str| {
        platform
            .http
            .post(&url)
            .bearer_auth(key)
            .header("Origin", ORIGIN)
            .header("Content-Type", "application/json")
            .body(body)
    };
    assert_eq!(error_of(raw("{\"events\": [").send().await?).await?.1, "malformed_json");
    assert_eq!(error_of(raw("{\"events\": 3}").send().await?).await?.0, 400);

    let unknown = json!({"events": [{"event_id": "x1", "type": "teleport", "shopper_id": shopper}]});
    let (status, code, body) = error_of(platform.post_events(key, Some(ORIGIN), &unknown).await?).await?;
    assert_eq!((status, code.as_str()), (422, "unknown_event_type"));
    assert_eq!(body["error"]["details"]["events"][0]["index"], 0);

    let r = platform.post_events("pk_00000000000000000000000000000000", Some(ORIGIN), &browsing).await?;
    assert_eq!(error_of(r).await?.1, "invalid_key");
    let r = platform.post_events("not-a-key", Some(ORIGIN), &browsing).await?;
    assert_eq!(error_of(r).await?.1, "invalid_key");
    let r = platform.http.post(&url).header("Origin", ORIGIN).json(&browsing).send().await?;
    assert_eq!(error_of(r).await?.1, "missing_key");
    let r = platform.post_events(key, Some("https://evil.example.com"), &browsing).await?;
    assert_eq!(error_of(r).await?.1, "origin_not_allowed");
    let r = platform.post_events(key, None, &browsing).await?;
    assert_eq!(error_of(r).await?.1, "origin_required");

    let many: Vec<Value> =
        (0..501).map(|i| json!({"event_id": format!("m{i}"), "type": "page_view", "shopper_id": shopper})).collect();
    let (status, code, _) = error_of(platform.post_events(key, Some(ORIGIN), &json!({"events": many})).await?).await?;
    assert_eq!((status, code.as_str()), (413, "batch_too_large"));
    let huge = "x".repeat(600 * 1024);
    let r = platform.post_events(key, Some(ORIGIN), &json!({"events": [], "pad": huge})).await?;
    assert_eq!(error_of(r).await?.0, 413);

    // The accepted batch is intact: the exit still finds the cart and earns the reminder.
    assert_eq!(platform.post_events(key, Some(ORIGIN), &exit).await?.status(), 202);
    let message = socket.next_message(Duration::from_secs(30)).await?;
    assert!(matches!(message, Some(PushMessage::Intervention(_))), "got {message:?}");

    // Sockets: bad origin and bad key are refused at the upgrade; a plain GET is not a socket.
    assert!(platform.connect_shopper(key, "https://evil.example.com", shopper).await.is_err());
    assert!(platform.connect_shopper("pk_00000000000000000000000000000000", ORIGIN, shopper).await.is_err());
    let r = platform.http.get(format!("{}/v1/ws?key={key}", platform.cell_url)).header("Origin", ORIGIN).send().await?;
    assert_eq!(error_of(r).await?.1, "not_a_websocket");

    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_refuses_bad_input_with_field_errors() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let url = format!("{}/v1/tenants", platform.control_plane_url);
    let good = |email: &str| json!({"name": "Acme", "allowed_origins": ["https://a.example"], "email": email, "password": PASSWORD});

    let r = platform.http.post(&url).header("Content-Type", "application/json").body("{").send().await?;
    assert_eq!(error_of(r).await?.1, "malformed_json");

    let bad = json!({"name": " ", "allowed_origins": ["ftp://x", "https://ok.example"], "email": "not-an-email", "password": "short"});
    let (status, code, body) = error_of(platform.http.post(&url).json(&bad).send().await?).await?;
    assert_eq!((status, code.as_str()), (422, "invalid_fields"));
    let fields = &body["error"]["details"]["fields"];
    for field in ["name", "allowed_origins[0]", "email", "password"] {
        assert!(fields[field].is_string(), "{field} named in {body}");
    }
    assert!(fields.get("allowed_origins[1]").is_none());

    let mut common = good("a@example.com");
    common["password"] = json!("password1234");
    let (_, _, body) = error_of(platform.http.post(&url).json(&common).send().await?).await?;
    assert_eq!(body["error"]["details"]["fields"]["password"], "this password is too easy to guess");

    let mut none = good("b@example.com");
    none["allowed_origins"] = json!([]);
    assert_eq!(error_of(platform.http.post(&url).json(&none).send().await?).await?.1, "invalid_fields");
    let mut extra = good("c@example.com");
    extra["plan"] = json!("free");
    assert_eq!(
        error_of(platform.http.post(&url).json(&extra).send().await?).await?.0,
        400,
        "unknown fields are refused"
    );

    // The same e-mail twice: 409, and the second store is not created.
    assert_eq!(platform.http.post(&url).json(&good("Dup@Example.com")).send().await?.status(), 201);
    let (status, code, _) = error_of(platform.http.post(&url).json(&good("dup@example.com")).send().await?).await?;
    assert_eq!((status, code.as_str()), (409, "email_taken"));

    platform.shutdown().await
}
