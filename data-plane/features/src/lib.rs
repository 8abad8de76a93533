//! Real-time shopper features.
//!
//! # Layout
//!
//! - [`definitions`]: the feature list, in the order the model takes them. The training
//!   script writes the same list into the model card; a test holds the two together.
//! - [`names`]: the names a campaign's condition and messages may use, and their values at
//!   one moment of a shopper.
//! - [`session`]: [`SessionState`], a shopper's running session, and how each event updates
//!   it and yields the feature vector at that moment. Pure, so it is unit-tested here.
//! - [`store`]: [`store::SessionStore`], the Redis online store, keyed by tenant and shopper.
//! - [`api`]: the read API (`GET /v1/shoppers/{id}/features`, `POST /v1/shoppers/features`)
//!   for a store's servers, with a `features:read` secret key.

pub mod api;
pub mod definitions;
pub mod names;
pub mod session;
pub mod store;

pub use definitions::{FEATURE_NAMES, FEATURE_SET_VERSION, FeatureVector, N_FEATURES};
pub use session::SessionState;
