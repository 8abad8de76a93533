//! Leader election over a `coordination.k8s.io/v1` Lease, so two operator replicas never
//! both reconcile.
//!
//! A replica becomes leader by creating the Lease, or by taking it over when its holder has
//! not renewed it for `leaseDurationSeconds` — measured on this replica's own clock from when
//! it last saw the Lease change (as client-go does), so clocks that disagree cannot shorten
//! a leader's term. Every write carries the resourceVersion it read, so of two replicas
//! racing for an expired Lease exactly one wins (the other gets 409). The leader renews
//! every third of the duration, each attempt bounded in time; a leader that cannot renew
//! within two thirds of the duration stops reconciling at once (the process exits and is
//! restarted as a follower) rather than risk a second leader.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};

/// One replica's side of the election.
pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The Lease as last seen held by another replica, and when this replica first saw it so.
    observed: std::sync::Mutex<Option<(String, Timestamp)>>,
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl LeaderElection {
    pub fn new(api: Api<Lease>, name: impl Into<String>, identity: impl Into<String>, duration: Duration) -> Self {
        Self { api, name: name.into(), identity: identity.into(), duration, observed: std::sync::Mutex::new(None) }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Takes or renews the Lease at `now`; true when this replica holds it afterwards.
    pub async fn try_acquire(&self, now: Timestamp) -> Result<bool, kube::Error> {
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let held_for = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(seconds)));
        if !mine && spec.holder_identity.is_some() {
            // Another replica holds it: expired only once it has not changed for a whole
            // term, as this replica's clock measures.
            let record = format!(
                "{:?}/{:?}/{:?}",
                spec.holder_identity,
                spec.renew_time.as_ref().map(|t| t.0),
                lease.metadata.resource_version
            );
            let mut observed = self.observed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let since = match observed.as_ref() {
                Some((seen, at)) if *seen == record => *at,
                _ => {
                    *observed = Some((record, now));
                    now
                }
            };
            if since + held_for >= now {
                return Ok(false);
            }
        }
        let next = Lease {
            metadata: lease.metadata.clone(),
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: if mine { spec.acquire_time.clone() } else { Some(MicroTime(now)) },
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + i32::from(!mine)),
                ..spec
            }),
        };
        match self.api.replace(&self.name, &PostParams::default(), &next).await {
            Ok(_) => {
                if !mine {
                    tracing::info!(identity = %self.identity, "took over the operator lease");
                }
                Ok(true)
            }
            Err(e) if conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (on shutdown), so a follower takes over without waiting it out.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(lease) = self.api.get_opt(&self.name).await? else { return Ok(()) };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        let next = Lease { metadata: lease.metadata, spec: Some(LeaseSpec { holder_identity: None, ..spec }) };
        match self.api.replace(&self.name, &PostParams::default(), &next).await {
            Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica leads.
    pub async fn acquire(&self) -> Result<(), kube::Error> {
        loop {
            match self.try_acquire(Timestamp::now()).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "lease not readable; retrying"),
            }
            tokio::time::sleep(self.duration / 3).await;
        }
    }

    /// Renews until a renewal fails for longer than the Lease lasts; then returns (the
    /// caller stops reconciling).
    pub async fn hold(&self) {
        let mut last_renewed = tokio::time::Instant::now();
        let deadline = self.duration * 2 / 3;
        loop {
            tokio::time::sleep(self.duration / 3).await;
            let budget = deadline.saturating_sub(last_renewed.elapsed());
            // The renewal counts from when it was sent, not when its answer arrived.
            let sent = tokio::time::Instant::now();
            match tokio::time::timeout(budget, self.try_acquire(Timestamp::now())).await {
                Ok(Ok(true)) => last_renewed = sent,
                Ok(Ok(false)) => {
                    tracing::error!(identity = %self.identity, "the operator lease was taken over");
                    return;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "renewing the operator lease failed"),
                Err(_) => tracing::warn!("renewing the operator lease timed out"),
            }
            // Give up before the Lease can expire, so a follower never leads alongside us.
            if last_renewed.elapsed() >= deadline {
                tracing::error!(identity = %self.identity, "could not renew the operator lease in time");
                return;
            }
        }
    }
}
