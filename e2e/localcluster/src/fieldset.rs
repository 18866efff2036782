//! Field sets in the `FieldsV1` format of `managedFields`, built from objects with a schema.
//!
//! Path elements are kept in their serialized form: `f:name`, `k:{"name":"app"}`,
//! `v:"value"`, `i:0`. A node is a `member` when the field itself is owned; a member
//! with children serializes as `".": {}`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::schema::{ListType, Schema};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSet {
    pub member: bool,
    pub children: BTreeMap<String, FieldSet>,
}

/// Metadata fields nobody owns (structured-merge-diff strips them from every set).
const STRIPPED_METADATA: &[&str] = &[
    "f:name",
    "f:namespace",
    "f:uid",
    "f:resourceVersion",
    "f:generation",
    "f:creationTimestamp",
    "f:managedFields",
    "f:selfLink",
    "f:deletionTimestamp",
    "f:deletionGracePeriodSeconds",
];

impl FieldSet {
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    /// Every path of `value` (all intermediate nodes are members), with ownership-free
    /// fields removed. This is what an object's creation by an Update owns.
    pub fn from_value(value: &Value, schema: Schema<'_>) -> FieldSet {
        let mut set = FieldSet::default();
        add_children(&mut set, value, schema);
        set.strip_unowned();
        set
    }

    fn strip_unowned(&mut self) {
        self.children.remove("f:apiVersion");
        self.children.remove("f:kind");
        if let Some(meta) = self.children.get_mut("f:metadata") {
            meta.member = false;
            for f in STRIPPED_METADATA {
                meta.children.remove(*f);
            }
            if meta.is_empty() {
                self.children.remove("f:metadata");
            }
        }
    }

    /// What an applier owns for its configuration: leaf fields, plus list items
    /// themselves (`k:`/`v:` elements stay members even when they have children).
    pub fn applied(&self) -> FieldSet {
        let mut out = FieldSet::default();
        for (k, child) in &self.children {
            let sub = if child.children.is_empty() {
                leaf()
            } else {
                let mut sub = child.applied();
                sub.member = k.starts_with("k:") || k.starts_with("v:");
                sub
            };
            if !sub.is_empty() {
                out.children.insert(k.clone(), sub);
            }
        }
        out
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.member |= other.member;
        for (k, child) in &other.children {
            let merged = match out.children.get(k) {
                Some(mine) => mine.union(child),
                None => child.clone(),
            };
            out.children.insert(k.clone(), merged);
        }
        out
    }

    /// Paths of `self` that are not members of `other` (children are compared path by path).
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (k, child) in &self.children {
            let sub = match other.children.get(k) {
                Some(o) => child.difference(o),
                None => child.clone(),
            };
            if !sub.is_empty() {
                out.children.insert(k.clone(), sub);
            }
        }
        out
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (k, child) in &self.children {
            if let Some(o) = other.children.get(k) {
                let sub = child.intersection(o);
                if !sub.is_empty() {
                    out.children.insert(k.clone(), sub);
                }
            }
        }
        out
    }

    /// Removes every path at or below the members of `removed`.
    pub fn without_subtrees(&self, removed: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member,
            children: BTreeMap::new(),
        };
        for (k, child) in &self.children {
            match removed.children.get(k) {
                Some(r) if r.member => {}
                Some(r) => {
                    let sub = child.without_subtrees(r);
                    if !sub.is_empty() {
                        out.children.insert(k.clone(), sub);
                    }
                }
                None => {
                    out.children.insert(k.clone(), child.clone());
                }
            }
        }
        out
    }

    /// All member paths, as element lists.
    pub fn paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if self.member && !prefix.is_empty() {
            out.push(prefix.clone());
        }
        for (k, child) in &self.children {
            prefix.push(k.clone());
            child.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    pub fn insert_path(&mut self, path: &[String]) {
        let mut node = self;
        for element in path {
            node = node.children.entry(element.clone()).or_default();
        }
        node.member = true;
    }

    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".into(), Value::Object(Map::new()));
        }
        for (k, child) in &self.children {
            map.insert(k.clone(), child.to_json());
        }
        Value::Object(map)
    }

    pub fn from_json(value: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        if let Some(map) = value.as_object() {
            if map.is_empty() {
                set.member = true;
            }
            for (k, v) in map {
                if k == "." {
                    set.member = true;
                } else {
                    set.children.insert(k.clone(), FieldSet::from_json(v));
                }
            }
        }
        set
    }
}

fn leaf() -> FieldSet {
    FieldSet {
        member: true,
        children: BTreeMap::new(),
    }
}

/// The path element of a list item, or `None` when the list is atomic.
pub fn item_element(list_type: &ListType, item: &Value, index: usize) -> String {
    item_element_with(list_type, item, index, Schema::none())
}

/// Like [`item_element`], filling missing key fields from their schema defaults.
pub fn item_element_with(
    list_type: &ListType,
    item: &Value,
    index: usize,
    item_schema: Schema<'_>,
) -> String {
    match list_type {
        ListType::Map(keys) => {
            let mut key = Map::new();
            let mut sorted = keys.clone();
            sorted.sort();
            for k in sorted {
                if let Some(v) = item.get(&k) {
                    key.insert(k, v.clone());
                } else if let Some(d) = item_schema.field(&k).node().and_then(|n| n.get("default"))
                {
                    key.insert(k, d.clone());
                }
            }
            format!("k:{}", Value::Object(key))
        }
        ListType::Set => format!("v:{item}"),
        ListType::Atomic => format!("i:{index}"),
    }
}

