//! Pod volumes on disk: emptyDir under the pod's directory, Secret / ConfigMap / projected /
//! downwardAPI contents written as files (and rewritten when the objects change), PVCs in a
//! directory keyed by claim name and uid that outlives pods, hostPath as is.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::ObjectSource;
use super::env::{field_value, object_data};

/// Files of a projected volume: relative path → (contents, mode).
type Files = BTreeMap<String, (Vec<u8>, u32)>;

/// The pod's volumes: name → directory (or file, for hostPath files).
pub type VolumeDirs = BTreeMap<String, PathBuf>;

/// Whether a volume's contents come from API objects (and follow their changes).
fn is_projection(volume: &Value) -> bool {
    ["secret", "configMap", "projected", "downwardAPI"]
        .iter()
        .any(|k| volume[*k].is_object())
}

fn mode(v: &Value, default: u32) -> u32 {
    v.as_u64().map(|m| m as u32).unwrap_or(default)
}

/// Keys of a Secret or ConfigMap as files (`items` selects and renames).
fn key_files(
    objects: &dyn ObjectSource,
    namespace: &str,
    source: &Value,
    name: &str,
    secret: bool,
    default_mode: u32,
    files: &mut Files,
) -> Result<(), String> {
    let plural = if secret { "secrets" } else { "configmaps" };
    let optional = source["optional"] == Value::Bool(true);
    let Some(object) = objects.core_object(plural, namespace, name) else {
        if optional {
            return Ok(());
        }
        let kind = if secret { "secret" } else { "configmap" };
        return Err(format!("{kind} \"{name}\" not found"));
    };
    let data = object_data(&object, secret);
    match source["items"].as_array() {
        Some(items) => {
            for item in items {
                let key = item["key"].as_str().unwrap_or("");
                let path = item["path"].as_str().unwrap_or(key);
                match data.get(key) {
                    Some(bytes) => {
                        files.insert(
                            path.to_string(),
                            (bytes.clone(), mode(&item["mode"], default_mode)),
                        );
                    }
                    None if optional => {}
                    None => {
                        return Err(format!(
                            "configmap references non-existent config key: {key}"
                        ));
                    }
                }
            }
        }
        None => {
            for (k, v) in data {
                files.insert(k, (v, default_mode));
            }
        }
    }
    Ok(())
}

fn downward_files(
    pod: &Value,
    items: &Value,
    default_mode: u32,
    pod_ip: &str,
    host_ip: &str,
    files: &mut Files,
) -> Result<(), String> {
    for item in items.as_array().into_iter().flatten() {
        let path = item["path"].as_str().unwrap_or("");
        let Some(field) = item["fieldRef"]["fieldPath"].as_str() else {
            return Err(format!(
                "downwardAPI item {path}: only fieldRef is supported by the local pod runner"
            ));
        };
        let value = field_value(pod, field, pod_ip, host_ip)?;
        files.insert(
            path.to_string(),
            (value.into_bytes(), mode(&item["mode"], default_mode)),
        );
    }
    Ok(())
}

/// The files a projection volume should hold now.
fn projection_files(
    objects: &dyn ObjectSource,
    pod: &Value,
    volume: &Value,
    pod_ip: &str,
    host_ip: &str,
) -> Result<Files, String> {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let mut files = Files::new();
    if let Some(s) = volume["secret"].as_object().map(|_| &volume["secret"]) {
        let name = s["secretName"].as_str().unwrap_or("");
        key_files(
            objects,
            namespace,
            s,
            name,
            true,
            mode(&s["defaultMode"], 0o644),
            &mut files,
        )?;
    } else if volume["configMap"].is_object() {
        let c = &volume["configMap"];
        let name = c["name"].as_str().unwrap_or("");
        key_files(
            objects,
            namespace,
            c,
            name,
            false,
            mode(&c["defaultMode"], 0o644),
            &mut files,
        )?;
    } else if volume["downwardAPI"].is_object() {
        let d = &volume["downwardAPI"];
        downward_files(
            pod,
            &d["items"],
            mode(&d["defaultMode"], 0o644),
            pod_ip,
            host_ip,
            &mut files,
        )?;
    } else if volume["projected"].is_object() {
        let p = &volume["projected"];
        let default_mode = mode(&p["defaultMode"], 0o644);
        for source in p["sources"].as_array().into_iter().flatten() {
            if source["secret"].is_object() {
                let s = &source["secret"];
                key_files(
                    objects,
                    namespace,
                    s,
                    s["name"].as_str().unwrap_or(""),
                    true,
                    default_mode,
                    &mut files,
                )?;
            } else if source["configMap"].is_object() {
                let c = &source["configMap"];
                key_files(
                    objects,
                    namespace,
                    c,
                    c["name"].as_str().unwrap_or(""),
                    false,
                    default_mode,
                    &mut files,
                )?;
            } else if source["downwardAPI"].is_object() {
                downward_files(
                    pod,
                    &source["downwardAPI"]["items"],
                    default_mode,
                    pod_ip,
                    host_ip,
                    &mut files,
                )?;
            } else if source["serviceAccountToken"].is_object() {
                let path = source["serviceAccountToken"]["path"]
                    .as_str()
                    .unwrap_or("token");
                let token = objects.service_account_token(pod).ok_or_else(|| {
                    format!(
                        "no token for service account {:?}",
                        pod["spec"]["serviceAccountName"]
                    )
                })?;
                files.insert(path.to_string(), (token, default_mode));
            }
        }
    }
    Ok(files)
}

