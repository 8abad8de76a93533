//! Routes of the public API, one module per resource.

pub mod admin;
pub mod billing;
pub mod campaigns;
pub mod erasures;
pub mod error;
pub mod merchant;
pub mod messaging;
pub mod models;
pub mod offboarding;
pub mod sessions;
pub mod store;
pub mod tenants;
pub mod webhook_secret;

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(tenants::router())
        .merge(sessions::router())
        .merge(store::router())
        .merge(erasures::router())
        .merge(admin::router())
        .merge(models::router())
        .merge(offboarding::router())
        .merge(billing::router())
        .merge(campaigns::router())
        .merge(messaging::router())
        .merge(webhook_secret::router())
}
