//! Event intake for a cell.
//!
//! # Layout
//!
//! - [`validate`]: parses a posted [`nudge_contracts::ingest::RawEvent`] into an
//!   `events.v1.Event`, with a stable code for every way an event can be wrong.
//! - [`dedup`]: event-id deduplication and idempotency keys (Redis).
//! - [`limits`]: per-tenant token buckets from the store's plan.
//! - [`sink`]: [`sink::EventSink`], the port events are handed to, and its Kafka
//!   implementation that answers only once the broker has acknowledged every record.
//! - [`usage`]: per-tenant counts of accepted and dropped events, by reason.
//! - [`routes`]: `POST /v1/events` and its CORS preflight.
//! - [`session`]: `POST /v1/sessions`, the signed token a shopper's socket opens with.

pub mod dedup;
pub mod limits;
pub mod routes;
pub mod session;
pub mod sink;
pub mod usage;
pub mod validate;

pub use routes::{IngestConfig, IngestState, router};
