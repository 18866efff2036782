//! HTTP front end: routing of Kubernetes API paths to verbs on the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::{Value, json};

use crate::conversion;
use crate::delete::{self, DeleteOptions};
use crate::discovery;
use crate::error::{ApiError, Cause, Subject};
use crate::faults::{FaultAction, Faults};
use crate::registry::{Registry, ResourceType};
use crate::request_log::{RequestLog, RequestRecord};
use crate::selectors::{FieldSelector, LabelSelector, supported_fields};
use crate::store::Store;
use crate::watch;
use crate::write::{self, WriteContext};

/// Everything behind the lock: objects and the served resource types.
pub struct State {
    pub store: Store,
    pub registry: Registry,
    /// A pod runner (the emulated kubelet) runs: deleting a scheduled pod sets its
    /// deletionTimestamp and the runner removes it once its processes have stopped.
    pub graceful_pod_deletion: bool,
}

/// State shared by all requests.
pub struct Shared {
    state: Mutex<State>,
    pub request_log: RequestLog,
    pub faults: Faults,
    pub bookmark_interval: Duration,
    /// The pod runner's pod directories (`<ns>_<name>_<uid>/logs/<container>.log`), served
    /// by `pods/{name}/log`; unset without a pod runner.
    pub pod_dirs: std::sync::OnceLock<std::path::PathBuf>,
}

