//! JSON messages on a shopper's WebSocket: [`PushMessage`] from the cell, [`ClientMessage`]
//! from the browser.

use serde::{Deserialize, Serialize};

/// One text frame on the shopper socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PushMessage {
    /// Sent once when the socket is registered, before anything replayed.
    Ready {
        shopper_id: String,
        /// Interventions about to be replayed from the shopper's history (sent while the
        /// shopper was not connected here).
        #[serde(default)]
        replaying: usize,
    },
    /// Something to show the shopper.
    Intervention(InterventionMessage),
    /// A message from the store to every open page of the shop (`POST /v1/announcements`):
    /// shown, never acknowledged, and not replayed to a page that opens later.
    Announcement(AnnouncementMessage),
}

/// An intervention as the snippet renders it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterventionMessage {
    pub intervention_id: String,
    /// `cart_reminder`, …
    pub kind: String,
    pub title: String,
    pub body: String,
    /// Abandonment probability from the model, in `[0, 1]`.
    pub score: f64,
    pub model_version: String,
    /// The event that triggered it.
    pub cause_event_id: String,
    /// RFC 3339.
    pub decided_at: String,
    /// Trace id of the request that carried the cause event.
    pub trace_id: String,
}

/// An announcement as the snippet renders it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnnouncementMessage {
    /// `ann_…`.
    pub announcement_id: String,
    pub title: String,
    pub body: String,
    /// RFC 3339.
    pub sent_at: String,
}

/// One text frame a shopper's browser sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// The intervention was received (and shown); a reconnect without `last_id` resumes after
    /// the last one acknowledged.
    Ack { intervention_id: String },
}
