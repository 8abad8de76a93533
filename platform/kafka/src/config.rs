//! Connection settings for the Kafka-protocol broker.

use nudge_contracts::Topics;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated.
    pub brokers: String,
    /// Prepended to every topic and consumer-group name (isolates environments and tests).
    pub prefix: String,
    /// Prepended to the platform-wide topics (`control.tenants.v1`, `control.models.v1`,
    /// `usage.v1`) instead of `prefix`: set on a cell whose own topics have a prefix of their
    /// own, to the platform's prefix. Unset, `prefix` names every topic.
    pub platform_prefix: Option<String>,
    /// How long a producer keeps retrying a record before reporting it failed.
    pub message_timeout_ms: u32,
    /// How long a producer waits to fill a batch.
    pub linger_ms: u32,
    /// Socket-level timeout for requests to the broker.
    pub request_timeout_ms: u32,
    /// Partitions for topics created at start, overriding the catalogue (0 = catalogue).
    pub partitions_override: i32,
    /// This process's stable name in consumer groups (a pod name in a StatefulSet). When set,
    /// consumers use static membership: a restarted process takes its partitions back
    /// without a rebalance of the whole group. When unset, membership is dynamic.
    pub group_instance: Option<String>,
    /// Further librdkafka properties for every client, e.g. security settings for a real
    /// cluster (`security.protocol`, `sasl.mechanisms`, …) or `debug`.
    pub librdkafka: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".to_owned(),
            prefix: String::new(),
            platform_prefix: None,
            message_timeout_ms: 30_000,
            linger_ms: 2,
            request_timeout_ms: 5_000,
            partitions_override: 0,
            group_instance: None,
            librdkafka: Default::default(),
        }
    }
}

impl KafkaConfig {
    pub fn topics(&self) -> Topics {
        Topics::new(self.prefix.clone()).with_platform_prefix(self.platform_prefix.clone())
    }

    /// A consumer-group id scoped by the prefix.
    pub fn group(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.brokers.trim().is_empty() {
            return Err("kafka.brokers must name at least one broker".into());
        }
        if self.message_timeout_ms == 0 {
            return Err("kafka.message_timeout_ms must be positive".into());
        }
        Ok(())
    }
}
