//! The dispatcher of delayed sends: campaign e-mails the pipeline scheduled (see
//! `crate::pipeline`), sent when due unless a purchase cancelled them first.
//!
//! Each round claims the due sends (leasing them, so a crashed dispatcher's sends come
//! back after `lease_ms`) and, for each, checks at the moment of sending what may have
//! changed since the decision: the store still served here, the shopper not erased, their
//! consent, the store's quiet hours in their time zone, the channel's and the campaign's
//! caps. Just before it goes out a send is taken again, with a fresh lease, only if this
//! process still holds the claim (a send whose lease ran out while the round was busy
//! with others may have been claimed by another replica, which then sends it; a purchase
//! may have cancelled it). A send the server refuses for a while is retried with
//! exponential backoff, and given up after `max_attempts`; one it refuses for good is given
//! up at once; one that cannot be handled (the vault or Redis away) is tried again later
//! without holding up the others. Every outcome goes to the store's send log, with the
//! consent the send was checked against.
//!
//! Delivery is at least once: a crash between the server accepting an e-mail and the send
//! being settled sends it again after the lease, with the same `Message-ID`.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use nudge_contracts::{ShopperId, proto::sealed::v1::Sealed};
use nudge_data_plane_channels::{
    email::{Email, EmailError, EmailSender, SmtpConfig},
    gate::{Candidate, ConsentRecord, Verdict, gate},
    store::{ChannelStore, LogEntry, PendingSend, SendContent},
    webhook::{WebhookConfig, WebhookError, WebhookSender},
};
use nudge_data_plane_directory::Directory;
use nudge_data_plane_features::store::{SessionKey, SessionStore};
use nudge_data_plane_keyring::{KeyError, Keyring};
use nudge_platform_telemetry::Metrics;
use nudge_tenants::TenantId;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};
use prost::Message;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::pipeline::{ADDRESS_SCHEMA, SEND_SCHEMA};

/// `[channels]` in the cell's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ChannelsConfig {
    /// How often due sends are looked for.
    pub scan_interval_ms: u64,
    /// Most sends claimed per round.
    pub batch: usize,
    /// How long a claimed send is someone's; after that it is due again.
    pub lease_ms: u64,
    /// Tries of a send the server keeps refusing for now (4xx, unreachable).
    pub max_attempts: u32,
    /// The first retry's pause; each next one doubles it, up to an hour.
    pub retry_backoff_ms: u64,
    /// The SMTP server e-mails go through; without one, e-mails are skipped
    /// (`channel_unavailable`).
    pub smtp: Option<SmtpConfig>,
    pub webhooks: WebhookConfig,
    /// Where shoppers reach this cell: the base of the unsubscribe links in e-mails.
    pub public_url: String,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        Self {
            scan_interval_ms: 500,
            batch: 100,
            lease_ms: 60_000,
            max_attempts: 8,
            retry_backoff_ms: 30_000,
            smtp: None,
            webhooks: WebhookConfig::default(),
            public_url: "http://127.0.0.1:8081".into(),
        }
    }
}

impl ChannelsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.scan_interval_ms == 0 || self.batch == 0 || self.lease_ms == 0 || self.max_attempts == 0 {
            return Err("channels: scan_interval_ms, batch, lease_ms and max_attempts must be positive".into());
        }
        self.smtp.as_ref().map_or(Ok(()), SmtpConfig::validate)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    channel: String,
    outcome: String,
    reason: String,
}

/// Dispatcher counters.
#[derive(Clone)]
pub struct SendMetrics {
    outcomes: Family<Outcome, Counter>,
    log_failures: Counter,
}

impl SendMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self { outcomes: Family::default(), log_failures: Counter::default() };
        let mut r = metrics.registry();
        r.register(
            "channel_sends",
            "Delayed sends settled or moved, by channel, outcome (sent, skipped, deferred, retrying, failed) and reason",
            m.outcomes.clone(),
        );
        r.register(
            "channel_send_log_failures",
            "Send-log entries the dispatcher could not write",
            m.log_failures.clone(),
        );
        m
    }
}

