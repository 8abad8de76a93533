//! The demo storefront `nudge dev` serves: a small shop page that embeds `nudge.js` from
//! the cell, on its own origin, as a merchant's site would.

use axum::{Router, response::Html, routing::get};
/// What the demo page needs to embed the snippet.
#[derive(Debug, Clone)]
pub struct DemoStore {
    pub tenant_id: String,
    pub publishable_key: String,
    pub cell_url: String,
}
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const PAGE: &str = include_str!("../../web/demo/index.html");

/// The page with the tenant's cell URL and publishable key filled in.
pub fn page(tenant: &DemoStore) -> String {
    PAGE.replace("__NUDGE_CELL_URL__", &tenant.cell_url).replace("__NUDGE_KEY__", &tenant.publishable_key)
}

pub async fn serve(listener: TcpListener, tenant: DemoStore, shutdown: CancellationToken) -> anyhow::Result<()> {
    let html = page(&tenant);
    let router = Router::new()
        .route("/", get(move || async move { Html(html) }))
        .route("/favicon.ico", get(|| async { axum::http::StatusCode::NO_CONTENT }));
    nudge_platform_http::serve(listener, router, shutdown).await?;
    Ok(())
}
