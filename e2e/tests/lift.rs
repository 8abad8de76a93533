//! The lift report against a known effect: 20,000 simulated shoppers meet a campaign with a
//! 10 % control group; each is decided for as the cell decides (the same function, the same
//! stable hash) and assigned to their arm in the cell's Redis the way the pipeline does,
//! and 6 % of the untreated buy against 8 % of the treated (a true lift of two points, and of
//! 2.00 in revenue per shopper at 100.00 an order). The buyers are spread evenly through
//! each arm rather than drawn, so the effect in the sample is the true one whatever ids
//! the store and campaign get (a drawn sample misses a 95 % interval one run in twenty;
//! the intervals' coverage over many drawn stores is `nudge_campaigns::lift`'s test). The
//! report the cell serves (`GET /v1/lift`) must hold the true effect inside its intervals,
//! count every shopper once, and no control shopper may have been sent anything.

mod common;

use std::sync::Arc;

use common::ORIGIN;
use futures_util::future::try_join_all;
use nudge_campaigns::model::CampaignSpec;
use nudge_contracts::proto::events::v1::{Event, ExitIntent, event::Payload};
use nudge_data_plane_channels::outcomes::{ArmName, OutcomeStore, STORE};
use nudge_data_plane_decide::campaigns::{ActiveCampaign, CampaignDecision, ShopperMoment, decide_campaigns};
use nudge_data_plane_features::{SessionState, definitions::DEFAULT_VECTOR};
use nudge_test_support::{Platform, unique_suffix};
use serde_json::{Value, json};

