//! `--data-dir`: the cluster's objects saved as one JSON snapshot on stop and loaded on
//! start, so a restarted emulator keeps its state (watch history does not survive: clients
//! resuming from an old resourceVersion get 410 Gone and re-list, as after a compaction).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::api::State;
use crate::registry::{Registry, crd_resource_types};
use crate::store::{ChangeType, ResourceKey, Store};

fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join("localcluster-state.json")
}

pub fn save(state: &State, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let objects: Vec<Value> = state
        .store
        .all()
        .map(
            |(key, object)| json!({"group": key.group, "resource": key.resource, "object": object}),
        )
        .collect();
    let snapshot =
        json!({"resourceVersion": state.store.current_resource_version(), "objects": objects});
    let path = snapshot_path(dir);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&snapshot)?)?;
    std::fs::rename(tmp, path)
}

/// The saved state, if the directory holds a snapshot.
pub fn load(dir: &Path, history_limit: usize) -> std::io::Result<Option<State>> {
    let path = snapshot_path(dir);
    if !path.exists() {
        return Ok(None);
    }
    let snapshot: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let mut state = State {
        store: Store::new(history_limit),
        registry: Registry::builtin(),
        graceful_pod_deletion: false,
    };
    for entry in snapshot["objects"].as_array().into_iter().flatten() {
        let key = ResourceKey::new(
            entry["group"].as_str().unwrap_or(""),
            entry["resource"].as_str().unwrap_or(""),
        );
        let object = entry["object"].clone();
        if key.group == "apiextensions.k8s.io" && key.resource == "customresourcedefinitions" {
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            state
                .registry
                .set_crd_types(&name, crd_resource_types(&object));
        }
        state.store.put(&key, object, ChangeType::Added);
    }
    state
        .store
        .restore_resource_version(snapshot["resourceVersion"].as_u64().unwrap_or(1));
    Ok(Some(state))
}
