//! The JSON batch the snippet (or a store's server) posts to a cell's `POST /v1/events`.
//!
//! ```json
//! {"events": [{"event_id": "…", "type": "add_to_cart", "shopper_id": "…",
//!              "occurred_at": "2026-11-27T12:00:00Z",
//!              "properties": {"product_id": "sku-1", "price": 49.5, "currency": "EUR", "quantity": 1}}]}
//! ```
//!
//! These types only describe the shape; the cell's ingest parses them into
//! [`crate::proto::events::v1::Event`] and owns every rule about what is valid.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A batch of events from one browser or server.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    pub events: Vec<RawEvent>,
}

/// One event as sent, before validation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RawEvent {
    pub event_id: String,
    /// One of `page_view`, `product_view`, `add_to_cart`, `remove_from_cart`, `checkout_start`,
    /// `purchase`, `exit_intent`, `identify`, `consent`, `intervention` (what the shopper did
    /// with an on-site message: `intervention_id`, `action` shown, clicked or dismissed).
    #[serde(rename = "type")]
    pub kind: String,
    pub shopper_id: String,
    /// RFC 3339; the cell's receive time when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<String>,
    /// The shopper's time zone as the browser names it (IANA, e.g. `Europe/Berlin`); quiet
    /// hours are kept in it. An unknown name is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Type-specific fields, e.g. `product_id`, `price`, `currency`, `quantity` for cart changes.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub properties: serde_json::Map<String, serde_json::Value>,
}

/// The event types a cell accepts, by their wire name.
pub const EVENT_TYPES: [&str; 8] = [
    "page_view",
    "product_view",
    "add_to_cart",
    "remove_from_cart",
    "checkout_start",
    "purchase",
    "exit_intent",
    "identify",
];

/// `202 Accepted` body: every new event of the batch is durably enqueued.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchAccepted {
    /// Events taken (new ones stored, plus any the store does not act on).
    pub accepted: usize,
    /// Events sent before (same event id within a day), not stored again.
    #[serde(default)]
    pub duplicates: usize,
}

/// `POST /v1/sessions` body: the shopper a browser wants a socket for.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    pub shopper_id: String,
}

/// `201 Created` body of `POST /v1/sessions`: a signed token that opens this shopper's
/// socket (`/v1/ws?key=…&token=…`) until it expires.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionIssued {
    pub token: String,
    pub shopper_id: String,
    /// RFC 3339.
    pub expires_at: String,
}
