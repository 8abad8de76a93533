//! OpenBao (the Vault API) for the platform, through its Transit engine: keys that never
//! leave the vault, used by name. Two uses: the signing key of erasure receipts (ed25519),
//! whose public halves anyone can fetch to check a receipt without the vault; and the key
//! encryption keys of the cells (AES-256-GCM, one per tenant) that wrap the shoppers' data
//! keys (`nudge_data_plane_keyring`), rotated and rewrapped without the data keys ever
//! leaving the process that uses them.
//!
//! Constructing a [`Vault`] does no I/O; every call is bounded by the configured timeout
//! and fails as [`VaultError::Unavailable`] when the vault cannot be reached or answers
//! with a server error, so callers retry or answer 503.

use std::{collections::BTreeMap, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use vaultrs::{
    api::transit::{
        KeyType,
        requests::{CreateKeyRequest, UpdateKeyConfigurationRequest},
        responses::ReadKeyData,
    },
    client::{VaultClient, VaultClientSettingsBuilder},
    error::ClientError,
    transit,
};

/// Where the vault is and how to use it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaultConfig {
    /// Base URL (`http://127.0.0.1:8200`).
    pub address: String,
    /// A token allowed to use the Transit mount (set from `NUDGE_…__VAULT__TOKEN`).
    pub token: SecretString,
    /// Where the Transit engine is mounted.
    pub transit_mount: String,
    /// Where the KV (version 2) engine is mounted: secrets the platform keeps for stores
    /// (their webhook signing secrets).
    pub kv_mount: String,
    /// The longest any call may take.
    pub timeout_ms: u64,
}

impl VaultConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !self.address.starts_with("http://") && !self.address.starts_with("https://") {
            return Err("vault.address must be an http(s) URL".into());
        }
        if self.transit_mount.trim().is_empty() {
            return Err("vault.transit_mount must name the Transit mount".into());
        }
        if self.timeout_ms == 0 {
            return Err("vault.timeout_ms must be positive".into());
        }
        Ok(())
    }
}

impl Default for VaultConfig {
    fn default() -> Self {
        Self {
            address: "http://127.0.0.1:8200".into(),
            token: SecretString::from(""),
            transit_mount: "transit".into(),
            kv_mount: "secret".into(),
            timeout_ms: 3000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The vault cannot be reached, is sealed, or failed: retry later.
    #[error("the vault is unavailable: {0}")]
    Unavailable(String),
    /// The vault refused the request (a key of the wrong type, a ciphertext of a retired
    /// version, bad input). A token the vault refuses counts as unavailable: it is fixed by
    /// an operator, and retrying is right meanwhile.
    #[error("the vault refused the request: {0}")]
    Refused(String),
    /// No such key.
    #[error("no such key in the vault: {0}")]
    NotFound(String),
    #[error("the vault is misconfigured: {0}")]
    Config(String),
}

fn classify(e: ClientError) -> VaultError {
    match e {
        // A token that expired or lacks a policy: an operator fixes it, callers retry.
        ClientError::APIError { code: code @ (401 | 403), errors } => {
            VaultError::Unavailable(format!("the vault refused the token ({code}): {}", errors.join("; ")))
        }
        ClientError::APIError { code: 404, errors } => VaultError::NotFound(errors.join("; ")),
        ClientError::APIError { code, errors } if (400..500).contains(&code) && code != 429 => {
            VaultError::Refused(format!("{code}: {}", errors.join("; ")))
        }
        other => VaultError::Unavailable(other.to_string()),
    }
}

/// Where a store's webhook signing secret is kept in the KV engine: written by the control
/// plane, read by the cells that sign the store's webhooks.
pub fn webhook_secret_path(tenant_id: &str) -> String {
    format!("nudge/webhook-secrets/{tenant_id}")
}

/// A store's webhook signing secret as kept in the vault.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookSecret {
    /// `whsec_…`; its bytes are the HMAC key.
    pub secret: String,
    /// RFC 3339.
    pub created_at: String,
    /// The secret it replaced, which still signs beside it until `until`, so a merchant's
    /// endpoint can move to the new one without rejecting webhooks meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousWebhookSecret>,
}

/// A replaced webhook signing secret during its overlap with the new one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreviousWebhookSecret {
    pub secret: String,
    /// RFC 3339: when it stops signing.
    pub until: String,
}

impl WebhookSecret {
    /// The secrets that sign at `now`: this one, then the one it replaced while its overlap
    /// lasts.
    pub fn signing_at(&self, now: chrono::DateTime<chrono::Utc>) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let Some(previous) = &self.previous
            && chrono::DateTime::parse_from_rfc3339(&previous.until).is_ok_and(|until| until > now)
        {
            secrets.push(previous.secret.as_str());
        }
        secrets
    }
}

/// A signature made by a Transit key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// As the vault writes it: `vault:v<version>:<base64 signature>`.
    pub signature: String,
    /// The key that signed.
    pub key: String,
    /// The version of the key that signed.
    pub key_version: u64,
}

