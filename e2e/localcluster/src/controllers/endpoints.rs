//! The Endpoints controller: one Endpoints object per selector Service, with ready pod
//! addresses in `addresses` and the others in `notReadyAddresses`.

use serde_json::{Value, json};

use super::{
    MANAGER, Scope, is_terminating, label_selector, name, namespace, pod_ready, resource,
    selector_candidates, timestamp,
};
use crate::api::State;
use crate::system::write_as;

/// A service port's target port resolved against a pod (named container ports).
fn target_port(port: &Value, pod: &Value) -> Option<i64> {
    match &port["targetPort"] {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => pod["spec"]["containers"]
            .as_array()?
            .iter()
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .find(|p| p["name"] == s.as_str())
            .and_then(|p| p["containerPort"].as_i64()),
        _ => port["port"].as_i64(),
    }
}

pub fn reconcile(state: &mut State, now: jiff::Timestamp, scope: &Scope) {
    let (Some(svc_rt), Some(ep_rt), Some(pod_rt)) = (
        resource(state, "", "v1", "services"),
        resource(state, "", "v1", "endpoints"),
        resource(state, "", "v1", "pods"),
    ) else {
        return;
    };
    let now_text = timestamp(now);
    // Services whose pods, Endpoints or selves changed (matchLabels only: no parse).
    let affected = |svc: &Value| {
        let Some(selector) = svc["spec"]["selector"].as_object() else {
            return false;
        };
        let ns = namespace(svc);
        scope.touches(svc)
            || scope.touches_name(ns, name(svc))
            || scope.touches_pods(ns, &svc["spec"]["selector"], |pod| {
                selector
                    .iter()
                    .all(|(k, v)| pod["metadata"]["labels"].get(k) == Some(v))
            })
    };
    for svc in scope.selecting_changed_pods(state, &svc_rt, true, affected) {
        let Some(selector_map) = svc["spec"]["selector"].as_object() else {
            continue;
        };
        if is_terminating(&svc) {
            continue;
        }
        let ns = namespace(&svc).to_string();
        let Some(selector) = label_selector(&json!({"matchLabels": selector_map})) else {
            continue;
        };
        let selector_value = json!({"matchLabels": selector_map});
        let mut pods = selector_candidates(state, &pod_rt, &ns, &selector_value);
        pods.retain(|p| {
            selector.matches(p) && !is_terminating(p) && p["status"]["podIP"].is_string()
        });
        let mut subsets = Vec::new();
        if let Some(first) = pods.first() {
            let ports: Vec<Value> = svc["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let mut port = json!({"port": target_port(p, first)?, "protocol": p["protocol"].as_str().unwrap_or("TCP")});
                    if let Some(n) = p["name"].as_str() {
                        port["name"] = json!(n);
                    }
                    Some(port)
                })
                .collect();
            let address = |p: &std::sync::Arc<Value>| {
                let mut a = json!({"ip": p["status"]["podIP"], "targetRef": {"kind": "Pod", "namespace": ns, "name": name(p), "uid": p["metadata"]["uid"]}});
                if let Some(node) = p["spec"]["nodeName"].as_str() {
                    a["nodeName"] = json!(node);
                }
                a
            };
            let ready: Vec<Value> = pods.iter().filter(|p| pod_ready(p)).map(address).collect();
            let not_ready: Vec<Value> =
                pods.iter().filter(|p| !pod_ready(p)).map(address).collect();
            let mut subset = json!({"ports": ports});
            if !ready.is_empty() {
                subset["addresses"] = json!(ready);
            }
            if !not_ready.is_empty() {
                subset["notReadyAddresses"] = json!(not_ready);
            }
            subsets.push(subset);
        }
        let existing = state.store.get(&ep_rt.key(), &ns, name(&svc)).cloned();
        let mut endpoints = existing.clone().unwrap_or_else(|| {
            json!({"metadata": {"name": name(&svc), "namespace": ns, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now_text}})
        });
        if let Some(labels) = svc["metadata"].get("labels") {
            endpoints["metadata"]["labels"] = labels.clone();
        }
        match subsets.is_empty() {
            true => endpoints.as_object_mut().map(|m| m.remove("subsets")),
            false => endpoints
                .as_object_mut()
                .map(|m| m.insert("subsets".into(), json!(subsets))),
        };
        if existing.as_ref() == Some(&endpoints) {
            // Unchanged: skip the managed-fields bookkeeping of a write that would be a no-op.
            continue;
        }
        write_as(
            state,
            &ep_rt,
            existing.as_ref(),
            endpoints,
            MANAGER,
            None,
            &now_text,
        );
    }
}
