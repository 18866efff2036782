//! Writes made by the emulated control plane itself (controller manager, apiextensions
//! server, scheduler): they bypass HTTP but keep managedFields and resourceVersions honest.

use serde_json::{Value, json};

use crate::api::State;
use crate::defaults;
use crate::registry::ResourceType;
use crate::ssa::{self, Writer};
use crate::store::ChangeType;

/// Whether two versions of an object are the same apart from their resourceVersion and the
/// times of their managedFields entries. Compared in place: every controller write asks.
fn same_apart_from_times(a: &Value, b: &Value) -> bool {
    fn entries_except<'a>(object: &'a Value, skip: &[&str]) -> Vec<(&'a String, &'a Value)> {
        object
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .collect()
    }
    fn managed(o: &Value) -> Vec<Vec<(&String, &Value)>> {
        o["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| entries_except(e, &["time"]))
            .collect()
    }
    entries_except(a, &["metadata"]) == entries_except(b, &["metadata"])
        && entries_except(&a["metadata"], &["resourceVersion", "managedFields"])
            == entries_except(&b["metadata"], &["resourceVersion", "managedFields"])
        && managed(a) == managed(b)
}

/// Stores `new` (a create when `old` is `None`) as an Update by `manager`. Returns the stored
/// object, or `old` unchanged when the write would change nothing.
pub fn write_as(
    state: &mut State,
    rt: &ResourceType,
    old: Option<&Value>,
    mut new: Value,
    manager: &str,
    subresource: Option<&str>,
    now: &str,
) -> Value {
    if let Some(obj) = new.as_object_mut() {
        obj.insert("kind".into(), json!(rt.kind));
        obj.insert("apiVersion".into(), json!(rt.api_version()));
    }
    // `old` may be a copy without managedFields (see `controllers::working_copy`): the stored
    // version is what the write is recorded against.
    let key = rt.key();
    let old_full = old.and_then(|o| {
        let meta = &o["metadata"];
        state.store.get(
            &key,
            meta["namespace"].as_str().unwrap_or(""),
            meta["name"].as_str().unwrap_or(""),
        )
    });
    let old_full = old_full.or(old);
    let mut entries = old_full.map(ssa::decode).unwrap_or_default();
    let zero = defaults::zero_object(&rt.kind, rt.is_custom());
    let writer = Writer {
        manager,
        api_version: &rt.api_version(),
        subresource,
        now,
    };
    ssa::record_update(
        &mut entries,
        old.unwrap_or(&zero),
        &new,
        rt.schema(),
        &writer,
    );
    ssa::encode(&mut new, entries);
    if old.is_none() {
        defaults::admit_new(&rt.kind, &mut new);
    }
    if let Some(old) = old_full
        && same_apart_from_times(old, &new)
    {
        return old.clone();
    }
    let rv = state.store.next_resource_version();
    new["metadata"]["resourceVersion"] = json!(rv.to_string());
    let change = if old.is_some() {
        ChangeType::Modified
    } else {
        ChangeType::Added
    };
    state.store.put(&key, new.clone(), change);
    new
}

/// Records a core/v1 Event about `involved`, as controllers do.
pub fn record_event(
    state: &mut State,
    involved: &Value,
    reason: &str,
    message: &str,
    component: &str,
    now: &str,
) {
    let Some(rt) = state.registry.find("", "v1", "events") else {
        return;
    };
    let meta = &involved["metadata"];
    let namespace = meta["namespace"].as_str().unwrap_or("default").to_string();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let event = json!({
        "metadata": {
            "name": format!("{}.{:x}", meta["name"].as_str().unwrap_or(""), nanos),
            "namespace": namespace,
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": now,
        },
        "involvedObject": {
            "kind": involved["kind"],
            "namespace": namespace,
            "name": meta["name"],
            "uid": meta["uid"],
            "apiVersion": involved["apiVersion"],
            "resourceVersion": meta["resourceVersion"],
        },
        "reason": reason,
        "message": message,
        "source": {"component": component},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "type": "Normal",
        "eventTime": null,
        "reportingComponent": component,
        "reportingInstance": "",
    });
    write_as(
        state,
        &rt,
        None,
        event,
        "kube-controller-manager",
        None,
        now,
    );
}

#[cfg(test)]
mod tests {
    use super::same_apart_from_times;
    use serde_json::json;

    #[test]
    fn versions_differing_only_in_times_are_the_same() {
        let a = json!({"metadata": {"name": "x", "resourceVersion": "1",
            "managedFields": [{"manager": "m", "time": "2026-01-01T00:00:00Z", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"replicas": 1}});
        let mut b = a.clone();
        b["metadata"]["resourceVersion"] = json!("2");
        b["metadata"]["managedFields"][0]["time"] = json!("2026-01-01T00:00:09Z");
        assert!(same_apart_from_times(&a, &b));
        for change in [
            json!({"spec": {"replicas": 2}}),
            json!({"metadata": {"labels": {"a": "b"}}}),
            json!({"metadata": {"managedFields": [{"manager": "other", "time": "t", "fieldsV1": {"f:spec": {}}}]}}),
            json!({"status": {}}),
        ] {
            let mut c = a.clone();
            for (k, v) in change.as_object().unwrap() {
                if k == "metadata" {
                    for (mk, mv) in v.as_object().unwrap() {
                        c["metadata"][mk] = mv.clone();
                    }
                } else {
                    c[k] = v.clone();
                }
            }
            assert!(!same_apart_from_times(&a, &c), "{change}");
        }
    }
}
