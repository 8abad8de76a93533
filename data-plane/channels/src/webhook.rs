//! The webhook channel: a signed POST of a campaign's message to the merchant's endpoint.
//!
//! Each request carries `Nudge-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over
//! `<t>.<body>` with the store's signing secret (the merchant checks it and that `t` is
//! recent) — one `v1=` per secret that signs, so while a replaced secret overlaps the new
//! one there are two, and an endpoint accepts the request when any of them holds — and
//! `Nudge-Delivery: <send id>`, the same on every retry of one send. The
//! endpoint's name is resolved here and every address it resolves to must be public (no
//! private, loopback or link-local network, unless the cell allows loopback for local runs);
//! the connection goes to the address checked, redirects are not followed.

use std::{net::IpAddr, time::Duration};

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// `[channels.webhooks]` in the cell's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct WebhookConfig {
    /// How long one delivery may take.
    pub timeout_ms: u64,
    /// Whether endpoints on loopback may be called (local runs and tests only).
    pub allow_loopback: bool,
    /// Failed attempts in a row after which a campaign version's endpoint is flagged and its
    /// webhooks are no longer sent (until a new version is saved).
    pub flag_after_failures: u32,
    /// How long a store's signing secrets read from the vault are used before they are read
    /// again: a new secret starts signing within this.
    pub secret_refresh_ms: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self { timeout_ms: 10_000, allow_loopback: false, flag_after_failures: 10, secret_refresh_ms: 30_000 }
    }
}

/// Why a delivery did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Worth trying again: unreachable, timed out, 408, 429 or 5xx.
    #[error("{0}")]
    Transient(String),
    /// Trying again will not help: another 4xx, or an endpoint the platform may not call.
    #[error("{0}")]
    Permanent(String),
}

/// The `Nudge-Signature` value of `body` at `timestamp`: one `v1=` per secret, in order.
pub fn signature(secrets: &[&[u8]], timestamp: i64, body: &str) -> String {
    let signed = format!("{timestamp}.{body}");
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(signed.as_bytes());
        header.push_str(",v1=");
        header.push_str(&hex::encode(mac.finalize().into_bytes()));
    }
    header
}

/// Delivers webhooks.
pub struct WebhookSender {
    config: WebhookConfig,
}

impl WebhookSender {
    pub fn new(config: WebhookConfig) -> Self {
        Self { config }
    }

    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        nudge_campaigns::model::public_address(ip) || (self.config.allow_loopback && ip.is_loopback())
    }

    /// POSTs `body` to `url`, signed with each of `secrets` at `timestamp`, as delivery `id`.
    pub async fn send(
        &self,
        url: &str,
        secrets: &[&[u8]],
        id: &str,
        body: &str,
        timestamp: i64,
    ) -> Result<u16, WebhookError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| WebhookError::Permanent(format!("the URL: {e}")))?;
        let host = parsed.host_str().ok_or_else(|| WebhookError::Permanent("the URL names no host".into()))?.to_owned();
        let port = parsed.port_or_known_default().unwrap_or(443);
        let lookup_host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let addresses: Vec<std::net::SocketAddr> = tokio::net::lookup_host((lookup_host.as_str(), port))
            .await
            .map_err(|e| WebhookError::Transient(format!("resolving {host}: {e}")))?
            .collect();
        let Some(address) = addresses.first().copied() else {
            return Err(WebhookError::Transient(format!("{host} resolves to nothing")));
        };
        if let Some(refused) = addresses.iter().find(|a| !self.allowed(a.ip())) {
            return Err(WebhookError::Permanent(format!(
                "{host} resolves to {}, which the platform may not call",
                refused.ip()
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(self.config.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would connect wherever the name resolves for it, past the check above.
            .no_proxy()
            .resolve(&lookup_host, address)
            .build()
            .map_err(|e| WebhookError::Transient(format!("the HTTP client: {e}")))?;
        let response = client
            .post(parsed)
            .header("content-type", "application/json")
            .header("user-agent", "Nudge-Webhooks/1")
            .header("nudge-delivery", id)
            .header("nudge-signature", signature(secrets, timestamp, body))
            .body(body.to_owned())
            .send()
            .await
            .map_err(|e| WebhookError::Transient(format!("{e}")))?;
        let status = response.status().as_u16();
        match status {
            200..=299 => Ok(status),
            408 | 429 | 500..=599 => Err(WebhookError::Transient(format!("the endpoint answered {status}"))),
            _ => Err(WebhookError::Permanent(format!("the endpoint answered {status}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        let sig = signature(&[b"Jefe"], 0, "x");
        assert!(sig.starts_with("t=0,v1=") && sig.len() == "t=0,v1=".len() + 64);
        let mac = |key: &[u8]| {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
            mac.update(b"0.x");
            hex::encode(mac.finalize().into_bytes())
        };
        assert_eq!(sig, format!("t=0,v1={}", mac(b"Jefe")));
        assert_ne!(signature(&[b"Jefe"], 1, "x"), sig, "the time is signed");
        assert_ne!(signature(&[b"Jefe"], 0, "y"), sig, "the body is signed");
        // During a rotation's overlap: one `v1=` per secret, the new one first.
        assert_eq!(signature(&[b"new", b"old"], 0, "x"), format!("t=0,v1={},v1={}", mac(b"new"), mac(b"old")));
    }
}
