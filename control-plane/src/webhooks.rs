//! Stripe's webhooks: verified, received once, applied in order, and turned into dunning
//! that reaches the cells.
//!
//! **Verification.** `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]`: each `v1` is
//! an HMAC-SHA-256 of `<t>.<raw body>` under an endpoint secret. The event is accepted when
//! any `v1` matches any configured secret (several during a rotation; compared in constant
//! time) and `t` is within the tolerance of now, either way: an altered body, an unsigned
//! request, or a captured request replayed later is refused before anything is read.
//!
//! **Once, in order.** Stripe may deliver an event twice and events out of order. Every event
//! id is kept (`stripe_events`); a repeat answers 200 and does nothing. Payment events carry
//! when Stripe created them: one older than the last applied to the store changes nothing
//! (`stale`). Applying is idempotent, and the event is recorded after it is applied, so a
//! failure in between has Stripe retry it and apply it again, never lose it.
//!
//! **Dunning.** `invoice.payment_failed` grades the store by the invoice's attempt count
//! ([`DunningPolicy`]): `warned` (shown to the merchant), `ingest_paused` (the tenant record
//! tells its cell, whose ingest answers 402 `payment_required`), `suspended` (the store's
//! lifecycle moves to `suspended`, as `system:billing`, so its cell refuses it as for any
//! suspension). `invoice.paid` / `invoice.payment_succeeded` recovers it: `ok`, events
//! taken again, and a suspension billing made lifted (one made by an operator is not).
//!
//! **Checkout.** `checkout.session.completed` for a setup-mode session this platform made
//! for the store puts the collected payment method on file and the store on the plan it
//! asked for ([`crate::checkout`]).

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use nudge_contracts::Topics;
use nudge_tenants::{Actor, TenantId, TenantState};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;
use sqlx::Row;

use crate::{announce::announce, db::DbError, routing::TenantRouter};

/// Who moves a store's lifecycle for its payments.
pub const BILLING: Actor = Actor::System("billing");

/// Why a webhook request was refused before it was read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("the Stripe-Signature header is malformed")]
    Malformed,
    #[error("no signature matches the body")]
    NoMatch,
    #[error("signed {0} s away from now, beyond the tolerance")]
    OutsideTolerance(i64),
}

/// Checks a webhook's `Stripe-Signature` against its raw `body`, at `now` (unix seconds).
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[SecretString],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part.trim().split_once('=').ok_or(SignatureError::Malformed)?;
        match key {
            "t" => timestamp = Some(value.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            // A signature that is not hex matches nothing; the others may.
            "v1" => signatures.extend(hex::decode(value).ok()),
            // Other schemes (`v0`, test-mode signatures) are not ours to check.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    let mut matched = false;
    for secret in secrets {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()) else { continue };
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        if signatures.iter().any(|s| mac.clone().verify_slice(s).is_ok()) {
            matched = true;
            break;
        }
    }
    if !matched {
        return Err(SignatureError::NoMatch);
    }
    let skew = now - timestamp;
    if skew.abs() > tolerance_secs {
        return Err(SignatureError::OutsideTolerance(skew));
    }
    Ok(())
}

/// How failed payments grade a store, by the failed invoice's attempt count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DunningPolicy {
    pub warn_after_attempts: u64,
    pub pause_ingest_after_attempts: u64,
    pub suspend_after_attempts: u64,
}

impl Default for DunningPolicy {
    fn default() -> Self {
        Self { warn_after_attempts: 1, pause_ingest_after_attempts: 2, suspend_after_attempts: 3 }
    }
}

impl DunningPolicy {
    pub fn validate(&self) -> Result<(), String> {
        let ordered = 1 <= self.warn_after_attempts
            && self.warn_after_attempts <= self.pause_ingest_after_attempts
            && self.pause_ingest_after_attempts <= self.suspend_after_attempts;
        if ordered {
            Ok(())
        } else {
            Err("billing.dunning: 1 <= warn_after_attempts <= pause_ingest_after_attempts <= suspend_after_attempts"
                .into())
        }
    }