impl Shared {
    pub fn new(state: State, bookmark_interval: Duration) -> Self {
        Shared {
            state: Mutex::new(state),
            request_log: RequestLog::default(),
            faults: Faults::default(),
            bookmark_interval,
            pod_dirs: std::sync::OnceLock::new(),
        }
    }
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock must not take the whole emulator down.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A parsed request for an API resource.
pub struct Target {
    pub rt: Arc<ResourceType>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    pub fn subject<'a>(&'a self, name: &'a str) -> Subject<'a> {
        Subject {
            group: &self.rt.group,
            resource: &self.rt.resource,
            kind: &self.rt.kind,
            name,
        }
    }
}

pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Request {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn user_agent(&self) -> &str {
        self.header("user-agent")
    }
    /// The field manager: `?fieldManager=` or the User-Agent up to the first `/`.
    pub fn manager(&self) -> String {
        match self.param("fieldManager") {
            Some(m) => m.to_string(),
            None => self
                .user_agent()
                .split('/')
                .next()
                .unwrap_or("")
                .to_string(),
        }
    }
    pub fn content_type(&self) -> &str {
        self.header("content-type")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
    }
}

fn parse_query(uri: &Uri) -> HashMap<String, String> {
    let mut out = HashMap::new();
    if let Some(q) = uri.query() {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            out.insert(percent_decode(k), percent_decode(v));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn json_response(status: u16, body: &Value) -> Response {
    let mut response = Response::new(Body::from(serde_json::to_vec(body).unwrap_or_default()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `GET pods/{name}/log`: what the pod runner captured of a container (`container`,
/// default the first; `tailLines`). Empty without a pod runner.
fn pod_log(shared: &Shared, request: &Request, pod: &Value) -> Result<Response, ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let containers: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .chain(pod["spec"]["initContainers"].as_array())
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let container = request
        .param("container")
        .or(containers.first().copied())
        .unwrap_or("");
    if !containers.contains(&container) {
        return Err(ApiError::new(
            400,
            "BadRequest",
            format!("container {container} is not valid for pod {name}"),
        ));
    }
    let path = shared.pod_dirs.get().map(|dir| {
        dir.join(format!(
            "{}_{name}_{}",
            pod["metadata"]["namespace"].as_str().unwrap_or(""),
            pod["metadata"]["uid"].as_str().unwrap_or("")
        ))
        .join("logs")
        .join(format!("{container}.log"))
    });
    let mut text = path
        .and_then(|p| std::fs::read(p).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    if let Some(n) = request
        .param("tailLines")
        .and_then(|n| n.parse::<usize>().ok())
    {
        let lines: Vec<&str> = text.lines().collect();
        let keep = &lines[lines.len().saturating_sub(n)..];
        text = keep.iter().map(|l| format!("{l}\n")).collect();
    }
    let mut response = Response::new(Body::from(text));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(response)
}

pub fn error_response(e: &ApiError) -> Response {
    if e.plain_text {
        let mut r = Response::new(Body::from(format!("{}\n", e.message)));
        *r.status_mut() = StatusCode::NOT_FOUND;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return r;
    }
    let mut r = json_response(e.code, &e.to_status());
    if let Some(s) = e.retry_after_seconds {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

/// The axum entry point for every path.
pub async fn handle(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = Request {
        method,
        path: uri.path().trim_end_matches('/').to_string(),
        query: parse_query(&uri),
        headers,
        body,
    };
    if request.path == "/_localcluster/requests" {
        return json_response(200, &shared.request_log.summary());
    }
    let target = {
        let state = shared.lock();
        resolve(&state.registry, &request)
    };
    let (verb, resource_label, namespace, name) = match &target {
        Ok(Some(t)) => (
            verb_for(&request, t),
            match &t.subresource {
                Some(s) => format!("{}/{s}", t.rt.resource),
                None => t.rt.resource.clone(),
            },
            t.namespace.clone(),
            t.name.clone(),
        ),
        _ => ("get".to_string(), String::new(), None, None),
    };

    let mut close_watch_after = None;
    let mut injected = None;
    for action in shared.faults.take(&verb, &resource_label) {
        match action {
            FaultAction::Latency(d) => tokio::time::sleep(d).await,
            FaultAction::CloseWatchAfter(d) => close_watch_after = Some(d),
            FaultAction::TooManyRequests {
                retry_after_seconds,
            } => {
                let mut e = ApiError::new(
                    429,
                    "TooManyRequests",
                    "Too many requests, please try again later.",
                )
                .with_details(json!({"retryAfterSeconds": retry_after_seconds}));
                e.retry_after_seconds = Some(retry_after_seconds);
                injected.get_or_insert(e);
            }
            FaultAction::InternalError => {
                injected.get_or_insert(ApiError::internal("injected fault: internal error"));
            }
            FaultAction::Conflict => {
                let n = name.clone().unwrap_or_default();
                let e = match &target {
                    Ok(Some(t)) => ApiError::conflict(&t.subject(&n)),
                    _ => ApiError::new(409, "Conflict", "injected conflict"),
                };
                injected.get_or_insert(e);
            }
        }
    }

    if verb == "list" && injected.is_none() {
        wait_for_resource_version(&shared, &request).await;
    }
    let response = match (injected, target) {
        (Some(e), _) => error_response(&e),
        (None, Err(e)) => error_response(&e),
        (None, Ok(None)) => discovery::serve(&shared, &request),
        (None, Ok(Some(t))) => {
            match serve_resource(&shared, &request, &t, &verb, close_watch_after) {
                Ok(r) => r,
                Err(e) => error_response(&e),
            }
        }
    };
    if !resource_label.is_empty() {
        shared.request_log.record(RequestRecord {
            at_ms: 0,
            verb,
            resource: resource_label,
            namespace,
            name,
            client: request.manager(),
            user_agent: request.user_agent().to_string(),
            status: response.status().as_u16(),
        });
    }
    response
}

/// A list at a future resourceVersion waits (up to 3 s, like the watch cache) for it to
/// appear before answering; the list then answers normally or with 504.
async fn wait_for_resource_version(shared: &Arc<Shared>, request: &Request) {
    let Some(wanted) = request
        .param("resourceVersion")
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while shared.lock().store.current_resource_version() < wanted
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_watch(request: &Request) -> bool {
    matches!(request.param("watch"), Some("true") | Some("1")) || request.path.contains("/watch/")
}

fn verb_for(request: &Request, t: &Target) -> String {
    let collection = t.name.is_none();
    match (request.method.as_str(), collection) {
        ("GET", true) if is_watch(request) => "watch",
        ("GET", true) => "list",
        ("GET", false) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "deletecollection",
        ("DELETE", false) => "delete",
        _ => "unknown",
    }
    .to_string()
}

/// Maps a path to a resource target; `Ok(None)` for non-resource paths (discovery etc.).
pub fn resolve(registry: &Registry, request: &Request) -> Result<Option<Target>, ApiError> {
    let segments: Vec<&str> = request.path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => ("", "v1", rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return Ok(None),
    };
    if !registry.has_group_version(group, version) {
        return Err(if registry.has_group(group) {
            ApiError::resource_not_found()
        } else {
            ApiError::page_not_found()
        });
    }
    let mut rest: Vec<&str> = rest.to_vec();
    let deprecated_watch = rest.first() == Some(&"watch");
    if deprecated_watch {
        rest.remove(0);
    }
    let find = |r: &str| registry.find(group, version, r);
    let (rt, namespace, tail): (Arc<ResourceType>, Option<String>, Vec<&str>) =
        match rest.as_slice() {
            ["namespaces", ns, resource, tail @ ..]
                if find(resource).is_some_and(|rt| rt.namespaced) =>
            {
                (
                    find(resource).expect("checked"),
                    Some(ns.to_string()),
                    tail.to_vec(),
                )
            }
            ["namespaces", _, _, ..]
                if registry
                    .types()
                    .iter()
                    .any(|t| t.group == group && t.is_custom()) =>
            {
                return Err(ApiError::page_not_found());
            }
            [resource, tail @ ..] => match find(resource) {
                Some(rt) => (rt, None, tail.to_vec()),
                // CRD groups are served by the apiextensions server, which answers plain 404s.
                None if registry
                    .types()
                    .iter()
                    .any(|t| t.group == group && t.is_custom()) =>
                {
                    return Err(ApiError::page_not_found());
                }
                None => return Err(ApiError::resource_not_found()),
            },
            [] => return Ok(None),
        };
    let (name, subresource) = match tail.as_slice() {
        [] => (None, None),
        [name] => (Some(name.to_string()), None),
        [name, sub] => {
            let known = rt
                .subresources
                .iter()
                .any(|s| s["name"] == format!("{}/{sub}", rt.resource))
                // Served for the pod runner's logs; not in the recorded discovery subset.
                || (rt.resource == "pods" && *sub == "log");
            if !known {
                return Err(ApiError::resource_not_found());
            }
            (Some(name.to_string()), Some(sub.to_string()))
        }
        _ => return Err(ApiError::resource_not_found()),
    };
    Ok(Some(Target {
        rt,
        namespace,
        name,
        subresource,
    }))
}

/// Whether the Accept header allows a JSON answer, and which metadata-only form it wants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Representation {
    Full,
    Table,
    PartialObjectMetadata,
    PartialObjectMetadataList,
}

pub fn representation(request: &Request) -> Result<Representation, ApiError> {
    let accept = request.header("accept");
    if accept.is_empty() {
        return Ok(Representation::Full);
    }
    for option in accept.split(',') {
        let option = option.trim();
        let media = option.split(';').next().unwrap_or("").trim();
        if !(media == "application/json"
            || media == "*/*"
            || media == "application/*"
            || media == "application/yaml")
        {
            continue;
        }
        if option.contains("as=PartialObjectMetadataList") {
            return Ok(Representation::PartialObjectMetadataList);
        }
        if option.contains("as=PartialObjectMetadata") {
            return Ok(Representation::PartialObjectMetadata);
        }
        if option.contains("as=Table") && option.contains("g=meta.k8s.io") {
            return Ok(Representation::Table);
        }
        if option.contains("as=") {
            // Table and other server-side conversions are not emulated; a fallback may follow.
            continue;
        }
        return Ok(Representation::Full);
    }
    Err(ApiError::new(
        406,
        "NotAcceptable",
        "406: Not Acceptable\n\nAvailable representations: application/json, application/yaml, application/vnd.kubernetes.protobuf, application/json;stream=watch, application/vnd.kubernetes.protobuf;stream=watch",
    )
    .with_details(json!({})))
}

pub fn as_metadata(object: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object["metadata"]})
}

fn serve_resource(
    shared: &Arc<Shared>,
    request: &Request,
    t: &Target,
    verb: &str,
    close_watch_after: Option<Duration>,
) -> Result<Response, ApiError> {
    let repr = representation(request)?;
    match verb {
        "watch" => watch::serve(shared, request, t, repr, close_watch_after),
        "list" => list(shared, request, t, repr),
        "get" => {
            let state = shared.lock();
            let name = t.name.as_deref().unwrap_or("");
            let ns = t.namespace.as_deref().unwrap_or("");
            if t.rt.namespaced && t.namespace.is_none() {
                return Err(ApiError::resource_not_found());
            }
            let object = state
                .store
                .get(&t.rt.key(), ns, name)
                .ok_or_else(|| ApiError::not_found(&t.subject(name)))?
                .clone();
            // The object is a copy: convert and encode it without holding up writers.
            drop(state);
            if t.subresource.as_deref() == Some("log") && t.rt.resource == "pods" {
                return pod_log(shared, request, &object);
            }
            let rv = object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let body = match t.subresource.as_deref() {
                Some("scale") => crate::scale::scale_view(&t.rt, &object),
                _ => conversion::into_served(&t.rt, with_type_meta(object, &t.rt)),
            };
            if repr == Representation::Table && t.subresource.is_none() {
                return Ok(json_response(
                    200,
                    &crate::table::render(&t.rt, &[body], &rv),
                ));
            }
            Ok(json_response(200, &render(body, repr)))
        }
        "create" | "update" | "patch" | "delete" | "deletecollection"
            if conversion::storage_version(&t.rt).is_some() =>
        {
            converted_write(shared, request, t, verb, repr, close_watch_after)
        }
        "create" | "update" | "patch" | "delete" | "deletecollection" => {
            let ctx = WriteContext::from_request(request)?;
            let optimistic = match verb {
                "update" | "patch" if t.name.is_some() => {
                    write_optimistically(shared, t, verb, request, &ctx)?
                }
                _ => None,
            };
            if let Some((status, body)) = optimistic {
                return Ok(write_response(status, body, repr, &ctx));
            }
            let mut state = shared.lock();
            let (status, body) = match verb {
                "create" => {
                    if t.name.is_some() {
                        return Err(ApiError::method_not_allowed());
                    }
                    write::create(&mut state, t, request, &ctx)?
                }
                "update" => {
                    if t.name.is_none() {
                        return Err(ApiError::method_not_allowed());
                    }
                    write::update(&mut state, t, request, &ctx)?
                }
                "patch" => write::patch(&mut state, t, request, &ctx)?,
                "delete" => {
                    let options = DeleteOptions::from_request(request)?;
                    delete::delete(&mut state, t, &options, &ctx)?
                }
                _ => {
                    let options = DeleteOptions::from_request(request)?;
                    let selector =
                        LabelSelector::parse(request.param("labelSelector").unwrap_or(""))?;
                    delete::delete_collection(&mut state, t, &selector, &options, &ctx)?
                }
            };
            drop(state);
            Ok(write_response(status, body, repr, &ctx))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn write_response(status: u16, body: Value, repr: Representation, ctx: &WriteContext) -> Response {
    let mut response = json_response(status, &render(body, repr));
    for w in &ctx.warnings.lock().expect("warnings lock").clone() {
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "\\\""))) {
            response.headers_mut().append("warning", v);
        }
    }
    response
}

/// How often an update or patch is computed again outside the lock after the object changed
/// under it, before it is done under the lock.
const OPTIMISTIC_ATTEMPTS: usize = 3;

/// An update or patch of an existing object, computed outside the store's lock and committed
/// if the object is still the version it was computed from; computed again otherwise (the
/// API server's `GuaranteedUpdate`). The lock is held only to read and to commit, so that
/// admission, validation and managed fields of concurrent writes run in parallel. `None` when
/// the write goes the locked way: a missing object (create by apply, or 404), /scale, or
/// repeated changes under it.
fn write_optimistically(
    shared: &Arc<Shared>,
    t: &Target,
    verb: &str,
    request: &Request,
    ctx: &WriteContext,
) -> Result<Option<(u16, Value)>, ApiError> {
    let key = t.rt.key();
    let namespace = t.namespace.as_deref().unwrap_or("");
    let name = t.name.as_deref().unwrap_or("");
    let clear_warnings = || ctx.warnings.lock().expect("warnings lock").clear();
    for _ in 0..OPTIMISTIC_ATTEMPTS {
        clear_warnings();
        let Some(old) = shared
            .lock()
            .store
            .get_shared(&key, namespace, name)
            .cloned()
        else {
            return Ok(None);
        };
        let Some(prepared) = write::planned_update(t, verb, request, ctx, &old)? else {
            return Ok(None);
        };
        let mut state = shared.lock();
        let unchanged = state
            .store
            .get_shared(&key, namespace, name)
            .is_some_and(|now| Arc::ptr_eq(now, &old));
        if unchanged {
            return Ok(Some((
                200,
                write::commit_update(&mut state, t, prepared, ctx),
            )));
        }
    }
    clear_warnings();
    Ok(None)
}

/// A write through a served version that is stored in another one: the body is converted to
/// the storage version, written there, and the answer converted back.
fn converted_write(
    shared: &Arc<Shared>,
    request: &Request,
    t: &Target,
    verb: &str,
    repr: Representation,
    close_watch_after: Option<Duration>,
) -> Result<Response, ApiError> {
    let version = conversion::storage_version(&t.rt).expect("converted type");
    let storage_rt = shared
        .lock()
        .registry
        .find(&t.rt.group, version, &t.rt.resource)
        .ok_or_else(|| ApiError::internal("storage version not served"))?;
    let storage_target = Target {
        rt: storage_rt.clone(),
        namespace: t.namespace.clone(),
        name: t.name.clone(),
        subresource: t.subresource.clone(),
    };
    let mut storage_request = Request {
        method: request.method.clone(),
        path: request.path.clone(),
        query: request.query.clone(),
        headers: request.headers.clone(),
        body: request.body.clone(),
    };
    let served_body = |bytes: &Bytes| -> Result<Value, ApiError> {
        serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(e.to_string()))
    };
    match verb {
        "create" | "update" => {
            let body = served_body(&request.body)?;
            crate::write::check_served_type(&body, &t.rt)?;
            let stored = conversion::to_storage(&t.rt, &body);
            storage_request.body = Bytes::from(serde_json::to_vec(&stored).unwrap_or_default());
        }
        "patch" => {
            let ct = request.content_type();
            if ct == "application/apply-patch+yaml"
                || ct == "application/strategic-merge-patch+json"
            {
                return Err(ApiError::unsupported_media_type(&[
                    "application/json-patch+json",
                    "application/merge-patch+json",
                ]));
            }
            let name = t.name.clone().unwrap_or_default();
            let current = shared
                .lock()
                .store
                .get(
                    &storage_rt.key(),
                    t.namespace.as_deref().unwrap_or(""),
                    &name,
                )
                .cloned()
                .ok_or_else(|| ApiError::not_found(&t.subject(&name)))?;
            let mut view = conversion::to_served(&t.rt, &current);
            let patch = served_body(&request.body)?;
            if ct == "application/json-patch+json" {
                crate::patch::json_patch(&mut view, &patch)?;
            } else {
                crate::patch::merge_patch(&mut view, &patch);
            }
            let mut stored = conversion::to_storage(&t.rt, &view);
            stored["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
            storage_request.method = Method::PUT;
            storage_request.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            storage_request.body = Bytes::from(serde_json::to_vec(&stored).unwrap_or_default());
        }
        _ => {}
    }
    let storage_verb = if verb == "patch" { "update" } else { verb };
    let response = serve_resource(
        shared,
        &storage_request,
        &storage_target,
        storage_verb,
        close_watch_after,
    )?;
    // Convert the answer back to the served version.
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = futures::executor::block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let converted = match body["items"].as_array() {
        Some(items) => {
            let mut list = body.clone();
            list["items"] = json!(
                items
                    .iter()
                    .map(|i| strip_type_meta(conversion::to_served(&t.rt, i)))
                    .collect::<Vec<_>>()
            );
            list["apiVersion"] = json!(t.rt.api_version());
            list
        }
        None => conversion::to_served(&t.rt, &body),
    };
    let mut out = json_response(status.as_u16(), &render(converted, repr));
    for w in headers.get_all("warning") {
        out.headers_mut().append("warning", w.clone());
    }
    Ok(out)
}

fn render(body: Value, repr: Representation) -> Value {
    if body["kind"] == "Status" || matches!(repr, Representation::Full | Representation::Table) {
        return body;
    }
    match body["items"].as_array() {
        Some(items) if body["kind"].as_str().is_some_and(|k| k.ends_with("List")) => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": body["metadata"],
            "items": items.iter().map(as_metadata).collect::<Vec<_>>(),
        }),
        _ => as_metadata(&body),
    }
}

pub fn with_type_meta(mut object: Value, rt: &ResourceType) -> Value {
    if let Some(map) = object.as_object_mut() {
        let mut out = serde_json::Map::new();
        out.insert("kind".into(), json!(rt.kind));
        out.insert("apiVersion".into(), json!(rt.api_version()));
        for (k, v) in std::mem::take(map) {
            if k != "kind" && k != "apiVersion" {
                out.insert(k, v);
            }
        }
        *map = out;
    }
    object
}

/// Common list parameters (selectors and resourceVersion semantics), shared with watches.
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl ListOptions {
    pub fn from_request(request: &Request, t: &Target) -> Result<Self, ApiError> {
        let supported = supported_fields(&t.rt.resource);
        Ok(ListOptions {
            labels: LabelSelector::parse(request.param("labelSelector").unwrap_or(""))?,
            fields: FieldSelector::parse(request.param("fieldSelector").unwrap_or(""), &supported)?,
        })
    }
    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }
}

fn list_options_invalid(causes: Vec<Cause>) -> ApiError {
    let s = Subject {
        group: "meta.k8s.io",
        resource: "",
        kind: "ListOptions",
        name: "",
    };
    ApiError::invalid(&s, causes)
}

/// Validates `resourceVersionMatch` / `sendInitialEvents` combinations.
pub fn validate_list_params(request: &Request, watch: bool) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    let has_rv = request
        .param("resourceVersion")
        .is_some_and(|v| !v.is_empty());
    let send_initial = request.param("sendInitialEvents") == Some("true");
    if request.param("resourceVersionMatch").is_some() && !has_rv && !(watch && send_initial) {
        causes.push(Cause::new(
            "FieldValueForbidden",
            "resourceVersionMatch",
            "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
        ));
    }
    if send_initial && !watch {
        causes.push(Cause::new(
            "FieldValueForbidden",
            "sendInitialEvents",
            "Forbidden: sendInitialEvents is forbidden for list",
        ));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(list_options_invalid(causes))
    }
}

/// Continue tokens have the real server's shape: unpadded base64url of a small JSON document.
fn encode_continue(rv: u64, start: &str) -> String {
    use base64::Engine;
    let token =
        json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{start}\u{0}")}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token)
}

fn decode_continue(token: &str) -> Result<(u64, String), ApiError> {
    use base64::Engine;
    let bad = |detail: String| {
        ApiError::bad_request(format!(
            "invalid continue token: continue key is not valid: {detail}"
        ))
    };
    // Lenient like Go's RawURLEncoding: trailing bits are ignored.
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = lenient.decode(token).map_err(|e| bad(e.to_string()))?;
    let parsed: Value = serde_json::from_slice(&bytes).map_err(|_| {
        let first = bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .copied()
            .unwrap_or(0);
        let shown = if first.is_ascii_graphic() {
            (first as char).to_string()
        } else {
            format!("\\x{first:02x}")
        };
        bad(format!(
            "invalid character '{shown}' looking for beginning of value"
        ))
    })?;
    let bad = || bad("missing start key".into());
    let start = parsed["start"]
        .as_str()
        .ok_or_else(bad)?
        .trim_end_matches('\u{0}')
        .to_string();
    Ok((parsed["rv"].as_u64().unwrap_or(0), start))
}

fn list(
    shared: &Arc<Shared>,
    request: &Request,
    t: &Target,
    repr: Representation,
) -> Result<Response, ApiError> {
    validate_list_params(request, false)?;
    let options = ListOptions::from_request(request, t)?;
    let limit = match request.param("limit") {
        Some(l) => Some(l.parse::<usize>().map_err(|_| {
            ApiError::bad_request(format!("strconv.ParseInt: parsing \"{l}\": invalid syntax"))
        })?),
        None => None,
    };
    let start_after = match request.param("continue") {
        Some(c) if !c.is_empty() => Some(decode_continue(c)?.1),
        _ => None,
    };
    let state = shared.lock();
    let current = state.store.current_resource_version();
    if let Some(rv) = request
        .param("resourceVersion")
        .and_then(|v| v.parse::<u64>().ok())
    {
        if rv > current {
            return Err(ApiError::new(
                504,
                "Timeout",
                format!("Timeout: Too large resource version: {rv}, current: {current}"),
            )
            .with_details(json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1})));
        }
        if request.param("resourceVersionMatch") == Some("Exact")
            && rv < state.store.oldest_watchable(&t.rt.key())
        {
            return Err(ApiError::gone(
                "The resourceVersion for the provided list is too old.",
            ));
        }
    }
    let items: Vec<&Value> = list_candidates(&state, t, &options)
        .into_iter()
        .filter(|o| options.matches(o))
        .filter(|o| {
            start_after.as_ref().is_none_or(|s| {
                let key = format!(
                    "{}/{}",
                    o["metadata"]["namespace"].as_str().unwrap_or(""),
                    o["metadata"]["name"].as_str().unwrap_or("")
                );
                key.as_str() > s.as_str()
            })
        })
        .collect();
    let mut metadata = json!({"resourceVersion": current.to_string()});
    let page: Vec<Value> = match limit {
        Some(l) if l > 0 && items.len() > l => {
            let last = items[l - 1];
            let key = format!(
                "{}/{}",
                last["metadata"]["namespace"].as_str().unwrap_or(""),
                last["metadata"]["name"].as_str().unwrap_or("")
            );
            metadata["continue"] = json!(encode_continue(current, &key));
            metadata["remainingItemCount"] = json!(items.len() - l);
            items[..l].iter().map(|v| item_view(&t.rt, v)).collect()
        }
        _ => items.iter().map(|v| item_view(&t.rt, v)).collect(),
    };
    // The page is a copy: encode it without holding up writers.
    drop(state);
    if t.rt.is_custom() && metadata.get("continue").is_none() {
        metadata["continue"] = json!("");
    }
    if repr == Representation::Table {
        let full: Vec<Value> = page
            .iter()
            .map(|o| with_type_meta(o.clone(), &t.rt))
            .collect();
        let table = crate::table::render(&t.rt, &full, &current.to_string());
        return Ok(json_response(200, &table));
    }
    let body = json!({
        "kind": t.rt.list_kind,
        "apiVersion": t.rt.api_version(),
        "metadata": metadata,
        "items": page,
    });
    Ok(json_response(200, &render(body, repr)))
}

/// The objects a list can return, in list order: within one namespace, those carrying the
/// selector's rarest `key=value` label (through the store's label index), else all of them.
fn list_candidates<'a>(state: &'a State, t: &Target, options: &ListOptions) -> Vec<&'a Value> {
    let key = t.rt.key();
    let Some(namespace) = t.namespace.as_deref() else {
        return state
            .store
            .list(&key, None)
            .into_iter()
            .map(|o| &**o)
            .collect();
    };
    let rarest = options
        .labels
        .equalities()
        .min_by_key(|(label, value)| state.store.count_labeled(&key, namespace, label, value));
    let candidates = match rarest {
        Some((label, value)) => state.store.labeled(&key, namespace, label, value),
        None => state.store.list(&key, Some(namespace)),
    };
    candidates.into_iter().map(|o| &**o).collect()
}

/// Built-in list items carry no kind/apiVersion; custom resources (unstructured) keep them.
fn item_view(rt: &ResourceType, object: &Value) -> Value {
    let object = conversion::served_view(rt, object).into_owned();
    if rt.is_custom() {
        object
    } else {
        strip_type_meta(object)
    }
}

/// List items carry no kind/apiVersion (the list does).
pub fn strip_type_meta(mut object: Value) -> Value {
    if let Some(map) = object.as_object_mut() {
        map.remove("kind");
        map.remove("apiVersion");
    }
    object
}
