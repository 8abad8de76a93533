//! Suppress first, then erase: a shopper put on the store's suppression list has their
//! events dropped and what the cell keeps about them in Redis — the feature session, the
//! idle-cart timer, the intervention history and acknowledged ids — deleted within seconds;
//! another shopper of the same store keeps theirs.

mod common;

use std::time::Duration;

use common::{ORIGIN, abandoning_session};
use nudge_contracts::{ShopperId, proto::interventions::v1::Intervention, push::PushMessage};
use nudge_data_plane_cell::erase::Places;
use nudge_data_plane_features::store::{SessionKey, SessionStore, idle_member};
use nudge_data_plane_gateway::{hub::ShopperAddress, route::Naming};
use nudge_test_support::{Platform, unique_suffix};
use redis::AsyncCommands;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suppressed_shoppers_data_is_erased_from_the_cell() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let owner = format!("owner-{}@example.com", unique_suffix());
    let store = platform.sign_up_as("Erasing Store", &[ORIGIN], &owner).await?;
    platform.wait_for_key(&store.publishable_key, ORIGIN).await?;
    let tokens = platform.login(&owner, None).await?;
    let tenant: nudge_tenants::TenantId = store.tenant_id.parse()?;

    let client = redis::Client::open(platform.redis_url.as_str())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let cell = &platform.cell_config.cell_id;
    let places = Places {
        prefix: platform.redis_prefix.clone(),
        naming: Naming::new(&platform.redis_prefix, cell),
        idle_schedule: SessionStore::new(client.get_connection_manager().await?, platform.redis_prefix.clone())
            .for_cell(cell)
            .idle_schedule()
            .to_owned(),
        channels: nudge_data_plane_channels::store::ChannelStore::new(
            client.get_connection_manager().await?,
            platform.redis_prefix.clone(),
            &cell.to_string(),
        ),
    };
    let publisher = platform.intervention_publisher().await?;
    let keys = |shopper: &str| places.keys_of(tenant, &ShopperId::parse(shopper).unwrap());
    let idle = |shopper: &str| idle_member(&SessionKey { tenant, shopper: ShopperId::parse(shopper).unwrap() });
    // The shopper to be erased has the page open: the intervention arrives and is acknowledged.
    let mut socket = platform.connect_shopper(&store.publishable_key, ORIGIN, "shp_gone").await?;
    for shopper in ["shp_gone", "shp_kept"] {
        let (browsing, _) = abandoning_session(shopper);
        assert_eq!(platform.post_events(&store.publishable_key, Some(ORIGIN), &browsing).await?.status(), 202);
        let to = ShopperAddress { tenant, shopper: ShopperId::parse(shopper)? };
        let iv = Intervention {
            intervention_id: format!("itv_{shopper}"),
            tenant_id: store.tenant_id.clone(),
            shopper_id: shopper.to_owned(),
            kind: "cart_reminder".into(),
            ..Default::default()
        };
        publisher.publish(&to, &iv).await?;
    }
    // The pipeline has written both shoppers' sessions.
    let mut stored = false;
    for _ in 0..200 {
        let [gone_session, ..] = keys("shp_gone");
        let [kept_session, ..] = keys("shp_kept");
        if redis.exists::<_, bool>(&gone_session).await? && redis.exists::<_, bool>(&kept_session).await? {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(stored, "the shoppers' sessions never reached Redis");
    loop {
        match socket.next_message(Duration::from_secs(10)).await? {
            Some(PushMessage::Intervention(iv)) => {
                socket.ack(&iv.intervention_id).await?;
                break;
            }
            Some(_) => {}
            None => anyhow::bail!("the intervention never arrived"),
        }
    }
    let [_, history, acked, ..] = keys("shp_gone");
    let mut seeded = false;
    for _ in 0..100 {
        if redis.exists::<_, bool>(&history).await?
            && redis.exists::<_, bool>(&acked).await?
            && redis.zscore::<_, _, Option<f64>>(&places.idle_schedule, idle("shp_gone")).await?.is_some()
        {
            seeded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(seeded, "a history, an acknowledgement and an idle-cart timer to erase");

    let response = platform
        .http
        .post(format!("{}/v1/tenants/{}/suppressions", platform.control_plane_url, store.tenant_id))
        .bearer_auth(&tokens.access_token)
        .json(&serde_json::json!({"shopper_id": "shp_gone", "reason": "opt_out"}))
        .send()
        .await?;
    assert_eq!(response.status(), 201, "{}", response.text().await?);

    let mut erased = false;
    for _ in 0..200 {
        let mut left = 0;
        for key in keys("shp_gone") {
            left += usize::from(redis.exists::<_, bool>(&key).await?);
        }
        left +=
            usize::from(redis.zscore::<_, _, Option<f64>>(&places.idle_schedule, idle("shp_gone")).await?.is_some());
        if left == 0 {
            erased = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(erased, "the suppressed shopper's session, idle-cart timer, history and acknowledgement are gone");
    let [kept_session, kept_history, ..] = keys("shp_kept");
    assert!(
        redis.exists::<_, bool>(&kept_session).await? && redis.exists::<_, bool>(&kept_history).await?,
        "the other shopper keeps theirs"
    );

    // Their new events are dropped, so nothing comes back: a batch with a new shopper's
    // event shows the pipeline has worked past theirs.
    let again = serde_json::json!({"events": [
        {"event_id": "after", "type": "page_view", "shopper_id": "shp_gone"},
        {"event_id": "marker", "type": "page_view", "shopper_id": "shp_new"},
    ]});
    assert_eq!(platform.post_events(&store.publishable_key, Some(ORIGIN), &again).await?.status(), 202);
    let [new_session, ..] = keys("shp_new");
    let mut worked_past = false;
    for _ in 0..200 {
        if redis.exists::<_, bool>(&new_session).await? {
            worked_past = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(worked_past, "the marker event was never applied");
    let [gone_session, ..] = keys("shp_gone");
    assert!(!redis.exists::<_, bool>(&gone_session).await?, "no new session for a suppressed shopper");
    platform.shutdown().await
}

/// An export key of `store` (`shoppers:export`), once the cell knows it.
async fn export_key(platform: &Platform, tenant_id: &str, access_token: &str) -> anyhow::Result<String> {
    let created: serde_json::Value = platform
        .http
        .post(format!("{}/v1/tenants/{tenant_id}/api-keys", platform.control_plane_url))
        .bearer_auth(access_token)
        .json(&serde_json::json!({"name": "privacy requests", "scopes": ["shoppers:export"]}))
        .send()
        .await?
        .json()
        .await?;
    let secret = created["secret_key"].as_str().ok_or_else(|| anyhow::anyhow!("no key in {created}"))?.to_owned();
    for _ in 0..200 {
        if export(platform, &secret, "shp_probe").await?.0 != 401 {
            return Ok(secret);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the cell never learned the export key")
}

async fn export(platform: &Platform, key: &str, shopper: &str) -> anyhow::Result<(u16, serde_json::Value)> {
    let response = platform
        .http
        .get(format!("{}/v1/shoppers/{shopper}/export", platform.cell_url))
        .bearer_auth(key)
        .send()
        .await?;
    Ok((response.status().as_u16(), response.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shoppers_data_exports_as_json_to_their_store_only() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let (owner_a, owner_b) =
        (format!("a-{}@example.com", unique_suffix()), format!("b-{}@example.com", unique_suffix()));
    let a = platform.sign_up_as("Store A", &[ORIGIN], &owner_a).await?;
    let b = platform.sign_up_as("Store B", &["https://b.example.com"], &owner_b).await?;
    platform.wait_for_key(&a.publishable_key, ORIGIN).await?;
    let tokens_a = platform.login(&owner_a, None).await?;
    let tokens_b = platform.login(&owner_b, None).await?;
    let key_a = export_key(&platform, &a.tenant_id, &tokens_a.access_token).await?;
    let key_b = export_key(&platform, &b.tenant_id, &tokens_b.access_token).await?;

    // The shopper browses and logs in; the store sends the hash of their e-mail address.
    let email = "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514";
    let (mut browsing, _) = abandoning_session("shp_x");
    browsing["events"].as_array_mut().expect("events").push(serde_json::json!({
        "event_id": "identify-x",
        "type": "identify",
        "shopper_id": "shp_x",
        "properties": { "customer_ref": "c-42", "email_sha256": email },
    }));
    assert_eq!(platform.post_events(&a.publishable_key, Some(ORIGIN), &browsing).await?.status(), 202);
    let publisher = platform.intervention_publisher().await?;
    let tenant: nudge_tenants::TenantId = a.tenant_id.parse()?;
    let iv = Intervention {
        intervention_id: "itv_export".into(),
        tenant_id: a.tenant_id.clone(),
        shopper_id: "shp_x".into(),
        kind: "cart_reminder".into(),
        ..Default::default()
    };
    publisher.publish(&ShopperAddress { tenant, shopper: ShopperId::parse("shp_x")? }, &iv).await?;

    let mut exported = serde_json::Value::Null;
    for _ in 0..200 {
        let (status, body) = export(&platform, &key_a, "shp_x").await?;
        if status == 200 && body["session"].is_object() && body["email_links"] != serde_json::json!([]) {
            exported = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(exported["tenant_id"], a.tenant_id.as_str(), "{exported}");
    assert_eq!(exported["suppressed"], false);
    assert!(exported["session"].as_object().is_some_and(|s| !s.is_empty()), "the stored fields: {exported}");
    assert_eq!(exported["interventions"][0]["intervention_id"], "itv_export", "{exported}");
    let link = nudge_contracts::email_digest(tenant.as_uuid(), email);
    assert_eq!(exported["email_links"], serde_json::json!([link]), "{exported}");
    assert!(!exported.to_string().contains(email), "the store's hash is not kept: {exported}");
    assert!(exported["not_included"].as_array().is_some_and(|n| !n.is_empty()));

    // Another store asking for the same shopper id gets its own (none): never A's data.
    let (status, body) = export(&platform, &key_b, "shp_x").await?;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("shopper_not_found")));
    // A key without the scope is refused.
    let (status, body) = export(&platform, &a.secret_key, "shp_x").await?;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("missing_scope")));

    // After suppression the export says so, and holds nothing else.
    let response = platform
        .http
        .post(format!("{}/v1/tenants/{}/suppressions", platform.control_plane_url, a.tenant_id))
        .bearer_auth(&tokens_a.access_token)
        .json(&serde_json::json!({"shopper_id": "shp_x", "reason": "opt_out"}))
        .send()
        .await?;
    assert_eq!(response.status(), 201);
    let mut emptied = serde_json::Value::Null;
    for _ in 0..200 {
        let (status, body) = export(&platform, &key_a, "shp_x").await?;
        if status == 200
            && body["suppressed"] == true
            && body["session"].is_null()
            && body["interventions"] == serde_json::json!([])
            && body["email_links"] == serde_json::json!([])
        {
            emptied = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(emptied["suppressed"], true, "the export after erasure: {emptied}");
    platform.shutdown().await
}
