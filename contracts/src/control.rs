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
    /// The owner's e-mail address; it signs in with it.
    pub email: String,
    /// At least 12 characters, not a common password.
    pub password: String,
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
    /// The owner's account.
    pub account_id: String,
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

/// `POST /v1/accounts`: an account without a store of its own (to be added to stores).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccountCreated {
    pub account_id: String,
    pub email: String,
}

/// `POST /v1/sessions`: sign in.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
    /// Which store to act for; needed only when the account belongs to several.
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// `POST /v1/sessions/refresh` and `/v1/sessions/logout`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// A signed-in session: a short-lived access token for one store, and the refresh token
/// that replaces it (each refresh token works once).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionTokens {
    /// PASETO v4.public; send as `Authorization: Bearer …`.
    pub access_token: String,
    pub token_type: String,
    /// Seconds the access token lives.
    pub expires_in: u64,
    pub refresh_token: String,
    pub account_id: String,
    pub tenant_id: String,
    pub role: String,
}

/// A store as its members see it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantView {
    pub tenant_id: String,
    pub name: String,
    pub state: String,
    pub cell_id: String,
    /// The store's route: where its snippet and events go (the cell's base URL).
    pub cell_url: String,
    pub allowed_origins: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    /// Days the store's events and shoppers' data are kept before the retention sweep
    /// removes them (the plan's, or an agreed exception).
    #[serde(default)]
    pub retention_days: u32,
}

/// An API key as its store's members see it (never a secret).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyView {
    pub key_id: String,
    /// `publishable` or `secret`.
    pub kind: String,
    pub name: String,
    /// The publishable key, or the first characters of a secret key.
    pub display: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyList {
    pub items: Vec<ApiKeyView>,
}

/// `POST /v1/tenants/{tenant_id}/api-keys`: a secret key for the store's servers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    pub name: String,
    /// From: `events:write`, `features:read`, `shoppers:export`, `sends:read`, `reports:read`.
    pub scopes: Vec<String>,
}

/// The new key; `secret_key` is shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    pub key: ApiKeyView,
    pub secret_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    pub account_id: String,
    pub email: String,
    pub role: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberList {
    pub items: Vec<MemberView>,
}

/// One change to a store's memberships, as its audit trail keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MembershipChangeView {
    /// The member who made the change (the member themself when they left).
    pub actor_account_id: String,
    pub account_id: String,
    pub from_role: String,
    /// `null`: the membership ended.
    pub to_role: Option<String>,
    pub at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MembershipChangeList {
    /// Newest first.
    pub items: Vec<MembershipChangeView>,
}

/// `POST /v1/tenants/{tenant_id}/members`: add an existing account.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    pub email: String,
    /// `owner`, `admin`, `analyst` or `viewer`.
    pub role: String,
}

/// `PATCH /v1/tenants/{tenant_id}/members/{account_id}`: change a member's role.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRoleRequest {
    /// `owner`, `admin`, `analyst` or `viewer`.
    pub role: String,
}

/// `POST /v1/admin/tenants/{tenant_id}/plan`: put a store on a plan, with negotiated
/// exceptions to its limits.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    /// `free`, `growth` or `enterprise`.
    pub plan: String,
    #[serde(default)]
    pub overrides: LimitsBody,
}

/// `POST /v1/admin/tenants/{tenant_id}/model`: the model a store's events are scored with.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelRequest {
    /// A registered version in stage `production` (`cart_abandonment@1`,
    /// `cart_abandonment_gbdt@1`, or any uploaded and promoted); `null` for the registry's
    /// default.
    pub model_version: Option<String>,
}

/// The model now assigned.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelResponse {
    pub tenant_id: String,
    /// The assigned version; `null` when the store follows the registry's default.
    pub model_version: Option<String>,
    /// What the store is scored with.
    pub effective_model_version: String,
}

/// `POST /v1/admin/tenants/{tenant_id}/rollout`: a candidate model beside the store's own.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    /// A registered version that is not archived.
    pub candidate_model_version: String,
    /// `canary` (scores and acts for a share of shoppers, sticky by shopper) or `shadow`
    /// (scores every event beside production, never acts).
    pub mode: String,
    /// Canary share of shoppers, 0–100 (hundredths count); required for `canary`.
    #[serde(default)]
    pub canary_percent: Option<f64>,
}

/// The model a store's events are scored with, as its members read it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StoreModelView {
    /// The version chosen for the store; `null`: the platform's default.
    pub model_version: Option<String>,
    /// The version that scores the store's events now (the default when none is chosen).
    pub effective_model_version: String,
    /// A candidate model being tried beside it, if any.
    pub rollout: Option<StoreRolloutView>,
}

