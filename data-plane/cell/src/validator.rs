//! The validation stage: `events.raw` → `events.validated`.
//!
//! Ingest validated the JSON it was sent; this stage guards the pipeline against what it
//! did not produce: a record that does not decode, or one for a tenant the cell does not
//! serve. Such a record fails and, after the stage's attempts, goes to `events.dlq` with the
//! reason; it never blocks its partition. A good record is forwarded unchanged (same key,
//! same headers, still sealed), and acknowledged by the broker before its offset is stored.
//!
//! Records are sealed (`crate::sealing`): one whose shopper has been suppressed since, or
//! whose data key is gone (erased), is skipped and counted, never opened.

use std::sync::Arc;

use nudge_contracts::{
    ShopperId,
    headers::EVENT_V1,
    proto::events::v1::{Event, event::Payload},
    subject_digest,
};
use nudge_data_plane_directory::Directory;
use nudge_data_plane_ingest::usage::{Drop, UsageCounters};
use nudge_data_plane_keyring::Keyring;
use nudge_platform_kafka::{
    SharedProducer,
    stage::{Failure, Handler, HandlerFuture, OUTPUT_ACK_TIMEOUT, Record},
};
use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::FutureRecord,
};

/// Forwards valid records to `events.validated`.
pub struct Validator {
    pub directory: Arc<Directory>,
    pub keyring: Arc<Keyring>,
    pub usage: Arc<UsageCounters>,
    pub producer: SharedProducer,
    pub validated_topic: String,
}

impl Handler for Validator {
    fn handle<'a>(&'a self, record: &'a Record<'a>) -> HandlerFuture<'a> {
        Box::pin(async move {
            let payload = record.payload.ok_or_else(|| Failure::Failed("the record has no value".into()))?;
            let (tenant, sealed) = crate::sealing::envelope(payload)?;
            let served = self.directory.by_tenant(tenant);
            if served.is_none() && self.directory.is_caught_up() {
                return Err(Failure::Failed(format!("tenant {tenant} is not served by this cell")));
            }
            if served.as_ref().is_some_and(|t| t.is_suppressed_subject(&sealed.subject_digest)) {
                // Suppressed after ingest accepted it (the cell is erasing what it held).
                self.usage.dropped(tenant, Drop::Suppressed, 1);
                return Ok(());
            }
            let Some(opened) = crate::sealing::open::<Event>(&self.keyring, &sealed, EVENT_V1).await? else {
                // The shopper's data key was erased: the event is unreadable, by design.
                self.usage.dropped(tenant, Drop::Suppressed, 1);
                return Ok(());
            };
            let event = opened.message;
            if event.event_id.is_empty() || event.payload.is_none() {
                return Err(Failure::Failed("the event lacks an id or a payload".into()));
            }
            let shopper = ShopperId::parse(&event.shopper_id)
                .map_err(|_| Failure::Failed("the event has no valid shopper".into()))?;
            if event.tenant_id != sealed.tenant_id
                || subject_digest(tenant.as_uuid(), &shopper) != sealed.subject_digest
            {
                return Err(Failure::Failed("the event is not the tenant's and shopper's its envelope names".into()));
            }
            if matches!(event.payload, Some(Payload::CartIdle(_))) {
                // Abandonment is detected by the cell, never reported by a sender.
                return Err(Failure::Failed("cart_idle comes only from the cell's idle-cart scanner".into()));
            }
            let mut headers = OwnedHeaders::new();
            for (name, value) in [
                (nudge_contracts::headers::SCHEMA, record.header(nudge_contracts::headers::SCHEMA)),
                (nudge_contracts::headers::SCHEMA_VERSION, record.header(nudge_contracts::headers::SCHEMA_VERSION)),
                (nudge_contracts::headers::TRACEPARENT, record.header(nudge_contracts::headers::TRACEPARENT)),
            ] {
                if let Some(v) = value {
                    headers = headers.insert(Header { key: name, value: Some(v) });
                }
            }
            let mut out: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.validated_topic).payload(payload).headers(headers);
            if let Some(k) = record.key {
                out = out.key(k);
            }
            Ok(self.producer.send_all([out], OUTPUT_ACK_TIMEOUT).await?)
        })
    }
}
