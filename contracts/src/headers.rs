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
pub const MODEL_REGISTRY_V1: SchemaRef = SchemaRef { name: "nudge.control.v1.ModelRegistryRecord", version: 1 };
pub const CAMPAIGN_V1: SchemaRef = SchemaRef { name: "nudge.control.v1.CampaignRecord", version: 1 };
pub const FEATURES_V1: SchemaRef = SchemaRef { name: "nudge.features.v1.FeatureSnapshot", version: 1 };
pub const PREDICTION_V1: SchemaRef = SchemaRef { name: "nudge.predictions.v1.Prediction", version: 1 };
pub const INTERVENTION_V1: SchemaRef = SchemaRef { name: "nudge.interventions.v1.Intervention", version: 1 };
pub const USAGE_V1: SchemaRef = SchemaRef { name: "nudge.usage.v1.UsageReport", version: 1 };
/// The envelope of every record that names a shopper; the message inside is one of the
/// schemas above (see `nudge_data_plane_keyring`).
pub const SEALED_V1: SchemaRef = SchemaRef { name: "nudge.sealed.v1.Sealed", version: 1 };
pub const ERASURE_REPORT_V1: SchemaRef = SchemaRef { name: "nudge.control.v1.ErasureReport", version: 1 };

/// Headers a DLQ record carries, naming where it came from and why it failed.
pub mod dlq {
    pub const ORIGINAL_TOPIC: &str = "nudge-dlq-original-topic";
    pub const ORIGINAL_PARTITION: &str = "nudge-dlq-original-partition";
    pub const ORIGINAL_OFFSET: &str = "nudge-dlq-original-offset";
    pub const ERROR: &str = "nudge-dlq-error";
    pub const ATTEMPTS: &str = "nudge-dlq-attempts";
    /// Which stage set it aside (`validator`, `pipeline`).
    pub const STAGE: &str = "nudge-dlq-stage";
}
