//! Allowed origins: the web origins a tenant's publishable key may be used from.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a value is not a web origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("an origin is `http://` or `https://`, a host, and an optional port, with no path")]
    Malformed,
}

/// A normalised web origin: lowercase scheme and host, default ports dropped, no path.
/// Comparing two of these is how a browser's `Origin` header is checked.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AllowedOrigin(String);

impl AllowedOrigin {
    pub fn parse(raw: &str) -> Result<Self, OriginError> {
        let raw = raw.trim().trim_end_matches('/');
        let lower = raw.to_ascii_lowercase();
        let (scheme, rest) = lower.split_once("://").ok_or(OriginError::Malformed)?;
        let default_port = match scheme {
            "https" => "443",
            "http" => "80",
            _ => return Err(OriginError::Malformed),
        };
        if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
            return Err(OriginError::Malformed);
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 5 {
                    return Err(OriginError::Malformed);
                }
                (h, Some(p))
            }
            _ => (rest, None),
        };
        let host_ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
        if !host_ok {
            return Err(OriginError::Malformed);
        }
        let text = match port {
            Some(p) if p != default_port => format!("{scheme}://{host}:{p}"),
            _ => format!("{scheme}://{host}"),
        };
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when a browser's `Origin` header names this origin.
    pub fn matches(&self, header: &str) -> bool {
        Self::parse(header).is_ok_and(|o| o == *self)
    }
}

impl TryFrom<String> for AllowedOrigin {
    type Error = OriginError;
    fn try_from(s: String) -> Result<Self, OriginError> {
        Self::parse(&s)
    }
}

impl From<AllowedOrigin> for String {
    fn from(o: AllowedOrigin) -> String {
        o.0
    }
}

impl fmt::Display for AllowedOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AllowedOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_slash_and_default_ports() {
        let o = AllowedOrigin::parse("HTTPS://Shop.Example.com:443/").unwrap();
        assert_eq!(o.as_str(), "https://shop.example.com");
        assert_eq!(AllowedOrigin::parse("http://localhost:8082").unwrap().as_str(), "http://localhost:8082");
        assert_eq!(AllowedOrigin::parse("http://127.0.0.1:80").unwrap().as_str(), "http://127.0.0.1");
    }

    #[test]
    fn rejects_paths_schemes_and_junk() {
        for bad in
            ["shop.example.com", "ftp://x", "https://", "https://x/path", "https://x:abc", "https://a b", "https://u@x"]
        {
            assert_eq!(AllowedOrigin::parse(bad), Err(OriginError::Malformed), "{bad}");
        }
    }

    #[test]
    fn matches_only_the_same_origin() {
        let o = AllowedOrigin::parse("https://shop.example.com").unwrap();
        assert!(o.matches("https://shop.example.com"));
        assert!(o.matches("https://SHOP.example.com:443"));
        assert!(!o.matches("http://shop.example.com"));
        assert!(!o.matches("https://shop.example.com.evil.io"));
        assert!(!o.matches("null"));
    }
}