/// Signing secrets by store as kept in the vault, with when each was read (`None`: the
/// store has none).
pub type SecretCache =
    std::collections::HashMap<TenantId, (std::time::Instant, Option<nudge_platform_vault::WebhookSecret>)>;

/// Sends what is due.
pub struct Dispatcher {
    pub store: ChannelStore,
    pub sessions: SessionStore,
    pub directory: Arc<Directory>,
    pub keyring: Arc<Keyring>,
    pub email: Option<EmailSender>,
    pub webhooks: WebhookSender,
    /// Where the stores' webhook signing secrets are.
    pub vault: nudge_platform_vault::Vault,
    /// Signing secrets read lately (`channels.webhooks.secret_refresh_ms`), by store.
    pub secrets: std::sync::Mutex<SecretCache>,
    /// Every e-mail's unsubscribe link.
    pub unsubscribe: Arc<crate::unsubscribe::UnsubscribeLinks>,
    pub config: ChannelsConfig,
    pub metrics: SendMetrics,
}

/// What became of one send.
struct Settled {
    outcome: &'static str,
    reason: String,
    consent: Option<ConsentRecord>,
    detail: String,
}

impl Settled {
    fn skipped(reason: &str, consent: Option<ConsentRecord>) -> Self {
        Self { outcome: "skipped", reason: reason.into(), consent, detail: String::new() }
    }

    /// Nothing to log: the send was cancelled, or is another process's now.
    fn nothing(consent: Option<ConsentRecord>) -> Self {
        Self { outcome: "", reason: String::new(), consent, detail: String::new() }
    }
}

