//! Identifiers chosen outside the platform (by the snippet) or per message.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An id from the client that is not 1-64 characters of `A-Z a-z 0-9 _ - . :`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be 1-64 characters of letters, digits, '_', '-', '.' or ':'")]
pub struct ClientIdError {
    pub what: &'static str,
}

fn valid_client_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
}

macro_rules! client_id {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, ClientIdError> {
                if valid_client_id(s) { Ok(Self(s.to_owned())) } else { Err(ClientIdError { what: $what }) }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ClientIdError;
            fn try_from(s: String) -> Result<Self, ClientIdError> {
                if valid_client_id(&s) { Ok(Self(s)) } else { Err(ClientIdError { what: $what }) }
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

client_id!(
    /// The store's anonymous id for a shopper (a browser), unique within a tenant.
    ShopperId,
    "shopper_id"
);

client_id!(
    /// The sender's id for one event, unique within a tenant.
    EventId,
    "event_id"
);

nudge_tenants::prefixed_id!(
    /// One intervention decided for one shopper.
    InterventionId,
    "itv"
);

/// A shopper's subject digest within a tenant: the hex SHA-256 of
/// `nudge.subject.v1:<tenant uuid>:<shopper id>`. Suppressions, erasure requests and their
/// receipts name a shopper by it, so they never hold the shopper's id; a store cannot match
/// another store's digest (the tenant is in it). PostgreSQL computes the same with
/// `encode(sha256(convert_to('nudge.subject.v1:' || tenant_id || ':' || shopper_id, 'UTF8')), 'hex')`.
pub fn subject_digest(tenant: uuid::Uuid, shopper: &ShopperId) -> String {
    use sha2::{Digest, Sha256};
    let mut uuid = uuid::Uuid::encode_buffer();
    let digest = Sha256::new()
        .chain_update(b"nudge.subject.v1:")
        .chain_update(tenant.hyphenated().encode_lower(&mut uuid).as_bytes())
        .chain_update(b":")
        .chain_update(shopper.as_str().as_bytes())
        .finalize();
    lower_hex(&digest)
}

/// Whether `s` is a SHA-256 in lowercase hex (a subject digest, an e-mail hash).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The digest under which a tenant knows an e-mail address: the hex SHA-256 of
/// `nudge.email.v1:<tenant uuid>:<email_sha256>`, where `email_sha256` is the store's hash of
/// the address (lowercase hex, see the `identify` event). The store's hash is the same in
/// every store that hashes that address; this digest is not, so nothing Nudge keeps links a
/// person across stores. An erasure by e-mail is filed, suppressed and indexed under it.
pub fn email_digest(tenant: uuid::Uuid, email_sha256: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut uuid = uuid::Uuid::encode_buffer();
    let digest = Sha256::new()
        .chain_update(b"nudge.email.v1:")
        .chain_update(tenant.hyphenated().encode_lower(&mut uuid).as_bytes())
        .chain_update(b":")
        .chain_update(email_sha256.as_bytes())
        .finalize();
    lower_hex(&digest)
}

/// Lowercase hex of `bytes` (on every event's path: no formatting machinery).
fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    hex
}

/// How Nudge keeps a client-chosen id (an event id, an idempotency key) where it only needs
/// to recognise it again: the first 16 bytes of its SHA-256, in hex. A store's server may
/// build its ids from anything, personal data included; a digest keeps none of it.
pub fn id_digest(id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(id.as_bytes());
    lower_hex(&digest[..16])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_accept_uuids_and_reject_junk() {
        assert!(ShopperId::parse("shp_3f2a9c1e-7b44-4c1d-9a55-0e6f1d2c3b4a").is_ok());
        assert!(EventId::parse("0190f3c2-8a1b-7c3d-9e4f-5a6b7c8d9e0f").is_ok());
        assert!(ShopperId::parse("").is_err());
        assert!(ShopperId::parse("a b").is_err());
        assert!(ShopperId::parse(&"x".repeat(65)).is_err());
        assert!(EventId::parse("ok/../x").is_err());
    }

    #[test]
    fn an_id_digest_is_the_first_half_of_its_sha256_in_lowercase_hex() {
        assert_eq!(id_digest("abc"), "ba7816bf8f01cfea414140de5dae2223");
    }

    #[test]
    fn a_subject_digest_is_the_one_postgres_computes_and_differs_per_tenant() {
        let tenant: uuid::Uuid = "0190f3c2-8a1b-7c3d-9e4f-5a6b7c8d9e0f".parse().unwrap();
        let shopper = ShopperId::parse("shp_1").unwrap();
        // `SELECT encode(sha256(convert_to('nudge.subject.v1:' || '0190f3c2-…'::uuid::text || ':' || 'shp_1', 'UTF8')), 'hex')`
        assert_eq!(
            subject_digest(tenant, &shopper),
            "a499a566738176bb839c33faae96b8dd6079cef156540b63a3d9b9139b0c459e"
        );
        assert_ne!(subject_digest(uuid::Uuid::nil(), &shopper), subject_digest(tenant, &shopper));
    }

    #[test]
    fn an_email_digest_is_the_sha256_of_its_tenant_and_hash() {
        use sha2::{Digest, Sha256};
        let tenant: uuid::Uuid = "0190f3c2-8a1b-7c3d-9e4f-5a6b7c8d9e0f".parse().unwrap();
        let hash = "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514";
        let expected = Sha256::digest(format!("nudge.email.v1:{tenant}:{hash}").as_bytes());
        assert_eq!(email_digest(tenant, hash), lower_hex(&expected));
        assert!(is_sha256_hex(&email_digest(tenant, hash)));
        assert_ne!(email_digest(uuid::Uuid::nil(), hash), email_digest(tenant, hash));
        assert!(!is_sha256_hex(&hash.to_ascii_uppercase()));
    }
}
