//! Server-side abandonment detection: carts that have gone quiet.
//!
//! Every event the pipeline applies sets or clears its shopper's idle-cart timer in the same
//! Redis script that writes the session (a cart with something in it is watched; an empty
//! or bought one is not). This scanner looks for carts silent for `idle_carts.after_ms`
//! and emits a `cart_idle` event for each onto `events.validated`, keyed like the shopper's
//! other events, so the pipeline scores the moment in order with the rest of the session.
//! Clients cannot send `cart_idle` (ingest does not know the type and the validator refuses
//! it), so abandonment is never taken on a client's word.
//!
//! Delivery is at least once and effects exactly once: the timer is settled only after the
//! broker acknowledged the event; a crash in between, or two replicas scanning at once,
//! emit the same event again with the same id (derived from tenant, shopper and last
//! activity), which the pipeline recognises as applied. A shopper active again before the
//! settle keeps the newer timer.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use nudge_contracts::{
    headers::{EVENT_V1, SEALED_V1},
    proto::events::v1::{CartIdle, Event, event::Payload},
    subject_digest,
};
use nudge_data_plane_directory::Directory;
use nudge_data_plane_features::store::{IdleCart, SessionStore};
use nudge_data_plane_keyring::{KeyError, Keyring};
use nudge_platform_kafka::{SharedProducer, headers::HeaderValues, stage::OUTPUT_ACK_TIMEOUT};
use nudge_platform_telemetry::TraceContext;
use prost::Message;
use rdkafka::producer::FutureRecord;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// `[idle_carts]` in the cell's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct IdleCartsConfig {
    /// A cart with no activity for this long is found idle.
    pub after_ms: u64,
    /// How often the schedule is scanned.
    pub scan_interval_ms: u64,
    /// Most carts emitted per scan (the rest wait for the next).
    pub batch: usize,
}

impl Default for IdleCartsConfig {
    fn default() -> Self {
        Self { after_ms: 30 * 60 * 1000, scan_interval_ms: 1000, batch: 500 }
    }
}

/// The event id of a cart found idle: one per (tenant, shopper, last activity), with no
/// shopper id in clear (event ids reach logs).
fn idle_event_id(cart: &IdleCart) -> String {
    let name = format!("{}/{}/{}", cart.key.tenant, cart.key.shopper, cart.last_activity_ms);
    format!("idle-{}", Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes()))
}

/// Scans until `shutdown`. A failing scan (Redis, the broker) is logged and retried at the
/// next interval; timers stay in place until their event is acknowledged.
pub async fn scan(
    sessions: SessionStore,
    directory: Arc<Directory>,
    keyring: Arc<Keyring>,
    producer: SharedProducer,
    validated_topic: String,
    config: IdleCartsConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let interval = Duration::from_millis(config.scan_interval_ms);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
        match scan_once(&sessions, &directory, &keyring, &producer, &validated_topic, &config).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(carts = n, "idle carts emitted"),
            Err(e) => tracing::warn!(error = %e, "idle-cart scan failed; retrying at the next interval"),
        }
    }
}

/// One scan: emits an event per cart silent since `after_ms` ago of a tenant this cell
/// serves, settles each timer once the broker has it. Returns how many were emitted.
/// The schedule is the cell's own; a timer of a tenant the cell no longer serves (moved to
/// another cell, or deleted) is dropped.
pub async fn scan_once(
    sessions: &SessionStore,
    directory: &Directory,
    keyring: &Keyring,
    producer: &SharedProducer,
    validated_topic: &str,
    config: &IdleCartsConfig,
) -> anyhow::Result<usize> {
    let now = Utc::now().timestamp_millis();
    let silent_since = now.saturating_sub(i64::try_from(config.after_ms).unwrap_or(i64::MAX));
    if !directory.is_caught_up() {
        return Ok(0);
    }
    let mut carts = Vec::new();
    for cart in sessions.idle_carts(silent_since, config.batch).await? {
        let tenant = directory.by_tenant(cart.key.tenant);
        if tenant.as_ref().is_some_and(|t| !t.is_suppressed(cart.key.shopper.as_str())) {
            carts.push(cart);
        } else {
            tracing::debug!(tenant_id = %cart.key.tenant, "idle-cart timer of a tenant not served here, or of a suppressed shopper, dropped");
            sessions.settle_idle(&cart).await?;
        }
    }
    if carts.is_empty() {
        return Ok(0);
    }
    let mut encoded: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(carts.len());
    let mut sealed_carts = Vec::with_capacity(carts.len());
    for cart in &carts {
        let event = Event {
            tenant_id: cart.key.tenant.to_string(),
            event_id: idle_event_id(cart),
            shopper_id: cart.key.shopper.to_string(),
            occurred_at_ms: cart.last_activity_ms.saturating_add(i64::try_from(config.after_ms).unwrap_or(0)),
            received_at_ms: now,
            payload: Some(Payload::CartIdle(CartIdle { last_activity_ms: cart.last_activity_ms })),
            // The cell's own event: the shopper's zone stays the one their browser named.
            time_zone: String::new(),
        };
        let subject = subject_digest(cart.key.tenant.as_uuid(), &cart.key.shopper);
        match keyring.seal(cart.key.tenant, &subject, EVENT_V1.name, &event.encode_to_vec()).await {
            Ok(sealed) => {
                encoded.push((crate::sealing::record_key(cart.key.tenant, &subject), sealed.encode_to_vec()));
                sealed_carts.push(cart);
            }
            // Suppressed or erased meanwhile: the timer goes, nothing is emitted.
            Err(KeyError::Shredded) => sessions.settle_idle(cart).await?,
            Err(KeyError::Unavailable(why)) => anyhow::bail!("sealing an idle-cart event: {why}"),
            // A key that does not unwrap will not unwrap later either: the cart is given up
            // (logged, and counted by the keyring) so it cannot hold up the others.
            Err(e) => {
                tracing::warn!(tenant_id = %cart.key.tenant, error = %e, "an idle-cart event could not be sealed; cart given up");
                sessions.settle_idle(cart).await?;
            }
        }
    }
    let headers = HeaderValues::new(SEALED_V1, Some(&TraceContext::new_root()));
    let records = encoded.iter().map(|(key, value)| {
        FutureRecord::<'_, [u8], [u8]>::to(validated_topic)
            .key(key.as_slice())
            .payload(value.as_slice())
            .headers(headers.headers())
    });
    producer.send_all(records, OUTPUT_ACK_TIMEOUT).await?;
    for cart in &sealed_carts {
        sessions.settle_idle(cart).await?;
    }
    Ok(sealed_carts.len())
}
