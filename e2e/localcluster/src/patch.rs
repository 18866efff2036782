//! Patch formats: JSON merge patch, JSON patch, strategic merge patch, and the structural
//! merge used by server-side apply.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::fieldset::item_element_with;
use crate::schema::{ListType, Schema};

pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// RFC 6902 patch. A failed `test` or a bad path is a 422 in Kubernetes.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| {
        ApiError::bad_request(format!(
            "the server rejected our request due to an error in our request: {e}"
        ))
    })?;
    // The API server's JSON-patch library treats a missing value as null, so `test` with a
    // null value passes on a missing path (kube-runtime's finalizer helper relies on it).
    // Ops apply one by one on a copy, so a failing patch changes nothing.
    let mut patched = target.clone();
    for op in ops.0 {
        if let json_patch::PatchOperation::Test(test) = &op
            && test.value.is_null()
            && patched.pointer(test.path.as_str()).is_none()
        {
            continue;
        }
        json_patch::patch(&mut patched, &[op]).map_err(|e| {
            ApiError::new(422, "Invalid", json_patch_message(&e)).with_details(Value::Null)
        })?;
    }
    *target = patched;
    Ok(())
}

fn json_patch_message(e: &json_patch::PatchError) -> String {
    match &e.kind {
        json_patch::PatchErrorKind::TestFailed => format!(
            "the server rejected our request due to an error in our request: testing value {} failed",
            e.path
        ),
        _ => format!("the server rejected our request due to an error in our request: {e}"),
    }
}

/// Strategic merge patch for built-in kinds, guided by `x-kubernetes-patch-*` extensions.
pub fn strategic_merge(target: &mut Value, patch: &Value, schema: Schema<'_>) {
    let Value::Object(patch_map) = patch else {
        *target = strip_directives(patch);
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = strip_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target_map = target.as_object_mut().expect("object");
    for (key, pv) in patch_map {
        if key.starts_with('$') {
            continue;
        }
        let field_schema = schema.field(key);
        match pv {
            Value::Null => {
                target_map.remove(key);
            }
            Value::Object(_) => {
                let entry = target_map.entry(key.clone()).or_insert(Value::Null);
                if field_schema.is_atomic_map() {
                    *entry = strip_directives(pv);
                } else {
                    strategic_merge(entry, pv, field_schema);
                }
            }
            Value::Array(items) => match field_schema.patch_merge_key() {
                Some(merge_key) => {
                    let entry = target_map
                        .entry(key.clone())
                        .or_insert(Value::Array(vec![]));
                    merge_list(entry, items, merge_key, field_schema.items());
                }
                None => {
                    target_map.insert(key.clone(), strip_directives(pv));
                }
            },
            _ => {
                target_map.insert(key.clone(), pv.clone());
            }
        }
    }
}

fn merge_list(target: &mut Value, patch_items: &[Value], merge_key: &str, item_schema: Schema<'_>) {
    if !target.is_array() {
        *target = Value::Array(vec![]);
    }
    let list = target.as_array_mut().expect("array");
    // Items the patch adds go before the existing ones, as the API server orders them.
    let mut added = Vec::new();
    for item in patch_items {
        if merge_key.is_empty() || !item.is_object() {
            // Primitive list with merge strategy: union.
            if !list.contains(item) {
                list.push(item.clone());
            }
            continue;
        }
        let key_value = item.get(merge_key);
        let position = list
            .iter()
            .position(|existing| existing.get(merge_key) == key_value);
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(pos), true) => {
                list.remove(pos);
            }
            (None, true) => {}
            (Some(pos), false) => strategic_merge(&mut list[pos], item, item_schema),
            (None, false) => added.push(strip_directives(item)),
        }
    }
    list.splice(0..0, added);
}

fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// Server-side apply: merges an applied configuration into the live object, following
/// the schema (list-maps by key, sets by value, atomic values replaced).
pub fn apply_merge(live: &mut Value, config: &Value, schema: Schema<'_>) {
    match (live.as_object_mut(), config) {
        (Some(live_map), Value::Object(config_map)) if !schema.is_atomic_map() => {
            for (key, cv) in config_map {
                match live_map.get_mut(key) {
                    Some(lv) => apply_merge(lv, cv, schema.field(key)),
                    None => {
                        live_map.insert(key.clone(), cv.clone());
                    }
                }
            }
        }
        _ => match (live.as_array_mut(), config) {
            (Some(live_items), Value::Array(config_items)) => {
                let list_type = schema.list_type();
                match list_type {
                    ListType::Atomic => *live = config.clone(),
                    ListType::Set => {
                        for item in config_items {
                            if !live_items.contains(item) {
                                live_items.push(item.clone());
                            }
                        }
                    }
                    ListType::Map(_) => {
                        for (i, item) in config_items.iter().enumerate() {
                            let element = item_element_with(&list_type, item, i, schema.items());
                            let pos = live_items.iter().enumerate().position(|(j, l)| {
                                item_element_with(&list_type, l, j, schema.items()) == element
                            });
                            match pos {
                                Some(p) => apply_merge(&mut live_items[p], item, schema.items()),
                                None => live_items.push(item.clone()),
                            }
                        }
                    }
                }
            }
            _ => *live = config.clone(),
        },
    }
}
