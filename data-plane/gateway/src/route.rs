//! Routing interventions to whichever process holds the shopper's socket.
//!
//! Every gateway process of a cell subscribes once to the cell's channel; a decision made
//! anywhere is published there and each process delivers to the sockets it holds. The
//! message is the `Intervention` Protobuf record.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chrono::{TimeZone, Utc};
use futures_util::StreamExt;
use nudge_contracts::{
    ShopperId,
    proto::interventions::v1::Intervention,
    push::{InterventionMessage, PushMessage},
};
use nudge_platform_telemetry::TraceContext;
use nudge_tenants::{CellId, TenantId};
use prost::Message;
use redis::{AsyncCommands, aio::ConnectionManager};
use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, ShopperAddress};

/// The pub/sub channel of a cell's interventions.
pub fn channel(prefix: &str, cell: &CellId) -> String {
    format!("{prefix}cell:{cell}:interventions")
}

/// Sends interventions to the cell's gateways.
#[derive(Clone)]
pub struct InterventionPublisher {
    redis: ConnectionManager,
    channel: String,
}

impl InterventionPublisher {
    pub fn new(redis: ConnectionManager, channel: String) -> Self {
        Self { redis, channel }
    }

    /// Publishes; the number of gateway processes that received it.
    pub async fn publish(&self, intervention: &Intervention) -> Result<usize, redis::RedisError> {
        let mut conn = self.redis.clone();
        conn.publish(&self.channel, intervention.encode_to_vec()).await
    }
}

/// The JSON frame a shopper's socket receives for `iv`.
pub fn push_frame(iv: &Intervention) -> String {
    let trace_id = TraceContext::parse(&iv.traceparent).map(|t| t.trace_id()).unwrap_or_default();
    let decided_at = Utc
        .timestamp_millis_opt(iv.decided_at_ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    let message = PushMessage::Intervention(InterventionMessage {
        intervention_id: iv.intervention_id.clone(),
        kind: iv.kind.clone(),
        title: iv.title.clone(),
        body: iv.body.clone(),
        score: iv.score,
        model_version: iv.model_version.clone(),
        cause_event_id: iv.cause_event_id.clone(),
        decided_at,
        trace_id,
    });
    // Serialising a struct of strings and numbers cannot fail.
    serde_json::to_string(&message).unwrap_or_default()
}

/// Delivers one pub/sub payload to the hub. Malformed payloads are logged and dropped: they
/// cannot be delivered anywhere.
pub fn deliver_payload(hub: &Hub, payload: &[u8]) {
    let iv = match Intervention::decode(payload) {
        Ok(iv) => iv,
        Err(e) => {
            tracing::error!(error = %e, "undecodable intervention on the pub/sub channel");
            return;
        }
    };
    let (Ok(tenant), Ok(shopper)) = (iv.tenant_id.parse::<TenantId>(), ShopperId::parse(&iv.shopper_id)) else {
        tracing::error!(intervention_id = %iv.intervention_id, "intervention with invalid tenant or shopper id");
        return;
    };
    let trace_id = TraceContext::parse(&iv.traceparent).map(|t| t.trace_id()).unwrap_or_default();
    let outcome = hub.deliver(&ShopperAddress { tenant, shopper }, push_frame(&iv).into());
    tracing::debug!(
        tenant_id = %tenant, intervention_id = %iv.intervention_id, %trace_id,
        delivered = outcome.delivered, evicted = outcome.evicted, "intervention routed"
    );
    if outcome.evicted > 0 {
        tracing::warn!(tenant_id = %tenant, evicted = outcome.evicted, "socket queue full; slow socket closed");
    }
}

/// Subscribes to `channel` and delivers to `hub` until `shutdown`, reconnecting when Redis
/// goes away. `subscribed` is true while the subscription is live.
pub async fn subscribe(
    client: redis::Client,
    channel: String,
    hub: Arc<Hub>,
    subscribed: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(Duration::from_secs(5), connected) => r,
        };
        match pubsub {
            Ok(Ok(pubsub)) => {
                tracing::info!(%channel, "subscribed to interventions");
                subscribed.store(true, Ordering::Release);
                backoff = Duration::from_millis(100);
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        m = messages.next() => match m {
                            Some(msg) => deliver_payload(&hub, msg.get_payload_bytes()),
                            None => break,
                        },
                    }
                }
                subscribed.store(false, Ordering::Release);
                tracing::warn!(%channel, "intervention subscription lost; reconnecting");
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "subscribing to interventions failed"),
            Err(_) => tracing::warn!("subscribing to interventions timed out"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
