//! A store's allowed origins, read with sea-orm (the ORM path of the same tenant context).

use nudge_tenants::TenantId;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use crate::{
    db::{DbError, orm_error},
    entities::tenant_origin,
    routing::TenantRouter,
};

/// The origins of `tenant`, sorted.
pub async fn list(router: &TenantRouter, tenant: TenantId) -> Result<Vec<String>, DbError> {
    let txn = router.tenant_orm_tx(tenant).await?;
    let rows = tenant_origin::Entity::find()
        .filter(tenant_origin::Column::TenantId.eq(tenant.as_uuid()))
        .order_by_asc(tenant_origin::Column::Origin)
        .all(&txn)
        .await
        .map_err(orm_error)?;
    txn.commit().await.map_err(orm_error)?;
    Ok(rows.into_iter().map(|r| r.origin).collect())
}

/// Every origin the transaction can see, without filtering by tenant: what row-level
/// security lets through, for tests of the ORM path.
pub async fn visible(router: &TenantRouter, tenant: TenantId) -> Result<Vec<(uuid::Uuid, String)>, DbError> {
    let txn = router.tenant_orm_tx(tenant).await?;
    let rows = tenant_origin::Entity::find().all(&txn).await.map_err(orm_error)?;
    txn.rollback().await.map_err(orm_error)?;
    Ok(rows.into_iter().map(|r| (r.tenant_id, r.origin)).collect())
}
