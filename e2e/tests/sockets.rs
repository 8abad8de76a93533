//! Shopper sockets across gateway processes: session tokens and close codes, routing from a
//! separate decision process, per-tenant subscriptions, usage (deliveries and connections
//! over every gateway), resume without loss or repeats, and a drain that moves thousands of
//! sockets to another gateway.

mod common;

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::{SinkExt, StreamExt, stream};
use nudge_contracts::{
    proto::interventions::v1::Intervention,
    push::{ClientMessage, PushMessage},
};
use nudge_data_plane_cell::config::Roles;
use nudge_data_plane_gateway::{hub::ShopperAddress, route::InterventionPublisher};
use nudge_test_support::{OPERATOR_TOKEN, Platform, ShopperSocket};
use tokio_tungstenite::tungstenite::{
    Message,
    client::IntoClientRequest,
    http::HeaderValue,
    protocol::{CloseFrame, WebSocketConfig},
};

use common::{ORIGIN, abandoning_session};

const ORIGIN_B: &str = "https://other.example.com";
const GATEWAY_ONLY: Roles = Roles { ingest: false, pipeline: false, gateway: true };

fn intervention(tenant: &str, shopper: &str, id: &str) -> Intervention {
    Intervention {
        intervention_id: id.to_owned(),
        tenant_id: tenant.to_owned(),
        shopper_id: shopper.to_owned(),
        kind: "cart_reminder".into(),
        title: "Still thinking it over?".into(),
        body: "Your cart is saved.".into(),
        decided_at_ms: chrono::Utc::now().timestamp_millis(),
        ..Default::default()
    }
}

async fn publish(publisher: &InterventionPublisher, tenant: &str, shopper: &str, id: &str) -> anyhow::Result<()> {
    let to = ShopperAddress { tenant: tenant.parse()?, shopper: nudge_contracts::ShopperId::parse(shopper)? };
    publisher.publish(&to, &intervention(tenant, shopper, id)).await?;
    Ok(())
}

