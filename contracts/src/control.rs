//! JSON bodies of the control plane's public API.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/tenants`: self-service signup.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    /// The store's display name.
    pub name: String,
    /// Web origins the store's pages are served from (`https://shop.example.com`).
    pub allowed_origins: Vec<String>,
}

/// `201 Created` answer to a signup. The secret key appears here and nowhere else, ever.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SignupResponse {
    pub tenant_id: String,
    pub name: String,
    pub state: String,
    pub cell_id: String,
    /// Base URL of the cell the snippet talks to.
    pub cell_url: String,
    pub publishable_key: String,
    pub secret_key: String,
    pub allowed_origins: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// `POST /v1/admin/tenants/{tenant_id}/transitions`: move a tenant through its lifecycle.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    /// `active`, `suspended`, `offboarding` or `deleted`.
    pub to: String,
    /// Why, for the audit log.
    pub reason: String,
}

/// The tenant's state after a transition request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TransitionResponse {
    pub tenant_id: String,
    pub state: String,
    /// Increases with every change announced to the cells.
    pub revision: i64,
    /// False when the tenant already was in the requested state (nothing was recorded).
    pub changed: bool,
}

/// One lifecycle change as the audit log holds it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryBody {
    pub actor: String,
    pub from: Option<String>,
    pub to: String,
    pub reason: String,
    /// RFC 3339.
    pub at: String,
}

/// A page of the audit log, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntryBody>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}
