//! `update_status` of a reconcile: conditions that keep their transition time while their
//! status holds, written only when something changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};

/// One condition as a reconcile sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub type_: &'static str,
    pub status: bool,
    /// CamelCase, machine-readable (`InvalidSpec`, `DeletionBlocked`).
    pub reason: &'static str,
    /// For people: what the resource waits for or what is wrong, naming the field.
    pub message: String,
}

impl Observed {
    pub fn new(type_: &'static str, status: bool, reason: &'static str, message: impl Into<String>) -> Self {
        Self { type_, status, reason, message: message.into() }
    }
}

/// The conditions to write: each observed one, with the previous transition time when its
/// status did not change (so an unchanged resource yields an identical status).
pub fn conditions(previous: &[Condition], observed: &[Observed], generation: Option<i64>) -> Vec<Condition> {
    observed
        .iter()
        .map(|o| {
            let status = if o.status { "True" } else { "False" }.to_owned();
            let since = previous
                .iter()
                .find(|p| p.type_ == o.type_ && p.status == status)
                .map(|p| p.last_transition_time.clone())
                .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
            Condition {
                type_: o.type_.to_owned(),
                status,
                reason: o.reason.to_owned(),
                message: o.message.clone(),
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
}

/// Whether the operator must leave the resource alone (annotation `nudge.dev/paused: "true"`).
pub fn paused(meta: &ObjectMeta) -> bool {
    meta.annotations.as_ref().and_then(|a| a.get(crate::crd::PAUSE_ANNOTATION)).is_some_and(|v| v == "true")
}

pub fn has_finalizer(meta: &ObjectMeta) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == crate::crd::FINALIZER)
}

/// The finalizer list with ours added or removed, and the merge patch that writes it (with
/// the resourceVersion read, so a concurrent change to the list fails with 409 and the
/// reconcile retries instead of dropping someone else's finalizer).
pub fn finalizer_patch(meta: &ObjectMeta, add: bool) -> serde_json::Value {
    let mut list: Vec<String> =
        meta.finalizers.iter().flatten().filter(|f| *f != crate::crd::FINALIZER).cloned().collect();
    if add {
        list.push(crate::crd::FINALIZER.to_owned());
    }
    serde_json::json!({ "metadata": { "finalizers": list, "resourceVersion": meta.resource_version } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_holds() {
        let first = conditions(&[], &[Observed::new("Ready", false, "RollingOut", "waiting")], Some(1));
        let same = conditions(&first, &[Observed::new("Ready", false, "RollingOut", "still waiting")], Some(1));
        assert_eq!(first[0].last_transition_time, same[0].last_transition_time);
        assert_eq!(same[0].message, "still waiting");
        let flipped = conditions(&first, &[Observed::new("Ready", true, "Available", "")], Some(2));
        assert_eq!((flipped[0].status.as_str(), flipped[0].observed_generation), ("True", Some(2)));
    }
}
