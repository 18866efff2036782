//! `metadata.managedFields`: ownership tracking for Update operations and server-side apply
//! (merge, conflicts, force, and removal of fields an applier stops sending).

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::fieldset::{FieldSet, compare, display_path, remove_path};
use crate::patch::apply_merge;
use crate::schema::Schema;

#[derive(Debug, Clone, PartialEq)]
pub struct ManagerEntry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

impl ManagerEntry {
    fn same_identity(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }

    /// How conflicts name this manager: `"a"`, `"c" using v1`, `"h" with subresource "scale"`.
    fn conflict_name(&self, request_api_version: &str) -> String {
        let mut name = format!("\"{}\"", self.manager);
        if let Some(sub) = &self.subresource {
            name.push_str(&format!(" with subresource \"{sub}\""));
        }
        if self.operation == "Update" || self.api_version != request_api_version {
            name.push_str(&format!(" using {}", self.api_version));
        }
        name
    }
}

pub fn decode(object: &Value) -> Vec<ManagerEntry> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| ManagerEntry {
            manager: e["manager"].as_str().unwrap_or("").to_string(),
            operation: e["operation"].as_str().unwrap_or("Update").to_string(),
            api_version: e["apiVersion"].as_str().unwrap_or("").to_string(),
            time: e["time"].as_str().map(String::from),
            subresource: e["subresource"].as_str().map(String::from),
            fields: FieldSet::from_json(&e["fieldsV1"]),
        })
        .collect()
}

/// Writes entries in Kubernetes order (Apply before Update, then time, then manager).
pub fn encode(object: &mut Value, mut entries: Vec<ManagerEntry>) {
    entries.retain(|e| !e.fields.is_empty());
    let time = |e: &ManagerEntry| {
        e.time
            .clone()
            .filter(|_| e.subresource.as_deref() != Some("scale"))
    };
    entries.sort_by(|a, b| {
        a.operation
            .cmp(&b.operation)
            .then(time(a).cmp(&time(b)))
            .then(a.manager.cmp(&b.manager))
    });
    let encoded: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut v = json!({"manager": e.manager, "operation": e.operation, "apiVersion": e.api_version});
            // The real server records no time for writes through /scale.
            if let Some(t) = e.time.as_ref().filter(|_| e.subresource.as_deref() != Some("scale")) {
                v["time"] = json!(t);
            }
            v["fieldsType"] = json!("FieldsV1");
            v["fieldsV1"] = e.fields.to_json();
            if let Some(s) = &e.subresource {
                v["subresource"] = json!(s);
            }
            v
        })
        .collect();
    let meta = object["metadata"].as_object_mut();
    if let Some(meta) = meta {
        if encoded.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(encoded));
        }
    }
}

pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub subresource: Option<&'a str>,
    pub now: &'a str,
}

/// Ownership after a non-apply write: the writer takes every changed field, removed fields
/// leave every set.
pub fn record_update(
    entries: &mut Vec<ManagerEntry>,
    old: &Value,
    new: &Value,
    schema: Schema<'_>,
    w: &Writer<'_>,
) {
    let cmp = compare(old, new, schema);
    let changed = cmp.changed();
    for e in entries.iter_mut() {
        e.fields = e.fields.difference(&changed).without_subtrees(&cmp.removed);
    }
    match entries
        .iter_mut()
        .find(|e| e.same_identity(w.manager, "Update", w.subresource))
    {
        Some(e) => {
            // A write that changes nothing keeps the old time (and so the entry order).
            if !changed.is_empty() || !cmp.removed.is_empty() {
                e.time = Some(w.now.to_string());
            }
            e.fields = e.fields.union(&changed);
            e.api_version = w.api_version.to_string();
        }
        None if !changed.is_empty() => entries.push(ManagerEntry {
            manager: w.manager.to_string(),
            operation: "Update".into(),
            api_version: w.api_version.to_string(),
            time: Some(w.now.to_string()),
            subresource: w.subresource.map(String::from),
            fields: changed,
        }),
        None => {}
    }
}