/// A Transit engine.
#[derive(Clone)]
pub struct Vault {
    client: std::sync::Arc<VaultClient>,
    mount: String,
    kv_mount: String,
}

impl Vault {
    pub fn new(config: &VaultConfig) -> Result<Self, VaultError> {
        // The HTTP client's TLS needs a process-wide provider; another component may have
        // installed one already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let settings = VaultClientSettingsBuilder::default()
            .address(&config.address)
            .token(config.token.expose_secret())
            .timeout(Some(Duration::from_millis(config.timeout_ms)))
            .build()
            .map_err(|e| VaultError::Config(e.to_string()))?;
        let client = VaultClient::new(settings).map_err(|e| VaultError::Config(e.to_string()))?;
        Ok(Self {
            client: std::sync::Arc::new(client),
            mount: config.transit_mount.clone(),
            kv_mount: config.kv_mount.clone(),
        })
    }

    /// Writes `value` as the latest version of the KV secret at `path`.
    pub async fn put_secret<T: Serialize>(&self, path: &str, value: &T) -> Result<(), VaultError> {
        vaultrs::kv2::set(self.client.as_ref(), &self.kv_mount, path, value).await.map(|_| ()).map_err(classify)
    }

    /// The latest version of the KV secret at `path`; `None` when there is none.
    pub async fn get_secret<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Option<T>, VaultError> {
        match vaultrs::kv2::read(self.client.as_ref(), &self.kv_mount, path).await {
            Ok(value) => Ok(Some(value)),
            Err(ClientError::APIError { code: 404, .. }) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    /// Creates the ed25519 signing key `name` unless it exists (the vault leaves an
    /// existing key as it is).
    pub async fn ensure_signing_key(&self, name: &str) -> Result<(), VaultError> {
        transit::key::create(
            self.client.as_ref(),
            &self.mount,
            name,
            Some(CreateKeyRequest::builder().key_type(KeyType::Ed25519)),
        )
        .await
        .map_err(classify)
    }

    /// Signs `data` with the latest version of key `name`.
    pub async fn sign(&self, name: &str, data: &[u8]) -> Result<Signature, VaultError> {
        let signed = transit::data::sign(self.client.as_ref(), &self.mount, name, &STANDARD.encode(data), None)
            .await
            .map_err(classify)?;
        let key_version = signed
            .signature
            .strip_prefix("vault:v")
            .and_then(|rest| rest.split_once(':'))
            .and_then(|(v, _)| v.parse().ok())
            .ok_or_else(|| VaultError::Refused("the vault answered a signature in an unknown form".into()))?;
        Ok(Signature { signature: signed.signature, key: name.to_owned(), key_version })
    }

    /// The public keys of signing key `name` by version, base64 as the vault gives them
    /// (32 raw bytes for ed25519).
    pub async fn public_keys(&self, name: &str) -> Result<BTreeMap<u64, String>, VaultError> {
        let key = transit::key::read(self.client.as_ref(), &self.mount, name).await.map_err(classify)?;
        match key.keys {
            ReadKeyData::Asymmetric(versions) => Ok(versions
                .into_iter()
                .filter_map(|(version, entry)| Some((version.parse().ok()?, entry.public_key)))
                .collect()),
            ReadKeyData::Symmetric(_) => Err(VaultError::Refused(format!("{name} is not a signing key"))),
        }
    }
}

/// The versions of an encryption key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersions {
    /// The version new ciphertexts are made with.
    pub latest: u64,
    /// Ciphertexts of older versions no longer decrypt.
    pub min_decryption: u64,
    /// When the latest version was made (Unix seconds).
    pub latest_created_unix_s: i64,
}

/// The key version a Transit ciphertext (`vault:v<n>:…`) was made with.
pub fn ciphertext_version(ciphertext: &str) -> Option<u64> {
    ciphertext.strip_prefix("vault:v")?.split_once(':')?.0.parse().ok()
}

impl Vault {
    /// Creates the AES-256-GCM encryption key `name` unless it exists, rotated by the
    /// vault every `rotate_every` (a duration such as `720h`) when given.
    pub async fn ensure_encryption_key(&self, name: &str, rotate_every: Option<&str>) -> Result<(), VaultError> {
        let mut request = CreateKeyRequest::builder();
        request.key_type(KeyType::Aes256Gcm96);
        if let Some(period) = rotate_every {
            request.auto_rotate_period(period);
        }
        transit::key::create(self.client.as_ref(), &self.mount, name, Some(&mut request)).await.map_err(classify)
    }

    /// Encrypts `plaintext` (a data key) with the latest version of key `name`; the
    /// ciphertext (`vault:v<n>:…`) names the version.
    pub async fn wrap(&self, name: &str, plaintext: &[u8]) -> Result<String, VaultError> {
        let wrapped =
            transit::data::encrypt(self.client.as_ref(), &self.mount, name, &STANDARD.encode(plaintext), None)
                .await
                .map_err(classify)?;
        Ok(wrapped.ciphertext)
    }

