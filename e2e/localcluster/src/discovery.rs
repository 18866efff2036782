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

fn text(status: u16, body: &str) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn aggregated_requested(request: &Request) -> Result<bool, ApiError> {
    let accept = request.header("accept");
    if !accept.contains("apidiscovery.k8s.io") {
        return Ok(false);
    }
    // Only the legacy documents are emulated: fall back when the client allows plain JSON.
    let plain_ok = accept.split(',').any(|o| {
        let o = o.trim();
        (o.starts_with("application/json") || o.starts_with("*/*")) && !o.contains("as=")
    });
    if plain_ok {
        Ok(false)
    } else {
        Err(ApiError::not_acceptable())
    }
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
    if let Err(e) = aggregated_requested(request) {
        return error_response(&e);
    }
    let state = shared.lock();
    let registry = &state.registry;
    let segments: Vec<&str> = request.path.split('/').filter(|s| !s.is_empty()).collect();
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
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

fn openapi(_shared: &Arc<Shared>, request: &Request) -> Response {
    let rest = request
        .path
        .trim_start_matches("/openapi/v3")
        .trim_start_matches('/');
    if rest.is_empty() {
        let paths: serde_json::Map<String, Value> = OPENAPI_DOCUMENTS
            .iter()
            .map(|(p, _)| {
                (
                    p.to_string(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{p}")}),
                )
            })
            .collect();
        return json_response(200, &json!({"paths": paths}));
    }
    match OPENAPI_DOCUMENTS.iter().find(|(p, _)| *p == rest) {
        Some((_, doc)) => {
            let mut r = Response::new(Body::from(*doc));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        None => text(404, "404 page not found\n"),
    }
}
