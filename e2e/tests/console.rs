//! The merchant console: a new merchant's first minutes in a real browser (Chromium), the
//! console's headers, cookies and CSRF protection, and that a member of one store reaches
//! nothing of another through any console route or form.

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    extract::State,
    response::Html,
    routing::{get, put},
};
use nudge_test_support::{PASSWORD, Platform, env::TestEnv, unique_suffix};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};
use tokio_util::sync::CancellationToken;

mod common;

use common::visitor::{Page, Visitor};

/// The console's policy, exactly.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                   font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Cells report usage twice a second here, so the first event shows quickly.
async fn platform() -> anyhow::Result<Platform> {
    Platform::start_with(|_, cell| cell.usage.interval_ms = 500).await
}

/// A shop that serves whatever snippet its merchant pasted (`PUT /snippet`) on its page.
async fn serve_shop(listener: TcpListener, stop: CancellationToken) -> anyhow::Result<()> {
    let snippet = Arc::new(Mutex::new(String::new()));
    let app = Router::new()
        .route(
            "/",
            get(|State(s): State<Arc<Mutex<String>>>| async move {
                let snippet = s.lock().map(|s| s.clone()).unwrap_or_default();
                Html(format!(
                    "<!doctype html><html lang=en><head><title>Demo Outdoor Co.</title></head><body>\
                     <h1>Demo Outdoor Co.</h1><button id=add>Add to cart</button>{snippet}\
                     <script>document.getElementById('add').onclick = function () {{ nudge.track('add_to_cart', \
                     {{ product_id: 'tent-2p', price: 79, currency: 'EUR', quantity: 1 }}); }};</script></body></html>"
                ))
            }),
        )
        .route(
            "/snippet",
            put(|State(s): State<Arc<Mutex<String>>>, body: String| async move {
                if let Ok(mut s) = s.lock() {
                    *s = body;
                }
            }),
        )
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .with_state(snippet);
    axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_merchant_signs_up_installs_the_snippet_and_sees_the_first_event_in_chromium() -> anyhow::Result<()> {
    let platform = platform().await?;
    let env = TestEnv::load();
    let node_modules = env.node_modules.clone().ok_or_else(|| {
        anyhow::anyhow!("NUDGE_NODE_MODULES is unset: run the tests with scripts/test, which installs playwright-core")
    })?;
    anyhow::ensure!(env.chromium.exists(), "{} is missing: scripts/setup installs Chromium", env.chromium.display());
    let shop = TcpListener::bind("127.0.0.1:0").await?;
    let shop_url = format!("http://{}", shop.local_addr()?);
    let stop_shop = CancellationToken::new();
    let serving = tokio::spawn(serve_shop(shop, stop_shop.clone()));
    // Screenshots are kept as artifacts of the test run, not committed.
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&shots)?;
    let email = format!("owner-{}@example.com", unique_suffix());

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../web/tests/console.cjs");
    let mut child = tokio::process::Command::new("node")
        .arg(script)
        .arg(&platform.control_plane_url)
        .arg(&shop_url)
        .arg(&shots)
        .arg(&email)
        .env("NODE_PATH", &node_modules)
        .env("NUDGE_CHROMIUM", &env.chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?).lines();
    let result = tokio::time::timeout(Duration::from_secs(150), async {
        loop {
            let line = stdout.next_line().await?.ok_or_else(|| anyhow::anyhow!("the browser script ended early"))?;
            let Ok(message) = serde_json::from_str::<Value>(&line) else { continue };
            match message["step"].as_str() {
                // The snippet is in the shop: once the store's cell knows its key, shop.
                Some("snippet") => {
                    let snippet = message["snippet"].as_str().unwrap_or_default();
                    let key = snippet
                        .split("key: \"")
                        .nth(1)
                        .and_then(|rest| rest.split('"').next())
                        .ok_or_else(|| anyhow::anyhow!("no key in the snippet {snippet}"))?;
                    platform.wait_for_key(key, &shop_url).await?;
                    stdin.write_all(b"go\n").await?;
                }
                Some(other) => anyhow::bail!("unknown step {other}"),
                None => return anyhow::Ok(message),
            }
        }
    })
    .await;
    let result = match result {
        Ok(r) => r?,
        Err(_) => {
            let _ = child.kill().await;
            let output = child.wait_with_output().await?;
            anyhow::bail!("the browser script timed out; stderr {}", String::from_utf8_lossy(&output.stderr));
        }
    };
    assert!(result.get("failure").is_none(), "browser run failed: {result:#}");
    assert_eq!(result["errors"], json!([]), "page errors: {result:#}");
    assert_eq!(result["csp"], json!([]), "Content-Security-Policy violations: {result:#}");

    // Signed up and shown the secret key once.
    assert!(result["signupSecret"].as_str().is_some_and(|s| s.starts_with("sk_")), "{result:#}");
    assert_eq!(result["secretAfterReload"], json!(false), "the secret key is shown once: {result:#}");
    let snippet = result["snippet"].as_str().unwrap_or_default();
    assert!(snippet.contains(&format!("{}/nudge.js", platform.cell_url)) && snippet.contains("pk_"), "{snippet}");
    // Waiting, then green by itself.
    assert_eq!(result["waiting"], json!("waiting"), "{result:#}");
    assert!(result["received"].as_str().is_some_and(|s| s.contains("first event has arrived")), "{result:#}");

    // The live events list the shop's page view.
    assert!(result["liveEvents"].as_array().is_some_and(|e| e.contains(&json!("page_view"))), "{result:#}");
    // The test message reached the shopper's open page.
    assert!(result["testResult"].as_str().is_some_and(|r| r.starts_with("Sent.")), "{result:#}");
    assert!(result["testShown"].as_str().is_some_and(|s| s.contains("Nudge is installed")), "{result:#}");
    // The announcement reached the shop's open page, shown by nudge.js in its banner.
    assert!(result["announceResult"].as_str().is_some_and(|r| r.starts_with("Announced.")), "{result:#}");
    assert!(
        result["announcementShown"].as_str().is_some_and(|s| s.contains("On every order, today only.")),
        "{result:#}"
    );
    assert!(
        result["interventionStillShown"].as_str().is_some_and(|s| s.contains("Nudge is installed")),
        "an announcement does not cover the message already on the page: {result:#}"
    );

    // The campaign: the API's problem with the condition shown by its field, then saved as a
    // draft, activated, and its message seen by a shopper on the shop.
    let problems = result["campaignProblems"].as_str().unwrap_or_default();
    assert!(problems.contains("condition") && problems.contains("at character"), "{result:#}");
    assert_eq!(result["campaignDraft"], json!("draft"), "{result:#}");
    assert_eq!(result["campaignActive"], json!("active"), "{result:#}");
    let shown = result["campaignShown"].as_str().unwrap_or_default();
    assert!(shown.contains("Wait, your tent!") && shown.contains("1 items are waiting"), "{result:#}");
    assert!(result["campaignListed"].as_str().is_some_and(|l| l.contains("Come back") && l.contains("active")));
    // And in analytics, read from the cell with the member's token: the campaign's treated
    // shoppers and the message shown.
    assert_eq!(result["analyticsProblem"], json!(null), "{result:#}");
    let funnel: Vec<u64> = result["analyticsFunnel"]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .map(|n| n.parse().unwrap_or_default())
        .collect();
    assert!(funnel.len() == 4 && funnel[0] >= 1 && funnel[1] >= 1, "treated, shown, clicked, bought: {result:#}");
    // Beside it, the model that scores the store (the platform's default here) and no rollout.
    assert!(result["model"].as_str().is_some_and(|m| m.contains("platform's default")), "{result:#}");
    assert!(result["rollout"].as_str().is_some_and(|r| r.contains("No new model")), "{result:#}");

    // A key made without a name or scope says what is missing; the real one is shown once
    // and then revoked.
    let errors = result["emptyKeyErrors"].as_array().map(Vec::len).unwrap_or_default();
    assert_eq!(errors, 2, "name and scopes are named: {result:#}");
    let secret = result["newSecret"].as_str().unwrap_or_default();
    assert!(secret.starts_with("sk_"), "{result:#}");
    assert_eq!(result["createdAfterReload"], json!(true), "{result:#}");
    assert!(result["revokedRow"].as_str().is_some_and(|r| r.contains("Revoked")), "{result:#}");
    // The cell refuses the revoked key.
    let mut refused = false;
    for _ in 0..100 {
        let r = platform
            .http
            .post(format!("{}/v1/events", platform.cell_url))
            .bearer_auth(secret)
            .json(&json!({"events": []}))
            .send()
            .await?;
        if r.status() == StatusCode::UNAUTHORIZED {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the cell still accepts the revoked key");

    // Billing shows the plan and the month's events, and that this platform bills no one.
    assert_eq!(result["billing"]["plan"], json!("free"), "{result:#}");
    assert!(result["billing"]["used"].as_i64().is_some_and(|n| n >= 1), "{result:#}");
    assert_eq!(result["billing"]["off"], json!(true), "{result:#}");

    // Team: someone without an account cannot be added, and the page says why.
    assert!(result["teamProblem"].as_str().is_some_and(|p| p.contains("No account")), "{result:#}");

    // The shopper's erasure: filed, completed, and its signed receipt downloaded.
    let receipt = &result["receipt"];
    let request_id = result["erasureUrl"].as_str().and_then(|u| u.rsplit('/').next()).unwrap_or_default();
    assert!(!request_id.is_empty(), "{result:#}");
    assert_eq!(result["receiptFile"], json!(format!("erasure-receipt-{request_id}.json")), "{result:#}");
    assert!(receipt["signature"].as_str().is_some_and(|s| s.starts_with("vault:v")), "{result:#}");
    let signed: Value = serde_json::from_str(receipt["receipt"].as_str().unwrap_or("null"))?;
    assert_eq!(signed["request_id"], json!(request_id), "{signed:#}");
    assert_eq!(result["erasureListed"], json!(true), "{result:#}");
    // The retention period the plan gives (free: 30 days unless the plan says otherwise).
    let days = nudge_tenants::Plan::Free.limits().retention_days;
    assert!(result["retention"].as_str().is_some_and(|r| r.contains(&format!("{days} days"))), "{result:#}");

    // Readable at 360 px; signed out means signed out.
    assert!(result["narrowOverflow"].as_i64().is_some_and(|o| o <= 0), "{result:#}");
    assert!(result["afterSignOut"].as_str().is_some_and(|u| u.ends_with("/console/login")), "{result:#}");
    for shot in [
        "signup.png",
        "overview-waiting.png",
        "overview.png",
        "key-created.png",
        "keys.png",
        "campaign-problems.png",
        "campaign.png",
        "announced.png",
        "analytics.png",
        "events.png",
        "billing.png",
        "team.png",
        "erasure.png",
        "privacy.png",
    ] {
        assert!(shots.join(shot).exists(), "{shot} was not taken");
    }

    stop_shop.cancel();
    serving.await??;
    platform.shutdown().await
}

/// The secret key shown on a page.
fn secret_of(body: &str) -> &str {
    body.split("id=\"new-secret\">").nth(1).and_then(|rest| rest.split('<').next()).unwrap_or_default()
}

/// A `Set-Cookie` value's attributes, lower-cased.
fn cookie_attributes(page: &Page, name: &str) -> Vec<String> {
    page.headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').skip(1).map(|a| a.trim().to_lowercase()).collect())
        .unwrap_or_default()
}

/// Inline script, inline style and inline event handlers: none may appear in a console page.
fn inline_code(html: &str) -> Vec<String> {
    let lower = html.to_lowercase();
    let mut found = Vec::new();
    for (i, _) in lower.match_indices("<script") {
        let tag = &lower[i..lower[i..].find('>').map_or(lower.len(), |e| i + e)];
        if !tag.contains(" src=") {
            found.push(tag.to_owned());
        }
    }
    if lower.contains("<style") {
        found.push("<style>".into());
    }
    for attribute in [" style=", " onclick=", " onload=", " onsubmit=", " onerror=", "javascript:"] {
        if lower.contains(attribute) {
            found.push(attribute.trim().to_owned());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_cookies_headers_and_csrf_protection_hold() -> anyhow::Result<()> {
    let platform = platform().await?;
    let mut visitor = Visitor::new(&platform.control_plane_url)?;

    // Before sign-in: the form token's cookie is a __Host- cookie, Secure, HttpOnly, Strict.
    let form = visitor.get("/console/signup").await?;
    assert_eq!(form.status, StatusCode::OK);
    // A second sign-in tab keeps the browser's token, so the first tab's form still works.
    let second_tab = visitor.get("/console/login").await?;
    assert_eq!(second_tab.csrf(), form.csrf(), "one form token per browser");
    let attributes = cookie_attributes(&form, "__Host-nudge_form");
    for expected in ["path=/", "secure", "httponly", "samesite=strict"] {
        assert!(attributes.iter().any(|a| a == expected), "form cookie lacks {expected}: {attributes:?}");
    }
    assert!(!attributes.iter().any(|a| a.starts_with("domain")), "a __Host- cookie names no domain");

    let email = format!("owner-{}@example.com", unique_suffix());
    let fields = |csrf: &str| -> Vec<(String, String)> {
        [
            ("csrf", csrf),
            ("name", "Headers Co."),
            ("store_url", "https://shop.headers.example"),
            ("email", email.as_str()),
            ("password", PASSWORD),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    };
    let base = platform.control_plane_url.clone();
    let good = form.csrf();
    // A sign-up without the form's token, with another token, or posted from another site.
    for (token, origin) in
        [("", base.as_str()), ("forged-token", base.as_str()), (good.as_str(), "https://evil.example")]
    {
        let fields = fields(token);
        let refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let refused = visitor.post_from("/console/signup", &refs, origin).await?;
        assert_eq!((refused.status, refused.error_code()), (StatusCode::FORBIDDEN, "csrf_failed"), "{token} {origin}");
        assert!(refused.headers.get(header::CONTENT_SECURITY_POLICY).is_some(), "refusals carry the policy too");
    }
    // None of them signed anyone up: the e-mail address is still free.
    let fields = fields(&good);
    let refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let signed_up = visitor.post("/console/signup", &refs).await?;
    assert_eq!(signed_up.status, StatusCode::SEE_OTHER, "{}", signed_up.body);
    assert_eq!(signed_up.location(), "/console");
    let attributes = cookie_attributes(&signed_up, "__Host-nudge_session");
    for expected in ["path=/", "secure", "httponly", "samesite=strict"] {
        assert!(attributes.iter().any(|a| a == expected), "session cookie lacks {expected}: {attributes:?}");
    }
    // It ends with the browser; how long the session lives without use is the server's to say.
    assert!(!attributes.iter().any(|a| a.starts_with("max-age") || a.starts_with("expires")), "{attributes:?}");
    let session = visitor.cookies.get("__Host-nudge_session").cloned().unwrap_or_default();
    assert!(session.len() >= 43, "the session id is long and random: {session}");
    assert!(!session.contains("v4.public") && !session.starts_with("rt_"), "no token reaches the browser");

    // Every page: the exact policy and the other headers; no inline code at all.
    for path in [
        "/console",
        "/console/keys",
        "/console/keys/created",
        "/console/team",
        "/console/privacy",
        "/console/campaigns",
        "/console/campaigns/new",
        "/console/billing",
        "/console/analytics",
        "/console/events",
        "/console/join",
        "/console/login",
        "/console/signup",
        "/console/nope",
    ] {
        let page = visitor.get(path).await?;
        let h = |name: &str| page.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert_eq!(h("content-security-policy"), CSP, "{path}");
        assert_eq!(h("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(h("x-frame-options"), "DENY", "{path}");
        assert_eq!(h("cache-control"), "no-store", "{path}");
        assert_eq!(h("referrer-policy"), "same-origin", "{path}");
        assert_eq!(inline_code(&page.body), Vec::<String>::new(), "{path}");
    }
    let missing = visitor.get("/console/nope").await?;
    assert_eq!((missing.status, missing.error_code()), (StatusCode::NOT_FOUND, "not_found"));

    // Signed in: forms need the session's token and must come from the console's origin.
    let keys = visitor.get("/console/keys").await?;
    assert_eq!(keys.status, StatusCode::OK);
    let csrf = keys.csrf();
    let key_count = |body: &str| body.matches("data-key-id=").count();
    let before = key_count(&keys.body);
    for (token, origin) in [("", base.as_str()), ("forged", base.as_str()), (csrf.as_str(), "https://evil.example")] {
        let page = visitor
            .post_from("/console/keys", &[("csrf", token), ("name", "Sneaky"), ("scope", "events:write")], origin)
            .await?;
        assert_eq!((page.status, page.error_code()), (StatusCode::FORBIDDEN, "csrf_failed"), "{token} from {origin}");
    }
    let cross_site = visitor
        .http
        .post(format!("{base}/console/logout"))
        .header("sec-fetch-site", "cross-site")
        .header(header::COOKIE, format!("__Host-nudge_session={session}"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await?;
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN, "a cross-site sign-out is refused");
    let keys = visitor.get("/console/keys").await?;
    assert_eq!((keys.status, key_count(&keys.body)), (StatusCode::OK, before), "no key was made, still signed in");

    // With the token: made, and its secret shown once.
    let made = visitor.post("/console/keys", &[("csrf", &csrf), ("name", "Real"), ("scope", "events:write")]).await?;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.body);
    let created = made.location();
    assert!(created.starts_with("/console/keys/created?key=key_"), "{created}");
    // Another new key, as from a second tab: each secret is shown where its key was made.
    let other = visitor.post("/console/keys", &[("csrf", &csrf), ("name", "Other"), ("scope", "events:write")]).await?;
    let other_shown = visitor.get(other.location()).await?;
    let shown = visitor.get(created).await?;
    assert!(shown.body.contains("id=\"new-secret\">sk_"), "{}", shown.body);
    assert!(other_shown.body.contains("id=\"new-secret\">sk_"), "{}", other_shown.body);
    assert_ne!(secret_of(&shown.body), secret_of(&other_shown.body));
    assert!(!visitor.get(created).await?.body.contains("sk_"), "shown once");
    assert!(!visitor.get("/console/keys/created?key=..").await?.body.contains("sk_"));

    // Signing out ends the session on the server: the old cookie opens nothing.
    let out = visitor.post("/console/logout", &[("csrf", &csrf)]).await?;
    assert_eq!((out.status, out.location()), (StatusCode::SEE_OTHER, "/console/login"));
    assert!(cookie_attributes(&out, "__Host-nudge_session").iter().any(|a| a == "max-age=0"));
    visitor.cookies.insert("__Host-nudge_session".into(), session);
    let after = visitor.get("/console/keys").await?;
    assert_eq!((after.status, after.location()), (StatusCode::SEE_OTHER, "/console/login"));
    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_one_store_reaches_nothing_of_another_through_the_console() -> anyhow::Result<()> {
    let platform = platform().await?;
    let (email_a, email_b) =
        (format!("owner-a-{}@example.com", unique_suffix()), format!("owner-b-{}@example.com", unique_suffix()));
    let a = platform.sign_up_as("Alpha Store", &["https://alpha.example"], &email_a).await?;
    let b = platform.sign_up_as("Bravo Store", &["https://bravo.example"], &email_b).await?;
    platform.create_secret_key(&email_b, &b.tenant_id, &["events:write"]).await?;
    let b_token = platform.login(&email_b, None).await?.access_token;
    let b_keys = |platform: &Platform, token: String, tenant: String| {
        let http = platform.http.clone();
        let url = format!("{}/v1/tenants/{tenant}/api-keys", platform.control_plane_url);
        async move { anyhow::Ok(http.get(url).bearer_auth(token).send().await?.json::<Value>().await?) }
    };
    let before = b_keys(&platform, b_token.clone(), b.tenant_id.clone()).await?;
    let b_key_ids: Vec<String> = before["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["key_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(b_key_ids.len(), 3, "publishable, default secret and the new one: {before}");

    // B's shopper is forgotten: a request of B's that A's member must not reach.
    let filed: Value = platform
        .http
        .post(format!("{}/v1/tenants/{}/erasures", platform.control_plane_url, b.tenant_id))
        .bearer_auth(&b_token)
        .json(&json!({"shopper_id": "shp_bravo_1"}))
        .send()
        .await?
        .json()
        .await?;
    let b_request = filed["request_id"].as_str().ok_or_else(|| anyhow::anyhow!("no request in {filed}"))?.to_owned();
    let campaign: Value = platform
        .http
        .post(format!("{}/v1/tenants/{}/campaigns", platform.control_plane_url, b.tenant_id))
        .bearer_auth(&b_token)
        .json(&json!({"name": "Bravo secret plan", "trigger": {"type": "exit_intent"}, "variants": [
            {"name": "a", "weight": 100, "messages": [
                {"channel": "on_site", "kind": "reminder", "title": "Bravo", "body": "Bravo"}]}]}))
        .send()
        .await?
        .json()
        .await?;
    let b_campaign =
        campaign["campaign_id"].as_str().ok_or_else(|| anyhow::anyhow!("no campaign in {campaign}"))?.to_owned();

    let mut visitor = Visitor::new(&platform.control_plane_url)?;
    visitor.sign_in(&email_a).await?;
    // Nothing of B on any page A's member can open.
    let b_marks = [b.tenant_id.as_str(), "Bravo Store", b.publishable_key.as_str(), "bravo.example"];
    for path in [
        "/console",
        "/console/keys",
        "/console/keys/created",
        "/console/keys?done=revoked",
        "/console/team",
        "/console/privacy",
        "/console/campaigns",
        "/console/campaigns/new",
        "/console/billing",
    ] {
        let page = visitor.get(path).await?;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert!(page.body.contains(&a.tenant_id) || page.body.contains("Alpha Store"), "{path} is A's");
        let b_ids: Vec<&str> = b_key_ids
            .iter()
            .map(String::as_str)
            .chain([b_request.as_str(), email_b.as_str(), b_campaign.as_str(), "Bravo secret plan"])
            .collect();
        for mark in b_marks.iter().chain(b_ids.iter()) {
            assert!(!page.body.contains(mark), "{path} shows {mark} of another store");
        }
    }
    // Every form, aimed at B: B's keys cannot be revoked (404, as for a key that does not
    // exist), a store id in a form is ignored, and nothing of B changes.
    let csrf = visitor.get("/console/keys").await?.csrf();
    for key in &b_key_ids {
        let page = visitor.post(&format!("/console/keys/{key}/revoke"), &[("csrf", &csrf)]).await?;
        assert_eq!((page.status, page.error_code()), (StatusCode::NOT_FOUND, "not_found"), "{key}: {}", page.body);
    }
    for path in
        [format!("/console/privacy/erasures/{b_request}"), format!("/console/privacy/erasures/{b_request}/receipt")]
    {
        let page = visitor.get(&path).await?;
        assert_eq!((page.status, page.error_code()), (StatusCode::NOT_FOUND, "not_found"), "{path}: {}", page.body);
    }
    let page = visitor.get(&format!("/console/campaigns/{b_campaign}")).await?;
    assert_eq!((page.status, page.error_code()), (StatusCode::NOT_FOUND, "not_found"), "{}", page.body);
    let spec = r#"{"name": "Hijacked", "trigger": {"type": "exit_intent"}, "variants": [{"name": "a", "weight": 100,
        "messages": [{"channel": "on_site", "kind": "reminder", "title": "x", "body": "x"}]}]}"#;
    let page = visitor
        .post(
            &format!("/console/campaigns/{b_campaign}"),
            &[("csrf", &csrf), ("mode", "json"), ("version", "1"), ("spec", spec)],
        )
        .await?;
    assert_eq!((page.status, page.error_code()), (StatusCode::NOT_FOUND, "not_found"), "{}", page.body);
    let page = visitor
        .post(&format!("/console/campaigns/{b_campaign}/state"), &[("csrf", &csrf), ("state", "active")])
        .await?;
    assert_eq!((page.status, page.error_code()), (StatusCode::NOT_FOUND, "not_found"), "{}", page.body);
    let b_campaign_now: Value = platform
        .http
        .get(format!("{}/v1/tenants/{}/campaigns/{b_campaign}", platform.control_plane_url, b.tenant_id))
        .bearer_auth(&b_token)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!((b_campaign_now["state"].as_str(), b_campaign_now["version"].as_i64()), (Some("draft"), Some(1)));
    // A's own export of a shopper id B uses holds none of B's records.
    let export = visitor.post("/console/privacy/export", &[("csrf", &csrf), ("shopper_id", "shp_bravo_1")]).await?;
    assert_eq!(export.status, StatusCode::OK, "{}", export.body);
    assert!(export.body.contains(&a.tenant_id) && !export.body.contains(&b_request), "{}", export.body);
    // Any shopper id the snippet may send can be exported, `.` and `:` included, and one
    // shaped like a path stays one.
    for shopper in ["customer:4.2", ".."] {
        let export = visitor.post("/console/privacy/export", &[("csrf", &csrf), ("shopper_id", shopper)]).await?;
        assert_eq!(export.status, StatusCode::OK, "{shopper}: {}", export.body);
        assert!(export.body.contains(&format!("\"shopper_id\": \"{shopper}\"")), "{}", export.body);
    }
    // Members are added to A only, whatever the form says.
    let added = visitor
        .post("/console/team", &[("csrf", &csrf), ("email", &email_b), ("role", "viewer"), ("tenant_id", &b.tenant_id)])
        .await?;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    let b_members: Value = platform
        .http
        .get(format!("{}/v1/tenants/{}/members", platform.control_plane_url, b.tenant_id))
        .bearer_auth(&b_token)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(b_members["items"].as_array().map(Vec::len), Some(1), "B's team is B's owner alone: {b_members}");
    let page = visitor.post("/console/keys/..%2F..%2F..%2Fsessions%2Flogout/revoke", &[("csrf", &csrf)]).await?;
    assert_eq!(page.status, StatusCode::NOT_FOUND, "path tricks reach nothing");
    let made = visitor
        .post(
            "/console/keys",
            &[("csrf", &csrf), ("name", "Planted"), ("scope", "events:write"), ("tenant_id", &b.tenant_id)],
        )
        .await?;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.body);
    let keys_of_a = visitor.get("/console/keys").await?;
    assert!(keys_of_a.body.contains("Planted"), "the key went to A's own store");
    let after = b_keys(&platform, b_token, b.tenant_id.clone()).await?;
    assert_eq!(after, before, "B's keys are untouched");

    // B's member, signed in beside A's, sees only B.
    let mut other = Visitor::new(&platform.control_plane_url)?;
    other.sign_in_to(&email_b, &b.tenant_id).await?;
    let page = other.get("/console/keys").await?;
    assert!(page.body.contains("Bravo Store") && !page.body.contains("Planted") && !page.body.contains(&a.tenant_id));
    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_of_one_session_refresh_its_tokens_once() -> anyhow::Result<()> {
    // Access tokens live 2 s, so nearly every request must refresh first.
    let platform = Platform::start_with(|cp, _| cp.auth.access_ttl_seconds = 2).await?;
    let email = format!("owner-{}@example.com", unique_suffix());
    platform.sign_up_as("Refresh Co.", &["https://refresh.example"], &email).await?;
    let mut visitor = Visitor::new(&platform.control_plane_url)?;
    visitor.sign_in(&email).await?;
    let cookie = format!("__Host-nudge_session={}", visitor.cookies["__Host-nudge_session"]);
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(2100)).await;
        // Eight page loads at once, all with an expired token: one refreshes, all succeed,
        // and the session survives (a refresh token spent twice would end it).
        let loads = (0..8).map(|_| {
            let (http, url, cookie) =
                (visitor.http.clone(), format!("{}/console/keys", platform.control_plane_url), cookie.clone());
            async move { anyhow::Ok(http.get(url).header(header::COOKIE, cookie).send().await?.status()) }
        });
        let statuses = futures_util::future::try_join_all(loads).await?;
        assert!(statuses.iter().all(|s| *s == StatusCode::OK), "round {round}: {statuses:?}");
    }
    assert_eq!(visitor.get("/console").await?.status, StatusCode::OK, "still signed in");
    platform.shutdown().await
}

/// The Redis key of a console session (the platform's control-plane prefix, the id's hash).
fn session_key(platform: &Platform, id: &str) -> String {
    use sha2::Digest;
    format!("{}cp:console:s:{}", platform.redis_prefix, hex::encode(sha2::Sha256::digest(id.as_bytes())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_lives_by_use_and_outlasts_a_stuck_refresh_and_a_rejected_token() -> anyhow::Result<()> {
    // Access tokens live 30 s: inside the refresh margin, so every load renews first.
    let platform = Platform::start_with(|cp, _| cp.auth.access_ttl_seconds = 30).await?;
    let email = format!("owner-{}@example.com", unique_suffix());
    platform.sign_up_as("Lifetime Co.", &["https://lifetime.example"], &email).await?;
    let mut visitor = Visitor::new(&platform.control_plane_url)?;
    visitor.sign_in(&email).await?;
    let key = session_key(&platform, &visitor.cookies["__Host-nudge_session"]);
    let mut redis = redis::Client::open(platform.redis_url.as_str())?.get_multiplexed_async_connection().await?;
    let ttl = |mut redis: redis::aio::MultiplexedConnection, key: String| async move {
        anyhow::Ok(redis::cmd("PTTL").arg(key).query_async::<i64>(&mut redis).await?)
    };

    // A request the page makes by itself (`auto`) does not restart the idle timer; the
    // member's own does.
    let fresh = ttl(redis.clone(), key.clone()).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(visitor.get("/console/keys?auto=3").await?.status, StatusCode::OK);
    let after_auto = ttl(redis.clone(), key.clone()).await?;
    assert!(after_auto < fresh - 1000, "an automatic load kept the session alive: {fresh} → {after_auto}");
    assert_eq!(visitor.get("/console/keys").await?.status, StatusCode::OK);
    let after_use = ttl(redis.clone(), key.clone()).await?;
    assert!(after_use > after_auto + 1000, "use restarts the idle timer: {after_auto} → {after_use}");

    // A refresh stuck elsewhere (its lock held): the page still loads on the current token.
    let stored = |body: Option<String>| -> anyhow::Result<Value> {
        Ok(serde_json::from_str(&body.ok_or_else(|| anyhow::anyhow!("no session"))?)?)
    };
    let before: Value = stored(redis::cmd("GET").arg(&key).query_async(&mut redis).await?)?;
    redis::cmd("SET")
        .arg(format!("{key}:refresh"))
        .arg("another-holder")
        .arg("PX")
        .arg(20_000)
        .query_async::<()>(&mut redis)
        .await?;
    assert_eq!(visitor.get("/console/keys").await?.status, StatusCode::OK, "served on the current token");
    let during: Value = stored(redis::cmd("GET").arg(&key).query_async(&mut redis).await?)?;
    assert_eq!(during["access_token"], before["access_token"], "nothing refreshed under another's lock");
    let holder: Option<String> = redis::cmd("GET").arg(format!("{key}:refresh")).query_async(&mut redis).await?;
    assert_eq!(holder.as_deref(), Some("another-holder"), "another's lock is not released");
    redis::cmd("DEL").arg(format!("{key}:refresh")).query_async::<()>(&mut redis).await?;

    // An access token the API rejects before it expires: renewed once, and the page loads
    // again; a form is not replayed but asked for again.
    let reject = |mut redis: redis::aio::MultiplexedConnection, key: String, issued_ms: u64| async move {
        let mut session: Value =
            serde_json::from_str(&redis::cmd("GET").arg(&key).query_async::<String>(&mut redis).await?)?;
        session["access_token"] = json!("v4.public.not-a-token");
        session["access_expires_ms"] = json!(u64::MAX / 2);
        session["issued_ms"] = json!(issued_ms);
        redis::cmd("SET").arg(&key).arg(session.to_string()).arg("KEEPTTL").query_async::<()>(&mut redis).await?;
        anyhow::Ok(())
    };
    reject(redis.clone(), key.clone(), 0).await?;
    // Two requests rejected at once (two tabs): one renews, the other finds the new token;
    // neither signs the member out.
    let cookie = format!("__Host-nudge_session={}", visitor.cookies["__Host-nudge_session"]);
    let both = (0..2).map(|_| {
        let (http, url, cookie) =
            (visitor.http.clone(), format!("{}/console/keys", platform.control_plane_url), cookie.clone());
        async move {
            let r = http.get(url).header(header::COOKIE, cookie).send().await?;
            let location =
                r.headers().get(header::LOCATION).and_then(|l| l.to_str().ok()).unwrap_or_default().to_owned();
            anyhow::Ok((r.status(), location))
        }
    });
    for (status, location) in futures_util::future::try_join_all(both).await? {
        assert!(status == StatusCode::OK || location == "/console/keys", "{status} {location}");
    }
    assert_eq!(visitor.get("/console/keys").await?.status, StatusCode::OK, "still signed in");
    reject(redis.clone(), key.clone(), 0).await?;
    let renewed = visitor.get("/console/keys?x=1").await?;
    assert_eq!((renewed.status, renewed.location()), (StatusCode::SEE_OTHER, "/console/keys?x=1"));
    let keys = visitor.get("/console/keys").await?;
    assert_eq!(keys.status, StatusCode::OK);
    let csrf = keys.csrf();
    reject(redis.clone(), key.clone(), 0).await?;
    let resend =
        visitor.post("/console/keys", &[("csrf", &csrf), ("name", "Twice"), ("scope", "events:write")]).await?;
    assert_eq!((resend.status, resend.error_code()), (StatusCode::CONFLICT, "resend_form"));
    assert!(
        !visitor.get("/console/keys").await?.body.contains("Twice"),
        "the form was not applied behind the member's back"
    );
    // A token rejected moments after it was issued is not renewed in a loop: the session ends.
    reject(redis.clone(), key.clone(), u64::try_from(chrono::Utc::now().timestamp_millis())?).await?;
    let ended = visitor.get("/console/keys").await?;
    assert_eq!((ended.status, ended.location()), (StatusCode::SEE_OTHER, "/console/login"));
    let gone: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut redis).await?;
    assert!(gone.is_none(), "the session ended");
    platform.shutdown().await
}
