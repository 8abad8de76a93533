//! The tenancy domain of Nudge, free of I/O so both planes and the operator can share it.
//!
//! # Layout
//!
//! - [`account`]: merchant accounts: ids, roles, e-mail addresses, the password policy.
//! - [`id`]: typed, prefixed identifiers (`tnt_…`, `cell_…`) and the macro that makes them.
//! - [`keys`]: publishable keys (public, for browsers) and secret keys (shown once, stored as
//!   a hash), with their generation and parsing.
//! - [`origin`]: the allowed-origin value a browser's `Origin` header is checked against.
//! - [`name`]: a store's display name.
//! - [`lifecycle`]: tenant states and the transitions between them.
//! - [`plan`]: plans and the limits they set (events/s, sockets, retention, seats).
//! - [`tier`]: isolation tiers (shared or dedicated cell and database).
//! - [`rollout`]: a candidate model beside production (canary or shadow) and the sticky
//!   choice of canary shoppers.

pub mod access;
pub mod account;
pub mod id;
pub mod keys;
pub mod lifecycle;
pub mod name;
pub mod origin;
pub mod plan;
pub mod rollout;
pub mod tier;

pub use account::{AccountId, Email, EmailError, KeyId, Password, PasswordError, Role};
pub use id::{CellId, CellIdError, IdError, TenantId};
pub use keys::{KeyError, PublishableKey, SecretKey, SecretKeyHash};
pub use lifecycle::{Actor, InvalidTransition, Step, TenantState};
pub use name::{TenantName, TenantNameError};
pub use origin::{AllowedOrigin, OriginError};
pub use plan::{LimitOverrides, Limits, MIN_RETENTION_DAYS, Plan, SOFT_LIMIT_PERCENT};
pub use rollout::{ModelRollout, RolloutMode, in_canary};
pub use tier::IsolationTier;
