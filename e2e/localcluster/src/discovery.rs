//! Non-resource endpoints: version, health, legacy discovery documents built from the
//! registry, and the recorded OpenAPI v3 documents.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use crate::api::{Request, Shared, error_response, json_response};
use crate::error::ApiError;
use crate::schema::OPENAPI_DOCUMENTS;

const VERSION: &str = include_str!("../data/version.json");
/// The recorded aggregated discovery documents, filtered to the resources the emulator serves.
const AGGREGATED_CORE: &str = include_str!("../data/discovery/aggregated-api.json");
const AGGREGATED_GROUPS: &str = include_str!("../data/discovery/aggregated-apis.json");
const AGGREGATED_MEDIA_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn text(status: u16, body: &str) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Whether the client asked for aggregated discovery (apidiscovery.k8s.io/v2) and accepts it.
fn aggregated_requested(request: &Request) -> Result<bool, ApiError> {
    let accept = request.header("accept");
    if !accept.contains("apidiscovery.k8s.io") {
        return Ok(false);
    }
    let options: Vec<&str> = accept.split(',').map(str::trim).collect();
    if options
        .iter()
        .any(|o| o.contains("g=apidiscovery.k8s.io") && o.contains("v=v2"))
    {
        return Ok(true);
    }
    let plain_ok = options
        .iter()
        .any(|o| (o.starts_with("application/json") || o.starts_with("*/*")) && !o.contains("as="));
    if plain_ok {
        Ok(false)
    } else {
        Err(ApiError::not_acceptable())
    }
}

fn aggregated_response(body: &Value) -> Response {
    let mut r = json_response(200, body);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("public"));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(AGGREGATED_MEDIA_TYPE),
    );
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    r
}

/// `/apis` in aggregated form: the recorded built-in groups, then the CRD groups.
fn aggregated_groups(registry: &crate::registry::Registry) -> Value {
    let mut doc: Value = serde_json::from_str(AGGREGATED_GROUPS).unwrap_or(json!({"items": []}));
    let mut crd_groups: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for t in registry.types().iter().filter(|t| t.is_custom()) {
        let mut subresources = Vec::new();
        if t.has_status {
            subresources.push(json!({"subresource": "status", "responseKind": {"group": t.group, "version": t.version, "kind": t.kind}, "verbs": ["get", "patch", "update"]}));
        }
        if t.has_scale {
            subresources.push(json!({"subresource": "scale", "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"}, "verbs": ["get", "patch", "update"]}));
        }
        let mut resource = json!({
            "resource": t.resource,
            "responseKind": {"group": t.group, "version": t.version, "kind": t.kind},
            "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
            "singularResource": t.discovery["singularName"],
            "verbs": t.discovery["verbs"],
        });
        for key in ["shortNames", "categories"] {
            if let Some(v) = t.discovery.get(key) {
                resource[key] = v.clone();
            }
        }
        if !subresources.is_empty() {
            resource["subresources"] = json!(subresources);
        }
        let versions = crd_groups.entry(t.group.clone()).or_default();
        match versions
            .iter_mut()
            .find(|v| v["version"] == t.version.as_str())
        {
            Some(v) => v["resources"]
                .as_array_mut()
                .expect("resources")
                .push(resource),
            None => versions.push(
                json!({"version": t.version, "resources": [resource], "freshness": "Current"}),
            ),
        }
    }
    if let Some(items) = doc["items"].as_array_mut() {
        for (group, versions) in crd_groups {
            items.push(json!({"metadata": {"name": group}, "versions": versions}));
        }
    }
    doc
}

