//! Semantic checks that the CRD's OpenAPI schema and CEL rules cannot express, and of what the
//! spec references. Pure.
//!
//! A failure names the field (or the object), sets `Ready=False`, and no child is touched.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kbeast_api::conditions::reason;
use kbeast_api::labels::CONFIG_HASH_ANNOTATION;
use kbeast_api::quantity::parse_quantity;
use kbeast_api::{EmbeddingProvider, KnowledgeProject};

use crate::facts::{ReferencedSecret, parse_endpoint, secret_references};
use crate::policy::TenantPolicy;
pub use crate::spec_problem::{SpecProblem, describe};

/// A project that passed every check, with what the later steps need, resolved once.
#[derive(Clone, Copy, Debug)]
pub struct ValidProject<'a> {
    pub project: &'a KnowledgeProject,
    pub namespace: &'a str,
    /// Every Secret the spec references, each present with its required key.
    pub secrets: &'a [ReferencedSecret],
}

impl ValidProject<'_> {
    /// The Secrets the query pods read as environment variables (embedder key, object-store
    /// credentials), for the config hash. The API-keys file is mounted and reloaded by the
    /// pods, so rotating keys restarts nothing.
    pub fn env_secrets(&self) -> Vec<&Secret> {
        self.secrets
            .iter()
            .filter(|r| r.reference.field != "spec.auth.apiKeysSecretRef")
            .filter_map(|r| r.secret.as_ref())
            .collect()
    }
}

/// Why a project's children are left alone. The message names the field or the object.
#[derive(Clone, Debug, PartialEq)]
pub enum Blocked {
    /// The spec failed semantic validation.
    InvalidSpec(String),
    /// A child's name is taken by an object this project does not own.
    Conflict(String),
    /// A referenced Secret, or a key in it, is missing.
    SecretMissing(String),
    /// RBAC forbids writing a child; the message names the verb, kind and name.
    WriteForbidden(String),
    /// The API server refused a write of a child for another reason; the message names the
    /// action, kind and name, and the server's message.
    WriteRejected(String),
}

impl Blocked {
    /// The condition reason it is reported with.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidSpec(_) => reason::INVALID_SPEC,
            Self::Conflict(_) => reason::CONFLICT,
            Self::SecretMissing(_) => reason::SECRET_NOT_FOUND,
            Self::WriteForbidden(_) => reason::FORBIDDEN,
            Self::WriteRejected(_) => reason::APPLY_FAILED,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Self::InvalidSpec(message)
            | Self::Conflict(message)
            | Self::SecretMissing(message)
            | Self::WriteForbidden(message)
            | Self::WriteRejected(message) => message,
        }
    }
}

/// Checks the spec, the ownership of the live children (`conflicts`, from `observe`) and the
/// referenced Secrets, in that order of precedence.
pub fn validate<'a>(
    project: &'a KnowledgeProject,
    namespace: &'a str,
    secrets: &'a [ReferencedSecret],
    conflicts: &[String],
    policy: &TenantPolicy,
) -> Result<ValidProject<'a>, Blocked> {
    let mut problems = spec_problems(project);
    problems.extend(policy.problems(project, namespace));
    if !problems.is_empty() {
        return Err(Blocked::InvalidSpec(describe(&problems)));
    }
    if !conflicts.is_empty() {
        return Err(Blocked::Conflict(conflicts.join("; ")));
    }
    if let Some(missing) = missing_secret(secrets) {
        return Err(Blocked::SecretMissing(missing));
    }
    Ok(ValidProject {
        project,
        namespace,
        secrets,
    })
}

/// Describes the first missing Secret or key, naming it and the field that references it.
fn missing_secret(secrets: &[ReferencedSecret]) -> Option<String> {
    secrets.iter().find_map(|found| {
        let reference = &found.reference;
        let Some(secret) = &found.secret else {
            return Some(format!(
                "Secret {:?} named by {} does not exist",
                reference.name, reference.field
            ));
        };
        let key = reference.required_key.as_ref()?;
        let has_key = secret.data.as_ref().is_some_and(|d| d.contains_key(key))
            || secret
                .string_data
                .as_ref()
                .is_some_and(|d| d.contains_key(key));
        (!has_key).then(|| {
            format!(
                "Secret {:?} named by {} has no key {key:?}",
                reference.name, reference.field
            )
        })
    })
}

