//! Kafka record headers every producer writes.

/// Fully qualified Protobuf message name of the value, e.g. `nudge.events.v1.Event`.
pub const SCHEMA: &str = "nudge-schema";
/// Schema version of the value, a decimal integer.
pub const SCHEMA_VERSION: &str = "nudge-schema-version";
/// W3C trace context of the request that produced the record.
pub const TRACEPARENT: &str = "traceparent";

/// Schema identity of a record value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaRef {
    pub name: &'static str,
    pub version: u32,
}

pub const EVENT_V1: SchemaRef = SchemaRef { name: "nudge.events.v1.Event", version: 1 };
pub const TENANT_CONFIG_V1: SchemaRef = SchemaRef { name: "nudge.control.v1.TenantConfig", version: 1 };
