//! Routes of the public API, one module per resource.

pub mod error;
pub mod tenants;

use axum::Router;

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().merge(tenants::router())
}
