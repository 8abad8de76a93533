//! OpenAPI documents. Routes are added through `utoipa_axum`'s `OpenApiRouter` with
//! `routes!`, which registers a handler and its documentation together, so a public route
//! cannot exist without being described.

use axum::{Json, Router, routing::get};
use utoipa::openapi::{
    OpenApi,
    security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_axum::router::OpenApiRouter;

/// Splits `router` into the axum router and its document, and serves the document at
/// `/v1/openapi.json`.
pub fn with_document(router: OpenApiRouter, title: &str, description: &str) -> (Router, OpenApi) {
    let (router, mut api) = router.split_for_parts();
    api.info.title = title.to_owned();
    api.info.description = Some(description.to_owned());
    api.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "publishable_key",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("pk_…").build()),
    );
    components.add_security_scheme(
        "access_token",
        SecurityScheme::Http(
            HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("PASETO v4.public").build(),
        ),
    );
    components.add_security_scheme(
        "operator_token",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    let served = api.clone();
    (router.route("/v1/openapi.json", get(move || async move { Json(served) })), api)
}