/// Makes `dir` hold exactly `files`, writing only what changed (each file atomically, so a
/// reader never sees half a file).
fn sync_files(dir: &Path, files: &Files) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (path, (contents, file_mode)) in files {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let same = std::fs::read(&target).is_ok_and(|old| &old == contents);
        if !same {
            let tmp = target.with_file_name(format!(
                "..tmp.{}",
                target
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("file")
            ));
            std::fs::write(&tmp, contents)?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(*file_mode))?;
            std::fs::rename(&tmp, &target)?;
        }
    }
    remove_extra(dir, dir, files)
}

fn remove_extra(root: &Path, dir: &Path, files: &Files) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            remove_extra(root, &path, files)?;
            continue;
        }
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        if !files.contains_key(&rel) {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Where a pod's volumes live.
pub struct Layout {
    pub pod_dir: PathBuf,
    pub pvc_root: PathBuf,
}

/// Prepares every volume of the pod; the error is the reason it cannot start yet.
pub fn materialise(
    objects: &dyn ObjectSource,
    pod: &Value,
    layout: &Layout,
    pod_ip: &str,
    host_ip: &str,
) -> Result<VolumeDirs, String> {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let mut dirs = VolumeDirs::new();
    for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let name = volume["name"].as_str().unwrap_or("");
        let local = layout.pod_dir.join("volumes").join(name);
        let dir = if volume["emptyDir"].is_object() {
            std::fs::create_dir_all(&local).map_err(|e| e.to_string())?;
            local
        } else if is_projection(volume) {
            let files = projection_files(objects, pod, volume, pod_ip, host_ip)?;
            sync_files(&local, &files).map_err(|e| format!("volume {name}: {e}"))?;
            local
        } else if let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() {
            let Some(pvc) = objects.core_object("persistentvolumeclaims", namespace, claim) else {
                return Err(format!("persistentvolumeclaim \"{claim}\" not found"));
            };
            if pvc["status"]["phase"] != "Bound" {
                return Err(format!(
                    "pod has unbound immediate PersistentVolumeClaims (\"{claim}\")"
                ));
            }
            let uid = pvc["metadata"]["uid"].as_str().unwrap_or("");
            let dir = layout
                .pvc_root
                .join(namespace)
                .join(format!("{claim}-{uid}"));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            dir
        } else if let Some(path) = volume["hostPath"]["path"].as_str() {
            let path = PathBuf::from(path);
            if !path.exists() && volume["hostPath"]["type"] == "DirectoryOrCreate" {
                std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
            }
            path
        } else {
            return Err(format!(
                "volume {name}: this volume type is not supported by the local pod runner"
            ));
        };
        dirs.insert(name.to_string(), dir);
    }
    Ok(dirs)
}

/// Rewrites the object-backed volumes (Secret, ConfigMap, projected, downwardAPI) from the
/// current objects, like the kubelet's periodic sync; a deleted object keeps the old files.
pub fn refresh(
    objects: &dyn ObjectSource,
    pod: &Value,
    layout: &Layout,
    pod_ip: &str,
    host_ip: &str,
) {
    for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        if !is_projection(volume) {
            continue;
        }
        let name = volume["name"].as_str().unwrap_or("");
        if let Ok(files) = projection_files(objects, pod, volume, pod_ip, host_ip) {
            let dir = layout.pod_dir.join("volumes").join(name);
            if let Err(e) = sync_files(&dir, &files) {
                tracing::warn!(volume = name, "refreshing a volume: {e}");
            }
        }
    }
}

/// The bind mounts of a container.
pub fn container_mounts(
    container: &Value,
    dirs: &VolumeDirs,
) -> Result<Vec<super::launch::Mount>, String> {
    let mut mounts = Vec::new();
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or("");
        let Some(dir) = dirs.get(name) else {
            return Err(format!("volumeMount {name}: no volume of that name"));
        };
        let mut source = dir.clone();
        if let Some(sub) = m["subPath"].as_str().filter(|s| !s.is_empty()) {
            source = source.join(sub);
            if !source.exists() {
                std::fs::create_dir_all(&source).map_err(|e| e.to_string())?;
            }
        }
        mounts.push(super::launch::Mount {
            source,
            target: PathBuf::from(m["mountPath"].as_str().unwrap_or("")),
            read_only: m["readOnly"] == Value::Bool(true),
        });
    }
    Ok(mounts)
}
