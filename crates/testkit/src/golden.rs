//! The recorded exchanges with a real Kubernetes v1.36 API server in `shared/k8s-golden/`.

use std::path::PathBuf;

use serde_json::Value;

/// Where the recordings are: `$KBEAST_GOLDEN_DIR`, else `shared/k8s-golden` beside the checkout.
pub fn golden_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("KBEAST_GOLDEN_DIR") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/k8s-golden")
}

/// One scenario file, parsed. Panics with a clear message when the recordings are missing.
pub fn scenario(name: &str) -> Value {
    let path = golden_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the k8s-golden recording {}: {e}; set KBEAST_GOLDEN_DIR to the shared/k8s-golden folder",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One step of a scenario, by name.
pub fn step(scenario_name: &str, step_name: &str) -> Value {
    let scenario = scenario(scenario_name);
    scenario["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == step_name)
        .cloned()
        .unwrap_or_else(|| panic!("{scenario_name}.json has no step {step_name:?}"))
}

/// Every request step of a scenario that created an object (201), as (request body, stored object).
pub fn created_objects(scenario_name: &str) -> Vec<(String, Value, Value)> {
    let scenario = scenario(scenario_name);
    scenario["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["response"]["status"] == 201 && s["request"]["body"].is_object())
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_string(),
                s["request"]["body"].clone(),
                s["response"]["body"].clone(),
            )
        })
        .collect()
}

/// Compares generated text with a checked-in snapshot file, or rewrites the file when
/// `KBEAST_UPDATE_GOLDEN` is set.
pub fn check_or_update(path: &std::path::Path, generated: &str, how_to_fix: &str) {
    if std::env::var_os("KBEAST_UPDATE_GOLDEN").is_some() {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("snapshot folder is writable");
        }
        std::fs::write(path, generated).expect("snapshot file is writable");
        return;
    }
    let checked_in = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}; {how_to_fix}", path.display()));
    assert!(
        checked_in == generated,
        "{} is stale; {how_to_fix}",
        path.display()
    );
}
