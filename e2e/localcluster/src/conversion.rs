//! Serving a stored kind through another version: autoscaling/v1 HorizontalPodAutoscalers
//! are stored as autoscaling/v2 and converted on the way in and out.

use std::borrow::Cow;

use serde_json::{Value, json};

use crate::registry::ResourceType;

/// The version objects of this type are stored in, when it differs from the served one.
pub fn storage_version(rt: &ResourceType) -> Option<&'static str> {
    (rt.group == "autoscaling" && rt.version == "v1" && rt.resource == "horizontalpodautoscalers")
        .then_some("v2")
}

fn is_cpu_utilization(metric: &Value) -> bool {
    metric["type"] == "Resource"
        && metric["resource"]["name"] == "cpu"
        && metric["resource"]["target"]["type"] == "Utilization"
}

/// Whether `object`, as stored, differs from what `rt` serves.
fn needs_conversion(rt: &ResourceType, object: &Value) -> bool {
    let passthrough = [
        "Status",
        "PartialObjectMetadata",
        "PartialObjectMetadataList",
        "Table",
    ];
    storage_version(rt).is_some() && !passthrough.iter().any(|k| object["kind"] == *k)
}

/// A stored (v2) object as the served version shows it: itself for nearly every type.
pub fn served_view<'a>(rt: &ResourceType, object: &'a Value) -> Cow<'a, Value> {
    match needs_conversion(rt, object) {
        true => Cow::Owned(to_served(rt, object)),
        false => Cow::Borrowed(object),
    }
}

/// [`to_served`] of an object the caller owns, which is returned as is when no conversion applies.
pub fn into_served(rt: &ResourceType, object: Value) -> Value {
    match needs_conversion(rt, &object) {
        true => to_served(rt, &object),
        false => object,
    }
}

/// A stored (v2) object as the served version shows it.
pub fn to_served(rt: &ResourceType, object: &Value) -> Value {
    if !needs_conversion(rt, object) {
        return object.clone();
    }
    let spec = &object["spec"];
    let mut v1_spec =
        json!({"scaleTargetRef": spec["scaleTargetRef"], "maxReplicas": spec["maxReplicas"]});
    if let Some(min) = spec.get("minReplicas") {
        v1_spec["minReplicas"] = min.clone();
    }
    if let Some(cpu) = spec["metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| is_cpu_utilization(m))
    {
        v1_spec["targetCPUUtilizationPercentage"] =
            cpu["resource"]["target"]["averageUtilization"].clone();
    }
    let status = &object["status"];
    let mut v1_status = json!({"currentReplicas": status["currentReplicas"].as_i64().unwrap_or(0), "desiredReplicas": status["desiredReplicas"].as_i64().unwrap_or(0)});
    for key in ["observedGeneration", "lastScaleTime"] {
        if let Some(v) = status.get(key).filter(|v| !v.is_null()) {
            v1_status[key] = v.clone();
        }
    }
    if let Some(cpu) = status["currentMetrics"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu")
    {
        v1_status["currentCPUUtilizationPercentage"] =
            cpu["resource"]["current"]["averageUtilization"].clone();
    }
    let mut out = serde_json::Map::new();
    out.insert("kind".into(), json!(rt.kind));
    out.insert("apiVersion".into(), json!(rt.api_version()));
    out.insert("metadata".into(), object["metadata"].clone());
    out.insert("spec".into(), v1_spec);
    out.insert("status".into(), v1_status);
    Value::Object(out)
}

/// A served-version body converted to the stored (v2) form.
pub fn to_storage(rt: &ResourceType, object: &Value) -> Value {
    let Some(version) = storage_version(rt) else {
        return object.clone();
    };
    let spec = &object["spec"];
    let mut v2_spec =
        json!({"scaleTargetRef": spec["scaleTargetRef"], "maxReplicas": spec["maxReplicas"]});
    if let Some(min) = spec.get("minReplicas") {
        v2_spec["minReplicas"] = min.clone();
    }
    if let Some(cpu) = spec
        .get("targetCPUUtilizationPercentage")
        .filter(|v| !v.is_null())
    {
        v2_spec["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}}]);
    }
    let mut out = json!({"kind": rt.kind, "apiVersion": format!("{}/{version}", rt.group), "metadata": object["metadata"], "spec": v2_spec});
    if let Some(status) = object.get("status").filter(|s| s.is_object()) {
        out["status"] = json!({"currentReplicas": status["currentReplicas"], "desiredReplicas": status["desiredReplicas"]});
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_cpu_target_round_trips_between_v1_and_v2() {
        let registry = crate::registry::Registry::builtin();
        let v1 = registry
            .find("autoscaling", "v1", "horizontalpodautoscalers")
            .expect("v1 served");
        let served = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"}, "minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 60}});
        let stored = to_storage(&v1, &served);
        assert_eq!(stored["apiVersion"], "autoscaling/v2");
        assert_eq!(
            stored["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            60
        );
        let back = to_served(&v1, &stored);
        assert_eq!(back["spec"], served["spec"]);
        assert_eq!(
            back["status"],
            json!({"currentReplicas": 0, "desiredReplicas": 0})
        );
    }
}
