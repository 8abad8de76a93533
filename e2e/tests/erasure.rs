//! Suppress first, then erase: a shopper put on the store's suppression list has their
//! events dropped at ingest and what the cell keeps about them in Redis — the feature
//! session, the intervention history and acknowledged ids — deleted within seconds; another
//! shopper of the same store keeps theirs.

mod common;

use std::time::Duration;

use common::{ORIGIN, abandoning_session};
use nudge_contracts::{ShopperId, proto::interventions::v1::Intervention};
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

    let mut redis = redis::Client::open(platform.redis_url.as_str())?.get_multiplexed_async_connection().await?;
    let naming = Naming::new(&platform.redis_prefix, &platform.cell_config.cell_id);
    let publisher = platform.intervention_publisher().await?;
    let keys = |shopper: &str| {
        nudge_data_plane_cell::erase::keys_of(
            &platform.redis_prefix,
            &naming,
            tenant,
            ShopperId::parse(shopper).unwrap(),
        )
    };
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
        let [gone_session, _, _] = keys("shp_gone");
        let [kept_session, _, _] = keys("shp_kept");
        if redis.exists::<_, bool>(&gone_session).await? && redis.exists::<_, bool>(&kept_session).await? {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(stored, "the shoppers' sessions never reached Redis");
    let [_, history, _] = keys("shp_gone");
    assert!(redis.exists::<_, bool>(&history).await?, "a history to erase");

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
        if left == 0 {
            erased = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(erased, "the suppressed shopper's session, history and acks are gone");
    let [kept_session, kept_history, _] = keys("shp_kept");
    assert!(
        redis.exists::<_, bool>(&kept_session).await? && redis.exists::<_, bool>(&kept_history).await?,
        "the other shopper keeps theirs"
    );

    // Their new events are dropped at ingest, so nothing comes back.
    let again = serde_json::json!({"events": [{"event_id": "after", "type": "page_view", "shopper_id": "shp_gone"}]});
    assert_eq!(platform.post_events(&store.publishable_key, Some(ORIGIN), &again).await?.status(), 202);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let [gone_session, _, _] = keys("shp_gone");
    assert!(!redis.exists::<_, bool>(&gone_session).await?, "no new session for a suppressed shopper");
    platform.shutdown().await
}
