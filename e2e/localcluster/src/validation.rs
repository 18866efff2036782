//! Validation of writes: names, finalizers, owner references, decode-time type checks of
//! built-in kinds, Lease MicroTime, and custom resources against their CRD schema.

use serde_json::Value;

use crate::crd_schema;
use crate::error::{ApiError, Cause};
use crate::registry::ResourceType;

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Type errors Go's JSON decoder reports for built-in kinds (a 400, not a 422).
pub fn decode_types(object: &Value, rt: &ResourceType) -> Result<(), ApiError> {
    if rt.is_custom() {
        return Ok(());
    }
    if rt.kind == "Lease" {
        check_micro_times(object, rt)?;
    }
    if rt.kind == "Secret" {
        use base64::Engine;
        for (k, v) in object["data"].as_object().into_iter().flatten() {
            if let Some(text) = v.as_str()
                && base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .is_err()
            {
                return Err(ApiError::bad_request(format!(
                    "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data in data.{k}"
                )));
            }
        }
    }
    if matches!(rt.kind.as_str(), "ConfigMap") {
        for field in ["data", "stringData"] {
            if let Some(map) = object[field].as_object()
                && map.values().any(|v| !v.is_string())
            {
                let go_type = match map.values().find(|v| !v.is_string()) {
                    Some(Value::Number(_)) => "number",
                    Some(Value::Bool(_)) => "bool",
                    Some(Value::Array(_)) => "array",
                    Some(Value::Object(_)) => "object",
                    _ => "null",
                };
                return Err(ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: json: cannot unmarshal {go_type} into Go struct field {}.{field} of type string",
                    rt.kind, rt.version, rt.kind, rt.kind
                )));
            }
        }
    }
    Ok(())
}

fn finalizer_name_valid(f: &str) -> bool {
    if !f.contains('/') {
        return matches!(f, "kubernetes" | "orphan" | "foregroundDeletion");
    }
    let (domain, name) = f.split_once('/').unwrap_or(("", ""));
    is_dns1123_subdomain(domain) && !name.is_empty() && name.len() <= 63
}

fn has_fractional_micros(s: &str) -> bool {
    match s.split_once('.') {
        Some((_, frac)) => frac.trim_end_matches('Z').len() == 6,
        None => false,
    }
}

