//! Every store route, called by a member of one store with another store's ids, answers 404
//! with no data. The routes come from the OpenAPI document, so a new route is covered
//! without anyone editing this test.

use nudge_test_support::{Platform, unique_suffix};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_stores_ids_answer_404_on_every_route() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let cp = &platform.control_plane_url;
    let (a_email, b_email) =
        (format!("a-{}@example.com", unique_suffix()), format!("b-{}@example.com", unique_suffix()));
    let a = platform.sign_up_as("Store A", &["https://a.example.com"], &a_email).await?;
    let b = platform.sign_up_as("Store B secret name", &["https://b.example.com"], &b_email).await?;
    let a_tokens = platform.login(&a_email, None).await?;
    let b_tokens = platform.login(&b_email, None).await?;

    // B has a key of its own, whose id A will try.
    let b_key: Value = platform
        .http
        .post(format!("{cp}/v1/tenants/{}/api-keys", b.tenant_id))
        .bearer_auth(&b_tokens.access_token)
        .json(&json!({"name": "b server", "scopes": ["events:write"]}))
        .send()
        .await?
        .json()
        .await?;
    let b_key_id = b_key["key"]["key_id"].as_str().unwrap_or_default().to_owned();

    let doc: Value = platform.http.get(format!("{cp}/v1/openapi.json")).send().await?.json().await?;
    let mut checked = 0;
    for (path, methods) in doc["paths"].as_object().expect("paths") {
        if !path.starts_with("/v1/tenants/{tenant_id}") {
            continue;
        }
        for method in methods.as_object().expect("methods").keys() {
            let url = format!("{cp}{}", path.replace("{tenant_id}", &b.tenant_id).replace("{key_id}", &b_key_id));
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())?;
            let body = json!({"name": "x", "scopes": ["events:write"], "email": a_email, "role": "viewer"});
            let r = platform.http.request(m, &url).bearer_auth(&a_tokens.access_token).json(&body).send().await?;
            let status = r.status().as_u16();
            let text = r.text().await?;
            assert_eq!(status, 404, "{method} {path} with B's ids answered {status}: {text}");
            for secret in [b.tenant_id.as_str(), "Store B secret name", b_email.as_str(), b.publishable_key.as_str()] {
                assert!(!text.contains(secret), "{method} {path} leaked {secret}: {text}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} routes checked");

    // A's own path with B's key id: here the tenant filter and row-level security are what
    // protect B.
    let r = platform
        .http
        .delete(format!("{cp}/v1/tenants/{}/api-keys/{b_key_id}", a.tenant_id))
        .bearer_auth(&a_tokens.access_token)
        .send()
        .await?;
    assert_eq!(r.status(), 404);

    // Nothing of B changed: its key still exists, its members are its own.
    let members: Value = platform
        .http
        .get(format!("{cp}/v1/tenants/{}/members", b.tenant_id))
        .bearer_auth(&b_tokens.access_token)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(members["items"].as_array().map(Vec::len), Some(1));
    let keys = platform
        .http
        .get(format!("{cp}/v1/tenants/{}/api-keys", b.tenant_id))
        .bearer_auth(&b_tokens.access_token)
        .send()
        .await?
        .text()
        .await?;
    assert!(keys.contains(&b_key_id) && !keys.contains("\"revoked_at\":\"20"), "{keys}");
    platform.shutdown().await
}