/// A candidate model tried beside the store's own.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StoreRolloutView {
    pub candidate_model_version: String,
    /// `canary` (it acts for a share of shoppers) or `shadow` (it scores beside, never acts).
    pub mode: String,
    /// The canary's share of shoppers, in per cent (0 for a shadow).
    pub canary_percent: f64,
}

/// The rollout now in force.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RolloutResponse {
    pub tenant_id: String,
    pub candidate_model_version: String,
    pub mode: String,
    pub canary_percent: f64,
}

/// Limits; in a request, absent fields keep the plan's value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_events: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seats: Option<u32>,
}

/// The store's plan and the limits now in force.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanResponse {
    pub tenant_id: String,
    pub plan: String,
    pub limits: LimitsBody,
}

/// `POST /v1/admin/tenants/{tenant_id}/isolation`: move a store to a database of its own.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IsolationRequest {
    /// `dedicated`.
    pub isolation: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IsolationResponse {
    pub tenant_id: String,
    pub isolation: String,
    pub database: String,
    /// False when the store already had its own database.
    pub moved: bool,
    /// Rows copied, by table.
    pub rows: std::collections::BTreeMap<String, i64>,
    /// The store's own cell, which now serves it.
    pub cell_id: String,
    /// Base URL of that cell: where the store's snippet and events go from now on.
    pub cell_url: String,
}

/// `POST /v1/tenants/{tenant_id}/suppressions`: stop acting on a shopper's events.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuppressionRequest {
    pub shopper_id: String,
    /// `opt_out` or `merchant` (`erasure` is set by erasure requests); default `merchant`.
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SuppressionView {
    /// The shopper's subject digest: how the cells know the suppression.
    pub subject_digest: String,
    /// Absent for an erased shopper (reason `erasure`): their id is not kept.
    pub shopper_id: Option<String>,
    /// `erasure`, `opt_out` or `merchant`.
    pub reason: String,
    pub created_at: String,
}

/// `POST /v1/tenants/{tenant_id}/erasures`: forget one of the store's shoppers, or every
/// shopper the store identified with one e-mail address. Exactly one field is given.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErasureRequestBody {
    /// The store's id for the shopper (as its snippet or server sent it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shopper_id: Option<String>,
    /// Or the shopper's subject digest, as a receipt names them (a shopper a legal hold kept
    /// from an erasure by e-mail, once the hold is released).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_digest: Option<String>,
    /// The SHA-256 of the person's e-mail address (hex of the trimmed, lowercased address),
    /// as the store's `identify` events carried it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_sha256: Option<String>,
}

/// `POST /v1/admin/tenants/{tenant_id}/erasures`: an operator files an erasure request (for
/// example from an `ErasureRequest` resource). Exactly one field names the subject.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminErasureRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shopper_id: Option<String>,
    /// The subject digest (`nudge erasure digest` prints it), so the shopper id need not be
    /// written anywhere, a Kubernetes resource included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_digest: Option<String>,
    /// The SHA-256 of the person's e-mail address, as for the store's own requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_sha256: Option<String>,
    /// Or the address's digest in the store (`nudge erasure digest --email-sha256`), so the
    /// hash, the same in every store, need not be written anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_digest: Option<String>,
}

/// A store's billing: its plan, its price, and where Stripe stands.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BillingView {
    pub tenant_id: String,
    /// `free`, `growth` or `enterprise`.
    pub plan: String,
    /// The plan's list price per month, in cents of `currency`.
    pub monthly_price_cents: u32,
    pub currency: String,
    /// `off`: the platform bills no one (no Stripe key); `syncing`: Stripe does not yet bill
    /// what the store is on (it will within seconds, or `last_error` says why not);
    /// `subscribed`: Stripe bills the plan; `cancelled`: the store is leaving, nothing is
    /// billed any more.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stripe_customer_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stripe_subscription_id: Option<String>,
    /// The plan the live subscription bills.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribed_plan: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synced_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Dunning, from Stripe's payment events: `ok`; `warned` (a payment failed: update the
    /// payment method); `ingest_paused` (failed again: the store's events are refused);
    /// `suspended` (the store is suspended until it pays).
    pub dunning: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dunning_since: Option<String>,
    /// Events the plan includes a month (UTC); absent: no cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_events_included: Option<u64>,
    /// Events counted so far this month.
    pub monthly_events_used: i64,
    /// `ok`; `soft_limit`: 80 % of the month's events used; `hard_limit`: all of them, and
    /// the store's events are refused (429 `quota_exceeded`) until the month ends or the plan
    /// grows.
    pub quota: String,
    /// Whether Stripe has a payment method for the store (given through Checkout): with
    /// one, an owner moves to a paid self-service plan at once.
    pub payment_method_on_file: bool,
}

