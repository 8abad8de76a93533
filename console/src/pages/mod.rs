//! The console's pages, one module per page.

pub mod analytics;
pub mod assets;
pub mod auth;
pub mod billing;
pub mod campaigns;
pub mod events;
pub mod keys;
pub mod overview;
pub mod privacy;
pub mod team;

use askama::Template;
use axum::response::Html;

use crate::{error::ConsoleError, session::Member};

/// What the frame around every signed-in page shows.
pub struct Layout {
    pub store_name: String,
    pub email: String,
    pub role: String,
    pub csrf: String,
    /// The navigation entry of this page.
    pub section: &'static str,
}

impl Layout {
    pub fn new(member: &Member, section: &'static str) -> Self {
        let s = &member.session;
        Self {
            store_name: s.store_name.clone(),
            email: s.email.clone(),
            role: s.role.clone(),
            csrf: s.csrf.clone(),
            section,
        }
    }
}

pub fn render(page: &impl Template) -> Result<Html<String>, ConsoleError> {
    page.render().map(Html).map_err(|e| ConsoleError::Internal(format!("rendering a page: {e}")))
}

/// A path segment taken from a URL to put into an API path: ids are letters, digits, `_`
/// and `-`, so nothing else can reach the API's router.
pub fn id_segment(raw: &str) -> Result<&str, ConsoleError> {
    if !raw.is_empty() && raw.len() <= 100 && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        Ok(raw)
    } else {
        Err(ConsoleError::NotFound)
    }
}

/// `raw` as one path segment of an API path: everything but letters, digits, `_` and `-`
/// percent-encoded, so a value such as `..` or `a/b` stays one segment (the API decodes it).
pub fn path_segment(raw: &str) -> String {
    raw.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub async fn not_found() -> ConsoleError {
    ConsoleError::NotFound
}

/// An RFC 3339 time as a short UTC date and time.
pub fn short_time(rfc3339: &str) -> String {
    match (rfc3339.get(0..10), rfc3339.get(11..16)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => rfc3339.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_value_stays_one_path_segment() {
        assert_eq!(super::path_segment("shp_1-a"), "shp_1-a");
        assert_eq!(super::path_segment(".."), "%2E%2E");
        assert_eq!(super::path_segment("customer:4.2/x"), "customer%3A4%2E2%2Fx");
    }
}
