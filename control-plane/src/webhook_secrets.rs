//! A store's webhook signing secret: made by the control plane when an owner or admin asks
//! (shown to them once), kept in the vault's KV engine, and read from there by the cells
//! that sign the store's campaign webhooks (within 30 s of a change). A new secret signs at
//! once; the one it replaces goes on signing beside it for an overlap the owner chooses (24
//! hours unless told otherwise, none if asked), so the merchant's endpoint can accept
//! either while it moves to the new one.

use chrono::{DateTime, SecondsFormat, Utc};
use nudge_platform_vault::{PreviousWebhookSecret, Vault, VaultError, WebhookSecret, webhook_secret_path};
use nudge_tenants::TenantId;

/// The longest a replaced secret may go on signing.
pub const MAX_OVERLAP_HOURS: u32 = 168;

/// Makes and keeps a new secret for `tenant`, the current one (if any) signing beside it
/// for `overlap_hours`; the secret, to show once.
pub async fn rotate(vault: &Vault, tenant: TenantId, overlap_hours: u32) -> Result<WebhookSecret, VaultError> {
    let path = webhook_secret_path(&tenant.to_string());
    let now = Utc::now();
    let current: Option<WebhookSecret> = if overlap_hours > 0 { vault.get_secret(&path).await? } else { None };
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| VaultError::Unavailable(format!("no randomness: {e}")))?;
    let until = now + chrono::Duration::hours(i64::from(overlap_hours.min(MAX_OVERLAP_HOURS)));
    let secret = WebhookSecret {
        secret: format!("whsec_{}", hex::encode(bytes)),
        created_at: now.to_rfc3339_opts(SecondsFormat::Millis, true),
        previous: current.map(|c| PreviousWebhookSecret {
            secret: c.secret,
            until: until.to_rfc3339_opts(SecondsFormat::Millis, true),
        }),
    };
    vault.put_secret(&path, &secret).await?;
    Ok(secret)
}

/// The store's secret as its members may see it (never the secret itself).
#[derive(Debug, Clone, Default)]
pub struct SecretStatus {
    /// When the current secret was made; `None` while the store has none.
    pub made_at: Option<DateTime<Utc>>,
    /// Until when the replaced secret still signs beside it, while it does.
    pub previous_until: Option<DateTime<Utc>>,
}

/// What the store's secrets are now.
pub async fn status(vault: &Vault, tenant: TenantId) -> Result<SecretStatus, VaultError> {
    let kept: Option<WebhookSecret> = vault.get_secret(&webhook_secret_path(&tenant.to_string())).await?;
    let Some(kept) = kept else { return Ok(SecretStatus::default()) };
    let time = |s: &str| DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc));
    let previous_until = kept.previous.as_ref().and_then(|p| time(&p.until)).filter(|until| *until > Utc::now());
    Ok(SecretStatus { made_at: time(&kept.created_at), previous_until })
}
