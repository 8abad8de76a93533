//! sea-orm entities of tenant tables. Queries through them run in transactions from
//! [`crate::routing::TenantRouter::tenant_orm_tx`], under the same row-level security as sqlx.

pub mod tenant_origin;
