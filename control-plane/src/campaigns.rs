//! A store's campaigns: saved as immutable versions, moved through their lifecycle
//! (`draft` → `active` ⇄ `paused`, any → `archived`, which is final), every change audited.
//!
//! A campaign is checked before it is saved ([`nudge_campaigns::model`]): its condition
//! against the names a cell can evaluate (the feature set and the model's prediction), its
//! templates against the variables a message can use. Saving names the version it replaces
//! when the caller gives one, so two members editing at once cannot overwrite each other
//! unseen.
//!
//! The cells learn a store's active campaigns from `control.campaigns.v1` (one record per
//! campaign, written to the outbox in the transaction that changes it): the version in
//! force while it is active, a stop once it is paused or archived; each with a revision
//! raised by every announcement, so a cell never lets an older record undo a newer one.

use chrono::{DateTime, Utc};
use nudge_campaigns::model::{CampaignSpec, FieldError};
use nudge_tenants::TenantId;
use sqlx::{Row, postgres::PgRow};
use uuid::Uuid;

use nudge_contracts::{Topics, headers::CAMPAIGN_V1, proto::control::v1::CampaignRecord, topics::Topic};
use prost::Message;

use crate::{
    db::DbError,
    outbox::{self, OutboxRecord},
    routing::TenantRouter,
};

/// Campaigns a store may have that are not archived.
pub const MAX_CAMPAIGNS: i64 = 100;

pub use nudge_data_plane_features::names::{CampaignNames, PREDICTION, message_variable, vocabulary};

/// Where a campaign is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CampaignState {
    Draft,
    Active,
    Paused,
    Archived,
}

impl CampaignState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Archived => "archived",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Draft, Self::Active, Self::Paused, Self::Archived].into_iter().find(|c| c.as_str() == s)
    }

    /// Whether a campaign may move from `self` to `to`.
    pub fn can_move_to(self, to: Self) -> bool {
        matches!(
            (self, to),
            (Self::Draft, Self::Active)
                | (Self::Active, Self::Paused)
                | (Self::Paused, Self::Active)
                | (Self::Draft | Self::Active | Self::Paused, Self::Archived)
        )
    }
}

/// A campaign and its version in force.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub id: Uuid,
    pub state: CampaignState,
    pub version: i32,
    pub spec: CampaignSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One saved version.
#[derive(Debug, Clone)]
pub struct SavedVersion {
    pub version: i32,
    pub saved_by: String,
    pub saved_at: DateTime<Utc>,
    pub spec: CampaignSpec,
}

#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error("no such campaign")]
    NotFound,
    #[error("the campaign is not valid")]
    Invalid(Vec<FieldError>),
    #[error("the campaign is at version {current}, not the one named")]
    VersionConflict { current: i32 },
    #[error("a campaign cannot move from {} to {}", .from.as_str(), .to.as_str())]
    InvalidTransition { from: CampaignState, to: CampaignState },
    #[error("an archived campaign cannot change")]
    Archived,
    #[error("a store has at most {MAX_CAMPAIGNS} campaigns that are not archived")]
    TooMany,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for CampaignError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

fn spec_json(spec: &CampaignSpec) -> Result<serde_json::Value, CampaignError> {
    serde_json::to_value(spec).map_err(|e| CampaignError::Db(DbError::Query(sqlx::Error::Encode(Box::new(e)))))
}

fn spec_of(row: &PgRow) -> Result<CampaignSpec, CampaignError> {
    let value: serde_json::Value = row.try_get("spec")?;
    serde_json::from_value(value)
        .map_err(|e| CampaignError::Db(DbError::Query(sqlx::Error::Decode(format!("campaign spec: {e}").into()))))
}

