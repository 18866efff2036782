//! The `scale` subresource: the autoscaling/v1 `Scale` view of Deployments, ReplicaSets and
//! custom resources with a scale subresource.

use serde_json::{Value, json};

use crate::registry::ResourceType;

/// Paths of `spec.replicas` / `status.replicas` / selector for a type with a scale subresource.
pub fn scale_paths(rt: &ResourceType) -> (String, String, Option<String>) {
    match &rt.crd_scale {
        Some(s) => (
            s.spec_replicas.clone(),
            s.status_replicas.clone(),
            s.label_selector.clone(),
        ),
        None => (".spec.replicas".into(), ".status.replicas".into(), None),
    }
}

fn get_path<'a>(object: &'a Value, path: &str) -> &'a Value {
    let mut current = object;
    for part in path.trim_start_matches('.').split('.') {
        current = &current[part];
    }
    current
}

pub fn set_path(object: &mut Value, path: &str, value: Value) {
    let parts: Vec<&str> = path.trim_start_matches('.').split('.').collect();
    let mut current = object;
    for part in &parts[..parts.len() - 1] {
        if !current[*part].is_object() {
            current[*part] = json!({});
        }
        current = &mut current[*part];
    }
    current[parts[parts.len() - 1]] = value;
}

/// The autoscaling/v1 Scale view of an object.
pub fn scale_view(rt: &ResourceType, object: &Value) -> Value {
    let (spec_path, status_path, selector_path) = scale_paths(rt);
    let meta = &object["metadata"];
    let mut metadata = json!({"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"], "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"]});
    if meta["namespace"].is_null() {
        metadata.as_object_mut().map(|m| m.remove("namespace"));
    }
    let mut status = json!({"replicas": get_path(object, &status_path).as_i64().unwrap_or(0)});
    let selector = match selector_path {
        Some(p) => get_path(object, &p).clone(),
        None => match object["spec"]["selector"]["matchLabels"].as_object() {
            Some(labels) => json!(
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            None => Value::Null,
        },
    };
    if let Some(s) = selector.as_str() {
        status["selector"] = json!(s);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": get_path(object, &spec_path).as_i64().unwrap_or(0)},
        "status": status,
    })
}
