//! `GET /nudge.js`: the browser snippet stores embed, served by the cell they talk to.

use axum::{
    http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_TYPE},
    response::IntoResponse,
};
use utoipa_axum::{router::OpenApiRouter, routes};

/// The snippet's source (`web/nudge.js`).
pub const NUDGE_JS: &str = include_str!("../../../web/nudge.js");

pub fn router<S: Clone + Send + Sync + 'static>() -> OpenApiRouter<S> {
    OpenApiRouter::new().routes(routes!(nudge_js))
}

/// The browser snippet.
#[utoipa::path(get, path = "/nudge.js", tag = "snippet", responses((status = 200, description = "JavaScript", content_type = "application/javascript")))]
async fn nudge_js() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "application/javascript; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=300"),
            (ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        NUDGE_JS,
    )
}
