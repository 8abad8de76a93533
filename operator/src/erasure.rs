//! The `ErasureRequest` reconcile: `validate → file with the control plane → update status`.
//!
//! The control plane owns erasure (it tracks the request, carries it out at every store and
//! signs the receipt); the operator files what the resource asks for through the admin API
//! — a shopper's erasure (`POST /v1/admin/tenants/{id}/erasures`, by subject digest), or a
//! store's offboarding (`POST /v1/admin/tenants/{id}/offboarding`) — and mirrors where it
//! stands into the status until it completes. Filing is idempotent at the control plane (the
//! same subject answers the same request; a store already offboarding keeps its grace
//! period), so a reconcile that runs again, or a second resource for the same subject,
//! changes nothing. A refusal (a legal hold, an unknown store) is written to the status with
//! the control plane's message and not retried until the spec changes; an unreachable
//! control plane is retried with the controller's backoff.

use std::{sync::Arc, time::Duration};

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use nudge_contracts::control::{ErasureView, OffboardingView};
use serde_json::{Value, json};

use crate::{
    config::ControlPlaneConfig,
    controller::{Context, Error},
    crd::{ErasedStore, ErasureRequest, ErasureRequestStatus},
    status::{self, Observed},
};

/// How often an erasure in progress is looked at again.
const FOLLOW: Duration = Duration::from_secs(10);

/// The control plane's admin API, as an operator.
pub struct ControlPlane {
    http: reqwest::Client,
    url: String,
    token: secrecy::SecretString,
}

/// What the control plane answered.
enum Answer {
    Ok(Value),
    /// A refusal for people: the control plane's code and message.
    Refused(String),
}

impl ControlPlane {
    /// `None` when no operator token is configured (erasure resources then say so).
    pub fn new(config: &ControlPlaneConfig) -> Result<Option<Self>, reqwest::Error> {
        let Some(token) = config.token.clone() else { return Ok(None) };
        let http = reqwest::Client::builder().timeout(Duration::from_millis(config.timeout_ms)).build()?;
        Ok(Some(Self { http, url: config.url.trim_end_matches('/').to_owned(), token }))
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Answer, Error> {
        use secrecy::ExposeSecret;
        let response = request
            .bearer_auth(self.token.expose_secret())
            .send()
            .await
            .map_err(|e| Error::ControlPlane(format!("unreachable: {e}")))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        match status.as_u16() {
            200..=299 => Ok(Answer::Ok(body)),
            401 => Err(Error::ControlPlane("the operator token was refused (control_plane.token)".into())),
            404 => Ok(Answer::Refused("no such tenant".into())),
            409 | 422 => Ok(Answer::Refused(format!(
                "{}: {}",
                body["error"]["code"].as_str().unwrap_or("refused"),
                body["error"]["message"].as_str().unwrap_or_default()
            ))),
            _ => Err(Error::ControlPlane(format!("answered {status}"))),
        }
    }

    fn tenant_url(&self, tenant: &str, rest: &str) -> String {
        format!("{}/v1/admin/tenants/{tenant}/{rest}", self.url)
    }
}

/// What a valid spec asks for.
enum Target<'a> {
    Shopper { tenant: &'a str, digest: &'a str },
    Email { tenant: &'a str, email_digest: &'a str },
    Tenant { tenant: &'a str, grace_days: Option<u32> },
}

/// What is wrong with the resource's spec, naming the field; `Ok` when it can be filed.
pub fn check(er: &ErasureRequest) -> Result<(), String> {
    validate(er).map(|_| ())
}

/// The spec's request, or what is wrong with it, naming the field.
fn validate(er: &ErasureRequest) -> Result<Target<'_>, String> {
    let spec = &er.spec;
    if spec.tenant_id.parse::<nudge_tenants::TenantId>().is_err() {
        return Err("spec.tenantId must be a store's id (tnt_…)".into());
    }
    let reason = spec.reason.trim();
    if reason.is_empty() || reason.len() > 1000 {
        return Err("spec.reason must be 1-1000 characters".into());
    }
    if let Some(digest) = &spec.email_digest {
        if spec.subject_digest.is_some() || spec.whole_tenant {
            return Err("give exactly one of spec.subjectDigest, spec.emailDigest and spec.wholeTenant".into());
        }
        if !nudge_contracts::is_sha256_hex(digest) {
            return Err("spec.emailDigest must be 64 lowercase hex digits (nudge erasure digest --email-sha256)".into());
        }
        if spec.grace_days.is_some() {
            return Err("spec.graceDays applies to wholeTenant only".into());
        }
        return Ok(Target::Email { tenant: &spec.tenant_id, email_digest: digest });
    }
    match (&spec.subject_digest, spec.whole_tenant) {
        (Some(digest), false) => {
            let is_digest =
                digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !is_digest {
                return Err("spec.subjectDigest must be 64 lowercase hex digits (nudge erasure digest)".into());
            }
            if spec.grace_days.is_some() {
                return Err("spec.graceDays applies to wholeTenant only".into());
            }
            Ok(Target::Shopper { tenant: &spec.tenant_id, digest })
        }
        (None, true) => match spec.grace_days {
            Some(days) if days > 90 => Err("spec.graceDays must be 0-90".into()),
            grace_days => Ok(Target::Tenant { tenant: &spec.tenant_id, grace_days }),
        },
        _ => Err("give exactly one of spec.subjectDigest, spec.emailDigest and spec.wholeTenant".into()),
    }
}

