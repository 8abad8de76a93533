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
                    // A store that changes its mind during its offboarding's grace period goes
                    // back to the state it left.
                    | (Offboarding, Active | Suspended)
                    | (Offboarding, Deleted)
            )
    }
}

/// What a requested transition amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Already in the requested state: nothing to do, nothing to record.
    Unchanged(TenantState),
    Move {
        from: TenantState,
        to: TenantState,
    },
}

/// A transition the lifecycle does not allow from the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {current} tenant cannot become {requested}", current = current.as_str(), requested = requested.as_str())]
pub struct InvalidTransition {
    pub current: TenantState,
    pub requested: TenantState,
}

/// Plans `current → requested`: unchanged, a legal move, or refused.
pub fn plan(current: TenantState, requested: TenantState) -> Result<Step, InvalidTransition> {
    if current == requested {
        Ok(Step::Unchanged(current))
    } else if current.can_become(requested) {
        Ok(Step::Move { from: current, to: requested })
    } else {
        Err(InvalidTransition { current, requested })
    }
}

/// Who made a change, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The platform itself (signup, billing, retention jobs), named by the job.
    System(&'static str),
    /// A platform operator through the admin API.
    Operator(String),
    /// A member of the store, through the merchant API.
    Account(crate::AccountId),
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::System(job) => write!(f, "system:{job}"),
            Self::Operator(name) => write!(f, "operator:{name}"),
            Self::Account(id) => write!(f, "account:{id}"),
        }
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
        assert!(Offboarding.can_become(Active) && Offboarding.can_become(Suspended), "cancelled");
        assert!(!Offboarding.can_become(Pending));
        for s in ALL {
            assert!(s.can_become(s), "{s:?} must be idempotent");
        }
    }

    #[test]
    fn plan_is_idempotent_and_names_the_current_state() {
        assert_eq!(plan(Active, Active), Ok(Step::Unchanged(Active)));
        assert_eq!(plan(Active, Suspended), Ok(Step::Move { from: Active, to: Suspended }));
        let err = plan(Deleted, Active).unwrap_err();
        assert_eq!(err.to_string(), "a deleted tenant cannot become active");
        assert_eq!(Actor::Operator("ops@example.com".into()).to_string(), "operator:ops@example.com");
    }

    #[test]
    fn only_active_tenants_take_traffic() {
        assert_eq!(ALL.iter().filter(|s| s.accepts_traffic()).count(), 1);
    }
}