const SHOPPERS: usize = 20_000;
const WEEK_MS: i64 = 7 * 86_400_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reported_lift_holds_the_true_effect_and_control_gets_nothing() -> anyhow::Result<()> {
    let platform = Platform::start().await?;
    let owner = format!("owner-{}@example.com", unique_suffix());
    let store = platform.sign_up_as("Measured", &[ORIGIN], &owner).await?;
    platform.wait_for_key(&store.publishable_key, ORIGIN).await?;
    let token = platform.login(&owner, None).await?.access_token;
    let spec = json!({
        "name": "Exit rescue", "trigger": { "type": "exit_intent" }, "control_percent": 10,
        "variants": [{ "name": "a", "weight": 100, "messages": [
            { "channel": "on_site", "kind": "reminder", "title": "Still there?", "body": "Saved for you." }]}],
    });
    let created: Value = platform
        .http
        .post(format!("{}/v1/tenants/{}/campaigns", platform.control_plane_url, store.tenant_id))
        .bearer_auth(&token)
        .json(&spec)
        .send()
        .await?
        .json()
        .await?;
    let campaign_id = created["campaign_id"].as_str().expect("a campaign id").to_owned();
    let spec: CampaignSpec = serde_json::from_value(spec)?;
    let campaign = Arc::new(ActiveCampaign::new(&campaign_id, 1, 1, &spec).map_err(anyhow::Error::msg)?);
    let reader = platform.create_secret_key(&owner, &store.tenant_id, &["reports:read"]).await?;

    let redis = redis::Client::open(platform.redis_url.as_str())?.get_connection_manager().await?;
    let outcomes = OutcomeStore::new(redis, platform.redis_prefix.clone());
    let tenant: nudge_tenants::TenantId = store.tenant_id.parse()?;
    let session = SessionState { cart_items: 2, ..Default::default() };
    let exit = Event { occurred_at_ms: 1, payload: Some(Payload::ExitIntent(ExitIntent {})), ..Default::default() };
    let now = chrono::Utc::now().timestamp_millis();

    // 2 of every 25 treated shoppers buy, 3 of every 50 held back.
    let (mut treated_seen, mut control_seen) = (0usize, 0usize);
    let mut plans = Vec::with_capacity(SHOPPERS);
    for n in 0..SHOPPERS {
        let shopper = format!("shp_sim_{n}");
        let moment = ShopperMoment {
            tenant: &store.tenant_id,
            shopper: &shopper,
            event: &exit,
            session: &session,
            features: &DEFAULT_VECTOR,
            score: 0.7,
        };
        let arm = match decide_campaigns(std::slice::from_ref(&campaign), &moment, 0, 0) {
            CampaignDecision::Send(send) => {
                assert!(send.on_site.is_some());
                ArmName::Treated
            }
            CampaignDecision::Control { .. } => ArmName::Control,
            other => panic!("shopper {n}: {other:?}"),
        };
        let buys = if arm == ArmName::Treated {
            treated_seen += 1;
            treated_seen % 25 < 2
        } else {
            control_seen += 1;
            control_seen % 50 < 3
        };
        plans.push((shopper, arm, buys));
    }
    // Into the cell's Redis as the pipeline writes them, 200 shoppers at a time.
    for chunk in plans.chunks(200) {
        try_join_all(chunk.iter().map(|(shopper, arm, buys)| {
            let (outcomes, campaign_id) = (&outcomes, &campaign_id);
            async move {
                outcomes.assign(tenant, shopper, campaign_id, *arm, now, WEEK_MS).await?;
                outcomes.assign(tenant, shopper, STORE, ArmName::Treated, now, WEEK_MS).await?;
                // Assigned again at a later moment: still one shopper.
                outcomes.assign(tenant, shopper, campaign_id, *arm, now + 1_000, WEEK_MS).await?;
                if *buys {
                    let order = format!("{shopper}-order");
                    outcomes.purchase(tenant, shopper, &order, 10_000, "EUR", now + 60_000, WEEK_MS).await?;
                    // The same purchase applied again (a replayed step) counts once.
                    outcomes.purchase(tenant, shopper, &order, 10_000, "EUR", now + 60_000, WEEK_MS).await?;
                }
                Ok::<_, anyhow::Error>(())
            }
        }))
        .await?;
    }

    let report = read_report(&platform, &format!("campaign_id={campaign_id}"), &reader).await?;
    let shoppers = |arm: &str| report[arm]["shoppers"].as_u64().unwrap_or_default();
    assert_eq!(shoppers("treated") + shoppers("control"), SHOPPERS as u64, "{report}");
    let control_share = shoppers("control") as f64 / SHOPPERS as f64;
    assert!((control_share - 0.10).abs() < 0.02, "control share {control_share}");
    let bought: u64 = plans.iter().filter(|(_, _, b)| *b).count() as u64;
    assert_eq!(
        report["treated"]["converted"].as_u64().unwrap_or(0) + report["control"]["converted"].as_u64().unwrap_or(0),
        bought
    );
    let lift = &report["lift"];
    assert_eq!(lift["against"], "control");
    let holds = |e: &Value, truth: f64| {
        e["low"].as_f64().unwrap_or(f64::NAN) <= truth && truth <= e["high"].as_f64().unwrap_or(f64::NAN)
    };
    assert!(holds(&lift["conversion"], 0.02), "{report}");
    assert!(holds(&lift["revenue_per_shopper_minor"], 200.0), "{report}");
    println!(
        "lift over {SHOPPERS} shoppers: conversion {:.4} [{:.4}, {:.4}] (true 0.02), revenue per shopper {:.1} [{:.1}, {:.1}] minor units (true 200)",
        lift["conversion"]["value"].as_f64().unwrap_or_default(),
        lift["conversion"]["low"].as_f64().unwrap_or_default(),
        lift["conversion"]["high"].as_f64().unwrap_or_default(),
        lift["revenue_per_shopper_minor"]["value"].as_f64().unwrap_or_default(),
        lift["revenue_per_shopper_minor"]["low"].as_f64().unwrap_or_default(),
        lift["revenue_per_shopper_minor"]["high"].as_f64().unwrap_or_default(),
    );

    assert_eq!(report["currencies"], json!(["EUR"]), "{report}");
    // A purchase in another currency: it converts, but its amount does not add to euros, so
    // the report names both currencies and gives no revenue lift (the conversion lift stays).
    outcomes.assign(tenant, "shp_dollars", &campaign_id, ArmName::Treated, now, WEEK_MS).await?;
    outcomes.purchase(tenant, "shp_dollars", "dollars-order", 5_000, "USD", now + 60_000, WEEK_MS).await?;
    let mixed = read_report(&platform, &format!("campaign_id={campaign_id}"), &reader).await?;
    assert_eq!(mixed["currencies"], json!(["EUR", "USD"]), "{mixed}");
    assert!(mixed["lift"].get("revenue_per_shopper_minor").is_none(), "{mixed}");
    assert!(mixed["lift"]["conversion"]["value"].is_number(), "{mixed}");
    assert_eq!(
        mixed["treated"]["converted"].as_u64(),
        report["treated"]["converted"].as_u64().map(|n| n + 1),
        "the dollar purchase converts"
    );

    // The store as a whole: every shopper treated, no holdout yet, so no lift to show.
    let store_report = read_report(&platform, "", &reader).await?;
    assert_eq!(store_report["treated"]["shoppers"], SHOPPERS as u64);
    assert_eq!(store_report["lift"], Value::Null);
    // Another store reading the same campaign id sees nothing of this one's.
    let other_owner = format!("other-{}@example.com", unique_suffix());
    let other = platform.sign_up_as("Other", &["https://other.example.com"], &other_owner).await?;
    let other_reader = platform.create_secret_key(&other_owner, &other.tenant_id, &["reports:read"]).await?;
    let theirs = read_report(&platform, &format!("campaign_id={campaign_id}"), &other_reader).await?;
    assert_eq!(theirs["treated"]["shoppers"], 0, "{theirs}");
    let bad = platform
        .http
        .get(format!("{}/v1/lift?campaign_id=nope", platform.cell_url))
        .bearer_auth(&reader)
        .send()
        .await?;
    assert_eq!(bad.status(), 422);
    platform.shutdown().await
}

/// `GET /v1/lift?{query}` with `key`, once the cell knows the key (moments after it is made).
async fn read_report(platform: &Platform, query: &str, key: &str) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = platform.http.get(format!("{}/v1/lift?{query}", platform.cell_url)).bearer_auth(key).send().await?;
        if r.status() == 200 {
            return Ok(r.json().await?);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the report answered {}", r.status());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
