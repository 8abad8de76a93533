//! `apply` of a reconcile: make an owner's children exactly the built set, writing only what
//! differs.
//!
//! Per kind, one LIST by the owner's label selector reads what exists. A built child that is
//! missing, or whose fields differ from what is there, is written with server-side apply
//! (field manager `nudge-operator`, forced: the operator owns these fields); a child that
//! exists but is no longer built (an autoscaler whose `maxReplicas` was removed) is deleted.
//! A child already as built is not written at all, so a reconcile of an unchanged resource
//! sends reads only.
//!
//! "As built" means every field the operator sets has that value on the server, and the
//! annotation `nudge.dev/applied-hash` (a digest of the built object) matches: fields the
//! server adds (defaults, status, other managers' fields) are ignored, and a field the
//! operator stopped setting changes the digest, so the child is applied again and server-side
//! apply removes the field. A value the server normalises (a quantity of `1000m` read back
//! as `1`) reads as different and is re-applied on every reconcile — harmless (server-side
//! apply of the same intent is a no-op there) but a reason to write quantities in their
//! canonical form.

use kube::{
    Api, Client,
    api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams},
};
use serde_json::Value;

use crate::build::Child;

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "nudge-operator";
/// The field manager that keeps a Deployment's replica count while its autoscaler takes it
/// over: server-side apply removes a field its only manager stops applying (the API server
/// would then reset the count to 1); a second owner keeps it, as the Kubernetes
/// documentation's "transferring ownership" describes.
pub const HANDOVER_MANAGER: &str = "nudge-operator-handover";

/// Whether `manager` owns `spec.replicas` of `object`.
fn owns_replicas(object: &DynamicObject, manager: &str) -> bool {
    object.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some(manager)
            && m.fields_v1.as_ref().is_some_and(|f| f.0["f:spec"]["f:replicas"].is_object())
    })
}

/// The annotation carrying the digest of what was applied.
pub const APPLIED_HASH: &str = "nudge.dev/applied-hash";

/// `object` with [`APPLIED_HASH`] set to the SHA-256 of the object without it.
pub fn with_applied_hash(object: &DynamicObject) -> DynamicObject {
    use sha2::Digest;
    let mut object = object.clone();
    if let Some(annotations) = object.metadata.annotations.as_mut() {
        annotations.remove(APPLIED_HASH);
        if annotations.is_empty() {
            object.metadata.annotations = None;
        }
    }
    let digest = sha2::Sha256::digest(serde_json::to_vec(&object).unwrap_or_default());
    object.metadata.annotations.get_or_insert_default().insert(APPLIED_HASH.to_owned(), hex::encode(&digest[..16]));
    object
}

/// What a sync wrote.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// `Kind/name` of each child written.
    pub patched: Vec<String>,
    /// `Kind/name` of each child deleted.
    pub deleted: Vec<String>,
    /// The children as they are on the server after the sync (for status).
    pub current: Vec<DynamicObject>,
}

/// Whether every field of `want` has the same value in `have`: objects key by key, arrays
/// element by element (same length), everything else equal.
pub fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(have), Value::Object(want)) => {
            want.iter().all(|(k, w)| have.get(k).is_some_and(|h| contains(h, w)))
        }
        (Value::Array(have), Value::Array(want)) => {
            have.len() == want.len() && have.iter().zip(want).all(|(h, w)| contains(h, w))
        }
        (have, want) => have == want,
    }
}

