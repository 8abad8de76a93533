//! The console's stylesheet and script, built into the binary: the console works offline
//! and serves exactly the files its Content-Security-Policy allows.

use axum::{
    extract::Path,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};

use crate::error::ConsoleError;

const FILES: [(&str, &str, &str); 2] = [
    ("console.css", "text/css; charset=utf-8", include_str!("../../assets/console.css")),
    ("console.js", "text/javascript; charset=utf-8", include_str!("../../assets/console.js")),
];

pub async fn asset(Path(file): Path<String>) -> Result<Response, ConsoleError> {
    let (_, content_type, body) = FILES.iter().find(|(name, _, _)| *name == file).ok_or(ConsoleError::NotFound)?;
    let mut response = (*body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    Ok(response)
}