pub fn serve(shared: &Arc<Shared>, request: &Request) -> Response {
    match request.path.as_str() {
        "/healthz" | "/readyz" | "/livez" => return text(200, "ok"),
        "/version" => {
            let v: Value = serde_json::from_str(VERSION).unwrap_or(json!({}));
            return json_response(200, &v);
        }
        _ => {}
    }
    if request.path.starts_with("/openapi/v3") {
        return openapi(shared, request);
    }
    let aggregated = match aggregated_requested(request) {
        Ok(a) => a,
        Err(e) => {
            let mut r = error_response(&e);
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache, private"),
            );
            return r;
        }
    };
    let state = shared.lock();
    let registry = &state.registry;
    let segments: Vec<&str> = request.path.split('/').filter(|s| !s.is_empty()).collect();
    if aggregated {
        match segments.as_slice() {
            ["api"] => {
                return aggregated_response(
                    &serde_json::from_str(AGGREGATED_CORE).unwrap_or(json!({})),
                );
            }
            ["apis"] => return aggregated_response(&aggregated_groups(registry)),
            _ => {}
        }
    }
    match segments.as_slice() {
        ["api"] => json_response(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": request.header("host")}]}),
        ),
        ["api", "v1"] => json_response(200, &resource_list(registry, "", "v1")),
        ["apis"] => {
            let groups: Vec<Value> = groups(registry)
                .iter()
                .map(|(g, vs)| group_doc(g, vs))
                .collect();
            json_response(
                200,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
        ["apis", g] => match groups(registry).get(*g) {
            Some(vs) => {
                let mut doc = group_doc(g, vs);
                doc["kind"] = json!("APIGroup");
                doc["apiVersion"] = json!("v1");
                json_response(200, &doc)
            }
            None => error_response(&ApiError::page_not_found()),
        },
        ["apis", g, v] if registry.has_group_version(g, v) => {
            json_response(200, &resource_list(registry, g, v))
        }
        _ => error_response(&ApiError::page_not_found()),
    }
}

fn groups(registry: &crate::registry::Registry) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in registry.types().iter().filter(|t| !t.group.is_empty()) {
        let versions = out.entry(t.group.clone()).or_default();
        if !versions.contains(&t.version) {
            versions.push(t.version.clone());
        }
    }
    out
}

fn group_doc(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs[0]})
}

fn resource_list(registry: &crate::registry::Registry, group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for t in registry
        .types()
        .iter()
        .filter(|t| t.group == group && t.version == version)
    {
        resources.push(t.discovery.clone());
        resources.extend(t.subresources.iter().cloned());
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let mut list = json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources});
    if group.is_empty() {
        // The legacy core list has no apiVersion.
        list.as_object_mut().map(|m| m.remove("apiVersion"));
    }
    list
}

/// The document's hash, as the real server puts in `?hash=` and the ETag (SHA-512, hex).
fn document_hash(doc: &str) -> String {
    use sha2::Digest;
    sha2::Sha512::digest(doc.as_bytes())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

fn openapi(_shared: &Arc<Shared>, request: &Request) -> Response {
    let rest = request
        .path
        .trim_start_matches("/openapi/v3")
        .trim_start_matches('/');
    if rest.is_empty() {
        let paths: serde_json::Map<String, Value> = OPENAPI_DOCUMENTS
            .iter()
            .map(|(p, doc)| {
                let url = format!("/openapi/v3/{p}?hash={}", document_hash(doc));
                (p.to_string(), json!({"serverRelativeURL": url}))
            })
            .collect();
        let mut r = json_response(200, &json!({"paths": paths}));
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, private"),
        );
        return r;
    }
    match OPENAPI_DOCUMENTS.iter().find(|(p, _)| *p == rest) {
        Some((_, doc)) => {
            let hash = document_hash(doc);
            let mut r = Response::new(Body::from(*doc));
            let headers = r.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert(header::VARY, HeaderValue::from_static("Accept"));
            if let Ok(etag) = HeaderValue::from_str(&format!("\"{hash}\"")) {
                headers.insert(header::ETAG, etag);
            }
            // Hash-addressed URLs never change; plain ones must be revalidated.
            let cache = if request.param("hash").is_some() {
                "public, immutable"
            } else {
                "no-cache, private"
            };
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
            r
        }
        None => {
            let mut r = text(404, "404 page not found\n");
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache, private"),
            );
            r
        }
    }
}
