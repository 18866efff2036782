//! A scripted, in-memory Kubernetes API behind a real `kube::Client` (through tower-test).
//!
//! It stores objects by path, answers GET/POST/PATCH (apply, merge, JSON)/PUT/DELETE the way the
//! API server does for the cases the operator's unit tests need, records every request, and lets
//! a test script failures. It is not the local control plane under `e2e/`: no watches, no
//! defaulting, no validation.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Map, Value, json};

/// One request as the fake API received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: Option<String>,
    pub body: Option<Value>,
}

impl RecordedRequest {
    /// Whether the request changes state (anything but GET, LIST and WATCH).
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }

    pub fn field_manager(&self) -> Option<&str> {
        self.query.get("fieldManager").map(String::as_str)
    }

    /// Whether it is a server-side apply.
    pub fn is_apply(&self) -> bool {
        self.content_type.as_deref() == Some("application/apply-patch+yaml")
    }

    /// `METHOD path`, handy in assertions.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// A scripted failure: when `matches` is true for a request, answer `status` with `body`.
pub struct Failure {
    pub matches: Box<dyn Fn(&RecordedRequest) -> bool + Send>,
    pub status: u16,
    pub body: Value,
    /// How many more times to fail; `None` is forever.
    pub remaining: Option<u32>,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    requests: Vec<RecordedRequest>,
    failures: Vec<Failure>,
    resource_version: u64,
}

/// Handle to the fake API; clone it freely.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    pub fn new() -> Self {
        Self::default()
    }

    /// A kube client whose every request this fake answers. Needs a running tokio runtime.
    pub fn client(&self) -> Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = self.clone();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let recorded = RecordedRequest {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    query: parts
                        .uri
                        .query()
                        .unwrap_or("")
                        .split('&')
                        .filter(|pair| !pair.is_empty())
                        .map(|pair| {
                            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                            (k.to_string(), v.to_string())
                        })
                        .collect(),
                    content_type: parts
                        .headers
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string),
                    body: parse_body(&bytes),
                };
                let (status, body) = fake.answer(recorded);
                let response = Response::builder()
                    .status(status)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(
                        serde_json::to_vec(&body).expect("JSON values serialise"),
                    ))
                    .expect("a status code and a JSON body make a valid response");
                respond.send_response(response);
            }
        });
        Client::new(service, "default")
    }

    /// Stores an object at its path, as if it had been created earlier.
    pub fn insert(&self, path: &str, mut object: Value) {
        let mut state = self.lock();
        state.resource_version += 1;
        let rv = state.resource_version.to_string();
        let meta = object_meta(&mut object);
        meta.entry("resourceVersion").or_insert(json!(rv));
        meta.entry("uid").or_insert(json!(format!("uid-{rv}")));
        state.objects.insert(path.to_string(), object);
    }

    /// The stored object at `path`.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.lock().objects.get(path).cloned()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Requests that change state, except Event writes (best-effort notices, not children).
    pub fn child_writes(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.is_write() && !r.path.contains("/events"))
            .collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Scripts a failure.
    pub fn fail(&self, failure: Failure) {
        self.lock().failures.push(failure);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake API lock is never poisoned")
    }

    fn answer(&self, request: RecordedRequest) -> (u16, Value) {
        let mut state = self.lock();
        state.requests.push(request.clone());
        if let Some(index) = state.failures.iter().position(|f| (f.matches)(&request)) {
            let failure = &mut state.failures[index];
            let answer = (failure.status, failure.body.clone());
            match &mut failure.remaining {
                Some(1) => {
                    state.failures.remove(index);
                }
                Some(n) => *n -= 1,
                None => {}
            }
            return answer;
        }
        let (path, subresource) = split_subresource(&request.path);
        match request.method.as_str() {
            "GET" => match state.objects.get(&path) {
                Some(object) => (200, object.clone()),
                None if is_collection(&path) => (200, state.list(&path, &request.query)),
                None => not_found(&path),
            },
            "POST" => {
                let mut object = request.body.clone().unwrap_or(json!({}));
                let name = object_meta(&mut object)
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("generated-{}", state.resource_version + 1));
                let item_path = format!("{path}/{name}");
                if state.objects.contains_key(&item_path) {
                    return already_exists(&item_path);
                }
                let stored = state.store(&item_path, object);
                (201, stored)
            }
            "PUT" => {
                let Some(existing) = state.objects.get(&path) else {
                    return not_found(&path);
                };
                let mut object = request.body.clone().unwrap_or(json!({}));
                let sent_rv = object_meta(&mut object).get("resourceVersion").cloned();
                let live_rv = existing["metadata"]["resourceVersion"].clone();
                if sent_rv.is_some_and(|rv| rv != live_rv) {
                    return conflict(&path);
                }
                (200, state.store(&path, object))
            }
            "PATCH" => {
                let existing = state.objects.get(&path).cloned();
                let body = request.body.clone().unwrap_or(json!({}));
                let merged = if request.is_apply() {
                    let manager = request.field_manager().unwrap_or("unknown").to_string();
                    let mut merged = existing.clone().unwrap_or(json!({}));
                    let mut applied = body;
                    if subresource == Some("status") {
                        merged["status"] = applied["status"].take();
                    } else {
                        merge_apply(&mut merged, &applied);
                        record_apply_owner(&mut merged, &manager, &applied);
                    }
                    merged
                } else {
                    let Some(mut existing) = existing.clone() else {
                        return not_found(&path);
                    };
                    if request.content_type.as_deref() == Some("application/json-patch+json") {
                        if let Err(message) = json_patch(&mut existing, &body) {
                            return (422, status_body(422, "Invalid", message));
                        }
                    } else if request.content_type.as_deref()
                        == Some("application/strategic-merge-patch+json")
                    {
                        strategic_merge(&mut existing, &body);
                    } else {
                        json_merge(&mut existing, &body);
                    }
                    existing
                };
                // An object whose finalizers are gone while it is being deleted disappears.
                if merged["metadata"]["deletionTimestamp"].is_string()
                    && merged["metadata"]["finalizers"]
                        .as_array()
                        .is_none_or(Vec::is_empty)
                {
                    state.objects.remove(&path);
                    return (200, merged);
                }
                let created = existing.is_none();
                let unchanged = existing.as_ref() == Some(&merged);
                if unchanged {
                    return (200, merged);
                }
                (if created { 201 } else { 200 }, state.store(&path, merged))
            }
            "DELETE" => match state.objects.remove(&path) {
                Some(_) => (
                    200,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                ),
                None => not_found(&path),
            },
            _ => (405, json!({"kind": "Status", "code": 405})),
        }
    }
}

