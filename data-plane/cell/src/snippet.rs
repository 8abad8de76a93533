//! `GET /nudge.js`: the browser snippet stores embed, served by the cell they talk to.

use axum::{
    Router,
    http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_TYPE},
    routing::get,
};

/// The snippet's source (`web/nudge.js`).
pub const NUDGE_JS: &str = include_str!("../../../web/nudge.js");

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route(
        "/nudge.js",
        get(|| async {
            (
                [
                    (CONTENT_TYPE, "application/javascript; charset=utf-8"),
                    (CACHE_CONTROL, "public, max-age=300"),
                    (ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
                ],
                NUDGE_JS,
            )
        }),
    )
}