fn stores_of(request: &ErasureView) -> Vec<ErasedStore> {
    request.steps.iter().map(|s| ErasedStore { store: s.store.clone(), status: s.status.clone() }).collect()
}

/// The status for a shopper's request as the control plane answered it.
fn from_request(tenant: &str, request: &ErasureView) -> (ErasureRequestStatus, &'static str) {
    let completed = request.status == "completed";
    let status = ErasureRequestStatus {
        scope: Some(request.scope.clone()),
        request_id: Some(request.request_id.clone()),
        stores: stores_of(request),
        completed_at: request.completed_at.clone(),
        receipt: completed.then(|| format!("/v1/tenants/{tenant}/erasures/{}/receipt", request.request_id)),
        ..Default::default()
    };
    (status, if completed { "Completed" } else { "InProgress" })
}

/// The status for a store's offboarding as the control plane answered it.
fn from_offboarding(tenant: &str, view: &OffboardingView) -> (ErasureRequestStatus, &'static str) {
    let mut status = ErasureRequestStatus {
        scope: Some("tenant".into()),
        purge_after: view.purge_after.clone(),
        ..Default::default()
    };
    let Some(purge) = &view.purge else { return (status, "GracePeriod") };
    let (request, phase) = from_request(tenant, purge);
    status.request_id = request.request_id;
    status.stores = request.stores;
    status.completed_at = request.completed_at;
    status.receipt = request.receipt;
    (status, if view.state == "deleted" { "Completed" } else { phase })
}

/// Files what `target` asks for (or reads where it stands) at the control plane.
async fn file(
    cp: &ControlPlane,
    target: &Target<'_>,
    reason: &str,
    filed_before: bool,
) -> Result<Result<(ErasureRequestStatus, &'static str), String>, Error> {
    let decode = |what: &str, e: serde_json::Error| Error::ControlPlane(format!("an unexpected {what}: {e}"));
    let (tenant, named) = match *target {
        Target::Shopper { tenant, digest } => (tenant, json!({ "subject_digest": digest })),
        Target::Email { tenant, email_digest } => (tenant, json!({ "email_digest": email_digest })),
        Target::Tenant { tenant, grace_days } => return offboard(cp, tenant, grace_days, reason, filed_before).await,
    };
    // Filing the same request again answers it, with where it stands.
    match cp.call(cp.http.post(cp.tenant_url(tenant, "erasures")).json(&named)).await? {
        Answer::Ok(body) => {
            let view: ErasureView = serde_json::from_value(body).map_err(|e| decode("erasure request", e))?;
            Ok(Ok(from_request(tenant, &view)))
        }
        Answer::Refused(why) => Ok(Err(why)),
    }
}

/// Asks for the store's offboarding (or reads where it stands).
async fn offboard(
    cp: &ControlPlane,
    tenant: &str,
    grace_days: Option<u32>,
    reason: &str,
    filed_before: bool,
) -> Result<Result<(ErasureRequestStatus, &'static str), String>, Error> {
    let decode = |what: &str, e: serde_json::Error| Error::ControlPlane(format!("an unexpected {what}: {e}"));
    // Asked before: follow it (a store already offboarding or deleted is not asked again).
    let current = match cp.call(cp.http.get(cp.tenant_url(tenant, "offboarding"))).await? {
        Answer::Ok(body) => serde_json::from_value::<OffboardingView>(body).map_err(|e| decode("offboarding", e))?,
        Answer::Refused(why) => return Ok(Err(why)),
    };
    let view = if matches!(current.state.as_str(), "offboarding" | "deleted") {
        current
    } else if filed_before {
        // Filed, then cancelled (the store's owner changed their mind): not filed again.
        let status = ErasureRequestStatus { scope: Some("tenant".into()), ..Default::default() };
        return Ok(Ok((status, "Cancelled")));
    } else {
        let mut body = json!({ "reason": reason });
        if let Some(days) = grace_days {
            body["grace_days"] = json!(days);
        }
        match cp.call(cp.http.post(cp.tenant_url(tenant, "offboarding")).json(&body)).await? {
            Answer::Ok(body) => {
                serde_json::from_value::<OffboardingView>(body).map_err(|e| decode("offboarding", e))?
            }
            Answer::Refused(why) => return Ok(Err(why)),
        }
    };
    Ok(Ok(from_offboarding(tenant, &view)))
}

