//! Isolation tiers: where a tenant's data and traffic live.

use serde::{Deserialize, Serialize};

/// How isolated a tenant is from others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum IsolationTier {
    /// Shared cell, shared database schema under row-level security.
    #[default]
    Shared,
    /// A cell and a database of its own.
    Dedicated,
}

impl IsolationTier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Dedicated => "dedicated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "shared" => Some(Self::Shared),
            "dedicated" => Some(Self::Dedicated),
            _ => None,
        }
    }
}
