//! Announcements: a store's message to every page of its shop open now, across the cell's
//! gateway processes, and no other store's.

use std::time::Duration;

use nudge_contracts::push::PushMessage;
use nudge_data_plane_gateway::route::Naming;
use nudge_test_support::{Platform, ShopperSocket, unique_suffix};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ORIGIN: &str = "https://announce.example";

/// The announcement a socket receives next (skipping nothing: anything else fails).
async fn announcement(socket: &mut ShopperSocket) -> anyhow::Result<(String, String, String)> {
    match socket.next_message(Duration::from_secs(10)).await? {
        Some(PushMessage::Announcement(a)) => Ok((a.announcement_id, a.title, a.body)),
        other => anyhow::bail!("expected an announcement, got {other:?}"),
    }
}

/// Waits until `processes` gateway processes are subscribed to `tenant`'s channel.
async fn wait_subscribed(platform: &Platform, tenant: &str, processes: usize) -> anyhow::Result<()> {
    let naming = Naming::new(&platform.redis_prefix, &platform.cell_config.cell_id);
    let channel = naming.channel(&tenant.parse()?);
    let mut redis = redis::Client::open(platform.redis_url.as_str())?.get_multiplexed_async_connection().await?;
    let mut listening = 0;
    for _ in 0..100 {
        let counts: std::collections::HashMap<String, usize> =
            redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query_async(&mut redis).await?;
        listening = counts.get(&channel).copied().unwrap_or(0);
        if listening >= processes {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{listening} of {processes} gateway processes subscribed to {channel}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announcement_reaches_every_open_page_of_the_store_on_every_gateway_and_no_other_store() -> anyhow::Result<()>
{
    let platform = Platform::start().await?;
    let owner = format!("announcer-{}@example.com", unique_suffix());
    let store = platform.sign_up_as("Announce Co.", &[ORIGIN], &owner).await?;
    platform.wait_for_key(&store.publishable_key, ORIGIN).await?;
    let token = platform.login(&owner, None).await?.access_token;
    let other = platform.sign_up_ready("Quiet Co.", "https://quiet.example").await?;
    let second = platform.start_cell_process(|_| {}).await?;

    // Two tabs of one shopper on the first process, another shopper on the second, and a
    // shopper of another store (the same shopper id) on each.
    let key = &store.publishable_key;
    let mut tab1 = platform.connect_shopper(key, ORIGIN, "shp_one").await?;
    let mut tab2 = platform.connect_shopper(key, ORIGIN, "shp_one").await?;
    let (mut elsewhere, _) = platform.connect_shopper_at(&second.url, key, ORIGIN, "shp_two", None).await?;
    let mut foreign = platform.connect_shopper(&other.publishable_key, "https://quiet.example", "shp_one").await?;
    let (mut foreign_elsewhere, _) = platform
        .connect_shopper_at(&second.url, &other.publishable_key, "https://quiet.example", "shp_two", None)
        .await?;

    // A gateway process subscribes to a store's channel when its first socket of the store
    // opens; announcements are live only, so wait until both processes listen.
    wait_subscribed(&platform, &store.tenant_id, 2).await?;

    let announce = |token: &str, body: Value| {
        let request = platform
            .http
            .post(format!("{}/v1/announcements", platform.cell_url))
            .bearer_auth(token.to_owned())
            .json(&body);
        async move {
            let r = request.send().await?;
            let status = r.status();
            let retry_after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let body: Value = r.json().await.unwrap_or(Value::Null);
            anyhow::Ok((status, body, retry_after))
        }
    };
    let (status, sent, _) =
        announce(&token, json!({"title": "Free shipping today", "body": "On every order until midnight."})).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{sent}");
    let id = sent["announcement_id"].as_str().unwrap_or_default().to_owned();
    assert!(id.starts_with("ann_"), "{sent}");
    assert_eq!(sent["gateways"], json!(2), "both processes hold the store's sockets: {sent}");
    for socket in [&mut tab1, &mut tab2, &mut elsewhere] {
        let got = announcement(socket).await?;
        assert_eq!(got, (id.clone(), "Free shipping today".to_owned(), "On every order until midnight.".to_owned()));
    }
    for socket in [&mut foreign, &mut foreign_elsewhere] {
        let got = socket.next_message(Duration::from_millis(500)).await?;
        assert!(got.is_none(), "another store's pages see nothing: {got:?}");
    }

    // An announcement is kept in no history and acknowledging one moves no cursor: after a
    // test message acknowledged and an announcement "acknowledged" by a client that should
    // not, a reconnect replays only what came after the test message.
    let test = |shopper: &str| {
        let request = platform
            .http
            .post(format!("{}/v1/test-interventions", platform.cell_url))
            .bearer_auth(token.clone())
            .json(&json!({ "shopper_id": shopper }));
        async move {
            let r = request.send().await?;
            anyhow::ensure!(r.status() == StatusCode::ACCEPTED, "test message: {}", r.status());
            let body: Value = r.json().await?;
            anyhow::Ok(body["intervention_id"].as_str().unwrap_or_default().to_owned())
        }
    };
    let first = test("shp_two").await?;
    match elsewhere.next_message(Duration::from_secs(10)).await? {
        Some(PushMessage::Intervention(iv)) if iv.intervention_id == first => elsewhere.ack(&first).await?,
        other => anyhow::bail!("expected the test message, got {other:?}"),
    }
    // Acknowledgements are written in the background: wait until the test message's is.
    let mut replayed = usize::MAX;
    for _ in 0..100 {
        let (_probe, replaying) = platform.connect_shopper_at(&second.url, key, ORIGIN, "shp_two", None).await?;
        replayed = replaying;
        if replayed == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(replayed, 0, "the acknowledged test message is not replayed");
    let (status, sent, _) = announce(&token, json!({"title": "Last call", "body": "Ten minutes left."})).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{sent}");
    let (second_id, _, _) = announcement(&mut elsewhere).await?;
    elsewhere.ack(&second_id).await?;
    let next = test("shp_two").await?;
    match elsewhere.next_message(Duration::from_secs(10)).await? {
        Some(PushMessage::Intervention(iv)) if iv.intervention_id == next => {}
        other => anyhow::bail!("expected the second test message, got {other:?}"),
    }
    // By now the writer has had the announcement's acknowledgement for a whole round trip.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, replaying) = platform.connect_shopper_at(&second.url, key, ORIGIN, "shp_two", None).await?;
    assert_eq!(replaying, 1, "only the unacknowledged test message, not the announcement nor what came before");
    let (_, resumed) = platform.connect_shopper_at(&second.url, key, ORIGIN, "shp_two", Some(&second_id)).await?;
    assert_eq!(resumed, 2, "an announcement's id is in no history: a resume after it replays all that is kept");

    // Bad input, and who may announce.
    let (status, refused, _) = announce(&token, json!({"title": "  ", "body": "x"})).await?;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_text")));
    let (status, refused, _) = announce(&token, json!({"title": "t".repeat(121), "body": "x"})).await?;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_text")));
    let (status, refused, _) = announce(&token, json!({"title": "Only a title"})).await?;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("malformed_json")));
    let (status, refused, _) = announce(&token, json!({"title": "t", "body": "b", "shopper_id": "shp_one"})).await?;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("malformed_json")));
    let (status, refused, _) = announce(&store.secret_key, json!({"title": "t", "body": "b"})).await?;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("members_only")),
        "a server's key cannot push text to every shopper's page"
    );
    // None of the refused ones reached a page.
    let got = tab1.next_message(Duration::from_millis(300)).await?;
    assert!(matches!(got, Some(PushMessage::Announcement(ref a)) if a.announcement_id == second_id), "{got:?}");
    assert!(tab1.next_message(Duration::from_millis(300)).await?.is_none());

    // Ten an hour per store: two sent, eight more go, the eleventh waits.
    for n in 0..8 {
        let (status, sent, _) = announce(&token, json!({"title": format!("Deal {n}"), "body": "Today only."})).await?;
        assert_eq!(status, StatusCode::ACCEPTED, "{sent}");
    }
    let (status, limited, retry_after) = announce(&token, json!({"title": "One too many", "body": "x"})).await?;
    assert_eq!((status, limited["error"]["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")));
    let retry_after: u64 = retry_after.unwrap_or_default().parse()?;
    assert!((3000..=3600).contains(&retry_after), "the oldest leaves the window within the hour: {retry_after}");
    let other_owner_token = {
        let email = format!("quiet-{}@example.com", unique_suffix());
        let quiet = platform.sign_up_as("Quieter Co.", &["https://quieter.example"], &email).await?;
        platform.wait_for_key(&quiet.publishable_key, "https://quieter.example").await?;
        platform.login(&email, None).await?.access_token
    };
    let (status, sent, _) = announce(&other_owner_token, json!({"title": "Hello", "body": "Our own."})).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "another store's limit is its own: {sent}");

    second.terminate().await?;
    platform.shutdown().await
}
