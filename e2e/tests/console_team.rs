//! The merchant console's team and sign-in pages: joining with an account of one's own,
//! being added, a role changed, leaving the store, the last owner kept, and the sign-in
//! form closed for an address after wrong passwords.

mod common;

use common::visitor::Visitor;
use nudge_test_support::{PASSWORD, Platform, unique_suffix};
use reqwest::{StatusCode, header};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn someone_joins_with_an_account_of_their_own_and_is_added_to_the_team() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let owner = format!("owner-{}@example.com", unique_suffix());
    platform.sign_up_as("Team Co.", &["https://team.example"], &owner).await?;

    // The newcomer makes an account without a store.
    let newcomer = format!("analyst-{}@example.com", unique_suffix());
    let mut joiner = Visitor::new(&platform.control_plane_url)?;
    let form = joiner.get("/console/join").await?;
    let weak =
        joiner.post("/console/join", &[("csrf", &form.csrf()), ("email", &newcomer), ("password", "short")]).await?;
    assert_eq!(weak.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", weak.body);
    assert!(weak.body.contains("id=\"password-error\""), "the weak password is named: {}", weak.body);
    let form = joiner.get("/console/join").await?;
    let joined =
        joiner.post("/console/join", &[("csrf", &form.csrf()), ("email", &newcomer), ("password", PASSWORD)]).await?;
    assert_eq!(joined.status, StatusCode::CREATED, "{}", joined.body);
    assert!(joined.body.contains(&newcomer) && joined.body.contains("id=\"joined\""));
    let form = joiner.get("/console/join").await?;
    let again =
        joiner.post("/console/join", &[("csrf", &form.csrf()), ("email", &newcomer), ("password", PASSWORD)]).await?;
    assert_eq!(again.status, StatusCode::CONFLICT, "one account per address");

    // The owner adds them as an analyst; they sign in and open the store.
    let mut owner_browser = Visitor::new(&platform.control_plane_url)?;
    owner_browser.sign_in(&owner).await?;
    let team = owner_browser.get("/console/team").await?;
    let added = owner_browser
        .post("/console/team", &[("csrf", &team.csrf()), ("email", &newcomer), ("role", "analyst")])
        .await?;
    assert!(added.status == StatusCode::SEE_OTHER || added.status == StatusCode::OK, "{}", added.body);
    joiner.sign_in(&newcomer).await?;
    let overview = joiner.get("/console").await?;
    assert_eq!(overview.status, StatusCode::OK);
    assert!(overview.body.contains("Team Co.") && overview.body.contains("analyst"), "{}", overview.body);

    // The owner makes them a viewer from the team page.
    let owner_tokens = platform.login(&owner, None).await?;
    let members: Value = platform
        .http
        .get(format!("{}/v1/tenants/{}/members", platform.control_plane_url, owner_tokens.tenant_id))
        .bearer_auth(&owner_tokens.access_token)
        .send()
        .await?
        .json()
        .await?;
    let id_of = |email: &str| -> String {
        let items = members["items"].as_array().into_iter().flatten();
        items.filter(|m| m["email"] == email).filter_map(|m| m["account_id"].as_str()).collect()
    };
    let (newcomer_id, owner_id) = (id_of(&newcomer), id_of(&owner));
    let team = owner_browser.get("/console/team").await?;
    assert!(team.body.contains(&format!("/console/team/{newcomer_id}/remove")), "{}", team.body);
    let changed = owner_browser
        .post(&format!("/console/team/{newcomer_id}/role"), &[("csrf", &team.csrf()), ("role", "viewer")])
        .await?;
    assert_eq!((changed.status, changed.location()), (StatusCode::SEE_OTHER, "/console/team?done=changed"));
    // The last owner cannot leave; the page says why.
    let refused = owner_browser.post(&format!("/console/team/{owner_id}/remove"), &[("csrf", &team.csrf())]).await?;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert!(refused.body.contains("at least one owner"), "{}", refused.body);
    // A viewer manages no one: only their own row offers to leave.
    let team = joiner.get("/console/team").await?;
    assert!(!team.body.contains(&format!("/console/team/{owner_id}/")), "{}", team.body);
    // They leave the store: signed out, and their session is over.
    let left = joiner.post(&format!("/console/team/{newcomer_id}/remove"), &[("csrf", &team.csrf())]).await?;
    assert_eq!((left.status, left.location()), (StatusCode::SEE_OTHER, "/console/login"));
    let after = joiner.get("/console").await?;
    assert_eq!((after.status, after.location()), (StatusCode::SEE_OTHER, "/console/login"));
    let team = owner_browser.get("/console/team").await?;
    assert!(!team.body.contains(&newcomer), "they are no longer listed: {}", team.body);
    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sign_in_form_says_when_an_address_is_closed_after_wrong_passwords() -> anyhow::Result<()> {
    let platform = Platform::start_with(|cp, _| {
        cp.auth.sign_in_max_failures = 2;
        cp.auth.sign_in_window_seconds = 120;
    })
    .await?;
    let owner = format!("owner-{}@example.com", unique_suffix());
    platform.sign_up_as("Closed Co.", &["https://closed.example"], &owner).await?;
    let mut visitor = Visitor::new(&platform.control_plane_url)?;
    for _ in 0..2 {
        let form = visitor.get("/console/login").await?;
        let fields = [("csrf", form.csrf()), ("email", owner.clone()), ("password", "not the password".to_owned())];
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let wrong = visitor.post("/console/login", &fields).await?;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.body);
    }
    let form = visitor.get("/console/login").await?;
    let fields = [("csrf", form.csrf()), ("email", owner.clone()), ("password", PASSWORD.to_owned())];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let closed = visitor.post("/console/login", &fields).await?;
    assert_eq!(closed.status, StatusCode::TOO_MANY_REQUESTS, "{}", closed.body);
    assert!(closed.body.contains("sign-in is closed for it for 2 more minutes"), "{}", closed.body);
    assert!(closed.headers.contains_key(header::RETRY_AFTER));
    platform.shutdown().await
}