    /// The grade after `attempts` failed attempts to collect an invoice.
    pub fn grade(&self, attempts: u64) -> Grade {
        if attempts >= self.suspend_after_attempts {
            Grade::Suspended
        } else if attempts >= self.pause_ingest_after_attempts {
            Grade::IngestPaused
        } else if attempts >= self.warn_after_attempts {
            Grade::Warned
        } else {
            Grade::Ok
        }
    }
}

/// A store's dunning grade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grade {
    Ok,
    Warned,
    IngestPaused,
    Suspended,
}

impl Grade {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warned => "warned",
            Self::IngestPaused => "ingest_paused",
            Self::Suspended => "suspended",
        }
    }
}

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Applied to the store (its grade set).
    Applied(Grade),
    /// Received before: nothing done again.
    Duplicate,
    /// Older than the payment event last applied to the store: nothing done.
    Stale,
    /// A type billing does not act on.
    Ignored,
    /// A customer no store is.
    UnknownCustomer,
    /// A Checkout session completed.
    Checkout(crate::checkout::Completion),
}

impl Received {
    fn outcome(self) -> &'static str {
        match self {
            Self::Applied(_) => "applied",
            Self::Duplicate | Self::Ignored => "ignored",
            Self::Stale => "stale",
            Self::UnknownCustomer => "unknown_customer",
            Self::Checkout(crate::checkout::Completion::PlanChanged(_) | crate::checkout::Completion::MethodSaved) => {
                "applied"
            }
            Self::Checkout(crate::checkout::Completion::Unknown | crate::checkout::Completion::Incomplete) => "ignored",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Db(#[from] DbError),
    /// Verified, but not an event this endpoint can read.
    #[error("not a Stripe event: {0}")]
    Malformed(&'static str),
    /// Stripe could not be asked what the event needs: Stripe delivers it again later.
    #[error(transparent)]
    Stripe(#[from] crate::stripe::StripeError),
    /// The event cannot be applied yet (what it names is not finished at Stripe): Stripe
    /// delivers it again later.
    #[error("not yet: {0}")]
    NotYet(&'static str),
}

impl From<sqlx::Error> for WebhookError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

/// Receives verified events.
#[derive(Clone)]
pub struct Webhooks {
    pub router: Arc<TenantRouter>,
    pub topics: Topics,
    pub dunning: DunningPolicy,
    /// For what a completed Checkout needs from Stripe; `None` when billing is off.
    pub stripe: Option<crate::stripe::Stripe>,
}

impl Webhooks {
    /// Receives one verified event (its JSON body).
    pub async fn receive(&self, event: &Value) -> Result<Received, WebhookError> {
        let id =
            event["id"].as_str().filter(|s| !s.is_empty() && s.len() <= 255).ok_or(WebhookError::Malformed("no id"))?;
        let kind = event["type"]
            .as_str()
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .ok_or(WebhookError::Malformed("no type"))?;
        let created = event["created"]
            .as_i64()
            .and_then(|t| Utc.timestamp_opt(t, 0).single())
            .ok_or(WebhookError::Malformed("no creation time"))?;
        let mut tx = self.router.registry().platform_tx().await?;
        let seen: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM stripe_events WHERE event_id = $1)")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        if seen {
            return Ok(Received::Duplicate);
        }
        let object = &event["data"]["object"];
        let grade = match kind {
            "invoice.payment_failed" => Some(self.dunning.grade(object["attempt_count"].as_u64().unwrap_or(1).max(1))),
            "invoice.paid" | "invoice.payment_succeeded" => Some(Grade::Ok),
            _ => None,
        };
        let received = match grade {
            None if kind == "checkout.session.completed" => self.checkout(object).await?,
            None => Received::Ignored,
            Some(grade) => {
                let customer =
                    object["customer"].as_str().ok_or(WebhookError::Malformed("an invoice without a customer"))?;
                let stores = self
                    .router
                    .tenants_everywhere("SELECT nudge_billing_tenant_of($1)", crate::routing::SweepArg::Text(customer))
                    .await?;
                match stores.first() {
                    Some(tenant) => self.apply(*tenant, grade, created, kind).await?,
                    None => Received::UnknownCustomer,
                }
            }
        };
        // Recorded once applied: a failure before this has Stripe send it again.
        let mut tx = self.router.registry().platform_tx().await?;
        sqlx::query(
            "INSERT INTO stripe_events (event_id, type, created_at, outcome) VALUES ($1, $2, $3, $4)
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(id)
        .bind(kind)
        .bind(created)
        .bind(received.outcome())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(received)
    }

    /// Applies a completed Checkout session to the store whose customer it names.
    async fn checkout(&self, session: &Value) -> Result<Received, WebhookError> {
        let Some(stripe) = &self.stripe else { return Ok(Received::Ignored) };
        let Some(customer) = session["customer"].as_str() else { return Ok(Received::Ignored) };
        let stores = self
            .router
            .tenants_everywhere("SELECT nudge_billing_tenant_of($1)", crate::routing::SweepArg::Text(customer))
            .await?;
        let Some(tenant) = stores.first() else { return Ok(Received::UnknownCustomer) };
        match crate::checkout::complete(&self.router, stripe, &self.topics, *tenant, session).await {
            Ok(crate::checkout::Completion::Incomplete) => {
                Err(WebhookError::NotYet("the session's setup intent has not succeeded"))
            }
            Ok(done) => Ok(Received::Checkout(done)),
            Err(crate::checkout::PlanChangeError::Db(e)) => Err(WebhookError::Db(e)),
            // Refused for good (the method or the customer is gone): retrying cannot help.
            Err(crate::checkout::PlanChangeError::Stripe(e @ crate::stripe::StripeError::Rejected { .. })) => {
                tracing::warn!(tenant_id = %tenant, error = %e, "Stripe refused what a completed Checkout needs; not applied");
                Ok(Received::Ignored)
            }
            Err(crate::checkout::PlanChangeError::Stripe(e)) => Err(WebhookError::Stripe(e)),
            // The store left meanwhile: nothing to apply.
            Err(e) => {
                tracing::info!(tenant_id = %tenant, error = %e, "a completed Checkout was not applied");
                Ok(Received::Ignored)
            }
        }
    }

    /// Sets `tenant`'s grade from a payment event Stripe created at `created`, unless a newer
    /// one was applied; moves its lifecycle and tells its cell.
    async fn apply(
        &self,
        tenant: TenantId,
        grade: Grade,
        created: DateTime<Utc>,
        kind: &str,
    ) -> Result<Received, WebhookError> {
        let mut tx = self.router.tenant_tx(tenant).await?;
        let row = sqlx::query(
            "SELECT t.state, b.dunning, b.payment_event_at, b.suspended_by_billing
             FROM tenants t JOIN billing_accounts b ON b.tenant_id = t.tenant_id
             WHERE t.tenant_id = $1 FOR UPDATE OF b",
        )
        .bind(tenant.as_uuid())
        .fetch_one(&mut *tx)
        .await?;
        let last: Option<DateTime<Utc>> = row.try_get("payment_event_at")?;
        if last.is_some_and(|last| last > created) {
            return Ok(Received::Stale);
        }
        let state = TenantState::parse(&row.try_get::<String, _>("state")?).unwrap_or(TenantState::Pending);
        let before: String = row.try_get("dunning")?;
        let mut suspended_by_billing: bool = row.try_get("suspended_by_billing")?;
        // Billing suspends an active store, and lifts only a suspension of its own; a store
        // moved since by someone else (an operator, an offboarding) is theirs now.
        let move_to = if grade == Grade::Suspended {
            (state == TenantState::Active).then_some(TenantState::Suspended)
        } else {
            let lift = suspended_by_billing && state == TenantState::Suspended;
            suspended_by_billing = false;
            lift.then_some(TenantState::Active)
        };
        if let Some(to) = move_to {
            let reason = format!("billing: {kind}");
            crate::lifecycle::transition_in(
                &mut tx,
                &self.topics,
                tenant,
                to,
                &BILLING,
                &reason,
                chrono::Duration::zero(),
                None,
            )
            .await
            .map_err(lifecycle_error)?;
            suspended_by_billing = to == TenantState::Suspended;
        }
        sqlx::query(
            "UPDATE billing_accounts
                SET dunning = $2, payment_event_at = $3, suspended_by_billing = $4,
                    dunning_since = CASE WHEN $2 = 'ok' THEN NULL WHEN dunning = 'ok' THEN now() ELSE dunning_since END
              WHERE tenant_id = $1",
        )
        .bind(tenant.as_uuid())
        .bind(grade.as_str())
        .bind(created)
        .bind(suspended_by_billing)
        .execute(&mut *tx)
        .await?;
        // The cell learns whether the store's events are paused.
        announce(&mut tx, &self.topics, tenant, None).await?;
        tx.commit().await.map_err(DbError::from)?;
        if before != grade.as_str() {
            tracing::info!(tenant_id = %tenant, from = %before, to = grade.as_str(), "a store's dunning grade changed");
        }
        Ok(Received::Applied(grade))
    }
}

fn lifecycle_error(e: crate::lifecycle::LifecycleError) -> WebhookError {
    match e {
        crate::lifecycle::LifecycleError::Db(db) => WebhookError::Db(db),
        other => WebhookError::Db(DbError::Query(sqlx::Error::Protocol(other.to_string()))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn a_signature_must_match_the_body_and_be_fresh_either_way() {
        let secrets = [SecretString::from("whsec_new"), SecretString::from("whsec_old")];
        let body = br#"{"id":"evt_1"}"#;
        let now = 1_800_000_000;
        let header = |t: i64, sigs: &[String]| {
            let mut h = format!("t={t}");
            for s in sigs {
                h.push_str(&format!(",v1={s}"));
            }
            h
        };
        let good = sign("whsec_old", now, body);
        assert_eq!(verify(Some(&header(now, std::slice::from_ref(&good))), body, &secrets, now, 300), Ok(()));
        // Several signatures: one matching is enough (a secret being rolled).
        let other = sign("whsec_elsewhere", now, body);
        assert_eq!(verify(Some(&header(now, &[other.clone(), good.clone()])), body, &secrets, now, 300), Ok(()));
        assert_eq!(verify(Some(&header(now, &[other])), body, &secrets, now, 300), Err(SignatureError::NoMatch));
        // The body altered.
        assert_eq!(
            verify(Some(&header(now, &[good])), br#"{"id":"evt_2"}"#, &secrets, now, 300),
            Err(SignatureError::NoMatch)
        );
        // Stale and future, each signed properly.
        let stale = now - 301;
        assert_eq!(
            verify(Some(&header(stale, &[sign("whsec_new", stale, body)])), body, &secrets, now, 300),
            Err(SignatureError::OutsideTolerance(301))
        );
        let future = now + 301;
        assert_eq!(
            verify(Some(&header(future, &[sign("whsec_new", future, body)])), body, &secrets, now, 300),
            Err(SignatureError::OutsideTolerance(-301))
        );
        let edge = now - 300;
        assert_eq!(verify(Some(&header(edge, &[sign("whsec_new", edge, body)])), body, &secrets, now, 300), Ok(()));
        assert_eq!(verify(None, body, &secrets, now, 300), Err(SignatureError::Missing));
        assert_eq!(verify(Some("v1=abc"), body, &secrets, now, 300), Err(SignatureError::Malformed));
        assert_eq!(verify(Some("t=x,v1=abc"), body, &secrets, now, 300), Err(SignatureError::Malformed));
    }

    #[test]
    fn failed_attempts_grade_a_store_step_by_step() {
        let policy = DunningPolicy::default();
        let grades: Vec<Grade> = (1..=4).map(|n| policy.grade(n)).collect();
        assert_eq!(grades, [Grade::Warned, Grade::IngestPaused, Grade::Suspended, Grade::Suspended]);
        assert!(DunningPolicy { warn_after_attempts: 3, ..DunningPolicy::default() }.validate().is_err());
    }
}