pub fn validate(
    rt: &ResourceType,
    new: &Value,
    old: Option<&Value>,
    name: &str,
) -> Result<(), ApiError> {
    let subject = crate::error::Subject {
        group: &rt.group,
        resource: &rt.resource,
        kind: &rt.kind,
        name,
    };
    let mut causes = Vec::new();
    if old.is_none() && !is_dns1123_subdomain(name) {
        causes.push(Cause::invalid(
            "metadata.name",
            &format!("\"{name}\""),
            DNS1123_SUBDOMAIN_MSG,
        ));
    }
    let finalizers: Vec<&str> = new["metadata"]["finalizers"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (i, f) in finalizers.iter().enumerate() {
        if !finalizer_name_valid(f) {
            causes.push(Cause::invalid(
                format!("metadata.finalizers[{i}]"),
                &format!("\"{f}\""),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    if let Some(old) = old
        && !old["metadata"]["deletionTimestamp"].is_null()
    {
        let old_f: Vec<&str> = old["metadata"]["finalizers"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let added: Vec<String> = finalizers
            .iter()
            .filter(|f| !old_f.contains(f))
            .map(|f| format!("\"{f}\""))
            .collect();
        if !added.is_empty() {
            let msg = format!(
                "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                added.join(", ")
            );
            // Kubernetes reports this cause twice (metadata and generic update validation).
            causes.push(Cause::new(
                "FieldValueForbidden",
                "metadata.finalizers",
                msg.clone(),
            ));
            causes.push(Cause::new(
                "FieldValueForbidden",
                "metadata.finalizers",
                msg,
            ));
        }
    }
    if let Some(refs) = new["metadata"]["ownerReferences"].as_array() {
        let controllers = refs
            .iter()
            .filter(|r| r["controller"] == Value::Bool(true))
            .count();
        for r in refs {
            if r["uid"].as_str().unwrap_or("").is_empty() {
                causes.push(Cause::invalid(
                    "metadata.ownerReferences.uid",
                    "\"\"",
                    "must not be empty",
                ));
            }
        }
        if controllers > 1 {
            let names: Vec<String> = refs
                .iter()
                .filter(|r| r["controller"] == Value::Bool(true))
                .map(|r| {
                    format!(
                        "{}/{}",
                        r["kind"].as_str().unwrap_or(""),
                        r["name"].as_str().unwrap_or("")
                    )
                })
                .collect();
            causes.push(Cause::invalid(
                "metadata.ownerReferences",
                &go_owner_references(refs),
                &format!("Only one reference can have Controller set to true. Found \"true\" in references for {}", names.join(" and ")),
            ));
        }
    }
    if rt.kind == "Lease"
        && let Some(d) = new["spec"]["leaseDurationSeconds"].as_i64()
        && d <= 0
    {
        causes.push(Cause::invalid(
            "spec.leaseDurationSeconds",
            &d.to_string(),
            "must be greater than 0",
        ));
    }
    causes.extend(builtin_spec_causes(rt, new));
    if rt.kind == "Pod" {
        for (i, c) in new["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if c["image"].as_str().unwrap_or("").is_empty() {
                causes.push(Cause::required(format!("spec.containers[{i}].image")));
            }
        }
    }
    if rt.kind == "Pod"
        && let Some(old) = old
        && !pod_update_allowed(&old["spec"], &new["spec"])
    {
        causes.push(Cause::new(
            "FieldValueForbidden",
            "spec",
            "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
    if let Some(schema) = &rt.crd_schema {
        let errors = crd_schema::validate_schema(new, schema);
        causes.extend(errors.causes);
        if let Some(scale) = &rt.crd_scale {
            causes.extend(crd_schema::validate_scale_paths(new, scale));
        }
        crd_schema::validate_list_types(new, schema, "", &mut causes);
        if errors.blocks_cel {
            causes.push(crd_schema::cel_skipped_cause());
        } else {
            let rules = rt.crd_rules.as_deref();
            causes.extend(crd_schema::validate_cel(new, old, schema, rules));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&subject, causes))
    }
}

/// Owner references as Go's JSON encoder prints them (struct field order).
fn go_owner_references(refs: &[Value]) -> String {
    let items: Vec<String> = refs
        .iter()
        .map(|r| {
            let mut fields = Vec::new();
            for key in [
                "apiVersion",
                "kind",
                "name",
                "uid",
                "controller",
                "blockOwnerDeletion",
            ] {
                if let Some(v) = r.get(key) {
                    fields.push(format!("\"{key}\":{v}"));
                }
            }
            format!("{{{}}}", fields.join(","))
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// Lease MicroTime fields must be RFC 3339 with exactly six fractional digits; anything
/// else fails in the decoder (400), before validation.
fn check_micro_times(object: &Value, rt: &ResourceType) -> Result<(), ApiError> {
    for field in ["acquireTime", "renewTime"] {
        if let Some(t) = object["spec"][field].as_str()
            && !has_fractional_micros(t)
        {
            let rest = t.get(19..).unwrap_or("");
            return Err(ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: parsing time \"{t}\" as \"2006-01-02T15:04:05.000000Z07:00\": cannot parse \"{rest}\" as \".000000\"",
                rt.kind, rt.version, rt.kind
            )));
        }
    }
    Ok(())
}

/// A few spec validations of built-in kinds kbeast creates (HPA, PDB, NetworkPolicy).
fn builtin_spec_causes(rt: &ResourceType, object: &Value) -> Vec<Cause> {
    let spec = &object["spec"];
    let mut causes = Vec::new();
    match rt.kind.as_str() {
        "HorizontalPodAutoscaler" => {
            let min = spec["minReplicas"].as_i64().unwrap_or(1);
            if let Some(max) = spec["maxReplicas"].as_i64()
                && max < min
            {
                causes.push(Cause::invalid(
                    "spec.maxReplicas",
                    &max.to_string(),
                    "must be greater than or equal to `minReplicas`",
                ));
            }
            if spec["scaleTargetRef"]["apiVersion"]
                .as_str()
                .unwrap_or("")
                .is_empty()
            {
                causes.push(Cause::invalid(
                    "spec.scaleTargetRef.apiVersion",
                    "\"\"",
                    "apiVersion must specify API group",
                ));
            }
        }
        "PodDisruptionBudget"
            if !spec["minAvailable"].is_null() && !spec["maxUnavailable"].is_null() =>
        {
            // Kubernetes prints the Go struct of the spec here.
            let go_value = format!(
                "{{\"MinAvailable\":{},\"Selector\":{},\"MaxUnavailable\":{},\"UnhealthyPodEvictionPolicy\":{}}}",
                spec["minAvailable"],
                spec["selector"],
                spec["maxUnavailable"],
                spec["unhealthyPodEvictionPolicy"]
            );
            causes.push(Cause::invalid(
                "spec",
                &go_value,
                "minAvailable and maxUnavailable cannot be both set",
            ));
        }
        "NetworkPolicy" => {
            for direction in ["ingress", "egress"] {
                let peers_key = if direction == "ingress" { "from" } else { "to" };
                for (i, rule) in spec[direction].as_array().into_iter().flatten().enumerate() {
                    for (j, peer) in rule[peers_key].as_array().into_iter().flatten().enumerate() {
                        if let Some(cidr) = peer["ipBlock"]["cidr"].as_str()
                            && !valid_cidr(cidr)
                        {
                            causes.push(Cause::invalid(
                                format!("spec.{direction}[{i}].{peers_key}[{j}].ipBlock.cidr"),
                                &format!("\"{cidr}\""),
                                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                            ));
                        }
                    }
                }
            }
        }
        _ => {}
    }
    causes
}

fn valid_cidr(cidr: &str) -> bool {
    let Some((ip, bits)) = cidr.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits <= 32,
        Ok(std::net::IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

/// Pods are immutable except for images, activeDeadlineSeconds, added tolerations and
/// terminationGracePeriodSeconds.
fn pod_update_allowed(old: &Value, new: &Value) -> bool {
    let normalize = |spec: &Value| {
        let mut s = spec.clone();
        for list in ["containers", "initContainers"] {
            for c in s
                .get_mut(list)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(c) = c.as_object_mut() {
                    c.remove("image");
                }
            }
        }
        if let Some(m) = s.as_object_mut() {
            for key in [
                "activeDeadlineSeconds",
                "tolerations",
                "terminationGracePeriodSeconds",
            ] {
                m.remove(key);
            }
        }
        s
    };
    let old_tolerations = old["tolerations"].as_array().cloned().unwrap_or_default();
    let new_tolerations = new["tolerations"].as_array().cloned().unwrap_or_default();
    normalize(old) == normalize(new) && old_tolerations.iter().all(|t| new_tolerations.contains(t))
}
