//! A candidate model rolled out beside a store's production model, and which shoppers it
//! reaches.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::TenantId;

/// How a candidate model takes part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutMode {
    /// Scores and acts for a share of shoppers, sticky by shopper.
    Canary,
    /// Scores every event beside production; only production acts.
    Shadow,
}

/// A rollout: the candidate's version, how it takes part, and (canary) its share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRollout {
    pub candidate: String,
    pub mode: RolloutMode,
    /// Canary share in basis points (0–10,000).
    #[serde(default)]
    pub canary_basis_points: u32,
}

/// All shoppers, in basis points.
pub const ALL_BASIS_POINTS: u32 = 10_000;

/// Whether `shopper` of `tenant` is in a canary of `basis_points`: a stable hash of the
/// pair, so a shopper's answer never changes for a given share, and a shopper in at one
/// share stays in at any larger one. Another tenant's canary picks other shoppers.
pub fn in_canary(tenant: TenantId, shopper: &str, basis_points: u32) -> bool {
    let digest = Sha256::new().chain_update(tenant.as_uuid().as_bytes()).chain_update(shopper.as_bytes()).finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % u64::from(ALL_BASIS_POINTS) < u64::from(basis_points.min(ALL_BASIS_POINTS))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(tenant: TenantId, basis_points: u32) -> f64 {
        let inside = (0..10_000).filter(|i| in_canary(tenant, &format!("shp_{i}"), basis_points)).count();
        inside as f64 / 10_000.0
    }

    #[test]
    fn the_share_over_ten_thousand_shoppers_is_within_two_points_of_the_setting() {
        let tenant = TenantId::new();
        for (basis_points, expected) in
            [(0, 0.0), (500, 0.05), (1_000, 0.10), (2_500, 0.25), (5_000, 0.5), (10_000, 1.0)]
        {
            let got = share(tenant, basis_points);
            assert!((got - expected).abs() <= 0.02, "{basis_points} bp: {got}");
        }
    }

    #[test]
    fn a_shopper_stays_in_and_a_wider_canary_keeps_them() {
        let tenant = TenantId::new();
        for i in 0..2_000 {
            let shopper = format!("shp_{i}");
            let at_10 = in_canary(tenant, &shopper, 1_000);
            assert_eq!(at_10, in_canary(tenant, &shopper, 1_000), "sticky");
            if at_10 {
                assert!(in_canary(tenant, &shopper, 3_000), "monotonic in the share");
            }
        }
    }

    #[test]
    fn tenants_draw_different_shoppers() {
        let (a, b) = (TenantId::new(), TenantId::new());
        let differ = (0..1_000).filter(|i| {
            let s = format!("shp_{i}");
            in_canary(a, &s, 5_000) != in_canary(b, &s, 5_000)
        });
        assert!(differ.count() > 300);
    }
}