/// An owner's choice of plan.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanChoice {
    /// `free` or `growth` (enterprise is agreed with the platform's staff).
    pub plan: String,
}

/// A store's offboarding: asked for by its owner or an operator.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct OffboardingRequestBody {
    /// Why (kept in the lifecycle audit log), 1-1000 characters.
    pub reason: String,
    /// Operators only: the grace period in days before the purge (0-90); the platform's
    /// default (`offboarding.grace_days`) when absent. A store's owner always gets the
    /// default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_days: Option<u32>,
}

/// Where a store's offboarding stands.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OffboardingView {
    pub tenant_id: String,
    /// The store's lifecycle state: `offboarding` during the grace period and the purge,
    /// `deleted` once purged, anything else when not offboarding.
    pub state: String,
    pub requested_at: Option<String>,
    pub requested_by: Option<String>,
    /// When the grace period ends and the purge starts; until then the owner can cancel.
    pub purge_after: Option<String>,
    /// The purge: an erasure request of scope `tenant`, with its steps, once started.
    pub purge: Option<ErasureView>,
}

/// An erasure request and how far it has got.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErasureView {
    pub request_id: String,
    /// `shopper`; `email`: every shopper the store identified with an e-mail address; or
    /// `tenant`: the whole store (its offboarding).
    pub scope: String,
    /// The shopper's subject digest, or for `email` the address's digest in this store
    /// (absent for a whole store); the request never holds the shopper id or the address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_digest: Option<String>,
    /// `account:<id>`, `operator:<name>` or `system:offboarding`.
    pub requested_by: String,
    pub requested_at: String,
    /// The legal limit: one month after the request.
    pub deadline_at: String,
    /// `in_progress` or `completed`.
    pub status: String,
    pub completed_at: Option<String>,
    /// Every store the request erases from (empty in lists).
    pub steps: Vec<ErasureStepView>,
    /// Who did what, in order (empty in lists).
    pub audit: Vec<ErasureAuditView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErasureStepView {
    /// `postgres`, `cell:<cell id>`.
    pub store: String,
    /// `pending`, `erased` or `nothing_found`.
    pub status: String,
    /// Place → keys, rows, members or records removed there.
    pub removed: std::collections::BTreeMap<String, u64>,
    pub finished_at: Option<String>,
    /// An erasure by e-mail, at a cell: the shoppers (subject digests) the address led to
    /// and who were erased.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<String>,
    /// An erasure by e-mail, at a cell: the shoppers it led to whom a legal hold kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_subjects: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErasureAuditView {
    pub at: String,
    pub actor: String,
    pub action: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErasureList {
    pub items: Vec<ErasureView>,
}

/// A completed request's deletion receipt, signed by the platform's Transit key (ed25519).
/// To check it: the signature (after `vault:v<n>:`, base64) is an ed25519 signature of the
/// bytes of `receipt` by public key version `key_version` of `GET /v1/erasure-receipts/keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErasureReceiptView {
    /// The receipt, exactly as signed (JSON text).
    pub receipt: String,
    pub signature: String,
    pub signing_key: String,
    pub key_version: u64,
}

/// The public keys that check erasure receipts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReceiptKeysView {
    pub signing_key: String,
    /// `ed25519`.
    pub algorithm: String,
    /// Key version → public key (base64 of the 32 raw bytes).
    pub public_keys: std::collections::BTreeMap<String, String>,
}

