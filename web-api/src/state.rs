//! Application state shared by the handlers.

use std::sync::{Arc, atomic::AtomicBool};

use axum::extract::FromRef;
use nudge_contracts::Topics;
use nudge_control_plane::{
    Database,
    auth::{refresh::RefreshStore, tokens::TokenKeys},
    provision::Provisioner,
    routing::TenantRouter,
};
use tokio::sync::{Notify, OnceCell};

/// SHA-256 of each operator token, by operator name.
#[derive(Clone, Default)]
pub struct AdminTokens(pub Arc<Vec<(String, [u8; 32])>>);

#[derive(Clone)]
pub struct AppState {
    /// The main database, also the registry (accounts, memberships, routes).
    pub db: Database,
    /// Routes a tenant's transactions to its database (main or dedicated).
    pub router: Arc<TenantRouter>,
    pub topics: Topics,
    /// Places tenants on cells and brings dedicated cells up (`placement.provisioner`).
    pub provisioner: Arc<dyn Provisioner>,
    /// Wakes the outbox relay after a commit that enqueued records.
    pub outbox_wake: Arc<Notify>,
    pub admin_tokens: AdminTokens,
    /// Start-up work (shared cell registered, topics created) is done.
    pub started: Arc<AtomicBool>,
    /// Signs and verifies merchant access tokens.
    pub tokens: Arc<TokenKeys>,
    /// Refresh sessions; set once Redis has been reached at start-up.
    pub sessions: Arc<OnceCell<RefreshStore>>,
    /// Signs erasure receipts (the vault's Transit key).
    pub receipts: nudge_control_plane::erasure::ReceiptSigner,
    /// Between a store's offboarding and its purge (`offboarding.grace_days`).
    pub offboarding_grace: chrono::Duration,
    /// `libonnxruntime.so` for checking uploaded models (`ORT_DYLIB_PATH` when `None`).
    pub onnxruntime_library: Option<Arc<std::path::PathBuf>>,
    /// Stores are billed through Stripe (`billing.stripe_secret_key` is set).
    pub billing_enabled: bool,
    /// Stripe, for the merchant's billing-portal links, and where the portal returns to.
    pub stripe: Option<nudge_control_plane::stripe::Stripe>,
    pub portal_return_url: Arc<str>,
    /// Stripe's webhooks, while `billing.webhook_secrets` has one.
    pub webhooks: Option<nudge_control_plane::webhooks::Webhooks>,
    pub webhook_secrets: Arc<[secrecy::SecretString]>,
    pub webhook_tolerance_secs: i64,
    /// Campaign webhooks may be `http://` to loopback (`campaigns.allow_loopback_webhooks`).
    pub loopback_webhooks: bool,
    /// Stores' webhook signing secrets live in the vault's KV engine.
    pub vault: nudge_platform_vault::Vault,
}

impl AppState {
    /// Wakes the outbox relays after a commit that enqueued records (every relay waiting,
    /// or the next to wait).
    pub fn wake_outbox(&self) {
        self.outbox_wake.notify_waiters();
        self.outbox_wake.notify_one();
    }
}

impl FromRef<AppState> for Arc<TokenKeys> {
    fn from_ref(state: &AppState) -> Self {
        state.tokens.clone()
    }
}

impl FromRef<AppState> for Database {
    fn from_ref(state: &AppState) -> Self {
        state.db.clone()
    }
}

impl FromRef<AppState> for AdminTokens {
    fn from_ref(state: &AppState) -> Self {
        state.admin_tokens.clone()
    }
}
