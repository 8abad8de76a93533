//! The receiving side of routing: this process subscribed to the pub/sub channels of the
//! tenants it holds sockets for, and what arrives on them delivered to its hub.
//!
//! Every process holding a tenant's sockets reads every record on the tenant's channel, and
//! most of its interventions are for shoppers held elsewhere, so a record is read in two
//! steps: each intervention's tenant and shopper first (a partial decode), the whole
//! intervention only for a shopper held here.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use futures_util::StreamExt;
use nudge_contracts::{ShopperId, proto::interventions::v1::Intervention};
use nudge_platform_telemetry::{Metrics, TraceContext};
use nudge_tenants::TenantId;
use prometheus_client::metrics::{counter::Counter, histogram::Histogram};
use prost::{Message, bytes::Bytes};
use tokio_util::sync::CancellationToken;

use crate::{
    hub::{Hub, Pushed, ShopperAddress},
    route::{ANNOUNCEMENT_PREFIX, Naming, announcement_frame, push_frame},
};

/// How far behind this process's routing runs, and how often its subscription breaks.
#[derive(Clone)]
pub struct RouteMetrics {
    /// From the decision to the intervention reaching this process's hub, for shoppers it
    /// holds (clocks of two processes, so only as close as they agree).
    lag: Histogram,
    /// Subscriptions lost and re-made (Redis gone, or it cut a subscriber that fell behind).
    losses: Counter,
    /// Announcement frames queued for this process's sockets.
    announced: Counter,
}

impl RouteMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self {
            lag: Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            losses: Counter::default(),
            announced: Counter::default(),
        };
        let mut r = metrics.registry();
        r.register(
            "gateway_route_lag_seconds",
            "Decision to this process's sockets, for interventions arriving on the channel",
            this.lag.clone(),
        );
        r.register(
            "gateway_subscription_losses",
            "Intervention subscriptions lost and re-made (every socket then re-reads its history)",
            this.losses.clone(),
        );
        r.register(
            "gateway_announced",
            "Announcement frames queued for this process's sockets (one per open page of the store)",
            this.announced.clone(),
        );
        this
    }
}

/// An `InterventionBatch` with its records left encoded (fields 1000 and 1001 read as
/// bytes: the wire form of an embedded message), so a gateway decodes only those it
/// delivers.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EncodedBatch {
    #[prost(bytes = "bytes", repeated, tag = "1000")]
    pub(crate) interventions: Vec<Bytes>,
    #[prost(bytes = "bytes", repeated, tag = "1001")]
    pub(crate) announcements: Vec<Bytes>,
}

/// An `Intervention`'s address (fields 2 and 3), every other field skipped.
#[derive(Clone, PartialEq, prost::Message)]
struct Addressed {
    #[prost(string, tag = "2")]
    tenant_id: String,
    #[prost(string, tag = "3")]
    shopper_id: String,
}

/// Delivers one pub/sub payload from `tenant`'s channel to the hub: an `InterventionBatch`,
/// or a single `Intervention` from a publisher of an earlier version. Malformed payloads,
/// and records naming another tenant than their channel's, are logged and dropped.
///
/// Every process holding the tenant reads every payload, and most of its interventions are
/// for shoppers held elsewhere: each intervention's address is read first, and only one
/// this process holds is decoded whole and rendered. Announcements are for every socket of
/// the tenant: each is rendered once and the same bytes queued on all of them.
pub fn deliver_payload(hub: &Hub, tenant: TenantId, payload: &[u8], metrics: &RouteMetrics) {
    match encoded_records(payload) {
        Ok(batch) => {
            let now_ms = Utc::now().timestamp_millis();
            for encoded in batch.interventions {
                if let Some(decided_at_ms) = deliver_encoded(hub, tenant, encoded)
                    && decided_at_ms > 0
                {
                    metrics.lag.observe(now_ms.saturating_sub(decided_at_ms).max(0) as f64 / 1000.0);
                }
            }
            for encoded in batch.announcements {
                metrics.announced.inc_by(announce_encoded(hub, tenant, encoded) as u64);
            }
        }
        Err(e) => tracing::error!(tenant_id = %tenant, error = %e, "undecodable interventions on the pub/sub channel"),
    }
}