pub async fn reconcile(er: Arc<ErasureRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = er.namespace().ok_or(Error::NotNamespaced)?;
    let api: Api<ErasureRequest> = Api::namespaced(ctx.client.clone(), &namespace);
    if status::paused(&er.metadata) {
        return Ok(Action::await_change());
    }
    let previous = er.status.clone().unwrap_or_default();
    let refused = |why: String, reason: &'static str| {
        let status = ErasureRequestStatus { scope: previous.scope.clone(), ..Default::default() };
        let observed = [
            Observed::new("Ready", false, reason, why.clone()),
            Observed::new("Progressing", false, reason, "nothing is filed until this is fixed"),
            Observed::new("Degraded", true, reason, why),
        ];
        (status, "Refused", observed)
    };
    // A store's offboarding this resource filed (and its observed generation asked for).
    let filed_before = er.metadata.generation == previous.observed_generation
        && matches!(previous.phase.as_deref(), Some("GracePeriod" | "InProgress" | "Cancelled"));
    let (next, phase, observed) = match validate(&er) {
        Err(why) => refused(why, "InvalidSpec"),
        Ok(target) => match &ctx.control_plane {
            None => refused("the operator has no control_plane.token to file erasures with".into(), "NotConfigured"),
            Some(cp) => match file(cp, &target, er.spec.reason.trim(), filed_before).await {
                Ok(Ok((status, phase))) => {
                    let done = phase == "Completed";
                    let going = !matches!(phase, "Completed" | "Cancelled");
                    let message = match phase {
                        "Completed" => "erased; the signed receipt is at status.receipt".to_owned(),
                        "Cancelled" => {
                            "the store's offboarding was cancelled; change the spec to file again".to_owned()
                        }
                        "GracePeriod" => format!(
                            "the store is offboarding; its purge starts after {}",
                            status.purge_after.as_deref().unwrap_or("its grace period")
                        ),
                        _ => format!(
                            "waiting for {}",
                            status
                                .stores
                                .iter()
                                .filter(|s| s.status == "pending")
                                .map(|s| s.store.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    let observed = [
                        Observed::new("Ready", done, phase, message.clone()),
                        Observed::new("Progressing", going, phase, if going { message } else { String::new() }),
                        Observed::new("Degraded", false, phase, ""),
                    ];
                    (status, phase, observed)
                }
                Ok(Err(why)) => refused(why, "RefusedByControlPlane"),
                Err(e) => {
                    // Kept as it was, marked degraded; the controller retries with backoff.
                    let observed = [
                        Observed::new("Ready", false, "ControlPlaneUnavailable", e.to_string()),
                        Observed::new("Progressing", true, "ControlPlaneUnavailable", "retrying"),
                        Observed::new("Degraded", true, "ControlPlaneUnavailable", e.to_string()),
                    ];
                    let phase = previous.phase.clone().unwrap_or_else(|| "Pending".into());
                    write_status(&api, &er, previous.clone(), &phase, &observed).await?;
                    return Err(e);
                }
            },
        },
    };
    write_status(&api, &er, next, phase, &observed).await?;
    Ok(match phase {
        "Completed" | "Refused" | "Cancelled" => Action::await_change(),
        _ => Action::requeue(FOLLOW),
    })
}

async fn write_status(
    api: &Api<ErasureRequest>,
    er: &ErasureRequest,
    mut next: ErasureRequestStatus,
    phase: &str,
    observed: &[Observed],
) -> Result<(), Error> {
    let previous = er.status.clone().unwrap_or_default();
    next.conditions = status::conditions(&previous.conditions, observed, er.metadata.generation);
    next.observed_generation = er.metadata.generation;
    next.phase = Some(phase.to_owned());
    if next != previous {
        api.patch_status(&er.name_any(), &PatchParams::default(), &Patch::Merge(json!({ "status": next }))).await?;
    }
    Ok(())
}
