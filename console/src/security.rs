//! Headers every console answer carries, and the same-origin check on every form post.
//!
//! Pages load scripts and styles only from the console itself: the policy allows no inline
//! script, no inline style, no `eval`, no frames and no form posted elsewhere. Posts are
//! refused unless the browser says they came from the console's own origin (`Sec-Fetch-Site`,
//! `Origin`); each form also carries its session's CSRF token, checked by its handler.

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{Console, error::ConsoleError};

/// The console's Content-Security-Policy.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

pub async fn headers(State(console): State<Console>, request: Request, next: Next) -> Response {
    if request.method() != Method::GET
        && request.method() != Method::HEAD
        && !same_origin(request.headers(), console.public_origin.as_deref())
    {
        tracing::info!("a form post from another origin was refused");
        return secure(ConsoleError::Csrf.into_response());
    }
    secure(next.run(request).await)
}

fn secure(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    h.insert("permissions-policy", HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"));
    if !h.contains_key(header::CACHE_CONTROL) {
        // Pages hold a store's data and a CSRF token: never kept by caches or history.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Whether a state-changing request came from the console's own pages, as far as the browser
/// says: `Sec-Fetch-Site` must be `same-origin` (or `none`, typed by the user), and an
/// `Origin` must be the console's public origin when one is configured, else name the host
/// the request was sent to. A client that sends neither (not a browser) still needs the
/// form's CSRF token.
fn same_origin(headers: &HeaderMap, public_origin: Option<&str>) -> bool {
    if let Some(site) = headers.get("sec-fetch-site")
        && site != "same-origin"
        && site != "none"
    {
        return false;
    }
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        None => true,
        Some(origin) if public_origin.is_some() => public_origin.is_some_and(|p| p.eq_ignore_ascii_case(origin)),
        Some(origin) => {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
            let origin_host = origin.split_once("://").map(|(_, rest)| rest);
            matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn posts_from_other_origins_are_told_apart() {
        assert!(same_origin(&headers(&[("host", "console.test"), ("origin", "https://console.test")]), None));
        assert!(same_origin(&headers(&[("host", "console.test"), ("sec-fetch-site", "same-origin")]), None));
        assert!(same_origin(&headers(&[("host", "console.test")]), None));
        assert!(!same_origin(&headers(&[("host", "console.test"), ("origin", "https://evil.test")]), None));
        assert!(!same_origin(&headers(&[("host", "console.test"), ("origin", "null")]), None));
        assert!(!same_origin(&headers(&[("host", "console.test"), ("sec-fetch-site", "cross-site")]), None));
        assert!(!same_origin(&headers(&[("host", "console.test"), ("sec-fetch-site", "same-site")]), None));
        assert!(!same_origin(&headers(&[("host", "console.test:1"), ("origin", "https://console.test:2")]), None));
        // Behind a proxy that rewrites Host, the configured origin decides.
        let public = Some("https://console.example.com");
        assert!(same_origin(&headers(&[("host", "10.0.0.7:8080"), ("origin", "https://console.example.com")]), public));
        assert!(!same_origin(&headers(&[("host", "10.0.0.7:8080"), ("origin", "https://10.0.0.7:8080")]), public));
        assert!(!same_origin(
            &headers(&[("host", "console.example.com"), ("origin", "http://console.example.com")]),
            public
        ));
    }
}