    /// Decrypts what [`Vault::wrap`] made. Refused when the key is gone or the ciphertext's
    /// version is below the key's minimum decryption version.
    pub async fn unwrap(&self, name: &str, ciphertext: &str) -> Result<Vec<u8>, VaultError> {
        let plain = transit::data::decrypt(self.client.as_ref(), &self.mount, name, ciphertext, None)
            .await
            .map_err(classify)?;
        STANDARD
            .decode(plain.plaintext)
            .map_err(|_| VaultError::Refused("the vault answered a plaintext that is not base64".into()))
    }

    /// Re-encrypts a ciphertext of key `name` with its latest version, inside the vault.
    pub async fn rewrap(&self, name: &str, ciphertext: &str) -> Result<String, VaultError> {
        let rewrapped =
            transit::data::rewrap(self.client.as_ref(), &self.mount, name, ciphertext, None).await.map_err(classify)?;
        Ok(rewrapped.ciphertext)
    }

    /// Adds a new version to key `name`; new ciphertexts use it.
    pub async fn rotate(&self, name: &str) -> Result<(), VaultError> {
        transit::key::rotate(self.client.as_ref(), &self.mount, name).await.map_err(classify)
    }

    /// The latest and minimum decryption versions of encryption key `name`.
    pub async fn key_versions(&self, name: &str) -> Result<KeyVersions, VaultError> {
        let key = transit::key::read(self.client.as_ref(), &self.mount, name).await.map_err(classify)?;
        let latest = match key.keys {
            ReadKeyData::Symmetric(versions) => versions
                .into_iter()
                .filter_map(|(version, created)| Some((version.parse::<u64>().ok()?, created)))
                .max_by_key(|(version, _)| *version),
            ReadKeyData::Asymmetric(_) => None,
        };
        let (latest, created) =
            latest.ok_or_else(|| VaultError::Refused(format!("{name} is not an encryption key")))?;
        Ok(KeyVersions {
            latest,
            min_decryption: key.min_decryption_version,
            latest_created_unix_s: i64::try_from(created).unwrap_or(i64::MAX),
        })
    }

    /// Ciphertexts of key `name` older than `version` stop decrypting (after a rewrap,
    /// so that copies of old wrapped keys left anywhere are useless).
    pub async fn set_min_decryption_version(&self, name: &str, version: u64) -> Result<(), VaultError> {
        transit::key::update(
            self.client.as_ref(),
            &self.mount,
            name,
            Some(UpdateKeyConfigurationRequest::builder().min_decryption_version(Some(version))),
        )
        .await
        .map_err(classify)
    }
}

impl Vault {
    /// Whether key `name` exists.
    pub async fn key_exists(&self, name: &str) -> Result<bool, VaultError> {
        match transit::key::read(self.client.as_ref(), &self.mount, name).await.map_err(classify) {
            Ok(_) => Ok(true),
            Err(VaultError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes encryption key `name` and every version of it, so nothing it ever wrapped
    /// can be unwrapped again; whether it existed. The vault refuses to delete a key unless
    /// its configuration allows it, which this sets first.
    pub async fn delete_key(&self, name: &str) -> Result<bool, VaultError> {
        // The vault answers a configuration change of a missing key with a bad request, not
        // 404: ask first.
        if !self.key_exists(name).await? {
            return Ok(false);
        }
        transit::key::update(
            self.client.as_ref(),
            &self.mount,
            name,
            Some(UpdateKeyConfigurationRequest::builder().deletion_allowed(true)),
        )
        .await
        .map_err(classify)?;
        transit::key::delete(self.client.as_ref(), &self.mount, name).await.map_err(classify)?;
        Ok(true)
    }
}

/// The raw signature bytes of a vault signature (`vault:v<n>:<base64>`).
pub fn signature_bytes(signature: &str) -> Option<Vec<u8>> {
    let encoded = signature.strip_prefix("vault:v")?.split_once(':')?.1;
    STANDARD.decode(encoded).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_webhook_secret_signs_beside_the_new_one_until_its_overlap_ends() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-29T12:00:00Z").unwrap().to_utc();
        let kept = WebhookSecret {
            secret: "whsec_new".into(),
            created_at: "2026-11-29T11:00:00Z".into(),
            previous: Some(PreviousWebhookSecret { secret: "whsec_old".into(), until: "2026-11-29T12:00:01Z".into() }),
        };
        assert_eq!(kept.signing_at(now), ["whsec_new", "whsec_old"]);
        assert_eq!(kept.signing_at(now + chrono::Duration::seconds(1)), ["whsec_new"], "the overlap is over");
        // A record kept before overlaps existed reads as one secret.
        let old: WebhookSecret =
            serde_json::from_str(r#"{"secret": "whsec_only", "created_at": "2026-11-01T00:00:00Z"}"#).unwrap();
        assert_eq!(old.signing_at(now), ["whsec_only"]);
    }
}