impl State {
    /// The objects directly under a collection path, filtered by `labelSelector` (equality terms
    /// and bare keys only).
    fn list(&self, path: &str, query: &BTreeMap<String, String>) -> Value {
        let selector = query
            .get("labelSelector")
            .map(|s| percent_decode(s))
            .unwrap_or_default();
        let terms: Vec<(&str, Option<&str>)> = selector
            .split(',')
            .filter(|t| !t.is_empty())
            .map(|t| match t.split_once('=') {
                Some((k, v)) => (k, Some(v.trim_start_matches('='))),
                None => (t, None),
            })
            .collect();
        let prefix = format!("{path}/");
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|(p, _)| {
                p.strip_prefix(&prefix)
                    .is_some_and(|rest| !rest.contains('/'))
            })
            .map(|(_, o)| o)
            .filter(|o| {
                terms.iter().all(|(key, value)| {
                    let label = o["metadata"]["labels"][*key].as_str();
                    match value {
                        Some(v) => label == Some(*v),
                        None => label.is_some(),
                    }
                })
            })
            .cloned()
            .collect();
        json!({"kind": "List", "apiVersion": "v1",
            "metadata": {"resourceVersion": self.resource_version.to_string()}, "items": items})
    }

    fn store(&mut self, path: &str, mut object: Value) -> Value {
        self.resource_version += 1;
        let rv = self.resource_version.to_string();
        let meta = object_meta(&mut object);
        meta.insert("resourceVersion".into(), json!(rv));
        meta.entry("uid").or_insert(json!(format!("uid-{rv}")));
        self.objects.insert(path.to_string(), object.clone());
        object
    }
}