/// Server-side apply of `config` onto `live` (`Value::Null` when creating). Returns the
/// merged object; `entries` is updated in place.
pub fn apply(
    live: &Value,
    config: &Value,
    schema: Schema<'_>,
    entries: &mut Vec<ManagerEntry>,
    force: bool,
    w: &Writer<'_>,
) -> Result<Value, ApiError> {
    let applied = FieldSet::from_value(config, schema).applied();
    let mut merged = if live.is_null() {
        json!({})
    } else {
        live.clone()
    };
    apply_merge(&mut merged, config, schema);

    let changed = compare(live, &merged, schema).changed();
    let mut conflicts: Vec<(String, Vec<String>)> = Vec::new();
    for e in entries.iter() {
        if e.same_identity(w.manager, "Apply", w.subresource) {
            continue;
        }
        let overlap = e.fields.intersection(&changed).intersection(&applied);
        for path in overlap.paths() {
            conflicts.push((e.conflict_name(w.api_version), path));
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts));
    }
    for e in entries.iter_mut() {
        if !e.same_identity(w.manager, "Apply", w.subresource) {
            e.fields = e.fields.difference(&applied.intersection(&changed));
        }
    }

    // Fields this applier stops sending disappear when nobody else owns them.
    let previous = entries
        .iter()
        .find(|e| e.same_identity(w.manager, "Apply", w.subresource))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others = entries
        .iter()
        .filter(|e| !e.same_identity(w.manager, "Apply", w.subresource))
        .fold(FieldSet::default(), |acc, e| acc.union(&e.fields));
    let dropped = previous.difference(&applied).difference(&others);
    let all = dropped.paths();
    // Removing a list item or map removes its children too: only remove topmost paths.
    let paths: Vec<&Vec<String>> = all
        .iter()
        .filter(|p| !all.iter().any(|q| q.len() < p.len() && p.starts_with(q)))
        .collect();
    for path in paths {
        remove_path(&mut merged, path, schema);
    }

    let unchanged = previous == applied;
    match entries
        .iter_mut()
        .find(|e| e.same_identity(w.manager, "Apply", w.subresource))
    {
        Some(e) => {
            if !unchanged || live != &merged {
                e.time = Some(w.now.to_string());
            }
            e.fields = applied;
            e.api_version = w.api_version.to_string();
        }
        None => entries.push(ManagerEntry {
            manager: w.manager.to_string(),
            operation: "Apply".into(),
            api_version: w.api_version.to_string(),
            time: Some(w.now.to_string()),
            subresource: w.subresource.map(String::from),
            fields: applied,
        }),
    }
    Ok(merged)
}

fn conflict_error(conflicts: &[(String, Vec<String>)]) -> ApiError {
    let n = conflicts.len();
    let text = if n == 1 {
        format!(
            "conflict with {}: {}",
            conflicts[0].0,
            display_path(&conflicts[0].1)
        )
    } else {
        let mut managers: Vec<&String> = conflicts.iter().map(|c| &c.0).collect();
        managers.sort();
        managers.dedup();
        let mut lines = Vec::new();
        for m in managers {
            lines.push(format!("conflicts with {m}:"));
            for (_, p) in conflicts.iter().filter(|c| &c.0 == m) {
                lines.push(format!("- {}", display_path(p)));
            }
        }
        lines.join("\n")
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(m, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m}"), "field": display_path(p)}))
        .collect();
    ApiError::new(
        409,
        "Conflict",
        format!(
            "Apply failed with {n} conflict{}: {text}",
            if n == 1 { "" } else { "s" }
        ),
    )
    .with_details(json!({"causes": causes}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Schema;

    fn writer<'a>(manager: &'a str, subresource: Option<&'a str>, now: &'a str) -> Writer<'a> {
        Writer {
            manager,
            api_version: "v1",
            subresource,
            now,
        }
    }

    #[test]
    fn a_write_that_changes_nothing_keeps_the_entry_time() {
        let old = json!({"metadata": {"name": "x"}, "data": {"a": "1"}});
        let mut entries = Vec::new();
        record_update(
            &mut entries,
            &json!({}),
            &old,
            Schema::none(),
            &writer("m", None, "T1"),
        );
        record_update(
            &mut entries,
            &old,
            &old,
            Schema::none(),
            &writer("m", None, "T2"),
        );
        assert_eq!(entries[0].time.as_deref(), Some("T1"));
    }

    #[test]
    fn update_takes_ownership_and_apply_conflicts_with_it() {
        let old = json!({"metadata": {"name": "x"}, "data": {"a": "1"}});
        let mut entries = Vec::new();
        let w = writer("updater", None, "T1");
        record_update(&mut entries, &json!({}), &old, Schema::none(), &w);
        let config = json!({"metadata": {"name": "x"}, "data": {"a": "2"}});
        let err = apply(
            &old,
            &config,
            Schema::none(),
            &mut entries,
            false,
            &writer("applier", None, "T2"),
        )
        .unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(
            err.message,
            "Apply failed with 1 conflict: conflict with \"updater\" using v1: .data.a"
        );
        let merged = apply(
            &old,
            &config,
            Schema::none(),
            &mut entries,
            true,
            &writer("applier", None, "T2"),
        )
        .unwrap();
        assert_eq!(merged["data"]["a"], "2");
        let updater = entries
            .iter()
            .find(|e| e.manager == "updater")
            .expect("updater keeps its entry");
        assert!(
            !updater
                .fields
                .paths()
                .iter()
                .any(|p| p.last().map(String::as_str) == Some("f:a")),
            "force moves .data.a to the applier"
        );
    }
}
