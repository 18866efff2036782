//! Writes made by the emulated control plane itself (controller manager, apiextensions
//! server, scheduler): they bypass HTTP but keep managedFields and resourceVersions honest.

use serde_json::{Value, json};

use crate::api::State;
use crate::defaults;
use crate::registry::ResourceType;
use crate::ssa::{self, Writer};
use crate::store::ChangeType;

fn without_times(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(entries) = o["metadata"]["managedFields"].as_array_mut() {
        for e in entries.iter_mut().filter_map(Value::as_object_mut) {
            e.remove("time");
        }
    }
    if let Some(m) = o["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    o
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
    let mut entries = old.map(ssa::decode).unwrap_or_default();
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
    if let Some(old) = old
        && without_times(old) == without_times(&new)
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
    state.store.put(&rt.key(), new.clone(), change);
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