/// The encoded records of a channel payload; a single `Intervention` (neither field
/// present) is one intervention.
pub(crate) fn encoded_records(payload: &[u8]) -> Result<EncodedBatch, prost::DecodeError> {
    let payload = Bytes::copy_from_slice(payload);
    let mut batch = EncodedBatch::decode(payload.clone())?;
    if batch.interventions.is_empty() && batch.announcements.is_empty() {
        batch.interventions.push(payload);
    }
    Ok(batch)
}

/// Queues one encoded announcement on every socket of `tenant` here; how many.
fn announce_encoded(hub: &Hub, tenant: TenantId, encoded: Bytes) -> usize {
    let announcement = match Intervention::decode(encoded) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(tenant_id = %tenant, error = %e, "undecodable announcement on the pub/sub channel");
            return 0;
        }
    };
    if announcement.tenant_id.parse::<TenantId>().ok() != Some(tenant)
        || !announcement.intervention_id.starts_with(ANNOUNCEMENT_PREFIX)
        || !announcement.shopper_id.is_empty()
    {
        tracing::error!(
            tenant_id = %tenant, announcement_id = %announcement.intervention_id,
            "announcement for another tenant, without an ann_ id, or addressed to a shopper; dropped"
        );
        return 0;
    }
    let message = Arc::new(Pushed {
        intervention_id: announcement.intervention_id.as_str().into(),
        text: announcement_frame(&announcement).into(),
    });
    let outcome = hub.announce(&tenant, &message);
    tracing::debug!(
        tenant_id = %tenant, announcement_id = %announcement.intervention_id,
        queued = outcome.delivered, evicted = outcome.evicted, "announcement routed"
    );
    if outcome.evicted > 0 {
        tracing::warn!(tenant_id = %tenant, evicted = outcome.evicted, "socket queue full; slow socket closed");
    }
    outcome.delivered
}

/// Routes one encoded intervention; its decision time when it was for a shopper held here.
fn deliver_encoded(hub: &Hub, tenant: TenantId, encoded: Bytes) -> Option<i64> {
    // The id, for the log, only when something is wrong.
    let id_of =
        |encoded: &Bytes| Intervention::decode(encoded.clone()).map(|iv| iv.intervention_id).unwrap_or_default();
    let addressed = match Addressed::decode(encoded.clone()) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(tenant_id = %tenant, error = %e, "undecodable intervention on the pub/sub channel");
            return None;
        }
    };
    let (Ok(named), Ok(shopper)) = (addressed.tenant_id.parse::<TenantId>(), ShopperId::parse(&addressed.shopper_id))
    else {
        tracing::error!(tenant_id = %tenant, intervention_id = %id_of(&encoded), "intervention with invalid tenant or shopper id");
        return None;
    };
    if named != tenant {
        tracing::error!(tenant_id = %tenant, intervention_id = %id_of(&encoded), "intervention on another tenant's channel; dropped");
        return None;
    }
    let address = ShopperAddress { tenant, shopper };
    // Every gateway holding the tenant receives its messages; only one holding the shopper
    // decodes and renders.
    if !hub.holds(&address) {
        return None;
    }
    let iv = match Intervention::decode(encoded) {
        Ok(iv) => iv,
        Err(e) => {
            tracing::error!(tenant_id = %tenant, error = %e, "undecodable intervention on the pub/sub channel");
            return None;
        }
    };
    let trace_id = TraceContext::parse(&iv.traceparent).map(|t| t.trace_id()).unwrap_or_default();
    let message =
        Arc::new(Pushed { intervention_id: iv.intervention_id.as_str().into(), text: push_frame(&iv).into() });
    let outcome = hub.deliver(&address, message);
    tracing::debug!(
        tenant_id = %tenant, intervention_id = %iv.intervention_id, %trace_id,
        delivered = outcome.delivered, evicted = outcome.evicted, "intervention routed"
    );
    if outcome.evicted > 0 {
        tracing::warn!(tenant_id = %tenant, evicted = outcome.evicted, "socket queue full; slow socket closed");
    }
    Some(iv.decided_at_ms)
}