/// Makes the children of the owner selected by `selector` in `namespace` exactly `desired`,
/// over `kinds`.
pub async fn sync_children(
    client: &Client,
    namespace: &str,
    selector: &str,
    kinds: &[ApiResource],
    desired: &[Child],
) -> Result<Applied, kube::Error> {
    let mut applied = Applied::default();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for kind in kinds {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, kind);
        let existing = api.list(&ListParams::default().labels(selector)).await?.items;
        for child in desired.iter().filter(|c| &c.resource == kind) {
            let object = with_applied_hash(&child.object);
            let want = serde_json::to_value(&object).unwrap_or_default();
            let have = existing.iter().find(|e| e.metadata.name.as_deref() == Some(child.name()));
            match have {
                Some(have) if contains(&serde_json::to_value(have).unwrap_or_default(), &want) => {
                    applied.current.push(have.clone());
                }
                _ => {
                    if let Some(have) = have
                        && kind.kind == "Deployment"
                        && want["spec"].get("replicas").is_none()
                        && owns_replicas(have, FIELD_MANAGER)
                    {
                        hand_over_replicas(&api, have).await?;
                    }
                    let written = api.patch(child.name(), &params, &Patch::Apply(&object)).await?;
                    applied.patched.push(format!("{}/{}", kind.kind, child.name()));
                    applied.current.push(written);
                }
            }
        }
        for stale in existing
            .iter()
            .filter(|e| !desired.iter().any(|c| &c.resource == kind && Some(c.name()) == e.metadata.name.as_deref()))
        {
            let name = stale.metadata.name.clone().unwrap_or_default();
            if stale.metadata.deletion_timestamp.is_none() {
                api.delete(&name, &DeleteParams::foreground()).await?;
                applied.deleted.push(format!("{}/{}", kind.kind, name));
            }
        }
    }
    Ok(applied)
}

/// Makes [`HANDOVER_MANAGER`] a co-owner of the Deployment's current replica count, so the
/// operator can stop applying it without the count being reset.
async fn hand_over_replicas(api: &Api<DynamicObject>, have: &DynamicObject) -> Result<(), kube::Error> {
    let name = have.metadata.name.clone().unwrap_or_default();
    let replicas = &have.data["spec"]["replicas"];
    // Nothing to keep, or a count of 0, which an autoscaler never scales up from: let the
    // field go (the API server's default, 1, is a start the autoscaler works from).
    if replicas.as_i64().is_none_or(|n| n < 1) {
        return Ok(());
    }
    let handover = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": { "replicas": replicas },
    });
    // A conflict means the count changed since it was read: the reconcile fails and is
    // retried with a fresh read rather than dropping a count someone else now holds.
    api.patch(&name, &PatchParams::apply(HANDOVER_MANAGER), &Patch::Apply(&handover)).await.map(|_| ())
}

/// Deletes every child of the owner of one kind (optionally only those named); returns how
/// many still exist (deleting, or just asked to). Deletion is in the foreground: a
/// Deployment stays until its pods are gone, so each cleanup step waits for the last.
pub async fn delete_children(
    client: &Client,
    namespace: &str,
    selector: &str,
    kind: &ApiResource,
    only: Option<&str>,
) -> Result<usize, kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, kind);
    let existing = api.list(&ListParams::default().labels(selector)).await?.items;
    let mut remaining = 0;
    for object in existing.iter().filter(|o| only.is_none_or(|n| o.metadata.name.as_deref() == Some(n))) {
        remaining += 1;
        if object.metadata.deletion_timestamp.is_none() {
            let name = object.metadata.name.clone().unwrap_or_default();
            api.delete(&name, &DeleteParams::foreground()).await?;
        }
    }
    Ok(remaining)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn contains_ignores_what_the_server_adds_and_sees_what_changed() {
        let have = json!({"metadata": {"name": "a", "uid": "u", "labels": {"x": "1"}}, "spec": {"replicas": 2, "paused": false}, "status": {}});
        assert!(contains(&have, &json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"replicas": 2}})));
        assert!(!contains(&have, &json!({"spec": {"replicas": 3}})));
        assert!(!contains(&have, &json!({"metadata": {"labels": {"y": "1"}}})));
        assert!(!contains(&json!({"a": [1, 2]}), &json!({"a": [1]})), "a list is the whole list");
    }

    #[test]
    fn a_field_no_longer_built_changes_the_digest() {
        let object = |labels: serde_json::Value| -> DynamicObject {
            serde_json::from_value(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": labels}}),
            )
            .unwrap()
        };
        let before = with_applied_hash(&object(json!({"x": "1", "y": "2"})));
        let after = with_applied_hash(&object(json!({"x": "1"})));
        let hash = |o: &DynamicObject| o.metadata.annotations.as_ref().unwrap()[APPLIED_HASH].clone();
        assert_ne!(hash(&before), hash(&after));
        // What the server holds after the first apply still has `y` and contains everything
        // of the second build except its digest: the child is applied again.
        let server = serde_json::to_value(&before).unwrap();
        assert!(!contains(&server, &serde_json::to_value(&after).unwrap()));
        assert_eq!(hash(&with_applied_hash(&before)), hash(&before), "idempotent");
    }
}
