//! Typed identifiers with a prefixed text form, e.g. `tnt_0192f0c4a1b27c3e8d5f6a7b8c9d0e1f`.
//!
//! The body is a UUIDv7 in lowercase hex, so ids sort by creation time and parse back
//! exactly. Parsing checks the prefix: a cell id is never accepted where a tenant id is due.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Why a text form did not parse as an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("expected an id starting with `{expected}_`")]
    WrongPrefix { expected: &'static str },
    #[error("the id body is not 32 lowercase hex digits")]
    BadBody,
}

/// Defines a UUID-backed id newtype with a fixed text prefix.
#[macro_export]
macro_rules! prefixed_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(::uuid::Uuid);

        impl $name {
            /// The text prefix before the underscore.
            pub const PREFIX: &'static str = $prefix;

            /// A new id, ordered by creation time.
            pub fn new() -> Self {
                Self(::uuid::Uuid::now_v7())
            }

            /// Wraps an existing UUID (from storage).
            pub const fn from_uuid(uuid: ::uuid::Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID behind the id (for storage).
            pub const fn as_uuid(&self) -> ::uuid::Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{}_{}", $prefix, self.0.simple())
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(self, f)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::id::IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $crate::id::parse_prefixed(s, $prefix).map(Self)
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <::std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(::serde::de::Error::custom)
            }
        }
    };
}

/// Parses `{prefix}_{32 hex}` into the UUID it carries.
pub fn parse_prefixed(s: &str, prefix: &'static str) -> Result<Uuid, IdError> {
    let body = s
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .ok_or(IdError::WrongPrefix { expected: prefix })?;
    let well_formed = body.len() == 32 && body.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        return Err(IdError::BadBody);
    }
    Uuid::try_parse(body).map_err(|_| IdError::BadBody)
}

prefixed_id!(
    /// A tenant: one merchant's store and everything it owns.
    TenantId,
    "tnt"
);

/// A data-plane cell, named like a Kubernetes object (`shared-1`, `acme-dedicated`), because
/// the operator creates one `Cell` resource per cell.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CellId(String);

impl CellId {
    /// The cell every self-service tenant is placed on in a one-machine deployment.
    pub fn default_shared() -> Self {
        Self("shared-1".to_owned())
    }

    /// The cell of a tenant with a cell of its own: `ded-` and the tenant's uuid in hex
    /// (36 characters), the same wherever it is provisioned.
    pub fn dedicated_for(tenant: TenantId) -> Self {
        Self(format!("ded-{}", tenant.as_uuid().simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CellId {
    type Err = CellIdError;

    /// Accepts an RFC 1123 label of at most 40 characters, leaving room for suffixes the
    /// operator appends to object names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 40
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok { Ok(Self(s.to_owned())) } else { Err(CellIdError) }
    }
}

/// A cell id that is not an RFC 1123 label of at most 40 characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a cell id is 1-40 lowercase letters, digits or '-', not starting or ending with '-'")]
pub struct CellIdError;

impl fmt::Display for CellId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CellId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for CellId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CellId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tenant_id_round_trips_through_text() {
        let id = TenantId::new();
        let text = id.to_string();
        assert!(text.starts_with("tnt_"));
        assert_eq!(text.len(), 4 + 32);
        assert_eq!(text.parse::<TenantId>(), Ok(id));
    }

    #[test]
    fn tenant_id_rejects_other_prefixes_and_bodies() {
        let id = TenantId::new().to_string();
        let other = id.replacen("tnt_", "cel_", 1);
        assert_eq!(other.parse::<TenantId>(), Err(IdError::WrongPrefix { expected: "tnt" }));
        assert_eq!("tnt_xyz".parse::<TenantId>(), Err(IdError::BadBody));
        assert_eq!(id.to_uppercase().replacen("TNT", "tnt", 1).parse::<TenantId>(), Err(IdError::BadBody));
    }

    #[test]
    fn tenant_id_serde_uses_the_text_form() {
        let id = TenantId::new();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<TenantId>(&json).unwrap(), id);
    }

    #[test]
    fn cell_ids_are_kubernetes_labels() {
        assert!("shared-1".parse::<CellId>().is_ok());
        assert!("Shared".parse::<CellId>().is_err());
        assert!("-a".parse::<CellId>().is_err());
        assert!("".parse::<CellId>().is_err());
        assert!("a".repeat(41).parse::<CellId>().is_err());
        let dedicated = CellId::dedicated_for(TenantId::new());
        assert_eq!(dedicated.as_str().parse::<CellId>().ok(), Some(dedicated.clone()));
    }
}