/// Every semantic problem of the project's spec; empty when it is valid.
pub fn spec_problems(project: &KnowledgeProject) -> Vec<SpecProblem> {
    let spec = &project.spec;
    let mut problems = Vec::new();
    let mut problem = |field: &str, message: String| {
        problems.push(SpecProblem {
            field: field.to_string(),
            message,
        })
    };

    if let Some(image) = &spec.image
        && (image.trim().is_empty() || image.contains(char::is_whitespace))
    {
        problem("spec.image", format!("{image:?} is not an image reference"));
    }

    if let Some(resources) = &spec.resources {
        for (kind, list) in [
            ("requests", &resources.requests),
            ("limits", &resources.limits),
        ] {
            for (name, quantity) in list.iter().flatten() {
                if let Err(e) = parse_quantity(&quantity.0) {
                    problem(&format!("spec.resources.{kind}.{name}"), e.to_string());
                }
            }
        }
        for (name, request) in resources.requests.iter().flatten() {
            let limit = resources.limits.as_ref().and_then(|l| l.get(name));
            if let (Some(limit), Ok(request_value)) = (limit, parse_quantity(&request.0))
                && let Ok(limit_value) = parse_quantity(&limit.0)
                && request_value > limit_value
            {
                problem(
                    &format!("spec.resources.requests.{name}"),
                    format!("request {} exceeds limit {}", request.0, limit.0),
                );
            }
        }
    }

    if let Some(volume) = &spec.storage.volume {
        match parse_quantity(&volume.size) {
            Ok(bytes) if bytes < 1.0 => problem(
                "spec.storage.volume.size",
                "must be larger than zero".to_string(),
            ),
            Ok(_) => {}
            Err(e) => problem("spec.storage.volume.size", e.to_string()),
        }
    }
    if let Some(ephemeral) = &spec.storage.ephemeral {
        match parse_quantity(ephemeral.size_limit()) {
            Ok(bytes) if bytes < 1.0 => problem(
                "spec.storage.ephemeral.sizeLimit",
                "must be larger than zero".to_string(),
            ),
            Ok(_) => {}
            Err(e) => problem("spec.storage.ephemeral.sizeLimit", e.to_string()),
        }
    }
    if let Some(store) = &spec.storage.object_store
        && let Some(endpoint) = &store.endpoint
        && parse_endpoint(endpoint).is_none()
    {
        problem(
            "spec.storage.objectStore.endpoint",
            format!("{endpoint:?} is not an http(s)://host[:port] URL"),
        );
    }

    if spec.embedding.provider == EmbeddingProvider::Openai
        && let Some(endpoint) = &spec.embedding.endpoint
        && parse_endpoint(endpoint).is_none()
    {
        problem(
            "spec.embedding.endpoint",
            format!("{endpoint:?} is not an http(s)://host[:port] URL"),
        );
    }

    if let Some(max_bytes) = spec.quota.as_ref().and_then(|q| q.max_bytes.as_ref()) {
        match parse_quantity(max_bytes) {
            Ok(bytes) if bytes < 1.0 => {
                problem("spec.quota.maxBytes", "must be at least 1 byte".to_string())
            }
            Ok(_) => {}
            Err(e) => problem("spec.quota.maxBytes", e.to_string()),
        }
    }

    let surge = spec
        .rollout
        .max_surge
        .as_ref()
        .map(|v| ("spec.rollout.maxSurge", v));
    let unavailable = spec
        .rollout
        .max_unavailable
        .as_ref()
        .map(|v| ("spec.rollout.maxUnavailable", v));
    let mut surge_is_zero = false;
    let mut unavailable_is_zero = true; // the default maxUnavailable is 0
    for (field, value) in surge.into_iter().chain(unavailable) {
        match int_or_percent(value) {
            Ok(amount) => {
                if field.ends_with("maxSurge") {
                    surge_is_zero = amount == 0;
                } else {
                    unavailable_is_zero = amount == 0;
                }
            }
            Err(message) => problem(field, message),
        }
    }
    if surge_is_zero && unavailable_is_zero {
        problem(
            "spec.rollout.maxSurge",
            "maxSurge and maxUnavailable cannot both be 0: an update could never start".to_string(),
        );
    }

    if let Some(value) = spec
        .disruption
        .as_ref()
        .and_then(|d| d.max_unavailable.as_ref())
    {
        match int_or_percent(value) {
            Ok(0) => problem(
                "spec.disruption.maxUnavailable",
                "must be at least 1 (or a non-zero percentage): 0 would block every node drain"
                    .to_string(),
            ),
            Ok(_) => {}
            Err(message) => problem("spec.disruption.maxUnavailable", message),
        }
    }

    // Utilisation targets are percentages of requests; without a request the HPA cannot scale.
    if let (Some(autoscaling), Some(resources)) = (
        spec.autoscaling.as_ref().filter(|a| a.enabled),
        spec.resources.as_ref(),
    ) {
        let cpu_targeted = autoscaling.target_cpu_utilization_percentage.is_some()
            || autoscaling.target_memory_utilization_percentage.is_none();
        let memory_targeted = autoscaling.target_memory_utilization_percentage.is_some();
        for (resource, targeted) in [("cpu", cpu_targeted), ("memory", memory_targeted)] {
            let requested = resources
                .requests
                .as_ref()
                .is_some_and(|r| r.contains_key(resource));
            if targeted && !requested {
                problem(
                    &format!("spec.resources.requests.{resource}"),
                    format!("autoscaling on {resource} utilisation needs a {resource} request"),
                );
            }
        }
    }

    check_keys(
        "spec.podAnnotations",
        spec.pod_annotations.as_ref(),
        &mut problem,
    );
    if spec
        .pod_annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(CONFIG_HASH_ANNOTATION))
    {
        problem(
            "spec.podAnnotations",
            format!("{CONFIG_HASH_ANNOTATION} is reserved for the operator"),
        );
    }
    check_keys(
        "spec.nodeSelector",
        spec.node_selector.as_ref(),
        &mut problem,
    );

    if let Some(access) = &spec.access {
        for (i, namespace) in access.allowed_namespaces.iter().enumerate() {
            if !is_dns_label(namespace) {
                problem(
                    &format!("spec.access.allowedNamespaces[{i}]"),
                    format!("{namespace:?} is not a namespace name"),
                );
            }
        }
    }
    if let Some(name) = &spec.priority_class_name
        && !is_dns_subdomain(name)
    {
        problem(
            "spec.priorityClassName",
            format!("{name:?} is not a valid name"),
        );
    }
    for reference in secret_references(project) {
        if !is_dns_subdomain(&reference.name) {
            problem(
                &format!("{}.name", reference.field),
                format!("{:?} is not a valid Secret name", reference.name),
            );
        }
    }
    problems
}

