//! Tenant lifecycle: `pending → provisioning → active ⇄ suspended → offboarding → deleted`.

use serde::{Deserialize, Serialize};

/// Where a tenant is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantState {
    /// Signed up, not yet placed on a cell.
    Pending,
    /// Placed; its cell is being told about it.
    Provisioning,
    /// Serving traffic.
    Active,
    /// Known to its cell but refused traffic (unpaid, abuse, merchant request).
    Suspended,
    /// Data being erased and exported; refuses traffic.
    Offboarding,
    /// Gone; only the audit trail remains.
    Deleted,
}

impl TenantState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Provisioning => "provisioning",
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Offboarding => "offboarding",
            Self::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "provisioning" => Self::Provisioning,
            "active" => Self::Active,
            "suspended" => Self::Suspended,
            "offboarding" => Self::Offboarding,
            "deleted" => Self::Deleted,
            _ => return None,
        })
    }

    /// Whether a cell accepts this tenant's events and sockets.
    pub fn accepts_traffic(self) -> bool {
        matches!(self, Self::Active)
    }

    /// Whether `self → to` is a legal step. Staying put is legal, so transitions are idempotent.
    pub fn can_become(self, to: Self) -> bool {
        use TenantState::*;
        self == to
            || matches!(
                (self, to),
                (Pending, Provisioning)
                    | (Provisioning, Active)
                    | (Active, Suspended)
                    | (Suspended, Active)
                    | (Active | Suspended, Offboarding)
                    | (Offboarding, Deleted)
            )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::TenantState::*;
    use super::*;

    const ALL: [TenantState; 6] = [Pending, Provisioning, Active, Suspended, Offboarding, Deleted];

    #[test]
    fn text_form_round_trips() {
        for s in ALL {
            assert_eq!(TenantState::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn transitions_follow_the_lifecycle() {
        assert!(Pending.can_become(Provisioning));
        assert!(Active.can_become(Suspended) && Suspended.can_become(Active));
        assert!(!Deleted.can_become(Active));
        assert!(!Pending.can_become(Active));
        assert!(!Offboarding.can_become(Active));
        for s in ALL {
            assert!(s.can_become(s), "{s:?} must be idempotent");
        }
    }

    #[test]
    fn only_active_tenants_take_traffic() {
        assert_eq!(ALL.iter().filter(|s| s.accepts_traffic()).count(), 1);
    }
}
