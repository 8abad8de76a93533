//! The validation stage: `events.raw` → `events.validated`.
//!
//! Ingest validated the JSON it was sent; this stage guards the pipeline against what it
//! did not produce: a record that does not decode, or one for a tenant the cell does not
//! serve. Such a record fails and, after the stage's attempts, goes to `events.dlq` with the
//! reason; it never blocks its partition. A good record is forwarded unchanged (same key,
//! same headers), and acknowledged by the broker before its offset is stored.

use std::sync::Arc;

use nudge_contracts::proto::events::v1::{Event, event::Payload};
use nudge_data_plane_directory::Directory;
use nudge_platform_kafka::{
    SharedProducer,
    stage::{Failure, Handler, HandlerFuture, OUTPUT_ACK_TIMEOUT, Record},
};
use nudge_tenants::TenantId;
use prost::Message;
use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::FutureRecord,
};

/// Forwards valid records to `events.validated`.
pub struct Validator {
    pub directory: Arc<Directory>,
    pub producer: SharedProducer,
    pub validated_topic: String,
}

impl Handler for Validator {
    fn handle<'a>(&'a self, record: &'a Record<'a>) -> HandlerFuture<'a> {
        Box::pin(async move {
            let payload = record.payload.ok_or_else(|| Failure::Failed("the record has no value".into()))?;
            let event = Event::decode(payload).map_err(|e| Failure::Failed(format!("undecodable event: {e}")))?;
            let tenant: TenantId =
                event.tenant_id.parse().map_err(|_| Failure::Failed("the event has no valid tenant id".into()))?;
            if event.event_id.is_empty() || event.shopper_id.is_empty() || event.payload.is_none() {
                return Err(Failure::Failed("the event lacks an id, a shopper or a payload".into()));
            }
            if matches!(event.payload, Some(Payload::CartIdle(_))) {
                // Abandonment is detected by the cell, never reported by a sender.
                return Err(Failure::Failed("cart_idle comes only from the cell's idle-cart scanner".into()));
            }
            if self.directory.by_tenant(tenant).is_none() && self.directory.is_caught_up() {
                return Err(Failure::Failed(format!("tenant {tenant} is not served by this cell")));
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