/// The amount an int-or-percent stands for, as far as "is it zero" goes.
fn int_or_percent(value: &IntOrString) -> Result<u32, String> {
    match value {
        IntOrString::Int(n) if *n >= 0 => Ok(*n as u32),
        IntOrString::Int(n) => Err(format!("{n} must not be negative")),
        IntOrString::String(text) => text
            .strip_suffix('%')
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| *n <= 100)
            .ok_or_else(|| format!("{text:?} must be an integer or a percentage such as \"25%\"")),
    }
}

fn check_keys(
    field: &str,
    map: Option<&BTreeMap<String, String>>,
    problem: &mut impl FnMut(&str, String),
) {
    for key in map.into_iter().flat_map(|m| m.keys()) {
        if !is_qualified_name(key) {
            problem(
                &format!("{field}[{key}]"),
                format!("{key:?} is not a valid key (prefix/name, name at most 63 characters)"),
            );
        }
    }
}

/// RFC 1123 label: lower-case alphanumerics and '-', at most 63 characters.
pub fn is_dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(is_dns_label)
}

/// A label or annotation key: `[prefix/]name`.
fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    name_ok && prefix.is_none_or(is_dns_subdomain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn project(spec: Value) -> KnowledgeProject {
        serde_json::from_value(json!({
            "apiVersion": "kbeast.io/v1alpha1",
            "kind": "KnowledgeProject",
            "metadata": {"name": "docs", "namespace": "tenants"},
            "spec": spec,
        }))
        .expect("test project parses")
    }

    fn with(extra: Value) -> KnowledgeProject {
        let mut spec = json!({"storage": {"ephemeral": {}}});
        for (key, value) in extra.as_object().expect("object") {
            spec[key] = value.clone();
        }
        project(spec)
    }

    #[test]
    fn each_problem_names_its_field() {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("blank image", json!({"image": "  "}), "spec.image"),
            (
                "bad cpu quantity",
                json!({"resources": {"requests": {"cpu": "lots"}}}),
                "spec.resources.requests.cpu",
            ),
            (
                "request over limit",
                json!({"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}}),
                "spec.resources.requests.memory",
            ),
            (
                "zero-byte quota",
                json!({"quota": {"maxBytes": "0"}}),
                "spec.quota.maxBytes",
            ),
            (
                "bad quota quantity",
                json!({"quota": {"maxBytes": "5 GB"}}),
                "spec.quota.maxBytes",
            ),
            (
                "update that cannot start",
                json!({"rollout": {"maxSurge": 0, "maxUnavailable": "0%"}}),
                "spec.rollout.maxSurge",
            ),
            (
                "bad surge",
                json!({"rollout": {"maxSurge": "lots"}}),
                "spec.rollout.maxSurge",
            ),
            (
                "PDB that blocks drains",
                json!({"disruption": {"maxUnavailable": 0}}),
                "spec.disruption.maxUnavailable",
            ),
            (
                "PDB percentage zero",
                json!({"disruption": {"maxUnavailable": "0%"}}),
                "spec.disruption.maxUnavailable",
            ),
            (
                "bad annotation key",
                json!({"podAnnotations": {"-bad": "x"}}),
                "spec.podAnnotations[-bad]",
            ),
            (
                "reserved annotation",
                json!({"podAnnotations": {"kbeast.io/config-hash": "x"}}),
                "spec.podAnnotations",
            ),
            (
                "bad node selector key",
                json!({"nodeSelector": {"a/b/c": "x"}}),
                "spec.nodeSelector[a/b/c]",
            ),
            (
                "bad namespace",
                json!({"access": {"allowedNamespaces": ["Prod_NS"]}}),
                "spec.access.allowedNamespaces[0]",
            ),
            (
                "bad priority class",
                json!({"priorityClassName": "High Priority"}),
                "spec.priorityClassName",
            ),
            (
                "bad secret name",
                json!({"auth": {"apiKeysSecretRef": {"name": "Keys!"}}}),
                "spec.auth.apiKeysSecretRef.name",
            ),
            (
                "autoscaling on cpu without a cpu request",
                json!({"autoscaling": {"enabled": true, "maxReplicas": 3}, "resources": {"requests": {"memory": "1Gi"}}}),
                "spec.resources.requests.cpu",
            ),
        ];
        for (case, extra, field) in cases {
            let problems = spec_problems(&with(extra));
            assert!(
                problems.iter().any(|p| p.field == field),
                "{case}: expected a problem on {field}, got {problems:?}"
            );
        }
    }

    #[test]
    fn sound_specs_have_no_problems() {
        let cases = vec![
            json!({}),
            json!({"rollout": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
            json!({"disruption": {"maxUnavailable": "10%"}}),
            json!({"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}}),
            json!({"podAnnotations": {"prometheus.io/scrape": "true"}, "nodeSelector": {"kubernetes.io/arch": "amd64"}}),
            json!({"autoscaling": {"enabled": true, "maxReplicas": 3}}),
        ];
        for extra in cases {
            assert_eq!(spec_problems(&with(extra.clone())), vec![], "{extra}");
        }
    }
}
