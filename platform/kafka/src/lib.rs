//! Kafka clients configured the way every Nudge producer and consumer needs them.
//!
//! # Layout
//!
//! - [`config`]: [`KafkaConfig`], the connection settings every binary's config nests.
//! - [`client`]: producers (`acks=all`, idempotent) and consumers (offsets stored only after
//!   the effect, committed in the background).
//! - [`shared`]: the producer long-lived services share, which replaces itself when a
//!   broker has lost its state.
//! - [`admin`]: creating the platform's topics at start, idempotently.
//! - [`stage`]: at-least-once processing stages with retries and a dead-letter queue.
//! - [`dlq`]: replaying dead-lettered records to where they came from.
//! - [`follow`]: reading a compacted topic from its beginning and following it.
//! - [`headers`]: writing and reading schema and trace headers.

pub mod admin;
pub mod client;
pub mod config;
pub mod dlq;
pub mod follow;
pub mod headers;
pub mod shared;
pub mod stage;

pub use admin::ensure_topics;
pub use client::{group_consumer, producer, reader_consumer, static_group_consumer};
pub use config::KafkaConfig;
pub use shared::{SendError, SharedProducer};

/// A Kafka operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("creating topic {topic}: {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error("replaying the DLQ: {0}")]
    Replay(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
