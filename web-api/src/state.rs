//! Application state shared by the handlers.

use std::sync::Arc;

use nudge_contracts::Topics;
use nudge_control_plane::{Database, placement::Cell};
use tokio::sync::Notify;

#[derive(Clone)]
pub struct AppState {
    pub db: Database,
    pub topics: Topics,
    /// The cell self-service tenants are placed on.
    pub shared_cell: Cell,
    /// Wakes the outbox relay after a commit that enqueued records.
    pub outbox_wake: Arc<Notify>,
}
