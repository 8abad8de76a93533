//! A store's webhook signing secret: made by the control plane when an owner or admin asks
//! (shown to them once), kept in the vault's KV engine, and read from there by the cells
//! that sign the store's campaign webhooks. Making a new one replaces the old at once (the
//! cells pick it up within 30 s).

use chrono::{DateTime, SecondsFormat, Utc};
use nudge_platform_vault::{Vault, VaultError, WebhookSecret, webhook_secret_path};
use nudge_tenants::TenantId;

/// Makes and keeps a new secret for `tenant`; the secret, to show once.
pub async fn rotate(vault: &Vault, tenant: TenantId) -> Result<WebhookSecret, VaultError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| VaultError::Unavailable(format!("no randomness: {e}")))?;
    let secret = WebhookSecret {
        secret: format!("whsec_{}", hex::encode(bytes)),
        created_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
    };
    vault.put_secret(&webhook_secret_path(&tenant.to_string()), &secret).await?;
    Ok(secret)
}

/// When the store's secret was made; `None` while it has none.
pub async fn made_at(vault: &Vault, tenant: TenantId) -> Result<Option<DateTime<Utc>>, VaultError> {
    let kept: Option<WebhookSecret> = vault.get_secret(&webhook_secret_path(&tenant.to_string())).await?;
    Ok(kept.and_then(|k| DateTime::parse_from_rfc3339(&k.created_at).ok()).map(|t| t.with_timezone(&Utc)))
}