fn add_children(set: &mut FieldSet, value: &Value, schema: Schema<'_>) {
    match value {
        Value::Object(map) if !schema.is_atomic_map() => {
            for (k, v) in map {
                let mut child = leaf();
                add_children(&mut child, v, schema.field(k));
                set.children.insert(format!("f:{k}"), child);
            }
        }
        Value::Array(items) => {
            let list_type = schema.list_type();
            if list_type == ListType::Atomic {
                return;
            }
            let item_schema = schema.items();
            for (i, item) in items.iter().enumerate() {
                let mut child = leaf();
                if matches!(list_type, ListType::Map(_)) {
                    add_children(&mut child, item, item_schema);
                }
                set.children
                    .insert(item_element_with(&list_type, item, i, item_schema), child);
            }
        }
        _ => {}
    }
}

/// What changed between two versions of an object, as field sets.
#[derive(Debug, Default)]
pub struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

impl Comparison {
    pub fn changed(&self) -> FieldSet {
        self.added.union(&self.modified)
    }
}

pub fn compare(old: &Value, new: &Value, schema: Schema<'_>) -> Comparison {
    let mut c = Comparison::default();
    compare_into(old, new, schema, &mut Vec::new(), &mut c);
    c.added.strip_unowned();
    c.modified.strip_unowned();
    c.removed.strip_unowned();
    c
}

fn subtree(value: &Value, schema: Schema<'_>) -> FieldSet {
    let mut s = leaf();
    add_children(&mut s, value, schema);
    s
}

fn graft(target: &mut FieldSet, path: &[String], sub: FieldSet) {
    let mut node = target;
    for element in path {
        node = node.children.entry(element.clone()).or_default();
    }
    *node = node.union(&sub);
}

fn compare_into(
    old: &Value,
    new: &Value,
    schema: Schema<'_>,
    path: &mut Vec<String>,
    c: &mut Comparison,
) {
    // Most of an object is unchanged by a write: compare before building paths into it.
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Null, Value::Object(_)) => {
            compare_into(&Value::Object(Map::new()), new, schema, path, c)
        }
        (Value::Null, Value::Array(_)) => compare_into(&Value::Array(vec![]), new, schema, path, c),
        (Value::Object(o), Value::Object(n)) if !schema.is_atomic_map() => {
            // Nobody owns managedFields (see STRIPPED_METADATA): not worth comparing.
            let in_metadata = path.len() == 1 && path[0] == "f:metadata";
            let unowned = |k: &str| in_metadata && k == "managedFields";
            for (k, nv) in n {
                if unowned(k) {
                    continue;
                }
                path.push(format!("f:{k}"));
                match o.get(k) {
                    Some(ov) => compare_into(ov, nv, schema.field(k), path, c),
                    None => graft(&mut c.added, path, subtree(nv, schema.field(k))),
                }
                path.pop();
            }
            for (k, ov) in o {
                if !n.contains_key(k) && !unowned(k) {
                    path.push(format!("f:{k}"));
                    graft(&mut c.removed, path, subtree(ov, schema.field(k)));
                    path.pop();
                }
            }
        }
        (Value::Array(o), Value::Array(n)) if schema.list_type() != ListType::Atomic => {
            let list_type = schema.list_type();
            let items = schema.items();
            let old_items: BTreeMap<String, &Value> = o
                .iter()
                .enumerate()
                .map(|(i, v)| (item_element_with(&list_type, v, i, items), v))
                .collect();
            let mut seen = std::collections::BTreeSet::new();
            for (i, nv) in n.iter().enumerate() {
                let element = item_element_with(&list_type, nv, i, items);
                path.push(element.clone());
                match old_items.get(&element) {
                    Some(ov) if matches!(list_type, ListType::Map(_)) => {
                        compare_into(ov, nv, items, path, c)
                    }
                    Some(_) => {}
                    None => graft(&mut c.added, path, subtree(nv, items)),
                }
                path.pop();
                seen.insert(element);
            }
            for (element, ov) in old_items {
                if !seen.contains(&element) {
                    path.push(element);
                    graft(&mut c.removed, path, subtree(ov, items));
                    path.pop();
                }
            }
        }
        _ => {
            if old != new {
                graft(&mut c.modified, path, leaf());
            }
        }
    }
}

/// Human form of a path for conflict messages: `.spec.containers[name="app"].image`.
pub fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for element in path {
        if let Some(name) = element.strip_prefix("f:") {
            out.push('.');
            out.push_str(name);
        } else if let Some(key) = element.strip_prefix("k:") {
            let parsed: Value = serde_json::from_str(key).unwrap_or(Value::Null);
            let parts: Vec<String> = parsed
                .as_object()
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = element.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        } else if let Some(i) = element.strip_prefix("i:") {
            out.push_str(&format!("[{i}]"));
        }
    }
    out
}

/// Removes the value at `path` from `value` (used when an applier drops a field it alone owned).
pub fn remove_path(value: &mut Value, path: &[String], schema: Schema<'_>) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if let Some(name) = first.strip_prefix("f:") {
        let Some(map) = value.as_object_mut() else {
            return;
        };
        if rest.is_empty() {
            map.remove(name);
        } else if let Some(child) = map.get_mut(name) {
            remove_path(child, rest, schema.field(name));
        }
        return;
    }
    let list_type = schema.list_type();
    let Some(items) = value.as_array_mut() else {
        return;
    };
    let position = items
        .iter()
        .enumerate()
        .position(|(i, item)| &item_element_with(&list_type, item, i, schema.items()) == first);
    if let Some(pos) = position {
        if rest.is_empty() {
            items.remove(pos);
        } else {
            remove_path(&mut items[pos], rest, schema.items());
        }
    }
}
