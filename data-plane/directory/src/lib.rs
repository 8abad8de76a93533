//! The cell's tenant directory: which publishable keys belong to which tenant, from which
//! origins they may be used, and whether the tenant takes traffic.
//!
//! # Layout
//!
//! - [`directory`]: [`Directory`], the in-memory map ingest and the gateway consult on every
//!   request, and how a `TenantConfig` record updates it.
//! - [`auth`]: the publishable key and `Origin` check that decides which tenant a browser
//!   request acts for (never the body); ingest and the gateway share it.
//! - [`session`]: [`session::SessionSigner`], the signed short-lived tokens ingest issues
//!   for a shopper and the gateway requires to open that shopper's socket.
//! - [`follow`]: [`follow`], the task that reads `control.tenants.v1` from the beginning at
//!   start, reports when it has caught up, and keeps following.

pub mod auth;
pub mod directory;
pub mod follow;
pub mod session;

pub use directory::{Directory, Erasure, ErasureScope, ServerKeyEntry, TenantEntry, TenantLimits};
pub use follow::follow;
