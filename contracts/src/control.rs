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
