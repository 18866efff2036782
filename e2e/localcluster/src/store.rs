//! In-memory object storage with one cluster-wide resourceVersion counter and a change log
//! that watches replay from.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

/// Identifies a stored collection: API group and plural resource name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKey {
    pub group: String,
    pub resource: String,
}

impl ResourceKey {
    pub fn new(group: &str, resource: &str) -> Self {
        ResourceKey {
            group: group.to_string(),
            resource: resource.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    pub fn as_str(&self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One committed write. `previous` is what selector-filtered watches compare against.
#[derive(Debug)]
pub struct Change {
    pub resource_version: u64,
    pub key: ResourceKey,
    pub change_type: ChangeType,
    pub object: Value,
    pub previous: Option<Value>,
}

/// How many changes watches can resume from before they get 410 Gone.
pub const DEFAULT_HISTORY_LIMIT: usize = 10_000;

pub struct Store {
    resource_version: u64,
    objects: BTreeMap<ResourceKey, BTreeMap<(String, String), Value>>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Watches from below this version get 410 (set by compaction or history trimming).
    oldest_retained: u64,
    /// Per-resource start of history (custom resources start when their CRD is created).
    resource_history_start: HashMap<ResourceKey, u64>,
    changes: broadcast::Sender<Arc<Change>>,
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        let (changes, _) = broadcast::channel(4096);
        Store {
            resource_version: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit,
            oldest_retained: 0,
            resource_history_start: HashMap::new(),
            changes,
        }
    }

    pub fn current_resource_version(&self) -> u64 {
        self.resource_version
    }

    pub fn next_resource_version(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }

    pub fn get(&self, key: &ResourceKey, namespace: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(key)
            .and_then(|m| m.get(&(namespace.to_string(), name.to_string())))
    }

    /// Objects of a resource in a namespace (`None` = all namespaces), ordered by namespace and name.
    pub fn list(&self, key: &ResourceKey, namespace: Option<&str>) -> Vec<&Value> {
        self.objects
            .get(key)
            .map(|m| {
                m.iter()
                    .filter(|((ns, _), _)| namespace.is_none_or(|n| n == ns))
                    .map(|(_, v)| v)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn all(&self) -> impl Iterator<Item = (&ResourceKey, &Value)> {
        self.objects
            .iter()
            .flat_map(|(k, m)| m.values().map(move |v| (k, v)))
    }

    /// Stores `object` (whose metadata.resourceVersion the caller already set) and records the change.
    pub fn put(&mut self, key: &ResourceKey, object: Value, change_type: ChangeType) {
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let rv = parse_rv(&object);
        let previous = self
            .objects
            .entry(key.clone())
            .or_default()
            .insert((namespace, name), object.clone());
        self.record(key, change_type, object, previous, rv);
    }

    /// Removes an object; the DELETED event carries its last state with a new resourceVersion.
    pub fn remove(&mut self, key: &ResourceKey, namespace: &str, name: &str) -> Option<Value> {
        let removed = self
            .objects
            .get_mut(key)?
            .remove(&(namespace.to_string(), name.to_string()))?;
        let rv = self.next_resource_version();
        let mut last = removed.clone();
        last["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        self.record(key, ChangeType::Deleted, last, Some(removed.clone()), rv);
        Some(removed)
    }

    fn record(
        &mut self,
        key: &ResourceKey,
        change_type: ChangeType,
        object: Value,
        previous: Option<Value>,
        rv: u64,
    ) {
        let change = Arc::new(Change {
            resource_version: rv,
            key: key.clone(),
            change_type,
            object,
            previous,
        });
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.oldest_retained = self.oldest_retained.max(dropped.resource_version);
            }
        }
        // No receivers is fine: nobody watches.
        let _ = self.changes.send(change);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    /// Starts the retained history of a resource now (used when a CRD starts serving it).
    pub fn start_history(&mut self, key: &ResourceKey) {
        let rv = self.resource_version;
        self.resource_history_start.insert(key.clone(), rv);
    }

    /// Continues the counter from a saved state; nothing before it can be watched.
    pub fn restore_resource_version(&mut self, rv: u64) {
        self.resource_version = self.resource_version.max(rv);
        self.compact();
    }

    /// Forgets all history up to the current version, like an etcd compaction.
    pub fn compact(&mut self) {
        self.history.clear();
        self.oldest_retained = self.resource_version;
    }

    /// The oldest resourceVersion a watch on `key` may start from (exclusive lower bound).
    pub fn oldest_watchable(&self, key: &ResourceKey) -> u64 {
        self.oldest_retained
            .max(self.resource_history_start.get(key).copied().unwrap_or(0))
    }

    /// Changes of `key` after `since`, oldest first.
    pub fn changes_since(&self, key: &ResourceKey, since: u64) -> Vec<Arc<Change>> {
        self.history
            .iter()
            .filter(|c| c.resource_version > since && &c.key == key)
            .cloned()
            .collect()
    }
}

pub fn parse_rv(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
