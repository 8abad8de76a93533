//! Merchant accounts: sign-in, token refresh with rotation and replay detection, logout,
//! roles, and the session store failing closed.

use nudge_test_support::{PASSWORD, Platform, RedisServer, unique_suffix};
use secrecy::SecretString;
use serde_json::{Value, json};

const ORIGIN: &str = "https://shop.example.com";

async fn call(r: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
    let r = r.send().await?;
    let status = r.status().as_u16();
    let text = r.text().await?;
    Ok((status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text)? }))
}

fn email(who: &str) -> String {
    format!("{who}-{}@example.com", unique_suffix())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_a_replayed_token_revokes_the_family() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let owner = email("owner");
    let store = platform.sign_up_as("Acme", &[ORIGIN], &owner).await?;
    let cp = &platform.control_plane_url;

    // Wrong password and unknown e-mail look the same.
    let wrong = json!({"email": owner, "password": "not the password at all"});
    let unknown = json!({"email": email("nobody"), "password": PASSWORD});
    for body in [wrong, unknown] {
        let (status, err) = call(platform.http.post(format!("{cp}/v1/sessions")).json(&body)).await?;
        assert_eq!((status, err["error"]["code"].as_str()), (401, Some("invalid_credentials")));
    }

    let first = platform.login(&owner, None).await?;
    assert_eq!((first.tenant_id.as_str(), first.role.as_str()), (store.tenant_id.as_str(), "owner"));
    assert!(first.access_token.starts_with("v4.public.") && first.expires_in <= 900);
    let me = format!("{cp}/v1/tenants/{}", store.tenant_id);
    let (status, view) = call(platform.http.get(&me).bearer_auth(&first.access_token)).await?;
    assert_eq!((status, view["name"].as_str()), (200, Some("Acme")));
    let (status, err) = call(platform.http.get(&me)).await?;
    assert_eq!((status, err["error"]["code"].as_str()), (401, Some("missing_token")));
    let (status, _) = call(platform.http.get(&me).bearer_auth("v4.public.forged")).await?;
    assert_eq!(status, 401);

    // Each refresh token works once and gives the next one.
    let refresh =
        |token: &str| platform.http.post(format!("{cp}/v1/sessions/refresh")).json(&json!({"refresh_token": token}));
    let (status, second) = call(refresh(&first.refresh_token)).await?;
    assert_eq!(status, 200, "{second}");
    let second_refresh = second["refresh_token"].as_str().unwrap_or_default().to_owned();
    assert_ne!(second_refresh, first.refresh_token);
    assert_eq!(
        call(platform.http.get(&me).bearer_auth(second["access_token"].as_str().unwrap_or_default())).await?.0,
        200
    );

    // Replaying the spent first token: refused, and the whole family dies with it.
    let (status, err) = call(refresh(&first.refresh_token)).await?;
    assert_eq!((status, err["error"]["code"].as_str()), (401, Some("refresh_token_reused")));
    let (status, err) = call(refresh(&second_refresh)).await?;
    assert_eq!((status, err["error"]["code"].as_str()), (401, Some("invalid_refresh_token")), "family revoked");

    // Logout ends a session.
    let third = platform.login(&owner, None).await?;
    let (status, _) = call(
        platform.http.post(format!("{cp}/v1/sessions/logout")).json(&json!({"refresh_token": third.refresh_token})),
    )
    .await?;
    assert_eq!(status, 204);
    assert_eq!(call(refresh(&third.refresh_token)).await?.0, 401);
    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_session_store_down_no_refresh_succeeds() -> anyhow::Result<()> {
    let mut sessions = RedisServer::start().await?;
    let url = sessions.url();
    let platform = Platform::start_with(|cp, _| cp.redis.url = SecretString::from(url)).await?;
    let owner = email("owner");
    platform.sign_up_as("Acme", &[ORIGIN], &owner).await?;
    let tokens = platform.login(&owner, None).await?;
    let cp = &platform.control_plane_url;

    sessions.stop().await?;
    let (status, err) = call(
        platform.http.post(format!("{cp}/v1/sessions/refresh")).json(&json!({"refresh_token": tokens.refresh_token})),
    )
    .await?;
    assert_eq!((status, err["error"]["code"].as_str()), (503, Some("session_store_unavailable")));
    let (status, _) =
        call(platform.http.post(format!("{cp}/v1/sessions")).json(&json!({"email": owner, "password": PASSWORD})))
            .await?;
    assert_eq!(status, 503, "no sign-in without the session store either");

    // Back, but empty: the old session is gone, not resurrected.
    sessions.restart().await?;
    let mut status = 0;
    for _ in 0..50 {
        status = call(
            platform
                .http
                .post(format!("{cp}/v1/sessions/refresh"))
                .json(&json!({"refresh_token": tokens.refresh_token})),
        )
        .await?
        .0;
        if status != 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 401);
    assert!(platform.login(&owner, None).await.is_ok(), "sign-in works again");
    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_have_roles_and_pick_their_store() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let cp = &platform.control_plane_url;
    let owner = email("owner");
    let store = platform.sign_up_as("Acme", &[ORIGIN], &owner).await?;
    let other_owner = email("other");
    let other = platform.sign_up_as("Other", &["https://other.example.com"], &other_owner).await?;

    // A store-less account, added to Acme as a viewer.
    let viewer = email("viewer");
    let (status, _) =
        call(platform.http.post(format!("{cp}/v1/accounts")).json(&json!({"email": viewer, "password": PASSWORD})))
            .await?;
    assert_eq!(status, 201);
    let (status, err) =
        call(platform.http.post(format!("{cp}/v1/accounts")).json(&json!({"email": viewer, "password": PASSWORD})))
            .await?;
    assert_eq!((status, err["error"]["code"].as_str()), (409, Some("email_taken")));
    let (status, err) =
        call(platform.http.post(format!("{cp}/v1/accounts")).json(&json!({"email": "x@y", "password": "weak"})))
            .await?;
    assert_eq!((status, err["error"]["code"].as_str()), (422, Some("invalid_fields")));
    assert!(
        err["error"]["details"]["fields"]["email"].is_string()
            && err["error"]["details"]["fields"]["password"].is_string()
    );

    let owner_tokens = platform.login(&owner, None).await?;
    let members = format!("{cp}/v1/tenants/{}/members", store.tenant_id);
    let (status, added) = call(
        platform
            .http
            .post(&members)
            .bearer_auth(&owner_tokens.access_token)
            .json(&json!({"email": viewer, "role": "viewer"})),
    )
    .await?;
    assert_eq!((status, added["role"].as_str()), (201, Some("viewer")));
    let (status, err) = call(
        platform
            .http
            .post(&members)
            .bearer_auth(&owner_tokens.access_token)
            .json(&json!({"email": viewer, "role": "admin"})),
    )
    .await?;
    assert_eq!((status, err["error"]["code"].as_str()), (409, Some("already_member")));

    // The viewer reads, but may not manage keys or members.
    let viewer_tokens = platform.login(&viewer, None).await?;
    assert_eq!(viewer_tokens.role, "viewer");
    let (status, list) = call(platform.http.get(&members).bearer_auth(&viewer_tokens.access_token)).await?;
    assert_eq!((status, list["items"].as_array().map(Vec::len)), (200, Some(2)));
    let keys = format!("{cp}/v1/tenants/{}/api-keys", store.tenant_id);
    let (status, err) = call(platform.http.get(&keys).bearer_auth(&viewer_tokens.access_token)).await?;
    assert_eq!((status, err["error"]["code"].as_str()), (403, Some("forbidden")));

    // Added to a second store, the account must say which store to act for.
    let other_tokens = platform.login(&other_owner, None).await?;
    let other_members = format!("{cp}/v1/tenants/{}/members", other.tenant_id);
    assert_eq!(
        call(
            platform
                .http
                .post(&other_members)
                .bearer_auth(&other_tokens.access_token)
                .json(&json!({"email": viewer, "role": "analyst"}))
        )
        .await?
        .0,
        201
    );
    let (status, err) =
        call(platform.http.post(format!("{cp}/v1/sessions")).json(&json!({"email": viewer, "password": PASSWORD})))
            .await?;
    assert_eq!((status, err["error"]["code"].as_str()), (409, Some("tenant_required")));
    assert_eq!(err["error"]["details"]["tenants"].as_array().map(Vec::len), Some(2));
    let in_other = platform.login(&viewer, Some(&other.tenant_id)).await?;
    assert_eq!(in_other.role, "analyst");

    // Not a member of a store: 404, as if it did not exist.
    let third = platform.sign_up("Third", &["https://third.example.com"]).await?;
    let (status, _) = call(
        platform
            .http
            .post(format!("{cp}/v1/sessions"))
            .json(&json!({"email": owner, "password": PASSWORD, "tenant_id": third.tenant_id})),
    )
    .await?;
    assert_eq!(status, 404);
    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_change_roles_leave_and_are_removed_and_a_store_keeps_an_owner() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let cp = &platform.control_plane_url;
    let owner = email("owner");
    let store = platform.sign_up_as("Acme", &[ORIGIN], &owner).await?;
    let other_owner = email("other");
    let other = platform.sign_up_as("Other", &["https://other.example.com"], &other_owner).await?;
    let (admin, viewer, second) = (email("admin"), email("viewer"), email("second"));
    for who in [&admin, &viewer, &second] {
        let r = platform.http.post(format!("{cp}/v1/accounts")).json(&json!({"email": who, "password": PASSWORD}));
        assert_eq!(call(r).await?.0, 201);
    }
    let owner_tokens = platform.login(&owner, None).await?;
    let members = format!("{cp}/v1/tenants/{}/members", store.tenant_id);
    let mut ids = std::collections::HashMap::new();
    for (who, role) in [(&admin, "admin"), (&viewer, "viewer")] {
        let r = platform.http.post(&members).bearer_auth(&owner_tokens.access_token);
        let (status, added) = call(r.json(&json!({"email": who, "role": role}))).await?;
        assert_eq!(status, 201);
        ids.insert(who.clone(), added["account_id"].as_str().unwrap_or_default().to_owned());
    }
    let member = |who: &str| format!("{members}/{}", ids.get(who).map_or("", String::as_str));
    let owner_id = owner_tokens.account_id.clone();
    let owner_url = format!("{members}/{owner_id}");
    let admin_tokens = platform.login(&admin, None).await?;
    let viewer_tokens = platform.login(&viewer, None).await?;
    let patch = |url: &str, token: &str, role: &str| {
        platform.http.patch(url.to_owned()).bearer_auth(token.to_owned()).json(&json!({ "role": role }))
    };
    let delete = |url: &str, token: &str| platform.http.delete(url.to_owned()).bearer_auth(token.to_owned());

    // An admin manages admins, analysts and viewers, never owners.
    let (status, changed) = call(patch(&member(&viewer), &admin_tokens.access_token, "analyst")).await?;
    assert_eq!((status, changed["role"].as_str()), (200, Some("analyst")));
    let (status, err) = call(patch(&member(&viewer), &admin_tokens.access_token, "owner")).await?;
    assert_eq!((status, err["error"]["code"].as_str()), (403, Some("forbidden")));
    let (status, err) = call(delete(&owner_url, &admin_tokens.access_token)).await?;
    assert_eq!((status, err["error"]["code"].as_str()), (403, Some("forbidden")));
    // An analyst manages no one.
    let (status, err) = call(patch(&member(&admin), &viewer_tokens.access_token, "viewer")).await?;
    assert_eq!((status, err["error"]["code"].as_str()), (403, Some("forbidden")));

    // Bad input, and ids that are not members of this store: 404 alike.
    let (status, err) = call(patch(&member(&viewer), &owner_tokens.access_token, "superuser")).await?;
    assert_eq!((status, err["error"]["code"].as_str()), (422, Some("invalid_fields")));
    assert!(err["error"]["details"]["fields"]["role"].is_string());
    let other_owner_id = platform.login(&other_owner, None).await?.account_id;
    for id in [other_owner_id.as_str(), "acc_00000000000000000000000000000000", "not-an-id"] {
        let (status, err) = call(patch(&format!("{members}/{id}"), &owner_tokens.access_token, "viewer")).await?;
        assert_eq!((status, err["error"]["code"].as_str()), (404, Some("not_found")), "{id}");
        assert_eq!(call(delete(&format!("{members}/{id}"), &owner_tokens.access_token)).await?.0, 404, "{id}");
    }
    // Another store's id in the path: 404, whoever the member is.
    let foreign = format!("{cp}/v1/tenants/{}/members/{other_owner_id}", other.tenant_id);
    assert_eq!(call(delete(&foreign, &owner_tokens.access_token)).await?.0, 404);

    // The last owner can neither step down nor leave.
    let (status, err) = call(patch(&owner_url, &owner_tokens.access_token, "admin")).await?;
    assert_eq!((status, err["error"]["code"].as_str()), (409, Some("last_owner")));
    let (status, err) = call(delete(&owner_url, &owner_tokens.access_token)).await?;
    assert_eq!((status, err["error"]["code"].as_str()), (409, Some("last_owner")));

    // A role change applies at the member's next request, on the token they already hold.
    assert_eq!(call(patch(&member(&admin), &owner_tokens.access_token, "viewer")).await?.0, 200);
    let r = platform.http.post(&members).bearer_auth(&admin_tokens.access_token);
    let (status, err) = call(r.json(&json!({"email": second, "role": "viewer"}))).await?;
    assert_eq!((status, err["error"]["code"].as_str()), (403, Some("forbidden")));

    // Removed: the access token they hold and their refresh token stop working at once.
    assert_eq!(call(delete(&member(&viewer), &owner_tokens.access_token)).await?.0, 204);
    let (status, err) = call(platform.http.get(&members).bearer_auth(&viewer_tokens.access_token)).await?;
    assert_eq!((status, err["error"]["code"].as_str()), (401, Some("membership_ended")));
    let r = platform.http.post(format!("{cp}/v1/sessions/refresh"));
    let (status, err) = call(r.json(&json!({"refresh_token": viewer_tokens.refresh_token}))).await?;
    assert_eq!((status, err["error"]["code"].as_str()), (401, Some("invalid_refresh_token")));
    assert_eq!(call(delete(&member(&viewer), &owner_tokens.access_token)).await?.0, 404, "removed already");
    // Any member may leave.
    assert_eq!(call(delete(&member(&admin), &admin_tokens.access_token)).await?.0, 204);

    // With a second owner, the first may step down.
    let r = platform.http.post(&members).bearer_auth(&owner_tokens.access_token);
    let (status, added) = call(r.json(&json!({"email": second, "role": "owner"}))).await?;
    assert_eq!(status, 201);
    assert_eq!(call(patch(&owner_url, &owner_tokens.access_token, "viewer")).await?.0, 200);
    let (status, list) = call(platform.http.get(&members).bearer_auth(&owner_tokens.access_token)).await?;
    assert_eq!(status, 200);
    let roles: Vec<(&str, &str)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| (m["account_id"].as_str().unwrap_or_default(), m["role"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(roles, [(owner_id.as_str(), "viewer"), (added["account_id"].as_str().unwrap_or_default(), "owner")]);

    // Every change is in the store's membership audit, by whom, from what, to what: owners
    // and admins read it, newest first; a viewer may not.
    let changes = format!("{members}/changes");
    let (status, err) = call(platform.http.get(&changes).bearer_auth(&owner_tokens.access_token)).await?;
    assert_eq!((status, err["error"]["code"].as_str()), (403, Some("forbidden")), "the old owner is a viewer now");
    let second_tokens = platform.login(&second, None).await?;
    let (status, audit) = call(platform.http.get(&changes).bearer_auth(&second_tokens.access_token)).await?;
    assert_eq!(status, 200, "{audit}");
    let audit: Vec<(&str, &str, &str, Option<&str>)> = audit["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let text = |field: &str| c[field].as_str().unwrap_or_default();
            (text("actor_account_id"), text("account_id"), text("from_role"), c["to_role"].as_str())
        })
        .collect();
    let (o, a, v) = (owner_id.as_str(), ids[&admin].as_str(), ids[&viewer].as_str());
    assert_eq!(
        audit,
        [
            (o, o, "owner", Some("viewer")),
            (a, a, "viewer", None),
            (o, v, "analyst", None),
            (o, a, "admin", Some("viewer")),
            (a, v, "viewer", Some("analyst")),
        ]
    );
    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_passwords_close_sign_in_for_that_address_for_a_while() -> anyhow::Result<()> {
    let platform = Platform::start_with(|cp, _| {
        cp.auth.sign_in_max_failures = 3;
        cp.auth.sign_in_window_seconds = 60;
    })
    .await?;
    let cp = &platform.control_plane_url;
    let (target, bystander) = (email("target"), email("bystander"));
    platform.sign_up_as("Acme", &[ORIGIN], &target).await?;
    platform.sign_up_as("Other", &["https://other.example.com"], &bystander).await?;
    let sign_in = |email: &str, password: &str| {
        platform.http.post(format!("{cp}/v1/sessions")).json(&json!({"email": email, "password": password}))
    };

    // A success clears the count: two failures, a success, two more, and it still signs in.
    for _ in 0..2 {
        assert_eq!(call(sign_in(&bystander, "wrong password 1")).await?.0, 401);
    }
    assert_eq!(call(sign_in(&bystander, PASSWORD)).await?.0, 200);
    for _ in 0..2 {
        assert_eq!(call(sign_in(&bystander, "wrong password 1")).await?.0, 401);
    }
    assert_eq!(call(sign_in(&bystander, PASSWORD)).await?.0, 200);

    // Three failures, in any spelling of the address: closed, the right password included.
    for spelling in [target.clone(), target.to_uppercase(), format!(" {target} ")] {
        let (status, err) = call(sign_in(&spelling, "wrong password 1")).await?;
        assert_eq!((status, err["error"]["code"].as_str()), (401, Some("invalid_credentials")));
    }
    let r = sign_in(&target, PASSWORD).send().await?;
    let retry_after: u64 =
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    let (status, body) = (r.status().as_u16(), r.json::<Value>().await?);
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_attempts")));
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    // Other addresses are not affected.
    assert_eq!(call(sign_in(&bystander, PASSWORD)).await?.0, 200);
    // An address with no account is counted the same way, so answers tell nothing apart;
    // attempts sent all at once are counted before any password is checked, so no more of
    // them than the limit get as far as a password check.
    let nobody = email("nobody");
    let answers = futures_util::future::join_all((0..8).map(|_| call(sign_in(&nobody, "wrong password 1")))).await;
    let mut statuses: Vec<u16> = answers.into_iter().map(|a| a.map(|(status, _)| status)).collect::<Result<_, _>>()?;
    statuses.sort_unstable();
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429, 429, 429]);
    platform.shutdown().await
}
