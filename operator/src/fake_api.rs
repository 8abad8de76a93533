//! An in-memory Kubernetes API server behind kube-rs's tower-test mock: it answers the
//! requests the operator sends (GET, LIST by label selector, POST, PUT, server-side apply,
//! merge patches of objects and their status, DELETE with finalizers) from a map of objects,
//! records every request so tests assert exactly what was sent, and fails chosen requests
//! with a given status code.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

/// A request as the operator sent it.
#[derive(Debug, Clone)]
pub struct Sent {
    pub method: String,
    /// The path without the query.
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

impl Sent {
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }

    /// `METHOD path`, for readable assertions.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

struct Fault {
    method: &'static str,
    path_contains: String,
    status: u16,
    times: usize,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    /// The last server-side-applied configuration per object and field manager.
    applied: BTreeMap<(String, String), Value>,
    sent: Vec<Sent>,
    faults: Vec<Fault>,
    version: u64,
}

#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

/// Splits `/api/v1/namespaces/ns/plural[/name[/sub]]` (or `/apis/g/v/…`) into the
/// collection path, the name and the subresource.
fn split(path: &str) -> (String, Option<String>, Option<String>) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let base = if parts.first() == Some(&"api") { 2 } else { 3 };
    let ns = usize::from(parts.get(base) == Some(&"namespaces")) * 2;
    let plural = base + ns;
    let collection = format!("/{}", parts[..=plural.min(parts.len() - 1)].join("/"));
    (collection, parts.get(plural + 1).map(|s| (*s).to_owned()), parts.get(plural + 2).map(|s| (*s).to_owned()))
}

/// The namespace a namespaced path names.
fn namespace_of(path: &str) -> Option<String> {
    let mut parts = path.split('/');
    parts.by_ref().find(|p| *p == "namespaces")?;
    parts.next().map(str::to_owned)
}

/// Server-side apply's removal: fields the manager's previous applied configuration set and
/// its new one does not are removed from the object, unless another manager applied them.
fn prune(target: &mut Value, previous: &Value, next: &Value, others: &[&Value]) {
    if let (Value::Object(t), Value::Object(p)) = (target, previous) {
        for (k, old) in p {
            let owned_elsewhere: Vec<&Value> = others.iter().filter_map(|o| o.get(k)).collect();
            match next.get(k) {
                None if owned_elsewhere.is_empty() => {
                    t.remove(k);
                }
                None => {}
                Some(new) => {
                    if let Some(field) = t.get_mut(k) {
                        prune(field, old, new, &owned_elsewhere);
                    }
                }
            }
        }
    }
}

/// The `fieldsV1` of an applied configuration: every object key as `f:<key>`.
fn field_set(config: &Value) -> Value {
    match config {
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (format!("f:{k}"), field_set(v))).collect()),
        _ => json!({}),
    }
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn status(code: u16, reason: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("fake API: {reason}"), "reason": reason, "code": code});
    respond(code, &body)
}

fn respond(code: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap_or_default()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn selected(object: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        object["metadata"]["labels"][k].as_str() == Some(v)
    })
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.replace("%3D", "=").replace("%2C", ",").replace("%2F", "/"))
    })
}

impl FakeApi {
    pub fn new() -> Self {
        Self::default()
    }