/// `POST /v1/tenants/{tenant_id}/legal-holds`: stop erasure of a shopper, or of the store.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LegalHoldRequest {
    /// What the hold is for (a case or matter name); named when it refuses an erasure.
    pub name: String,
    /// The shopper it covers; absent: the whole store.
    #[serde(default)]
    pub shopper_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LegalHoldView {
    pub hold_id: String,
    pub name: String,
    /// The covered shopper's subject digest; absent: the whole store.
    pub subject_digest: Option<String>,
    pub placed_by: String,
    pub placed_at: String,
    pub released_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LegalHoldList {
    pub items: Vec<LegalHoldView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SuppressionList {
    pub items: Vec<SuppressionView>,
}

/// `GET /v1/tenants/{tenant_id}/shoppers/{shopper_id}/export`: what the control plane
/// keeps about one of the store's shoppers — with the cell's export
/// (`GET {cell_url}/v1/shoppers/{shopper_id}/export`), everything Nudge stores about them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ShopperRecordsView {
    pub tenant_id: String,
    pub shopper_id: String,
    /// How the control plane and the cells name the shopper.
    pub subject_digest: String,
    pub exported_at: String,
    /// On the store's suppression list, and why.
    pub suppression: Option<SuppressionView>,
    /// Erasure requests for the shopper, with their steps and audit trail.
    pub erasure_requests: Vec<ErasureView>,
    /// Legal holds naming the shopper.
    pub legal_holds: Vec<LegalHoldView>,
    /// Where the rest is: the store's cell, which keeps the shopper's behaviour data.
    pub cell_export: String,
}

/// What happened to a store's events over a period.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UsageView {
    pub tenant_id: String,
    /// RFC 3339, inclusive.
    pub from: String,
    /// RFC 3339, exclusive.
    pub to: String,
    pub accepted: i64,
    /// Events not accepted or not acted on, by reason: `rate`, `quota`, `schema`,
    /// `suppressed`, `duplicate`.
    pub dropped: std::collections::BTreeMap<String, i64>,
    /// Events scored (a shadow model's score counts too).
    pub predictions: i64,
    /// Interventions delivered: acknowledged by a shopper's browser, each once however many
    /// tabs it reached.
    pub interventions: i64,
    /// The most shopper sockets open at once over every gateway, at the instants the
    /// gateways sample (every minute by default: a spike between two is not seen), in any
    /// hour of the period (whole hours: the hour `from` falls in counts).
    pub peak_connections: i64,
}

/// Where a model came from: enough to train it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelLineage {
    /// SHA-256 (hex) of the training data (features and labels).
    pub training_data_sha256: String,
    /// SHA-256 (hex) of the training code as it ran (`model/train.py`).
    pub code_sha256: String,
    /// The commit the training code was at, when the uploader knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_commit: Option<String>,
    /// The estimator's parameters.
    #[schema(value_type = Object)]
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// The random seed of data generation, split and estimator.
    pub seed: u64,
}

/// The `manifest` part of `POST /v1/admin/models` (`model/train.py` writes it as
/// `manifest.json` beside each artifact).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    /// Lowercase letters, digits and `_`, starting with a letter; the registry numbers the
    /// versions of a name (`name@1`, `name@2`, …).
    pub name: String,
    /// SHA-256 (hex) of the `artifact` part; an upload whose bytes differ is refused.
    pub sha256: String,
    /// Evaluation metrics (name → finite number).
    pub metrics: std::collections::BTreeMap<String, f64>,
    pub lineage: ModelLineage,
}

/// The input a model takes, as its artifact declares it and the registry checked it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelInputSchema {
    /// `cart_session@1`.
    pub feature_set: String,
    /// In input order.
    pub feature_names: Vec<String>,
    /// `float32[N, 10]`.
    pub tensor: String,
}

/// A model version in the registry.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelView {
    /// `name@number`, as predictions report it.
    pub version: String,
    pub name: String,
    pub number: i32,
    /// The artifact's content address: SHA-256 of its bytes.
    pub sha256: String,
    pub size_bytes: i32,
    /// `candidate`, `canary`, `production` or `archived`.
    pub stage: String,
    /// Whether stores without an assignment are scored with it.
    pub default: bool,
    pub input: ModelInputSchema,
    pub metrics: std::collections::BTreeMap<String, f64>,
    pub lineage: ModelLineage,
    pub created_by: String,
    pub created_at: String,
    pub stage_changed_at: String,
}

/// `201 Created` (a new version) or `200 OK` (these bytes were already registered under
/// this name: the existing version).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelUploadResponse {
    pub created: bool,
    pub model: ModelView,
}

/// `GET /v1/admin/models`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    pub models: Vec<ModelView>,
}

/// `POST /v1/admin/models/{version}/stage`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelStageRequest {
    /// `candidate`, `canary`, `production` or `archived`.
    pub stage: String,
    /// Why, for the stage history (1–1000 characters).
    pub reason: String,
}

/// One entry of a version's stage history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelStageEvent {
    pub from_stage: Option<String>,
    pub to_stage: String,
    pub actor: String,
    pub reason: String,
    pub at: String,
}

/// `GET /v1/admin/models/{version}/stages`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelStageHistory {
    pub version: String,
    pub events: Vec<ModelStageEvent>,
}

/// `PUT /v1/admin/models/default`: the model stores without an assignment are scored with.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultModelRequest {
    /// A version in stage `production`.
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DefaultModelResponse {
    pub version: String,
}
