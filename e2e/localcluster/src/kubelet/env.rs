//! A container's environment and command line as the kubelet builds them: `envFrom`, then
//! `env` (values, `valueFrom` Secret/ConfigMap keys and downward API fields), `$(VAR)`
//! expansion in env values, command and args.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::Value;

use super::ObjectSource;

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const BUILTIN_MODEL_DIR: &str = "KBEAST_BUILTIN_MODEL_DIR";

/// A Secret's or ConfigMap's keys as bytes (Secret `data` is base64).
pub fn object_data(object: &Value, secret: bool) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let b64 = base64::engine::general_purpose::STANDARD;
    for (k, v) in object["data"].as_object().into_iter().flatten() {
        let text = v.as_str().unwrap_or("");
        let bytes = if secret {
            b64.decode(text).unwrap_or_default()
        } else {
            text.as_bytes().to_vec()
        };
        out.insert(k.clone(), bytes);
    }
    if !secret {
        for (k, v) in object["binaryData"].as_object().into_iter().flatten() {
            out.insert(
                k.clone(),
                b64.decode(v.as_str().unwrap_or("")).unwrap_or_default(),
            );
        }
    }
    out
}

/// The value of a downward API `fieldPath`.
pub fn field_value(pod: &Value, path: &str, pod_ip: &str, host_ip: &str) -> Result<String, String> {
    let meta = &pod["metadata"];
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    let map_entry = |field: &str, rest: &str| -> Option<String> {
        let key = rest.strip_prefix("['")?.strip_suffix("']")?;
        Some(text(&meta[field][key]))
    };
    let all = |field: &str| -> String {
        meta[field]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}=\"{}\"", v.as_str().unwrap_or("")))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(match path {
        "metadata.name" => text(&meta["name"]),
        "metadata.namespace" => text(&meta["namespace"]),
        "metadata.uid" => text(&meta["uid"]),
        "metadata.labels" => all("labels"),
        "metadata.annotations" => all("annotations"),
        "spec.nodeName" => text(&pod["spec"]["nodeName"]),
        "spec.serviceAccountName" => text(&pod["spec"]["serviceAccountName"]),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        other => {
            if let Some(rest) = other.strip_prefix("metadata.labels")
                && let Some(v) = map_entry("labels", rest)
            {
                return Ok(v);
            }
            if let Some(rest) = other.strip_prefix("metadata.annotations")
                && let Some(v) = map_entry("annotations", rest)
            {
                return Ok(v);
            }
            return Err(format!("unsupported fieldPath: {other}"));
        }
    })
}

/// Kubernetes' `$(VAR)` expansion: defined names are replaced, `$$` escapes, anything else
/// is kept as written.
pub fn expand(input: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('(')
            && let Some(end) = tail.find(')')
        {
            let name = &tail[..end];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn key_ref(
    objects: &dyn ObjectSource,
    namespace: &str,
    selector: &Value,
    secret: bool,
) -> Result<Option<String>, String> {
    let (plural, kind) = if secret {
        ("secrets", "Secret")
    } else {
        ("configmaps", "ConfigMap")
    };
    let name = selector["name"].as_str().unwrap_or("");
    let key = selector["key"].as_str().unwrap_or("");
    let optional = selector["optional"] == Value::Bool(true);
    let Some(object) = objects.core_object(plural, namespace, name) else {
        return if optional {
            Ok(None)
        } else {
            Err(format!("{} \"{name}\" not found", kind.to_lowercase()))
        };
    };
    match object_data(&object, secret).get(key) {
        Some(v) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
        None if optional => Ok(None),
        None => Err(format!(
            "couldn't find key {key} in {kind} {namespace}/{name}"
        )),
    }
}

/// The process environment of `container` (ordered; later entries win), or the kubelet's
/// `CreateContainerConfigError` message.
pub fn container_env(
    objects: &dyn ObjectSource,
    pod: &Value,
    container: &Value,
    pod_ip: &str,
    host_ip: &str,
) -> Result<Vec<(String, String)>, String> {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut set = |vars: &mut BTreeMap<String, String>, k: String, v: String| {
        if !vars.contains_key(&k) {
            order.push(k.clone());
        }
        vars.insert(k, v);
    };
    set(&mut vars, "PATH".into(), PATH.into());
    set(
        &mut vars,
        "HOSTNAME".into(),
        pod["metadata"]["name"].as_str().unwrap_or("").into(),
    );
    for (key, value) in objects.api_server_env() {
        set(&mut vars, key, value);
    }
    // The query image's own ENV: where its built-in embedding model lies. Here the weights are
    // on the host, where scripts/fetch-minilm.sh put them.
    if let Ok(dir) = std::env::var(BUILTIN_MODEL_DIR) {
        set(&mut vars, BUILTIN_MODEL_DIR.into(), dir);
    }
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let prefix = source["prefix"].as_str().unwrap_or("");
        let (selector, secret, plural) = if source["secretRef"].is_object() {
            (&source["secretRef"], true, "secrets")
        } else {
            (&source["configMapRef"], false, "configmaps")
        };
        let name = selector["name"].as_str().unwrap_or("");
        match objects.core_object(plural, namespace, name) {
            Some(object) => {
                for (k, v) in object_data(&object, secret) {
                    set(
                        &mut vars,
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v).into_owned(),
                    );
                }
            }
            None if selector["optional"] == Value::Bool(true) => {}
            None => {
                let kind = if secret { "secret" } else { "configmap" };
                return Err(format!("{kind} \"{name}\" not found"));
            }
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap_or("").to_string();
        let from = &var["valueFrom"];
        let value = if from.is_object() {
            if from["secretKeyRef"].is_object() {
                key_ref(objects, namespace, &from["secretKeyRef"], true)?
            } else if from["configMapKeyRef"].is_object() {
                key_ref(objects, namespace, &from["configMapKeyRef"], false)?
            } else if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
                Some(field_value(pod, path, pod_ip, host_ip)?)
            } else {
                return Err(format!(
                    "env {name}: valueFrom source not supported by the local pod runner"
                ));
            }
        } else {
            Some(expand(var["value"].as_str().unwrap_or(""), &vars))
        };
        if let Some(value) = value {
            set(&mut vars, name, value);
        }
    }
    Ok(order
        .into_iter()
        .map(|k| {
            let v = vars.remove(&k).unwrap_or_default();
            (k, v)
        })
        .collect())
}

/// `command`/`args` with `$(VAR)` expanded against the container's environment.
pub fn expand_all(items: &Value, env: &[(String, String)]) -> Option<Vec<String>> {
    let vars: BTreeMap<String, String> = env.iter().cloned().collect();
    items.as_array().map(|a| {
        a.iter()
            .map(|s| expand(s.as_str().unwrap_or(""), &vars))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let vars = BTreeMap::from([("A".to_string(), "x".to_string())]);
        for (input, want) in [
            ("$(A)", "x"),
            ("pre-$(A)-post", "pre-x-post"),
            ("$(B)", "$(B)"),
            ("$$(A)", "$(A)"),
            ("$A", "$A"),
            ("$(A", "$(A"),
            ("cost: 5$", "cost: 5$"),
        ] {
            assert_eq!(expand(input, &vars), want, "{input}");
        }
    }
}