fn campaign_of(row: &PgRow) -> Result<Campaign, CampaignError> {
    let state: String = row.try_get("state")?;
    Ok(Campaign {
        id: row.try_get("campaign_id")?,
        state: CampaignState::parse(&state)
            .ok_or_else(|| CampaignError::Db(DbError::Query(sqlx::Error::Decode(format!("state {state}").into()))))?,
        version: row.try_get("version")?,
        spec: spec_of(row)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

const SELECT: &str = "SELECT c.campaign_id, c.state, c.version, c.created_at, c.updated_at, v.spec
     FROM campaigns c JOIN campaign_versions v
       ON v.tenant_id = c.tenant_id AND v.campaign_id = c.campaign_id AND v.version = c.version";

/// The campaign as it stands in `tx`; `None`: no such campaign of the store.
async fn read(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    tenant: TenantId,
    id: Uuid,
) -> Result<Option<Campaign>, CampaignError> {
    let row = sqlx::query(&format!("{SELECT} WHERE c.tenant_id = $1 AND c.campaign_id = $2"))
        .bind(tenant.as_uuid())
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(campaign_of).transpose()
}

fn checked(spec: &CampaignSpec, loopback_webhooks: bool) -> Result<(), CampaignError> {
    let problems = spec.validate(&nudge_data_plane_features::names::vocabulary_with(loopback_webhooks));
    if problems.is_empty() { Ok(()) } else { Err(CampaignError::Invalid(problems)) }
}

/// Saves a new campaign, as a draft at version 1.
pub async fn create(
    router: &TenantRouter,
    tenant: TenantId,
    spec: &CampaignSpec,
    loopback_webhooks: bool,
    actor: &str,
) -> Result<Campaign, CampaignError> {
    checked(spec, loopback_webhooks)?;
    let id = Uuid::now_v7();
    let mut tx = router.tenant_tx(tenant).await?;
    // One creation at a time per store, so the count below holds.
    sqlx::query("SELECT 1 FROM tenants WHERE tenant_id = $1 FOR UPDATE")
        .bind(tenant.as_uuid())
        .execute(&mut *tx)
        .await?;
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM campaigns WHERE tenant_id = $1 AND state <> 'archived'")
        .bind(tenant.as_uuid())
        .fetch_one(&mut *tx)
        .await?;
    if open >= MAX_CAMPAIGNS {
        return Err(CampaignError::TooMany);
    }
    sqlx::query("INSERT INTO campaigns (tenant_id, campaign_id) VALUES ($1, $2)")
        .bind(tenant.as_uuid())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO campaign_versions (tenant_id, campaign_id, version, spec, saved_by) VALUES ($1, $2, 1, $3, $4)",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .bind(spec_json(spec)?)
    .bind(actor)
    .execute(&mut *tx)
    .await?;
    audit(&mut tx, tenant, id, actor, "created", 1).await?;
    let campaign = read(&mut tx, tenant, id).await?.ok_or(CampaignError::NotFound)?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(campaign)
}

/// The campaign's id as the API and the cells name it.
pub fn campaign_id_text(id: Uuid) -> String {
    format!("cmp_{}", id.simple())
}

/// Tells the cells about `id` as it now stands in `tx`: its version in force when it is
/// active, a stop when it is not; under a new revision.
async fn announce_campaign(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    topics: &Topics,
    tenant: TenantId,
    id: Uuid,
) -> Result<(), CampaignError> {
    let campaign = read(tx, tenant, id).await?.ok_or(CampaignError::NotFound)?;
    let revision: i64 = sqlx::query_scalar(
        "UPDATE campaigns SET revision = revision + 1 WHERE tenant_id = $1 AND campaign_id = $2 RETURNING revision",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .fetch_one(&mut **tx)
    .await?;
    let active = campaign.state == CampaignState::Active;
    let spec_json = if active {
        serde_json::to_string(&campaign.spec)
            .map_err(|e| CampaignError::Db(DbError::Query(sqlx::Error::Encode(Box::new(e)))))?
    } else {
        String::new()
    };
    let payload = CampaignRecord {
        tenant_id: tenant.to_string(),
        campaign_id: campaign_id_text(id),
        version: campaign.version,
        spec_json,
        created_at_ms: campaign.created_at.timestamp_millis(),
        revision,
        active,
    }
    .encode_to_vec();
    let record = OutboxRecord {
        topic: topics.name(Topic::ControlCampaigns),
        key: format!("{tenant}:{}", campaign_id_text(id)).into_bytes(),
        payload: Some(payload),
        schema: CAMPAIGN_V1,
        traceparent: None,
    };
    outbox::enqueue(tx, &record).await?;
    Ok(())
}

async fn audit(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    tenant: TenantId,
    id: Uuid,
    actor: &str,
    action: &str,
    version: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO campaign_audit (tenant_id, campaign_id, actor, action, version) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .bind(actor)
    .bind(action)
    .bind(version)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The store's campaigns, newest first (archived ones too).
pub async fn list(router: &TenantRouter, tenant: TenantId) -> Result<Vec<Campaign>, CampaignError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let rows = sqlx::query(&format!("{SELECT} WHERE c.tenant_id = $1 ORDER BY c.created_at DESC, c.campaign_id DESC"))
        .bind(tenant.as_uuid())
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await.map_err(DbError::from)?;
    rows.iter().map(campaign_of).collect()
}

/// One campaign of the store.
pub async fn get(router: &TenantRouter, tenant: TenantId, id: Uuid) -> Result<Campaign, CampaignError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let campaign = read(&mut tx, tenant, id).await?;
    tx.commit().await.map_err(DbError::from)?;
    campaign.ok_or(CampaignError::NotFound)
}

/// Locks the campaign's row for the rest of `tx`; its state and version in force.
async fn locked(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    tenant: TenantId,
    id: Uuid,
) -> Result<(CampaignState, i32), CampaignError> {
    let row = sqlx::query("SELECT state, version FROM campaigns WHERE tenant_id = $1 AND campaign_id = $2 FOR UPDATE")
        .bind(tenant.as_uuid())
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(CampaignError::NotFound)?;
    let state: String = row.try_get("state")?;
    let state = CampaignState::parse(&state)
        .ok_or_else(|| CampaignError::Db(DbError::Query(sqlx::Error::Decode(format!("state {state}").into()))))?;
    Ok((state, row.try_get("version")?))
}

/// Saves `spec` as the campaign's next version (in force at once, whatever its state),
/// if it is still at `expected_version` when one is given.
// The save's inputs are each of a different kind; a struct for them would only be unpacked.
#[allow(clippy::too_many_arguments)]
pub async fn save(
    router: &TenantRouter,
    topics: &Topics,
    tenant: TenantId,
    id: Uuid,
    spec: &CampaignSpec,
    expected_version: Option<i32>,
    loopback_webhooks: bool,
    actor: &str,
) -> Result<Campaign, CampaignError> {
    checked(spec, loopback_webhooks)?;
    let mut tx = router.tenant_tx(tenant).await?;
    let (state, current) = locked(&mut tx, tenant, id).await?;
    if state == CampaignState::Archived {
        return Err(CampaignError::Archived);
    }
    if expected_version.is_some_and(|v| v != current) {
        return Err(CampaignError::VersionConflict { current });
    }
    let next = current + 1;
    sqlx::query(
        "INSERT INTO campaign_versions (tenant_id, campaign_id, version, spec, saved_by) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .bind(next)
    .bind(spec_json(spec)?)
    .bind(actor)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE campaigns SET version = $3, updated_at = now() WHERE tenant_id = $1 AND campaign_id = $2")
        .bind(tenant.as_uuid())
        .bind(id)
        .bind(next)
        .execute(&mut *tx)
        .await?;
    audit(&mut tx, tenant, id, actor, "saved", next).await?;
    if state == CampaignState::Active {
        // The cells send by the new version from now on.
        announce_campaign(&mut tx, topics, tenant, id).await?;
    }
    // Read before committing: the answer is this change, not one made just after it.
    let campaign = read(&mut tx, tenant, id).await?.ok_or(CampaignError::NotFound)?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(campaign)
}

/// Moves the campaign to `to`. Moving it where it already is changes nothing.
pub async fn set_state(
    router: &TenantRouter,
    topics: &Topics,
    tenant: TenantId,
    id: Uuid,
    to: CampaignState,
    actor: &str,
) -> Result<Campaign, CampaignError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let (from, version) = locked(&mut tx, tenant, id).await?;
    if from != to {
        if !from.can_move_to(to) {
            return Err(CampaignError::InvalidTransition { from, to });
        }
        sqlx::query("UPDATE campaigns SET state = $3, updated_at = now() WHERE tenant_id = $1 AND campaign_id = $2")
            .bind(tenant.as_uuid())
            .bind(id)
            .bind(to.as_str())
            .execute(&mut *tx)
            .await?;
        audit(&mut tx, tenant, id, actor, to.as_str(), version).await?;
        if to == CampaignState::Active || from == CampaignState::Active {
            announce_campaign(&mut tx, topics, tenant, id).await?;
        }
        tracing::info!(tenant_id = %tenant, campaign_id = %id, from = from.as_str(), to = to.as_str(), "a campaign moved");
    }
    // Read before committing: the answer is this change, not one made just after it.
    let campaign = read(&mut tx, tenant, id).await?.ok_or(CampaignError::NotFound)?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(campaign)
}

/// Archives every campaign of the store that is not archived yet, telling the cells to stop
/// the active ones, inside `tx` (the purge of a store that leaves); how many were archived.
pub async fn archive_all(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    topics: &Topics,
    tenant: TenantId,
    actor: &str,
) -> Result<u64, CampaignError> {
    let rows = sqlx::query(
        "SELECT campaign_id, state, version FROM campaigns WHERE tenant_id = $1 AND state <> 'archived' FOR UPDATE",
    )
    .bind(tenant.as_uuid())
    .fetch_all(&mut **tx)
    .await?;
    for row in &rows {
        let id: Uuid = row.try_get("campaign_id")?;
        let version: i32 = row.try_get("version")?;
        let was: String = row.try_get("state")?;
        sqlx::query(
            "UPDATE campaigns SET state = 'archived', updated_at = now() WHERE tenant_id = $1 AND campaign_id = $2",
        )
        .bind(tenant.as_uuid())
        .bind(id)
        .execute(&mut **tx)
        .await?;
        audit(tx, tenant, id, actor, "archived", version).await?;
        if was == CampaignState::Active.as_str() {
            announce_campaign(tx, topics, tenant, id).await?;
        }
    }
    Ok(rows.len() as u64)
}

/// Every saved version of the campaign, newest first.
pub async fn versions(router: &TenantRouter, tenant: TenantId, id: Uuid) -> Result<Vec<SavedVersion>, CampaignError> {
    let mut tx = router.tenant_tx(tenant).await?;
    let rows = sqlx::query(
        "SELECT version, saved_by, saved_at, spec FROM campaign_versions
         WHERE tenant_id = $1 AND campaign_id = $2 ORDER BY version DESC",
    )
    .bind(tenant.as_uuid())
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await.map_err(DbError::from)?;
    if rows.is_empty() {
        return Err(CampaignError::NotFound);
    }
    rows.iter()
        .map(|row| {
            Ok(SavedVersion {
                version: row.try_get("version")?,
                saved_by: row.try_get("saved_by")?,
                saved_at: row.try_get("saved_at")?,
                spec: spec_of(row)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn campaigns_move_forward_and_archived_is_final() {
        use CampaignState::*;
        assert!(Draft.can_move_to(Active) && Active.can_move_to(Paused) && Paused.can_move_to(Active));
        assert!(Draft.can_move_to(Archived) && Active.can_move_to(Archived) && Paused.can_move_to(Archived));
        assert!(!Active.can_move_to(Draft) && !Paused.can_move_to(Draft) && !Draft.can_move_to(Paused));
        assert!([Draft, Active, Paused].into_iter().all(|to| !Archived.can_move_to(to)));
    }
}