async fn intervention_id(socket: &mut ShopperSocket, wait: Duration) -> anyhow::Result<String> {
    match socket.next_message(wait).await? {
        Some(PushMessage::Intervention(iv)) => Ok(iv.intervention_id),
        other => anyhow::bail!("expected an intervention, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_frames_and_origins_get_their_codes() -> anyhow::Result<()> {
    let platform = Platform::start_with(|_, cell| cell.sessions.ttl_secs = 2).await?;
    let a = platform.sign_up_ready("Acme", ORIGIN).await?;
    let b = platform.sign_up_ready("Other", ORIGIN_B).await?;
    let (key, base) = (a.publishable_key.as_str(), platform.cell_url.as_str());
    let close = |code: u16, reason: &str| Some((code, reason.to_owned()));
    let wait = Duration::from_secs(5);

    let mut s = ShopperSocket::open(base, &format!("key={key}"), ORIGIN).await?;
    assert_eq!(s.close_frame(wait).await?, close(4001, "session_token_missing"));
    let mut s = ShopperSocket::open(base, &format!("key={key}&token=forged"), ORIGIN).await?;
    assert_eq!(s.close_frame(wait).await?, close(4002, "session_token_invalid"));
    // A token for another store's shopper, with this store's key: refused, so no store can
    // listen to another's shoppers.
    let theirs = platform.session_token(&b.publishable_key, ORIGIN_B, "shp_1").await?;
    let mut s = ShopperSocket::open(base, &format!("key={key}&token={theirs}"), ORIGIN).await?;
    assert_eq!(s.close_frame(wait).await?, close(4006, "session_token_foreign"));
    let stale = platform.session_token(key, ORIGIN, "shp_1").await?;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let mut s = ShopperSocket::open(base, &format!("key={key}&token={stale}"), ORIGIN).await?;
    assert_eq!(s.close_frame(wait).await?, close(4005, "session_token_expired"));

    // A bad Origin is refused at the upgrade, before any token is looked at.
    let token = platform.session_token(key, ORIGIN, "shp_1").await?;
    let r = platform.upgrade_request(base, &format!("key={key}&token={token}"), "https://evil.example.com").await?;
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<serde_json::Value>().await?["error"]["code"], "origin_not_allowed");
    // Session tokens are issued only with an allowed Origin too.
    let r = platform
        .http
        .post(format!("{base}/v1/sessions"))
        .bearer_auth(key)
        .header("Origin", "https://evil.example.com")
        .json(&serde_json::json!({"shopper_id": "shp_1"}))
        .send()
        .await?;
    assert_eq!(r.status(), 403);
    let r = platform
        .http
        .post(format!("{base}/v1/sessions"))
        .bearer_auth(key)
        .header("Origin", ORIGIN)
        .json(&serde_json::json!({"shopper_id": "not a shopper"}))
        .send()
        .await?;
    assert_eq!(r.status(), 422);

    // One shopper id holds at most 8 sockets per process, whatever the store's cap.
    let mut tabs = Vec::new();
    for _ in 0..8 {
        tabs.push(platform.connect_shopper(key, ORIGIN, "shp_tabs").await?);
    }
    let token = platform.session_token(key, ORIGIN, "shp_tabs").await?;
    let r = platform.upgrade_request(base, &format!("key={key}&token={token}"), ORIGIN).await?;
    assert_eq!(r.status(), 429);
    assert_eq!(r.json::<serde_json::Value>().await?["error"]["code"], "shopper_connection_limit");
    drop(tabs);

    // Frames: over 4 KiB → 1009; not a known message → 1008.
    let mut s = platform.connect_shopper(key, ORIGIN, "shp_1").await?;
    s.send(Message::Text("x".repeat(5000).into())).await?;
    assert_eq!(s.close_frame(wait).await?.map(|c| c.0), Some(1009));
    let mut s = platform.connect_shopper(key, ORIGIN, "shp_1").await?;
    s.send(Message::Text("{\"type\": \"subscribe\", \"shopper_id\": \"shp_2\"}".into())).await?;
    assert_eq!(s.close_frame(wait).await?, close(1008, "invalid_message"));
    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interventions_decided_anywhere_reach_sockets_on_either_gateway() -> anyhow::Result<()> {
    // The platform's cell ingests and decides but holds no sockets; two gateways hold them.
    let platform = Platform::start_with(|_, cell| {
        cell.roles.gateway = false;
        cell.usage.interval_ms = 300;
        cell.usage.connection_sample_ms = 1_000;
    })
    .await?;
    let g1 = platform.start_cell_process(|c| c.roles = GATEWAY_ONLY).await?;
    let g2 = platform.start_cell_process(|c| c.roles = GATEWAY_ONLY).await?;
    let owner = format!("owner-{}@example.com", nudge_test_support::unique_suffix());
    let a = platform.sign_up_as("Acme", &[ORIGIN], &owner).await?;
    platform.wait_for_key(&a.publishable_key, ORIGIN).await?;
    let b = platform.sign_up_ready("Other", ORIGIN_B).await?;
    let key = a.publishable_key.as_str();

    let (mut on_g1, _) = platform.connect_shopper_at(&g1.url, key, ORIGIN, "shp_1", None).await?;
    let (mut on_g2, _) = platform.connect_shopper_at(&g2.url, key, ORIGIN, "shp_2", None).await?;
    // One shopper with a tab on each gateway.
    let (mut tab_g1, _) = platform.connect_shopper_at(&g1.url, key, ORIGIN, "shp_3", None).await?;
    let (mut tab_g2, _) = platform.connect_shopper_at(&g2.url, key, ORIGIN, "shp_3", None).await?;
    let (_other_store, _) = platform.connect_shopper_at(&g1.url, &b.publishable_key, ORIGIN_B, "shp_1", None).await?;

    // Each gateway subscribes once per tenant it holds sockets for, not once per shopper.
    let client = redis::Client::open(platform.redis_url.as_str())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let channel = |tenant: &str| {
        format!("{}cell:{}:t:{tenant}:interventions", platform.redis_prefix, platform.cell_config.cell_id)
    };
    let subscriptions = redis.clone();
    let numsub = |tenant: String| {
        let mut redis = subscriptions.clone();
        async move {
            let counts: Vec<(String, usize)> =
                redis::cmd("PUBSUB").arg("NUMSUB").arg(&tenant).query_async(&mut redis).await?;
            anyhow::Ok(counts[0].1)
        }
    };
    let channels: Vec<String> =
        redis::cmd("PUBSUB").arg("CHANNELS").arg(format!("{}*", platform.redis_prefix)).query_async(&mut redis).await?;
    assert_eq!(channels.len(), 2, "one channel per tenant: {channels:?}");
    assert_eq!(numsub(channel(&a.tenant_id)).await?, 2, "both gateways hold the tenant");
    assert_eq!(numsub(channel(&b.tenant_id)).await?, 1, "only g1 holds the other store");

    for shopper in ["shp_1", "shp_2", "shp_3"] {
        let (browsing, exit) = abandoning_session(shopper);
        assert_eq!(platform.post_events(key, Some(ORIGIN), &browsing).await?.status(), 202);
        assert_eq!(platform.post_events(key, Some(ORIGIN), &exit).await?.status(), 202);
    }
    let wait = Duration::from_secs(30);
    let first = intervention_id(&mut on_g1, wait).await?;
    let second = intervention_id(&mut on_g2, wait).await?;
    let third = intervention_id(&mut tab_g1, wait).await?;
    assert_eq!(intervention_id(&mut tab_g2, wait).await?, third, "both tabs get the same intervention");
    assert_eq!(HashSet::from([&first, &second, &third]).len(), 3);
    assert!(on_g1.next_message(Duration::from_millis(300)).await?.is_none(), "nothing for anyone else");

    // The browsers acknowledge: each intervention is delivered once, however many tabs
    // acknowledged it; an id a socket was never sent counts nothing. The store's usage has
    // the sockets it held at once over both gateways (two on each).
    on_g1.ack(&first).await?;
    on_g1.ack("itv_never_sent").await?;
    on_g2.ack(&second).await?;
    tab_g1.ack(&third).await?;
    tab_g2.ack(&third).await?;
    let token = platform.login(&owner, None).await?.access_token;
    let usage_of = |token: String| {
        let url = format!("{}/v1/tenants/{}/usage", platform.control_plane_url, a.tenant_id);
        let http = platform.http.clone();
        async move {
            let response = http.get(url).bearer_auth(token).send().await?;
            anyhow::ensure!(response.status() == 200, "usage answered {}", response.status());
            anyhow::Ok(response.json::<serde_json::Value>().await?)
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let usage = loop {
        let usage = usage_of(token.clone()).await?;
        if usage["interventions"].as_i64() >= Some(3) && usage["peak_connections"].as_i64() >= Some(4) {
            break usage;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "usage never showed the deliveries: {usage}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(usage["interventions"], 3, "{usage}");
    assert_eq!(usage["peak_connections"], 4, "{usage}");
    // Reports keep coming (every 300 ms) and change neither.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let later = usage_of(token.clone()).await?;
    assert_eq!((later["interventions"].as_i64(), later["peak_connections"].as_i64()), (Some(3), Some(4)), "{later}");

    // The last socket of a tenant on a gateway ends that gateway's subscription.
    drop((on_g2, tab_g2));
    let mut unsubscribed = false;
    for _ in 0..50 {
        if numsub(channel(&a.tenant_id)).await? == 1 {
            unsubscribed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(unsubscribed, "g2 unsubscribed once its sockets of the tenant closed");
    drop((g1, g2));
    platform.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_resumes_with_nothing_lost_or_repeated() -> anyhow::Result<()> {
    let platform = Platform::start_with(|_, cell| cell.gateway.history.max_per_shopper = 100).await?;
    let a = platform.sign_up_ready("Acme", ORIGIN).await?;
    let (key, tenant, shopper) = (a.publishable_key.clone(), a.tenant_id.clone(), "shp_resume");
    let publisher = platform.intervention_publisher().await?;
    let ids: Vec<String> = (0..40).map(|i| format!("itv_resume_{i:02}")).collect();

    let (mut socket, _) = platform.connect_shopper_at(&platform.cell_url, &key, ORIGIN, shopper, None).await?;
    // Decisions keep coming while the shopper's connection drops and comes back.
    let publishing = {
        let (publisher, tenant, ids) = (publisher.clone(), tenant.clone(), ids.clone());
        tokio::spawn(async move {
            for id in &ids {
                publish(&publisher, &tenant, shopper, id).await?;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            anyhow::Ok(())
        })
    };
    let mut received = Vec::new();
    while received.len() < 10 {
        let id = intervention_id(&mut socket, Duration::from_secs(10)).await?;
        socket.ack(&id).await?;
        received.push(id);
    }
    drop(socket); // the network goes away: no close handshake
    tokio::time::sleep(Duration::from_millis(100)).await;
    let last = received.last().cloned();
    let (mut socket, replaying) =
        platform.connect_shopper_at(&platform.cell_url, &key, ORIGIN, shopper, last.as_deref()).await?;
    assert!(replaying > 0, "what was published meanwhile is replayed");
    let mut shown: Vec<String> = received.clone();
    let mut seen: HashSet<String> = received.into_iter().collect();
    while shown.len() < ids.len() {
        let id = intervention_id(&mut socket, Duration::from_secs(10)).await?;
        socket.ack(&id).await?;
        // The snippet's dedup: show each id once.
        if seen.insert(id.clone()) {
            shown.push(id);
        }
    }
    publishing.await??;
    assert_eq!(shown, ids, "every intervention, once, in order");
    assert!(socket.next_message(Duration::from_millis(300)).await?.is_none(), "nothing more");

    // Acknowledgements are remembered: a new page without a last id replays nothing seen.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(socket);
    let (_fresh, replaying) = platform.connect_shopper_at(&platform.cell_url, &key, ORIGIN, shopper, None).await?;
    assert_eq!(replaying, 0);
    let (_tab, replaying) =
        platform.connect_shopper_at(&platform.cell_url, &key, ORIGIN, shopper, Some(&ids[29])).await?;
    assert_eq!(replaying, 10, "a tab that saw up to the 30th gets the last ten");
    platform.shutdown().await
}

/// One simulated browser for the drain test: resumes after the last id it has, acknowledges
/// everything, shows each id once, and on 1012 reconnects to `fallback` within the hinted
/// jitter.
struct Browser {
    index: usize,
    key: String,
    token: String,
    shown: HashSet<String>,
    last: Option<String>,
}

async fn browse(
    mut b: Browser,
    mut base: String,
    fallback: String,
    unique: Arc<AtomicUsize>,
    moved: Arc<AtomicUsize>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Browser> {
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    loop {
        let resume = b.last.as_ref().map(|id| format!("&last_id={id}")).unwrap_or_default();
        let url = format!("{}/v1/ws?key={}&token={}{resume}", base.replacen("http", "ws", 1), b.key, b.token);
        let mut request = url.into_client_request()?;
        request.headers_mut().insert("Origin", HeaderValue::from_static(ORIGIN));
        // Refused upgrades (the plan's new cap not yet on this gateway) are retried, as the
        // snippet retries with backoff.
        let mut attempts = 0;
        let mut ws = loop {
            match tokio_tungstenite::connect_async_with_config(request.clone(), Some(config), false).await {
                Ok((ws, _)) => break ws,
                Err(_) if attempts < 100 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => anyhow::bail!("browser {}: {e}", b.index),
            }
        };
        let close: Option<CloseFrame> = loop {
            let frame = tokio::select! {
                _ = stop.cancelled() => return Ok(b),
                f = ws.next() => f,
            };
            match frame {
                Some(Ok(Message::Text(text))) => {
                    if let PushMessage::Intervention(iv) = serde_json::from_str(&text)? {
                        let ack = ClientMessage::Ack { intervention_id: iv.intervention_id.clone() };
                        ws.send(Message::Text(serde_json::to_string(&ack)?.into())).await?;
                        b.last = Some(iv.intervention_id.clone());
                        if b.shown.insert(iv.intervention_id) {
                            unique.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => {}
                None | Some(Err(_)) => break None,
            }
        };
        let Some(close) = close else { anyhow::bail!("browser {}: socket lost without a close frame", b.index) };
        // As the snippet: 1013 (history unreadable for a moment) and 4008 (too slow) mean
        // come back with backoff; a 1012 means go elsewhere.
        if [1013, 4008].contains(&u16::from(close.code)) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        anyhow::ensure!(u16::from(close.code) == 1012, "browser {}: closed with {close:?}", b.index);
        let jitter: u64 = close
            .reason
            .split_once("reconnect_jitter_ms=")
            .and_then(|(_, n)| n.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no reconnect hint in {close:?}"))?;
        // Spread like the snippet does (a deterministic spread stands in for Math.random).
        tokio::time::sleep(Duration::from_millis((b.index as u64 * 7919) % jitter.max(1))).await;
        base = fallback.clone();
        moved.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_gateway_moves_5k_sockets_elsewhere_without_losing_a_message() -> anyhow::Result<()> {
    const SHOPPERS: usize = 5_000;
    const ROUNDS: usize = 3;
    let platform = Platform::start_with(|_, cell| {
        cell.roles.gateway = false;
        cell.gateway.reconnect_jitter_ms = 1_000;
        // A keepalive every 2 s is plenty here; 5k sockets need no pings every 200 ms.
        cell.gateway.ping_interval_ms = 2_000;
    })
    .await?;
    let g1 = platform
        .start_cell_process(|c| {
            c.roles = GATEWAY_ONLY;
            c.drain.grace_ms = 2_000;
        })
        .await?;
    let g2 = platform.start_cell_process(|c| c.roles = GATEWAY_ONLY).await?;
    let a = platform.sign_up_ready("Acme", ORIGIN).await?;
    let (key, tenant) = (a.publishable_key.clone(), a.tenant_id.clone());
    let publisher = platform.intervention_publisher().await?;
    // The growth plan allows 20k sockets (the free plan 1k).
    let r = platform
        .http
        .post(format!("{}/v1/admin/tenants/{tenant}/plan", platform.control_plane_url))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&serde_json::json!({"plan": "growth"}))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "setting the plan: {}", r.text().await?);

    let (p, k) = (&platform, key.as_str());
    let tokens: Vec<String> = stream::iter(0..SHOPPERS)
        .map(|i| async move { p.session_token(k, ORIGIN, &format!("shp_{i}")).await })
        .buffered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let (unique, moved) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stop = tokio_util::sync::CancellationToken::new();
    let browsers: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(index, token)| {
            let b = Browser { index, key: key.clone(), token, shown: HashSet::new(), last: None };
            tokio::spawn(browse(b, g1.url.clone(), g2.url.clone(), unique.clone(), moved.clone(), stop.clone()))
        })
        .collect();
    let open = |url: String| {
        let http = platform.http.clone();
        async move {
            let text = http.get(format!("{url}/metrics")).send().await?.text().await?;
            let line =
                text.lines().find(|l| l.starts_with("nudge_cell_gateway_sockets_open ")).unwrap_or_default().to_owned();
            anyhow::Ok(line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) as usize)
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while open(g1.url.clone()).await? < SHOPPERS {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "only {} sockets opened on g1",
            open(g1.url.clone()).await?
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Round 0 before the drain, round 1 across it, round 2 after it; every publish that
    // succeeded must reach its shopper.
    let publish_round = |round: usize| {
        let (publisher, tenant) = (publisher.clone(), tenant.clone());
        async move {
            stream::iter(0..SHOPPERS)
                .map(|i| {
                    let (publisher, tenant) = (publisher.clone(), tenant.clone());
                    async move { publish(&publisher, &tenant, &format!("shp_{i}"), &format!("itv_r{round}_{i}")).await }
                })
                .buffer_unordered(64)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<anyhow::Result<Vec<()>>>()
        }
    };
    publish_round(0).await?;
    let across = tokio::spawn(publish_round(1));
    g1.shutdown.cancel(); // what SIGTERM does: drain
    across.await??;
    g1.terminate().await?;
    publish_round(2).await?;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while unique.load(Ordering::Relaxed) < SHOPPERS * ROUNDS && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(open(g2.url.clone()).await?, SHOPPERS, "every socket is on the other gateway");
    stop.cancel();
    let mut lost = Vec::new();
    for handle in browsers {
        let b = handle.await??;
        for round in 0..ROUNDS {
            let id = format!("itv_r{round}_{}", b.index);
            if !b.shown.contains(&id) {
                lost.push(id);
            }
        }
    }
    assert!(
        lost.is_empty(),
        "{} interventions never reached their shopper, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert_eq!(moved.load(Ordering::Relaxed), SHOPPERS, "every socket reconnected elsewhere once");
    assert_eq!(unique.load(Ordering::Relaxed), SHOPPERS * ROUNDS);
    drop(g2);
    platform.shutdown().await
}
