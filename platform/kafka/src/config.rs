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
    /// How long a producer keeps retrying a record before reporting it failed.
    pub message_timeout_ms: u32,
    /// How long a producer waits to fill a batch.
    pub linger_ms: u32,
    /// Socket-level timeout for requests to the broker.
    pub request_timeout_ms: u32,
    /// Partitions for topics created at start, overriding the catalogue (0 = catalogue).
    pub partitions_override: i32,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".to_owned(),
            prefix: String::new(),
            message_timeout_ms: 30_000,
            linger_ms: 2,
            request_timeout_ms: 5_000,
            partitions_override: 0,
        }
    }
}

impl KafkaConfig {
    pub fn topics(&self) -> Topics {
        Topics::new(self.prefix.clone())
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