/// `/api/v1/namespaces/{ns}/{plural}` or `/apis/{group}/{version}/namespaces/{ns}/{plural}`.
fn is_collection(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.first() {
        Some(&"api") => segments.len() == 5 && segments[2] == "namespaces",
        Some(&"apis") => segments.len() == 6 && segments[3] == "namespaces",
        _ => false,
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Strategic merge patch, as far as the operator uses it: objects merge, lists of objects that
/// all have a `type` (conditions) merge by it, other lists are replaced.
fn strategic_merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    strategic_merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (Value::Array(target), Value::Array(patch))
            if patch.iter().all(|item| item["type"].is_string()) =>
        {
            for item in patch {
                match target.iter_mut().find(|t| t["type"] == item["type"]) {
                    Some(existing) => strategic_merge(existing, item),
                    None => target.push(item.clone()),
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

fn parse_body(bytes: &[u8]) -> Option<Value> {
    if bytes.is_empty() {
        return None;
    }
    serde_json::from_slice(bytes).ok()
}

fn split_subresource(path: &str) -> (String, Option<&'static str>) {
    for sub in ["status", "scale"] {
        if let Some(base) = path.strip_suffix(&format!("/{sub}")) {
            return (base.to_string(), Some(sub));
        }
    }
    (path.to_string(), None)
}

fn object_meta(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = json!({});
    }
    object
        .as_object_mut()
        .expect("just made an object")
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("metadata is an object")
}

/// Apply semantics, simplified: the applied fields replace the live ones (objects merge).
fn merge_apply(live: &mut Value, applied: &Value) {
    match (live, applied) {
        (Value::Object(live), Value::Object(applied)) => {
            for (key, value) in applied {
                if key == "status" {
                    continue;
                }
                merge_apply(live.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (live, applied) => *live = applied.clone(),
    }
}

/// RFC 7386 JSON merge patch.
fn json_merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(patch) => {
            if !target.is_object() {
                *target = json!({});
            }
            let target = target.as_object_mut().expect("just made an object");
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    json_merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        patch => *target = patch.clone(),
    }
}

/// RFC 6902 JSON patch: the `test`, `add`, `remove` and `replace` operations.
fn json_patch(target: &mut Value, operations: &Value) -> Result<(), String> {
    for operation in operations.as_array().into_iter().flatten() {
        let path = operation["path"].as_str().unwrap_or("");
        let (parent_path, last) = path.rsplit_once('/').unwrap_or(("", path));
        let value = operation["value"].clone();
        match operation["op"].as_str().unwrap_or("") {
            "test" => {
                if target.pointer(path).unwrap_or(&Value::Null) != &value {
                    return Err(format!("the test operation on {path} failed"));
                }
            }
            "remove" | "add" | "replace" => {
                let parent = target
                    .pointer_mut(parent_path)
                    .ok_or_else(|| format!("no parent for {path}"))?;
                let op = operation["op"].as_str().unwrap_or("");
                match parent {
                    Value::Array(items) => {
                        let index = if last == "-" {
                            items.len()
                        } else {
                            last.parse::<usize>()
                                .map_err(|_| format!("bad index in {path}"))?
                        };
                        match op {
                            "remove" if index < items.len() => {
                                items.remove(index);
                            }
                            "add" if index <= items.len() => items.insert(index, value),
                            "replace" if index < items.len() => items[index] = value,
                            _ => return Err(format!("index out of range in {path}")),
                        }
                    }
                    Value::Object(map) => {
                        if op == "remove" {
                            map.remove(last)
                                .ok_or_else(|| format!("nothing at {path}"))?;
                        } else {
                            map.insert(last.to_string(), value);
                        }
                    }
                    _ => return Err(format!("cannot patch inside a scalar at {path}")),
                }
            }
            other => return Err(format!("unsupported JSON patch operation {other:?}")),
        }
    }
    Ok(())
}

/// Records `manager` as the Apply owner of every field it sent, in `fieldsV1` form.
fn record_apply_owner(object: &mut Value, manager: &str, applied: &Value) {
    let fields = fields_v1(applied);
    let entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": applied.get("apiVersion").cloned().unwrap_or(Value::Null),
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    });
    let meta = object_meta(object);
    let managed = meta
        .entry("managedFields")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .expect("managedFields is a list");
    managed.retain(|e| e["manager"] != manager || e["operation"] != "Apply");
    managed.push(entry);
}

fn fields_v1(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| !matches!(key.as_str(), "apiVersion" | "kind"))
                .filter(|(key, _)| key.as_str() != "name" && key.as_str() != "namespace")
                .map(|(key, value)| (format!("f:{key}"), fields_v1(value)))
                .collect(),
        ),
        _ => json!({}),
    }
}

fn status_body(code: u16, reason: &str, message: String) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn resource_and_name(path: &str) -> (String, String) {
    let mut parts = path.rsplit('/');
    let name = parts.next().unwrap_or("").to_string();
    let resource = parts.next().unwrap_or("").to_string();
    (resource, name)
}

fn not_found(path: &str) -> (u16, Value) {
    let (resource, name) = resource_and_name(path);
    let mut body = status_body(404, "NotFound", format!("{resource} \"{name}\" not found"));
    body["details"] = json!({"name": name, "kind": resource});
    (404, body)
}

fn already_exists(path: &str) -> (u16, Value) {
    let (resource, name) = resource_and_name(path);
    let mut body = status_body(
        409,
        "AlreadyExists",
        format!("{resource} \"{name}\" already exists"),
    );
    body["details"] = json!({"name": name, "kind": resource});
    (409, body)
}

fn conflict(path: &str) -> (u16, Value) {
    let (resource, name) = resource_and_name(path);
    let body = status_body(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
        ),
    );
    (409, body)
}
