//! Tenant lifecycle: operators move tenants through their states, every change is in the
//! audit log, and the cells act on it within seconds.

use std::time::Duration;

use nudge_test_support::{OPERATOR_TOKEN, Platform};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

const ORIGIN: &str = "https://shop.example.com";

async fn json_of(r: reqwest::Response) -> anyhow::Result<(u16, Value)> {
    Ok((r.status().as_u16(), r.json().await?))
}

/// Posts one event until the answer's status is `want` (the cell applies changes
/// asynchronously); the last body.
async fn until_status(platform: &Platform, key: &str, want: u16) -> anyhow::Result<Value> {
    let batch = json!({"events": [{"event_id": "e", "type": "page_view", "shopper_id": "shp_1"}]});
    let mut last = (0, Value::Null);
    for _ in 0..100 {
        last = json_of(platform.post_events(key, Some(ORIGIN), &batch).await?).await?;
        if last.0 == want {
            return Ok(last.1);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("never answered {want}; last {last:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspension_reaches_the_cell_and_every_step_is_audited() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let tenant = platform.sign_up_ready("Acme", ORIGIN).await?;
    let (id, key) = (tenant.tenant_id.as_str(), tenant.publishable_key.as_str());
    until_status(&platform, key, 202).await?;
    let mut open_socket = platform.connect_shopper(key, ORIGIN, "shp_open").await?;

    let (status, body) = json_of(platform.transition(id, "suspended", "unpaid invoice").await?).await?;
    assert_eq!((status, body["state"].as_str(), body["changed"].as_bool()), (200, Some("suspended"), Some(true)));
    let refused = until_status(&platform, key, 403).await?;
    assert_eq!(refused["error"]["code"], "tenant_suspended");
    assert!(platform.connect_shopper(key, ORIGIN, "shp_1").await.is_err(), "no new sockets while suspended");
    let code = open_socket.closed(Duration::from_secs(10)).await?;
    assert_eq!(code, Some(4003), "open sockets of a suspended store are closed");

    // Idempotent: asking again changes nothing and records nothing.
    let (status, body) = json_of(platform.transition(id, "suspended", "unpaid invoice").await?).await?;
    assert_eq!((status, body["changed"].as_bool()), (200, Some(false)));

    // A step the lifecycle does not allow names the current state.
    let (status, body) = json_of(platform.transition(id, "deleted", "skip offboarding").await?).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("invalid_transition")));
    assert_eq!(body["error"]["details"]["current_state"], "suspended");

    let (status, _) = json_of(platform.transition(id, "active", "invoice paid").await?).await?;
    assert_eq!(status, 200);
    until_status(&platform, key, 202).await?;

    // The audit log, paged two at a time: signup's three steps, then the operator's two.
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/v1/admin/tenants/{id}/audit?limit=2", platform.control_plane_url);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = json_of(platform.http.get(url).bearer_auth(OPERATOR_TOKEN).send().await?).await?;
        assert_eq!(status, 200, "{page}");
        entries.extend(page["entries"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let steps: Vec<(String, String)> = entries
        .iter()
        .map(|e| (e["actor"].as_str().unwrap_or_default().to_owned(), e["to"].as_str().unwrap_or_default().to_owned()))
        .collect();
    let expect = |a: &str, t: &str| (a.to_owned(), t.to_owned());
    assert_eq!(
        steps,
        vec![
            expect("system:signup", "pending"),
            expect("system:signup", "provisioning"),
            expect("system:signup", "active"),
            expect("operator:ops", "suspended"),
            expect("operator:ops", "active"),
        ]
    );
    assert_eq!(entries[3]["reason"], "unpaid invoice");

    // Offboarding: the store's traffic stops; it is deleted only by the purge that erases
    // it when its grace period ends (e2e/tests/offboarding.rs), never directly.
    assert_eq!(platform.transition(id, "offboarding", "merchant left").await?.status(), 200);
    until_status(&platform, key, 403).await?;
    let (status, body) = json_of(platform.transition(id, "deleted", "data erased").await?).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("deleted_by_offboarding")), "{body}");

    // The audit log cannot be rewritten, not even by the owner.
    let mut owner = PgConnection::connect(&platform.db.owner_url).await?;
    let rewrite = sqlx::query("UPDATE tenant_audit SET reason = 'nothing happened'").execute(&mut owner).await;
    assert!(rewrite.is_err(), "owner update refused");
    let mut app = PgConnection::connect(&platform.db.app_url).await?;
    let delete = sqlx::query("DELETE FROM tenant_audit").execute(&mut app).await;
    assert!(delete.is_err(), "runtime role delete refused");
    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_wants_an_operator_and_answers_404_for_unknown_tenants() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let tenant = platform.sign_up("Acme", &[ORIGIN]).await?;
    let url = format!("{}/v1/admin/tenants/{}/transitions", platform.control_plane_url, tenant.tenant_id);
    let body = json!({"to": "suspended", "reason": "test"});

    let (status, err) = json_of(platform.http.post(&url).json(&body).send().await?).await?;
    assert_eq!((status, err["error"]["code"].as_str()), (401, Some("invalid_operator_token")));
    let (status, _) = json_of(platform.http.post(&url).bearer_auth("wrong-token").json(&body).send().await?).await?;
    assert_eq!(status, 401);

    let unknown = "tnt_0190f3c28a1b7c3d9e4f5a6b7c8d9e0f";
    let (status, err) = json_of(platform.transition(unknown, "suspended", "test").await?).await?;
    assert_eq!((status, err["error"]["code"].as_str()), (404, Some("not_found")));
    let (status, _) = json_of(platform.transition("not-an-id", "suspended", "test").await?).await?;
    assert_eq!(status, 404);

    let (status, err) = json_of(platform.transition(&tenant.tenant_id, "pending", "").await?).await?;
    assert_eq!((status, err["error"]["code"].as_str()), (422, Some("invalid_fields")));
    assert!(
        err["error"]["details"]["fields"]["to"].is_string() && err["error"]["details"]["fields"]["reason"].is_string()
    );
    platform.shutdown().await
}