/// How long one SUBSCRIBE, UNSUBSCRIBE or PING may take before the connection counts as lost.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the subscriber's connection is pinged.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// Keeps this process subscribed to the channels of exactly the tenants `hub` holds sockets
/// for, and delivers what arrives, until `shutdown`. Reconnects when Redis goes away; after
/// a reconnect every socket re-reads its history, since messages published meanwhile
/// reached no one here. `subscribed` is true while the connection is live and subscribed to
/// what the hub needs; the connection is pinged every 10 s.
pub async fn subscribe(
    client: redis::Client,
    naming: Naming,
    hub: Arc<Hub>,
    metrics: RouteMetrics,
    subscribed: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(SUBSCRIBE_TIMEOUT, client.get_async_pubsub()) => r,
        };
        match connected {
            Ok(Ok(pubsub)) => {
                tracing::info!("intervention subscriber connected");
                backoff = Duration::from_millis(100);
                let (mut sink, mut stream) = pubsub.split();
                let mut current: HashSet<TenantId> = HashSet::new();
                let mut dirty = true;
                // A connection that died without a reset (a dropped NAT entry, a vanished
                // host) would otherwise wait for messages forever: ping it.
                let mut keepalive = tokio::time::interval(KEEPALIVE);
                keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                keepalive.tick().await;
                let lost = loop {
                    if dirty {
                        dirty = false;
                        let desired = hub.tenants();
                        let added: HashSet<TenantId> = desired.difference(&current).copied().collect();
                        let removed: Vec<String> = current.difference(&desired).map(|t| naming.channel(t)).collect();
                        if !added.is_empty() {
                            let channels: Vec<String> = added.iter().map(|t| naming.channel(t)).collect();
                            match tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.subscribe(&channels)).await {
                                Ok(Ok(())) => {}
                                Ok(Err(e)) => break e.to_string(),
                                Err(_) => break "SUBSCRIBE timed out".to_owned(),
                            }
                        }
                        if !removed.is_empty() {
                            match tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.unsubscribe(&removed)).await {
                                Ok(Ok(())) => {}
                                Ok(Err(e)) => break e.to_string(),
                                Err(_) => break "UNSUBSCRIBE timed out".to_owned(),
                            }
                        }
                        current = desired;
                        subscribed.store(true, Ordering::Release);
                        if !added.is_empty() {
                            hub.resync_tenants(&added);
                        }
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = hub.tenants_changed() => dirty = true,
                        _ = keepalive.tick() => {
                            match tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.ping::<redis::Value>()).await {
                                Ok(Ok(_)) => {}
                                Ok(Err(e)) => break e.to_string(),
                                Err(_) => break "PING timed out".to_owned(),
                            }
                        }
                        m = stream.next() => match m {
                            Some(msg) => match naming.tenant_of(msg.get_channel_name()) {
                                Some(tenant) => deliver_payload(&hub, tenant, msg.get_payload_bytes(), &metrics),
                                None => tracing::error!(channel = msg.get_channel_name(), "message on an unknown channel"),
                            },
                            None => break "connection closed".to_owned(),
                        },
                    }
                };
                subscribed.store(false, Ordering::Release);
                metrics.losses.inc();
                tracing::warn!(error = %lost, "intervention subscription lost; reconnecting");
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "connecting the intervention subscriber failed"),
            Err(_) => tracing::warn!("connecting the intervention subscriber timed out"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use nudge_contracts::proto::interventions::v1::InterventionBatch;

    use super::*;

    #[test]
    fn a_channel_payload_is_a_batch_or_one_intervention_of_an_earlier_publisher() {
        let iv = |id: &str| Intervention { intervention_id: id.into(), tenant_id: "t".into(), ..Default::default() };
        let batch = InterventionBatch { interventions: vec![iv("a"), iv("b")], ..Default::default() };
        let ids = |v: Vec<Intervention>| v.into_iter().map(|i| i.intervention_id).collect::<Vec<_>>();
        assert_eq!(ids(interventions_of(&batch.encode_to_vec()).unwrap()), ["a", "b"]);
        assert_eq!(ids(interventions_of(&iv("c").encode_to_vec()).unwrap()), ["c"]);
        assert!(interventions_of(b"\xff\xff\xff").is_err());
    }

    #[test]
    fn only_interventions_for_shoppers_held_here_and_of_the_channels_tenant_are_delivered() {
        let hub = Arc::new(Hub::default());
        let (tenant, other) = (TenantId::new(), TenantId::new());
        let here = ShopperAddress { tenant, shopper: ShopperId::parse("shp_here").unwrap() };
        let (_registration, queue) =
            hub.register(here.clone(), nudge_tenants::PublishableKey::generate().unwrap(), 10).unwrap();
        let registry = Metrics::new("test");
        let metrics = RouteMetrics::register(&registry);
        let iv = |id: &str, tenant: TenantId, shopper: &str| Intervention {
            intervention_id: id.into(),
            tenant_id: tenant.to_string(),
            shopper_id: shopper.into(),
            title: "Still thinking it over?".into(),
            decided_at_ms: Utc::now().timestamp_millis(),
            ..Default::default()
        };
        let batch = InterventionBatch {
            interventions: vec![
                iv("itv_elsewhere", tenant, "shp_elsewhere"),
                iv("itv_foreign", other, "shp_here"),
                iv("itv_bad_shopper", tenant, "not a shopper id"),
                iv("itv_here", tenant, "shp_here"),
            ],
            ..Default::default()
        };
        deliver_payload(&hub, tenant, &batch.encode_to_vec(), &metrics);
        match queue.try_recv() {
            Some(crate::hub::Outbound::Push(p)) => {
                assert_eq!(&*p.intervention_id, "itv_here");
                assert!(p.text.contains("Still thinking it over?"), "rendered whole: {}", p.text);
            }
            other => panic!("expected the held shopper's intervention, got {other:?}"),
        }
        assert!(queue.try_recv().is_none(), "nothing else reaches the socket");
        // A payload that does not decode delivers nothing and does not stop the next one.
        deliver_payload(&hub, tenant, b"\xff\xff\xff", &metrics);
        deliver_payload(&hub, tenant, &iv("itv_single", tenant, "shp_here").encode_to_vec(), &metrics);
        assert!(matches!(queue.try_recv(), Some(crate::hub::Outbound::Push(p)) if &*p.intervention_id == "itv_single"));
        // The routing lag is observed for the two delivered here, not for the others.
        let exposed = registry.encode();
        assert!(exposed.contains("gateway_route_lag_seconds_count 2"), "{exposed}");
    }

    #[test]
    fn announcements_reach_every_socket_of_the_channels_tenant_and_are_checked() {
        let hub = Arc::new(Hub::default());
        let (tenant, other) = (TenantId::new(), TenantId::new());
        let key = || nudge_tenants::PublishableKey::generate().unwrap();
        let socket = |t: TenantId, shopper: &str| {
            hub.register(ShopperAddress { tenant: t, shopper: ShopperId::parse(shopper).unwrap() }, key(), 10).unwrap()
        };
        let (_r1, first) = socket(tenant, "shp_1");
        let (_r2, second) = socket(tenant, "shp_2");
        let (_r3, foreign) = socket(other, "shp_1");
        let registry = Metrics::new("test");
        let metrics = RouteMetrics::register(&registry);
        let announcement = |id: &str, of: TenantId, shopper: &str| Intervention {
            intervention_id: id.into(),
            tenant_id: of.to_string(),
            shopper_id: shopper.into(),
            title: "Free shipping today".into(),
            body: "On every order".into(),
            decided_at_ms: 1_764_000_000_000,
            ..Default::default()
        };
        let batch = InterventionBatch {
            announcements: vec![
                announcement("ann_other_tenant", other, ""),
                announcement("itv_not_an_announcement", tenant, ""),
                announcement("ann_addressed", tenant, "shp_1"),
                announcement("ann_1", tenant, ""),
            ],
            ..Default::default()
        };
        deliver_payload(&hub, tenant, &batch.encode_to_vec(), &metrics);
        for queue in [&first, &second] {
            match queue.try_recv() {
                Some(crate::hub::Outbound::Announce(p)) => {
                    assert_eq!(&*p.intervention_id, "ann_1");
                    let frame: nudge_contracts::push::PushMessage = serde_json::from_str(&p.text).unwrap();
                    assert_eq!(
                        frame,
                        nudge_contracts::push::PushMessage::Announcement(nudge_contracts::push::AnnouncementMessage {
                            announcement_id: "ann_1".into(),
                            title: "Free shipping today".into(),
                            body: "On every order".into(),
                            sent_at: "2025-11-24T16:00:00.000Z".into(),
                        })
                    );
                }
                other => panic!("expected the announcement, got {other:?}"),
            }
            assert!(queue.try_recv().is_none(), "the malformed ones reach no socket");
        }
        assert!(foreign.try_recv().is_none(), "another tenant's sockets get nothing");
        assert!(registry.encode().contains("gateway_announced_total 2"), "{}", registry.encode());
    }

    /// The whole interventions of a payload, as a gateway holding every shopper decodes them.
    fn interventions_of(payload: &[u8]) -> Result<Vec<Intervention>, prost::DecodeError> {
        encoded_records(payload)?.interventions.into_iter().map(Intervention::decode).collect()
    }

    #[test]
    fn the_partial_views_read_the_fields_the_contract_numbers() {
        // EncodedBatch and Addressed repeat field numbers of the generated types; an
        // intervention with every field set reads back the same through them.
        let iv = Intervention {
            intervention_id: "itv_1".into(),
            tenant_id: TenantId::new().to_string(),
            shopper_id: "shp_1".into(),
            kind: "cart_reminder".into(),
            title: "Still thinking it over?".into(),
            body: "Your cart is saved.".into(),
            score: 0.8,
            model_version: "cart_abandonment@1".into(),
            cause_event_id: "evt_1".into(),
            decided_at_ms: 1_764_000_000_000,
            traceparent: TraceContext::new_root().to_header(),
            campaign_id: "cmp_1".into(),
            campaign_version: 3,
            variant: "b".into(),
        };
        let other = Intervention { shopper_id: "shp_2".into(), ..iv.clone() };
        let announcement = Intervention { intervention_id: "ann_1".into(), shopper_id: String::new(), ..iv.clone() };
        let payload = InterventionBatch {
            interventions: vec![iv.clone(), other.clone()],
            announcements: vec![announcement.clone()],
        }
        .encode_to_vec();
        let batch = encoded_records(&payload).unwrap();
        assert_eq!(batch.announcements.len(), 1);
        assert_eq!(Intervention::decode(batch.announcements[0].clone()).unwrap(), announcement);
        let encoded = batch.interventions;
        assert_eq!(encoded.len(), 2);
        let addressed = Addressed::decode(encoded[1].clone()).unwrap();
        assert_eq!((addressed.tenant_id.as_str(), addressed.shopper_id.as_str()), (iv.tenant_id.as_str(), "shp_2"));
        assert_eq!(Intervention::decode(encoded[0].clone()).unwrap(), iv);
        assert_eq!(Intervention::decode(encoded[1].clone()).unwrap(), other);
    }
}
