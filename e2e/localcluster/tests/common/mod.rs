//! Replays the recorded golden exchanges (`../shared/k8s-golden`) against the emulator.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kbeast_localcluster::{LocalCluster, Options};
use serde_json::{Value, json};

pub fn golden_dir() -> PathBuf {
    std::env::var_os("KBEAST_GOLDEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/k8s-golden")
        })
}

pub fn load(scenario: &str) -> Value {
    let path = golden_dir().join(format!("{scenario}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("golden file {} is required: {e}", path.display()));
    serde_json::from_str(&text).expect("golden is JSON")
}

const USER_AGENT: &str = "golden-recorder/v1.0 (linux/amd64) python";

/// Keys whose values differ between runs; compared by presence only.
const VOLATILE_KEYS: &[&str] = &[
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "time",
    "lastTransitionTime",
    "lastUpdateTime",
    "lastHeartbeatTime",
    "continue",
];

/// Removes what the golden marks volatile because controllers wrote it (Deployment status,
/// revision annotation, kube-controller-manager managedFields); the emulator runs no
/// Deployment controller, so these are compared by neither side.
pub fn strip_controller_state(value: &Value) -> Value {
    let mut v = value.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
    }
    if let Some(a) = v
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_object_mut)
    {
        a.remove("deployment.kubernetes.io/revision");
        if a.is_empty() {
            v["metadata"]
                .as_object_mut()
                .map(|m| m.remove("annotations"));
        }
    }
    if let Some(mf) = v
        .get_mut("metadata")
        .and_then(|m| m.get_mut("managedFields"))
        .and_then(Value::as_array_mut)
    {
        mf.retain(|e| e["manager"] != "kube-controller-manager");
    }
    v
}

/// Table cells that look like ages ("0s", "5m") are masked.
fn mask_ages(cells: &Value) -> Value {
    let is_age = |s: &str| {
        s.len() <= 8
            && s.starts_with(|c: char| c.is_ascii_digit())
            && s.ends_with(['s', 'm', 'h', 'd', 'y'])
            && s.chars().all(|c| c.is_ascii_alphanumeric())
    };
    match cells {
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|c| match c.as_str() {
                    Some(s) if is_age(s) => json!("<age>"),
                    _ => normalize(c),
                })
                .collect(),
        ),
        other => normalize(other),
    }
}

/// Names with a random suffix the golden README lists as volatile.
fn mask_generated(s: &str) -> String {
    match s.find("kube-api-access-") {
        Some(i) if s.len() >= i + 21 => {
            format!("{}kube-api-access-<xxxxx>{}", &s[..i], &s[i + 21..])
        }
        _ => s.to_string(),
    }
}