    /// A client whose every request this fake answers.
    pub fn client(&self) -> kube::Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = self.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let response = fake.answer(request).await;
                send.send_response(response);
            }
        });
        kube::Client::new(service, "default")
    }

    /// Puts an object in (as `kubectl apply` would have), with a uid and resourceVersion.
    pub fn seed(&self, path: &str, mut object: Value) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.version += 1;
        let meta = &mut object["metadata"];
        if meta["uid"].is_null() {
            meta["uid"] = json!(format!("uid-{}", state.version));
        }
        meta["resourceVersion"] = json!(state.version.to_string());
        meta["generation"] = json!(meta["generation"].as_i64().unwrap_or(1));
        state.objects.insert(path.to_owned(), object);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).objects.get(path).cloned()
    }

    /// Paths of the stored objects under a collection.
    pub fn names(&self, collection: &str) -> Vec<String> {
        let state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.objects.keys().filter_map(|k| k.strip_prefix(&format!("{collection}/")).map(str::to_owned)).collect()
    }

    /// Every stored object.
    pub fn all(&self) -> Vec<(String, Value)> {
        let state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.objects.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Answers the next `times` requests with `method` whose path contains `path_contains`
    /// with `status`.
    pub fn fail(&self, method: &'static str, path_contains: &str, status: u16, times: usize) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.faults.push(Fault { method, path_contains: path_contains.to_owned(), status, times });
    }

    /// The requests sent so far, emptying the record.
    pub fn take_sent(&self) -> Vec<Sent> {
        std::mem::take(&mut self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).sent)
    }

    async fn answer(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().to_string();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let content_type =
            request.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let bytes = request.into_body().collect_bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.sent.push(Sent {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            content_type: content_type.clone(),
            body: body.clone(),
        });
        if let Some(fault) =
            state.faults.iter_mut().find(|f| f.times > 0 && f.method == method && path.contains(&f.path_contains))
        {
            fault.times -= 1;
            let code = fault.status;
            return status(code, if code == 409 { "Conflict" } else { "InternalError" });
        }
        state.version += 1;
        let version = state.version;
        let (collection, name, sub) = split(&path);
        let key = name.as_ref().map(|n| format!("{collection}/{n}"));
        match (method.as_str(), key) {
            ("GET", None) => {
                let selector = query_param(&query, "labelSelector").unwrap_or_default();
                let items: Vec<Value> = state
                    .objects
                    .iter()
                    .filter(|(k, v)| k.rsplit_once('/').is_some_and(|(c, _)| c == collection) && selected(v, &selector))
                    .map(|(_, v)| v.clone())
                    .collect();
                respond(
                    200,
                    &json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": version.to_string()}, "items": items}),
                )
            }
            ("GET", Some(key)) => match state.objects.get(&key) {
                Some(object) => respond(200, object),
                None => status(404, "NotFound"),
            },
            ("POST", None) => {
                let name = body["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                let key = format!("{collection}/{name}");
                if state.objects.contains_key(&key) {
                    return status(409, "AlreadyExists");
                }
                let mut object = body;
                object["metadata"]["uid"] = json!(format!("uid-{version}"));
                object["metadata"]["namespace"] = json!(namespace_of(&path));
                object["metadata"]["resourceVersion"] = json!(version.to_string());
                state.objects.insert(key, object.clone());
                respond(201, &object)
            }
            ("PUT", Some(key)) => {
                let Some(existing) = state.objects.get(&key) else { return status(404, "NotFound") };
                if body["metadata"]["resourceVersion"] != existing["metadata"]["resourceVersion"] {
                    return status(409, "Conflict");
                }
                let mut object = body;
                object["metadata"]["resourceVersion"] = json!(version.to_string());
                state.objects.insert(key, object.clone());
                respond(200, &object)
            }
            ("PATCH", Some(key)) => {
                let apply = content_type.starts_with("application/apply-patch");
                let existing = state.objects.get(&key).cloned();
                let mut object = match (existing, apply) {
                    (Some(existing), _) => existing,
                    (None, true) => json!({"metadata": {
                        "uid": format!("uid-{version}"), "generation": 1, "namespace": namespace_of(&path),
                    }}),
                    (None, false) => return status(404, "NotFound"),
                };
                if let Some(want) = body["metadata"]["resourceVersion"].as_str()
                    && object["metadata"]["resourceVersion"].as_str() != Some(want)
                {
                    return status(409, "Conflict");
                }
                let mut patch = body;
                if sub.as_deref() == Some("status") {
                    patch = json!({"status": patch["status"].clone()});
                } else if let Some(meta) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.remove("resourceVersion");
                }
                let spec_before = object["spec"].clone();
                if apply {
                    let manager = query_param(&query, "fieldManager").unwrap_or_default();
                    let others: Vec<&Value> =
                        state.applied.iter().filter(|((k, m), _)| *k == key && *m != manager).map(|(_, v)| v).collect();
                    if let Some(previous) = state.applied.get(&(key.clone(), manager.clone())) {
                        prune(&mut object, previous, &patch, &others);
                    }
                    state.applied.insert((key.clone(), manager), patch.clone());
                }
                merge(&mut object, &patch);
                if apply {
                    let managed: Vec<Value> = state
                        .applied
                        .iter()
                        .filter(|((k, _), _)| *k == key)
                        .map(|((_, manager), config)| {
                            json!({"manager": manager, "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": field_set(config)})
                        })
                        .collect();
                    object["metadata"]["managedFields"] = Value::Array(managed);
                }
                if object["spec"] != spec_before && !spec_before.is_null() {
                    let generation = object["metadata"]["generation"].as_i64().unwrap_or(1);
                    object["metadata"]["generation"] = json!(generation + 1);
                }
                object["metadata"]["resourceVersion"] = json!(version.to_string());
                let finalizers_gone = object["metadata"]["finalizers"].as_array().is_none_or(Vec::is_empty);
                if !object["metadata"]["deletionTimestamp"].is_null() && finalizers_gone {
                    state.objects.remove(&key);
                    state.applied.retain(|(k, _), _| *k != key);
                } else {
                    state.objects.insert(key, object.clone());
                }
                respond(200, &object)
            }
            ("DELETE", Some(key)) => {
                let Some(mut object) = state.objects.get(&key).cloned() else { return status(404, "NotFound") };
                if object["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty()) {
                    object["metadata"]["deletionTimestamp"] = json!("2026-11-27T00:00:00Z");
                    object["metadata"]["resourceVersion"] = json!(version.to_string());
                    state.objects.insert(key, object.clone());
                } else {
                    state.objects.remove(&key);
                    state.applied.retain(|(k, _), _| *k != key);
                }
                respond(200, &object)
            }
            _ => status(405, "MethodNotAllowed"),
        }
    }
}
