//! Kafka topics. Names carry an optional prefix so several environments (or parallel
//! tests) can share one broker without seeing each other's records.

use serde::{Deserialize, Serialize};

/// A topic of the platform, independent of environment prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Shopper events as accepted by ingest. Key: `ShopperKey`. Value: `events.v1.Event`.
    EventsRaw,
    /// Tenant configuration for the cells, compacted. Key: tenant id. Value: `TenantConfig`.
    ControlTenants,
}

/// How a topic is cleaned up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    /// Old segments are deleted after the retention period.
    Delete { retention_ms: i64 },
    /// Only the latest record per key is kept.
    Compact,
}

impl Topic {
    pub const ALL: [Topic; 2] = [Topic::EventsRaw, Topic::ControlTenants];

    /// The name without any environment prefix.
    pub fn base_name(self) -> &'static str {
        match self {
            Self::EventsRaw => "events.raw",
            Self::ControlTenants => "control.tenants.v1",
        }
    }

    /// Partitions created when the topic does not exist yet.
    pub fn partitions(self) -> i32 {
        match self {
            Self::EventsRaw => 8,
            Self::ControlTenants => 1,
        }
    }

    pub fn cleanup(self) -> Cleanup {
        match self {
            Self::EventsRaw => Cleanup::Delete { retention_ms: 7 * 24 * 3600 * 1000 },
            Self::ControlTenants => Cleanup::Compact,
        }
    }
}

/// Topic names for one environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topics {
    /// Prepended to every topic name; empty in a normal deployment.
    pub prefix: String,
}

impl Topics {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    pub fn name(&self, topic: Topic) -> String {
        format!("{}{}", self.prefix, topic.base_name())
    }
}
