//! The control plane's logic, persistence and workers (its HTTP face is `nudge-web-api`).
//!
//! # Layout
//!
//! - [`config`]: [`ControlPlaneConfig`], loaded in layers by the binaries.
//! - [`db`]: the connection pool and [`db::Database::tenant_tx`], the one way to open a
//!   transaction that acts for a tenant under row-level security.
//! - [`plans`]: a store's plan and limit overrides, and the model its events are scored with.
//! - [`registry`]: the model registry: versions, content-addressed artifacts, stages, the
//!   default model, announced to the cells on `control.models.v1`.
//! - [`routing`]: [`routing::TenantRouter`], which sends a tenant's transactions to its database.
//! - [`dedicated`]: moving a tenant to a dedicated database, writes fenced during the flip.
//! - [`placement`]: the cells and each tenant's route (its cell), as recorded here.
//! - [`provision`]: where cells come from — the `Provisioner`, local processes or
//!   Kubernetes resources for the operator.
//! - [`signup`]: self-service signup: tenant, keys, origins and the announcement to its cell,
//!   in one transaction.
//! - [`accounts`]: merchant accounts, login, memberships.
//! - [`auth`]: passwords, access tokens and refresh sessions.
//! - [`keys`]: a store's API keys.
//! - [`catalog`]: the lint that checks the database against the isolation rules.
//! - [`lifecycle`]: state transitions with their audit log.
//! - [`announce`]: the tenant's configuration snapshot, enqueued for the cells.
//! - [`entities`], [`origins`]: sea-orm entities and the repositories that use them.
//! - [`suppressions`]: shoppers whose events the cells drop.
//! - [`erasure`]: erasure requests tracked per store, legal holds, signed receipts.
//! - [`offboarding`]: a leaving store's grace period, then its purge from every store.
//! - [`usage`]: usage reports from the cells, and the merchant's totals.
//! - [`billing`]: every store a Stripe customer subscribed to its plan, kept in step by a
//!   sweep; [`stripe`]: the small Stripe API client it uses; [`webhooks`]: Stripe's events,
//!   verified, received once, and the dunning they drive; [`meters`]: the ledger's usage
//!   sent to Stripe's meters, and its reconciliation.
//! - [`checkout`]: self-service plan changes, through Stripe Checkout for a paid plan.
//! - [`campaigns`]: a store's campaigns, checked, versioned, moved through their lifecycle.
//! - [`store`]: a store's profile.
//! - [`outbox`]: the relay that publishes committed outbox rows to Kafka.

pub mod accounts;
pub mod announce;
pub mod auth;
pub mod billing;
pub mod campaigns;
pub mod catalog;
pub mod checkout;
pub mod config;
pub mod db;
pub mod dedicated;
pub mod entities;
pub mod erasure;
pub mod keys;
pub mod lifecycle;
pub mod messaging;
pub mod meters;
pub mod offboarding;
pub mod origins;
pub mod outbox;
pub mod placement;
pub mod plans;
pub mod provision;
pub mod registry;
pub mod routing;
pub mod signup;
pub mod store;
pub mod stripe;
pub mod suppressions;
pub mod usage;
pub mod webhook_secrets;
pub mod webhooks;

pub use config::ControlPlaneConfig;
pub use db::Database;
