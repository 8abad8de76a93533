//! Routes of the public API, one module per resource.

pub mod admin;
pub mod error;
pub mod tenants;

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().merge(tenants::router()).merge(admin::router())
}