/// Replaces UUIDs inside longer strings (messages) with a placeholder: uids are volatile.
fn mask_uuids(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < bytes.len() {
        let candidate = s.get(i..i + 36).filter(|c| {
            c.char_indices().all(|(j, ch)| match j {
                8 | 13 | 18 | 23 => ch == '-',
                _ => ch.is_ascii_hexdigit(),
            })
        });
        match candidate {
            Some(_) => {
                out.push_str("<uuid>");
                i += 36;
            }
            None => {
                let ch = s[i..].chars().next().expect("char boundary");
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
}

pub fn normalize(value: &Value) -> Value {
    match value {
        Value::String(s) if s.contains("kube-api-access-") => Value::String(mask_generated(s)),
        Value::String(s) if s.len() > 36 => Value::String(mask_uuids(s)),
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let k = &if k.starts_with("k:{\"uid\":") {
                    "k:{uid}".to_string()
                } else {
                    k.clone()
                };
                let generated = k == "name" && map.get("generateName").is_some();
                // Table "Age" cells are relative to the time of the request.
                let age_cells = k == "cells";
                let nv = if generated {
                    json!("<generated>")
                } else if age_cells {
                    mask_ages(v)
                } else if VOLATILE_KEYS.contains(&k.as_str()) && !v.is_object() {
                    json!("<volatile>")
                } else if k == "ca.crt" {
                    json!("<ca>")
                } else if k == "message"
                    && v.as_str()
                        .is_some_and(|m| m.starts_with("too old resource version"))
                {
                    json!("too old resource version: <n> (<n>)")
                } else if k == "message"
                    && let Some(m) = v.as_str().filter(|m| m.contains(", current: "))
                {
                    // The current resourceVersion inside the message is volatile.
                    json!(m.split(", current: ").next().unwrap_or(m))
                } else if k == "managedFields" {
                    // Entries are ordered by their (volatile) times: compare them as a set.
                    let mut entries: Vec<Value> =
                        v.as_array().into_iter().flatten().map(normalize).collect();
                    entries.sort_by_key(canonical_string);
                    Value::Array(entries)
                } else {
                    normalize(v)
                };
                out.insert(mask_generated(k), nv);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

/// JSON text with object keys sorted, whatever serde_json's map order (the workspace enables
/// `preserve_order`, so `to_string` alone depends on insertion order).
fn canonical_string(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical_string(&map[k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical_string).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

/// Paths where two JSON values differ (at most 12), for readable failures.
pub fn diff_paths(want: &Value, got: &Value) -> Vec<String> {
    fn walk(w: &Value, g: &Value, path: String, out: &mut Vec<String>) {
        if out.len() >= 12 {
            return;
        }
        match (w, g) {
            (Value::Object(a), Value::Object(b)) => {
                let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let p = format!("{path}.{k}");
                    match (a.get(k), b.get(k)) {
                        (Some(x), Some(y)) => walk(x, y, p, out),
                        (Some(x), None) => out.push(format!("{p}: only recorded: {x}")),
                        (None, Some(y)) => out.push(format!("{p}: only emulator: {y}")),
                        (None, None) => {}
                    }
                }
            }
            (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    walk(x, y, format!("{path}[{i}]"), out);
                }
            }
            _ if w != g => out.push(format!("{path}: recorded {w} / emulator {g}")),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(want, got, String::new(), &mut out);
    out
}

/// Discovery documents list only what the emulator serves: every entry it lists must equal
/// the recorded entry of the same name (and it must list something).
pub fn discovery_subset_problems(want: &Value, got: &Value, filtered: bool) -> Option<Vec<String>> {
    if let (Some(recorded), Some(served)) = (want["paths"].as_object(), got["paths"].as_object()) {
        // The OpenAPI index: served documents must be recorded ones (hash values are volatile).
        let strip = |v: &Value| {
            v["serverRelativeURL"]
                .as_str()
                .unwrap_or("")
                .split("?hash=")
                .next()
                .unwrap_or("")
                .to_string()
        };
        let mut problems = Vec::new();
        for (path, url) in served {
            match recorded.get(path) {
                Some(r)
                    if strip(r) == strip(url)
                        && url["serverRelativeURL"]
                            .as_str()
                            .is_some_and(|u| u.contains("?hash=")) => {}
                other => problems.push(format!(
                    ".paths[{path}]: recorded {other:?} / emulator {url}"
                )),
            }
        }
        return Some(problems);
    }
    let kind = want["kind"].as_str()?;
    let (list_key, name_of): (&str, fn(&Value) -> String) = match kind {
        "APIResourceList" => ("resources", |v| {
            v["name"].as_str().unwrap_or("").to_string()
        }),
        "APIGroupList" => ("groups", |v| v["name"].as_str().unwrap_or("").to_string()),
        "APIGroupDiscoveryList" => ("items", |v| {
            v["metadata"]["name"].as_str().unwrap_or("").to_string()
        }),
        _ => return None,
    };
    let mut problems = Vec::new();
    for key in ["kind", "apiVersion", "groupVersion"] {
        if want.get(key) != got.get(key) {
            problems.push(format!(
                ".{key}: recorded {} / emulator {}",
                want[key], got[key]
            ));
        }
    }
    let recorded = want[list_key].as_array().cloned().unwrap_or_default();
    let served = got[list_key].as_array().cloned().unwrap_or_default();
    if served.is_empty() {
        problems.push(format!(".{list_key}: emulator lists nothing"));
    }
    for entry in &served {
        let name = name_of(entry);
        match recorded.iter().find(|r| name_of(r) == name) {
            None if filtered => {}
            None => problems.push(format!(".{list_key}[{name}]: not in the recording")),
            Some(r) if kind == "APIGroupDiscoveryList" => {
                // Compare resource by resource: the emulator serves a subset of each group.
                for (rv, ev) in r["versions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .zip(entry["versions"].as_array().into_iter().flatten())
                {
                    for res in ev["resources"].as_array().into_iter().flatten() {
                        let recorded_res = rv["resources"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|x| x["resource"] == res["resource"]);
                        if recorded_res != Some(res) {
                            problems.push(format!(
                                ".{list_key}[{name}].{}: differs: {}",
                                res["resource"],
                                diff_paths(recorded_res.unwrap_or(&Value::Null), res).join("; ")
                            ));
                        }
                    }
                }
            }
            Some(r) if r != entry => problems.push(format!(
                ".{list_key}[{name}]: {}",
                diff_paths(r, entry).join("; ")
            )),
            Some(_) => {}
        }
    }
    Some(problems)
}

pub struct Replayer {
    pub cluster: LocalCluster,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    /// Recorded resourceVersions and uids mapped to the emulator's.
    rv_map: HashMap<String, String>,
    uid_map: HashMap<String, String>,
    name_map: HashMap<String, String>,
    pub failures: Vec<String>,
    pub ignore_controller_state: bool,
    pub skipped: Vec<String>,
    pub compared: usize,
}

pub struct Exchange {
    pub status: u16,
    pub body: Option<Value>,
    pub text: String,
    pub warnings: Vec<String>,
    pub headers: hyper::HeaderMap,
}

impl Replayer {
    pub async fn start() -> Replayer {
        let cluster = LocalCluster::start(Options {
            bookmark_interval: Duration::from_millis(700),
            // Most recordings were made with controllers stopped or are compared without them.
            controllers: kbeast_localcluster::ControllerSet::none(),
            ..Options::default()
        })
        .await
        .expect("cluster starts");
        Replayer {
            cluster,
            client: Client::builder(TokioExecutor::new()).build_http(),
            rv_map: HashMap::new(),
            uid_map: HashMap::new(),
            name_map: HashMap::new(),
            failures: Vec::new(),
            ignore_controller_state: false,
            skipped: Vec::new(),
            compared: 0,
        }
    }

    fn learn(&mut self, recorded: &Value, actual: &Value) {
        let pairs = [
            ("resourceVersion", &mut self.rv_map),
            ("uid", &mut self.uid_map),
        ];
        for (key, map) in pairs {
            if let (Some(r), Some(a)) = (
                recorded["metadata"][key].as_str(),
                actual["metadata"][key].as_str(),
            ) {
                map.insert(r.to_string(), a.to_string());
            }
        }
        if let (Some(r), Some(a)) = (
            recorded["details"]["uid"].as_str(),
            actual["details"]["uid"].as_str(),
        ) {
            self.uid_map.insert(r.to_string(), a.to_string());
        }
        if recorded["metadata"]["generateName"].is_string()
            && let (Some(r), Some(a)) = (
                recorded["metadata"]["name"].as_str(),
                actual["metadata"]["name"].as_str(),
            )
        {
            self.name_map.insert(r.to_string(), a.to_string());
        }
        if let (Some(ri), Some(ai)) = (recorded["items"].as_array(), actual["items"].as_array()) {
            for (r, a) in ri.iter().zip(ai) {
                self.learn(r, a);
            }
        }
    }

    fn translate_text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (r, a) in self.uid_map.iter().chain(self.name_map.iter()) {
            out = out.replace(r, a);
        }
        out
    }

    fn translate_body(&self, body: &Value) -> Value {
        let mut body = body.clone();
        if let Some(rv) = body["metadata"]["resourceVersion"].as_str()
            && let Some(mapped) = self.rv_map.get(rv)
        {
            body["metadata"]["resourceVersion"] = json!(mapped);
        }
        serde_json::from_str(&self.translate_text(&body.to_string())).expect("json")
    }

    pub async fn send(&self, request: &Value) -> hyper::Response<hyper::body::Incoming> {
        let mut query: Vec<String> = Vec::new();
        if let Some(q) = request["query"].as_object() {
            for (k, v) in q {
                let mut v = v.as_str().unwrap_or("").to_string();
                if k == "resourceVersion"
                    && let Some(mapped) = self.rv_map.get(&v)
                {
                    v = mapped.clone();
                }
                query.push(format!("{k}={}", encode(&v)));
            }
        }
        let path = self.translate_text(request["path"].as_str().unwrap_or("/"));
        let uri = if query.is_empty() {
            format!("{}{path}", self.cluster.url())
        } else {
            format!("{}{path}?{}", self.cluster.url(), query.join("&"))
        };
        let body = if let Some(text) = request["bodyText"].as_str() {
            self.translate_text(text).into_bytes()
        } else if let Some(body) = request.get("body").filter(|b| !b.is_null()) {
            serde_json::to_vec(&self.translate_body(body)).expect("json")
        } else {
            Vec::new()
        };
        let mut builder = hyper::Request::builder()
            .method(request["method"].as_str().unwrap_or("GET"))
            .uri(uri)
            .header("user-agent", USER_AGENT);
        if let Some(ct) = request["contentType"].as_str() {
            builder = builder.header("content-type", ct);
        }
        if let Some(accept) = request["accept"].as_str() {
            builder = builder.header("accept", accept);
        }
        self.client
            .request(builder.body(Full::new(Bytes::from(body))).expect("request"))
            .await
            .expect("emulator answers")
    }

    pub async fn exchange(&self, request: &Value) -> Exchange {
        let response = self.send(request).await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let warnings = response
            .headers()
            .get_all("warning")
            .iter()
            .map(|v| v.to_str().unwrap_or("").to_string())
            .collect();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).to_string();
        Exchange {
            status,
            body: serde_json::from_slice(&bytes).ok(),
            text,
            warnings,
            headers,
        }
    }

    /// Sends a request step and compares status, warnings and body with the recording.
    pub async fn request_step(&mut self, step: &Value, skip: Option<&str>) {
        let name = step["name"].as_str().unwrap_or("?").to_string();
        let got = self.exchange(&step["request"]).await;
        let expected = &step["response"];
        let mut problems = Vec::new();
        let want_status = expected["status"].as_u64().unwrap_or(0) as u16;
        if got.status != want_status {
            problems.push(format!(
                "status {} != recorded {want_status}: {}",
                got.status,
                got.text.chars().take(400).collect::<String>()
            ));
        }
        // Caching headers that are not volatile (ETag, Last-Modified and Expires are).
        for header in ["Cache-Control", "Vary"] {
            if let Some(want) = expected["headers"][header].as_str() {
                let got_value = got
                    .headers
                    .get(header)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if got_value != want {
                    problems.push(format!(
                        "header {header}: {got_value:?} != recorded {want:?}"
                    ));
                }
            }
        }
        let want_warnings: Vec<String> = expected["warnings"]
            .as_array()
            .map(|w| {
                w.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if got.warnings != want_warnings {
            problems.push(format!(
                "warnings {:?} != recorded {want_warnings:?}",
                got.warnings
            ));
        }
        if let Some(want) = expected
            .get("body")
            .filter(|b| !b.is_null() && b.get("_elided").is_none() && b.get("_file").is_none())
        {
            match &got.body {
                Some(actual) => {
                    self.learn(want, actual);
                    let (mut w, mut a) = (normalize(want), normalize(actual));
                    if self.ignore_controller_state {
                        w = strip_controller_state(&w);
                        a = strip_controller_state(&a);
                    }
                    // Recorded uids inside messages refer to the recorded objects.
                    let w: Value =
                        serde_json::from_str(&self.translate_text(&w.to_string())).expect("json");
                    let filtered = step["note"]
                        .as_str()
                        .is_some_and(|n| n.contains("FILTERED"));
                    if let Some(subset) = discovery_subset_problems(&w, &a, filtered) {
                        problems.extend(subset);
                    } else if w != a {
                        problems.push(format!(
                            "body differs:\n    {}",
                            diff_paths(&w, &a).join("\n    ")
                        ));
                    }
                }
                None => problems.push(format!("no JSON body: {}", got.text)),
            }
        } else if let Some(text) = expected["bodyText"].as_str() {
            // A recorded watch stream is JSON lines: compare the events, not the bytes.
            let lines = |t: &str| -> Option<Vec<Value>> {
                t.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| serde_json::from_str(l).ok().map(|v| normalize(&v)))
                    .collect()
            };
            let same = match (lines(text), lines(&got.text)) {
                (Some(w), Some(g)) if !w.is_empty() => w == g,
                _ => got.text.trim() == text.trim(),
            };
            if !same {
                problems.push(format!("text body {:?} != recorded {text:?}", got.text));
            }
        }
        self.record(&name, problems, skip);
    }

    fn record(&mut self, name: &str, problems: Vec<String>, skip: Option<&str>) {
        match (problems.is_empty(), skip) {
            (true, _) => self.compared += 1,
            (false, Some(reason)) => {
                if std::env::var_os("KBEAST_GOLDEN_VERBOSE").is_some() {
                    eprintln!("skipped step {name} differs: {}", problems.join("; "));
                }
                self.skipped.push(format!("{name}: {reason}"))
            }
            (false, None) => self
                .failures
                .push(format!("step {name}: {}", problems.join("; "))),
        }
    }

    /// Opens a watch, performs the `during` steps, and compares the non-bookmark events.
    pub async fn watch_step(&mut self, step: &Value, skip: Option<&str>) {
        let name = step["name"].as_str().unwrap_or("?").to_string();
        let response = self.send(&step["request"]).await;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut during: Vec<Value> = step["during"].as_array().cloned().unwrap_or_default();
        during.reverse();
        let mut events: Vec<Value> = Vec::new();
        let mut buffer = Vec::new();
        let mut problems = Vec::new();
        loop {
            let next = tokio::time::timeout(Duration::from_millis(200), body.frame()).await;
            match next {
                Ok(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        buffer.extend_from_slice(data);
                        while let Some(pos) = buffer.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = buffer.drain(..=pos).collect();
                            if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                                events.push(v);
                            }
                        }
                    }
                }
                Ok(Some(Err(e))) => {
                    problems.push(format!("stream error {e}"));
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    if let Some(d) = during.pop() {
                        let got = self.exchange(&d["request"]).await;
                        if let (Some(want), Some(actual)) = (d["response"].get("body"), &got.body) {
                            self.learn(want, actual);
                        }
                    }
                }
            }
        }
        if status != 200 {
            problems.push(format!("watch status {status}"));
        }
        let recorded: Vec<&Value> = step["response"]["events"]
            .as_array()
            .map(|e| e.iter().collect())
            .unwrap_or_default();
        let keep = |e: &Value| {
            e["type"] != "BOOKMARK"
                || e["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true"
        };
        let want: Vec<Value> = recorded
            .iter()
            .filter(|e| keep(e))
            .map(|e| normalize(&json!({"type": e["type"], "object": e["object"]})))
            .collect();
        let got: Vec<Value> = events.iter().filter(|e| keep(e)).map(normalize).collect();
        if want != got {
            let (w, g) = (Value::Array(want), Value::Array(got));
            problems.push(format!(
                "events differ:\n    {}",
                diff_paths(&w, &g).join("\n    ")
            ));
        }
        let recorded_bookmarks = recorded.iter().any(|e| e["type"] == "BOOKMARK");
        let got_bookmarks = events.iter().any(|e| e["type"] == "BOOKMARK");
        if recorded_bookmarks != got_bookmarks {
            problems.push(format!(
                "bookmarks present: emulator {got_bookmarks}, recorded {recorded_bookmarks}"
            ));
        }
        self.record(&name, problems, skip);
    }

    pub async fn create_namespace(&mut self, ns: &str) {
        let got = self
            .exchange(&json!({"method": "POST", "path": "/api/v1/namespaces", "contentType": "application/json", "body": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}}))
            .await;
        assert_eq!(got.status, 201, "namespace {ns}: {}", got.text);
    }

    /// Installs the golden Widget CRD (recorded in `crd.json`).
    pub async fn install_widget_crd(&mut self) {
        let crd = load("crd");
        let step = crd["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "create-crd")
            .unwrap()
            .clone();
        let got = self.exchange(&step["request"]).await;
        assert_eq!(got.status, 201, "CRD: {}", got.text);
    }
}

fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Replays a scenario; `skips` lists step names that may differ, with the reason.
pub async fn replay(scenario: &str, skips: &[(&str, &str)], needs_widget_crd: bool) -> Replayer {
    let golden = load(scenario);
    let mut r = Replayer::start().await;
    r.ignore_controller_state = golden["volatile"]
        .to_string()
        .contains("written asynchronously by the Deployment controller");
    let steps = golden["steps"].as_array().expect("steps");
    let ns = golden["namespace"].as_str().unwrap_or("default");
    if steps[0]["name"] != "create-namespace" && ns != "default" {
        r.create_namespace(ns).await;
    }
    if needs_widget_crd {
        r.install_widget_crd().await;
    }
    for step in steps {
        let name = step["name"].as_str().unwrap_or("");
        let skip = skips
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, reason)| *reason);
        if step.get("request").is_none() {
            if name == "etcd-compaction" {
                r.cluster.compact();
            }
            continue;
        }
        if step["response"].get("events").is_some() {
            r.watch_step(step, skip).await;
        } else {
            r.request_step(step, skip).await;
        }
    }
    let unused: Vec<&&str> = skips
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !r.skipped.iter().any(|s| s.starts_with(&format!("{n}:"))))
        .collect();
    eprintln!(
        "{scenario}: {} steps matched, {} skipped ({:?}), skip entries that matched anyway: {unused:?}",
        r.compared,
        r.skipped.len(),
        r.skipped
    );
    assert!(
        r.failures.is_empty(),
        "{scenario}: {} failing steps:\n{}",
        r.failures.len(),
        r.failures.join("\n\n")
    );
    assert!(
        unused.is_empty(),
        "{scenario}: skipped steps now match, remove their skip entries: {unused:?}"
    );
    r
}