impl Dispatcher {
    /// Rounds until `shutdown`; a failing round (Redis away) is logged and tried again.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let interval = Duration::from_millis(self.config.scan_interval_ms);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(interval) => {}
            }
            if !self.directory.is_caught_up() {
                continue;
            }
            if let Err(e) = self.round().await {
                tracing::warn!(error = %e, "a round of delayed sends failed; retrying at the next interval");
            }
        }
    }

    /// One round: every claimed send handled. How many were claimed.
    pub async fn round(&self) -> anyhow::Result<usize> {
        let now = Utc::now().timestamp_millis();
        let lease = now.saturating_add(i64::try_from(self.config.lease_ms).unwrap_or(i64::MAX));
        let claimed = self.store.claim(now, lease, self.config.batch).await?;
        for (tenant, id) in &claimed {
            let Some(send) = self.store.pending(*tenant, id).await? else {
                // Cancelled or settled by another replica meanwhile.
                self.store.forget(*tenant, id).await?;
                continue;
            };
            // One send's failure (the vault or Redis away, a send that does not read) is
            // that send's: it is tried again later, the others go on.
            let settled = match self.handle(&send, lease).await {
                Ok(settled) => settled,
                Err(e) => self.failed_to_handle(&send, &e).await?,
            };
            if settled.outcome.is_empty() {
                continue;
            }
            let entry = LogEntry {
                at_ms: Utc::now().timestamp_millis(),
                outcome: settled.outcome.into(),
                reason: settled.reason.clone(),
                channel: send.channel.clone(),
                campaign_id: send.campaign_id.clone(),
                variant: send.variant.clone(),
                intervention_id: send.intervention_id.clone(),
                cause_event_id: send.cause_event_id.clone(),
                consent: settled.consent,
                detail: settled.detail,
            };
            self.metrics
                .outcomes
                .get_or_create(&Outcome {
                    channel: send.channel.clone(),
                    outcome: settled.outcome.into(),
                    reason: settled.reason.clone(),
                })
                .inc();
            if settled.outcome != "sent" {
                tracing::info!(
                    tenant_id = %tenant,
                    campaign_id = %send.campaign_id,
                    channel = %send.channel,
                    outcome = settled.outcome,
                    reason = %settled.reason,
                    "delayed send not made"
                );
            }
            if let Err(e) = self.store.log(*tenant, &entry).await {
                self.metrics.log_failures.inc();
                tracing::warn!(tenant_id = %tenant, error = %e, "a send-log entry could not be written");
            }
        }
        Ok(claimed.len())
    }

    /// A send that could not be handled: due again after the backoff, or given up
    /// (`failed`, `unhandled`) after `max_attempts`.
    async fn failed_to_handle(&self, send: &PendingSend, error: &anyhow::Error) -> anyhow::Result<Settled> {
        tracing::warn!(
            tenant_id = %send.tenant,
            campaign_id = %send.campaign_id,
            channel = %send.channel,
            error = %error,
            "a delayed send could not be handled"
        );
        let attempts = send.attempts.saturating_add(1);
        if attempts >= self.config.max_attempts {
            self.store.settle(send.tenant, &send.id, &send.shopper).await?;
            return Ok(Settled { outcome: "failed", reason: "unhandled".into(), consent: None, detail: String::new() });
        }
        let due = Utc::now().timestamp_millis().saturating_add(self.backoff_ms(attempts));
        self.store.reschedule(send.tenant, &send.id, due, attempts).await?;
        Ok(Settled::nothing(None))
    }

    /// Takes the send for this process until a fresh lease ends, if it still holds the
    /// claim made with `claimed_until`: false when it was cancelled, or claimed by another
    /// process after this one's lease ran out (that one sends it).
    async fn take(&self, send: &PendingSend, claimed_until: i64) -> anyhow::Result<bool> {
        let lease = i64::try_from(self.config.lease_ms).unwrap_or(i64::MAX);
        let until = Utc::now().timestamp_millis().saturating_add(lease);
        Ok(self.store.renew(send.tenant, &send.id, claimed_until, until).await?)
    }

    /// Decides and carries out one send, claimed with lease `claimed_until`; settles or
    /// reschedules it.
    async fn handle(&self, send: &PendingSend, claimed_until: i64) -> anyhow::Result<Settled> {
        let tenant = send.tenant;
        let settle = || self.store.settle(tenant, &send.id, &send.shopper);
        let Some(entry) = self.directory.by_tenant(tenant) else {
            settle().await?;
            return Ok(Settled::skipped("tenant_not_served", None));
        };
        if entry.is_suppressed(&send.shopper) {
            settle().await?;
            return Ok(Settled::skipped("erased", None));
        }
        let Some(policy) = entry.messaging.channel(&send.channel) else {
            settle().await?;
            return Ok(Settled::skipped("channel_unavailable", None));
        };
        let now = Utc::now().timestamp_millis();
        let consent = self.store.consent(tenant, &send.shopper, &send.channel).await?;
        let sent = self.store.sent(tenant, &send.shopper, now).await?;
        let zone = match ShopperId::parse(&send.shopper) {
            Ok(shopper) => self.sessions.time_zone(&SessionKey { tenant, shopper }).await?.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let candidate = Candidate {
            channel: &send.channel,
            campaign_id: &send.campaign_id,
            transactional: send.transactional,
            campaign_cap: send.campaign_cap,
        };
        match gate(policy, candidate, consent.as_ref(), &sent, now, &zone) {
            Verdict::Go => {}
            Verdict::Skip(reason) => {
                settle().await?;
                return Ok(Settled::skipped(reason, consent));
            }
            Verdict::Defer { until_ms } => {
                if !self.store.reschedule(tenant, &send.id, until_ms, send.attempts).await? {
                    return Ok(Settled::nothing(consent));
                }
                return Ok(Settled {
                    outcome: "deferred",
                    reason: "quiet_hours".into(),
                    consent,
                    detail: format!(
                        "due again at {until_ms} (quiet hours in {})",
                        if zone.is_empty() { "UTC" } else { &zone }
                    ),
                });
            }
        }
        let content = match self.open(tenant, &send.sealed, SEND_SCHEMA).await? {
            Some(bytes) => serde_json::from_slice::<SendContent>(&bytes)?,
            None => {
                settle().await?;
                return Ok(Settled::skipped("erased", consent));
            }
        };
        let (subject, html, text) = match content {
            SendContent::Email { subject, html, text } => (subject, html, text),
            SendContent::Webhook { url, body } => {
                return self.deliver_webhook(send, claimed_until, &url, &body, consent).await;
            }
        };
        let Some(sender) = &self.email else {
            settle().await?;
            return Ok(Settled::skipped("channel_unavailable", consent));
        };
        let Some(sealed_address) = self.store.address(tenant, &send.shopper).await? else {
            settle().await?;
            return Ok(Settled::skipped("no_address", consent));
        };
        let Some(address) = self.open(tenant, &sealed_address, ADDRESS_SCHEMA).await? else {
            settle().await?;
            return Ok(Settled::skipped("erased", consent));
        };
        let address = String::from_utf8(address)?;
        // The last moment a purchase can still stop it, and no other process sends it.
        if !self.take(send, claimed_until).await? {
            return Ok(Settled::nothing(consent));
        }
        let link = self.unsubscribe.link(tenant, &send.shopper, "email");
        let email = Email {
            to: &address,
            id: &send.id,
            subject: &subject,
            html: &html,
            text: &text,
            unsubscribe: link.as_deref(),
        };
        match sender.send(&email).await {
            Ok(()) => {
                // Settled first: a failure after it cannot make the e-mail go again.
                settle().await?;
                self.count_sent(send).await;
                Ok(Settled { outcome: "sent", reason: String::new(), consent, detail: String::new() })
            }
            Err(EmailError::Permanent(why)) => {
                settle().await?;
                Ok(Settled { outcome: "failed", reason: "rejected".into(), consent, detail: why })
            }
            Err(EmailError::Transient(why)) => {
                let attempts = send.attempts.saturating_add(1);
                if attempts >= self.config.max_attempts {
                    settle().await?;
                    return Ok(Settled {
                        outcome: "failed",
                        reason: "attempts_exhausted".into(),
                        consent,
                        detail: why,
                    });
                }
                self.retry_later(send, attempts, "server_unavailable", &why, consent).await
            }
        }
    }

    /// Delivers a webhook: signed with the store's secret, to public addresses only; a
    /// campaign version whose endpoint failed `flag_after_failures` attempts in a row is
    /// flagged, and its webhooks are given up without calling it.
    async fn deliver_webhook(
        &self,
        send: &PendingSend,
        claimed_until: i64,
        url: &str,
        body: &str,
        consent: Option<ConsentRecord>,
    ) -> anyhow::Result<Settled> {
        let tenant = send.tenant;
        let settle = || self.store.settle(tenant, &send.id, &send.shopper);
        let flag_after = self.webhooks.config().flag_after_failures.max(1);
        if self.store.webhook_failures(tenant, &send.campaign_id, send.version).await? >= flag_after {
            settle().await?;
            return Ok(Settled::skipped("endpoint_flagged", consent));
        }
        let Some(kept) = self.signing_secret(tenant).await? else {
            settle().await?;
            return Ok(Settled::skipped("no_signing_secret", consent));
        };
        // The current secret, and the one it replaced while their overlap lasts.
        let secrets: Vec<&[u8]> = kept.signing_at(Utc::now()).into_iter().map(str::as_bytes).collect();
        if !self.take(send, claimed_until).await? {
            return Ok(Settled::nothing(consent));
        }
        let outcome = self.webhooks.send(url, &secrets, &send.id, body, Utc::now().timestamp()).await;
        let why = match outcome {
            Ok(status) => {
                // Settled first: a failure after it cannot make the webhook go again.
                settle().await?;
                if let Err(e) = self.store.webhook_succeeded(tenant, &send.campaign_id, send.version).await {
                    tracing::warn!(tenant_id = %tenant, error = %e, "a webhook's success could not be recorded");
                }
                self.count_sent(send).await;
                let detail = format!("the endpoint answered {status}");
                return Ok(Settled { outcome: "sent", reason: String::new(), consent, detail });
            }
            Err(e) => e,
        };
        let failures = self.store.webhook_failed(tenant, &send.campaign_id, send.version).await?;
        let attempts = send.attempts.saturating_add(1);
        let detail = why.to_string();
        if failures >= flag_after {
            settle().await?;
            tracing::warn!(
                tenant_id = %tenant,
                campaign_id = %send.campaign_id,
                version = send.version,
                failures,
                "a campaign's webhook endpoint keeps failing; its webhooks are given up until a new version"
            );
            return Ok(Settled { outcome: "failed", reason: "endpoint_flagged".into(), consent, detail });
        }
        match why {
            WebhookError::Permanent(_) => {
                settle().await?;
                Ok(Settled { outcome: "failed", reason: "rejected".into(), consent, detail })
            }
            WebhookError::Transient(_) if attempts >= self.config.max_attempts => {
                settle().await?;
                Ok(Settled { outcome: "failed", reason: "attempts_exhausted".into(), consent, detail })
            }
            WebhookError::Transient(_) => {
                self.retry_later(send, attempts, "endpoint_unavailable", &detail, consent).await
            }
        }
    }

    /// Due again after the backoff for its `attempts`-th failure (`why`), logged as
    /// retrying for `reason`; nothing when it was cancelled meanwhile.
    async fn retry_later(
        &self,
        send: &PendingSend,
        attempts: u32,
        reason: &str,
        why: &str,
        consent: Option<ConsentRecord>,
    ) -> anyhow::Result<Settled> {
        let pause = self.backoff_ms(attempts);
        let due = Utc::now().timestamp_millis().saturating_add(pause);
        if !self.store.reschedule(send.tenant, &send.id, due, attempts).await? {
            return Ok(Settled::nothing(consent));
        }
        Ok(Settled {
            outcome: "retrying",
            reason: reason.into(),
            consent,
            detail: format!("attempt {attempts} failed ({why}); again in {pause} ms"),
        })
    }

    /// Counts a send made for the caps; a failure is logged (the send is made and settled).
    async fn count_sent(&self, send: &PendingSend) {
        let at = Utc::now().timestamp_millis();
        let counted =
            self.store.record_sent(send.tenant, &send.shopper, &send.channel, &send.campaign_id, &send.id, at).await;
        if let Err(e) = counted {
            tracing::warn!(tenant_id = %send.tenant, error = %e, "a send could not be counted for the caps");
        }
    }

    /// The store's webhook signing secrets as kept in the vault, read from there at most
    /// every `channels.webhooks.secret_refresh_ms`.
    async fn signing_secret(&self, tenant: TenantId) -> anyhow::Result<Option<nudge_platform_vault::WebhookSecret>> {
        let fresh = std::time::Duration::from_millis(self.webhooks.config().secret_refresh_ms);
        if let Some((at, kept)) = self.secrets.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&tenant)
            && at.elapsed() < fresh
        {
            return Ok(kept.clone());
        }
        let path = nudge_platform_vault::webhook_secret_path(&tenant.to_string());
        let kept: Option<nudge_platform_vault::WebhookSecret> = self.vault.get_secret(&path).await?;
        self.secrets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(tenant, (std::time::Instant::now(), kept.clone()));
        Ok(kept)
    }

    /// The pause after the `attempts`-th failure: the base doubled each time, at most an hour.
    fn backoff_ms(&self, attempts: u32) -> i64 {
        let base = i64::try_from(self.config.retry_backoff_ms).unwrap_or(i64::MAX);
        base.saturating_mul(1_i64 << attempts.saturating_sub(1).min(20)).min(3_600_000)
    }

    /// Opens sealed bytes; `None` when the shopper's key is gone (erased).
    async fn open(&self, tenant: TenantId, bytes: &[u8], schema: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let sealed = Sealed::decode(bytes)?;
        anyhow::ensure!(sealed.tenant_id == tenant.to_string(), "a sealed value of another tenant");
        match self.keyring.open(&sealed, schema).await {
            Ok(plain) => Ok(Some(plain)),
            Err(KeyError::Shredded) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
