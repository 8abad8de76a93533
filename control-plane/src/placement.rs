//! Placement: which cell serves a tenant. Self-service tenants share one cell; dedicated
//! cells come with the operator.

use nudge_tenants::CellId;

use crate::{
    config::PlacementConfig,
    db::{Database, DbError},
};

/// A cell as the control plane knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub id: CellId,
    /// Base URL browsers reach the cell at.
    pub public_url: String,
}

/// Records the configured shared cell (idempotent; updates its URL when it changed).
pub async fn register_shared_cell(db: &Database, config: &PlacementConfig) -> Result<Cell, DbError> {
    let mut tx = db.platform_tx().await?;
    sqlx::query(
        "INSERT INTO cells (cell_id, tier, public_url) VALUES ($1, 'shared', $2)
         ON CONFLICT (cell_id) DO UPDATE SET public_url = EXCLUDED.public_url",
    )
    .bind(config.shared_cell_id.as_str())
    .bind(&config.shared_cell_url)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Cell { id: config.shared_cell_id.clone(), public_url: config.shared_cell_url.clone() })
}
