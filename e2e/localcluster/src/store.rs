//! In-memory object storage with one cluster-wide resourceVersion counter and a change log
//! that watches replay from.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
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

/// Where an object is stored. Orders like [`Store::all`]: resource, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub key: ResourceKey,
    pub namespace: String,
    pub name: String,
}

/// Lookups the garbage collector and the workload controllers make after every write; kept
/// up to date by `put` and `remove` so that they cost O(matches), not O(objects).
#[derive(Debug, Default, PartialEq)]
struct Indexes {
    by_uid: HashMap<String, ObjectRef>,
    /// Owner uid → the objects that list it in their ownerReferences.
    dependents: HashMap<String, BTreeSet<ObjectRef>>,
    /// Owner uids some object refers to but no stored object has.
    dangling: BTreeSet<String>,
    /// Objects with a deletionTimestamp.
    terminating: BTreeSet<ObjectRef>,
    /// (resource, namespace, label key, label value) → names.
    labels: HashMap<(ResourceKey, String, String, String), BTreeSet<String>>,
    /// (resource, namespace) → the pod selectors of its Services or PodDisruptionBudgets.
    pod_selectors: HashMap<(ResourceKey, String), PodSelectors>,
}

/// The pod selectors of one kind in one namespace, so that the objects whose selector may
/// select a given pod are found without testing each.
#[derive(Debug, Default, PartialEq)]
struct PodSelectors {
    /// Plain matchLabels: their keys (sorted) → their values in key order → names.
    by_labels: HashMap<Vec<String>, HashMap<Vec<String>, BTreeSet<String>>>,
    /// Any other selector (matchExpressions, empty): a candidate for every pod.
    other: BTreeSet<String>,
}

/// How an object selects pods, for the `pod_selectors` index.
enum PodSelector<'a> {
    /// Selects no pods (a Service without a selector); not indexed.
    Nothing,
    /// matchLabels alone, every value a string, sorted by key.
    Labels(Vec<(&'a String, &'a str)>),
    Other,
}

fn pod_selector<'a>(key: &ResourceKey, object: &'a Value) -> PodSelector<'a> {
    let match_labels = match (key.group.as_str(), key.resource.as_str()) {
        ("", "services") => match object["spec"]["selector"].as_object() {
            Some(labels) => labels,
            None => return PodSelector::Nothing,
        },
        ("policy", "poddisruptionbudgets") => {
            let selector = &object["spec"]["selector"];
            let expressions = selector["matchExpressions"]
                .as_array()
                .is_some_and(|e| !e.is_empty());
            match selector["matchLabels"].as_object() {
                Some(labels) if !expressions => labels,
                _ => return PodSelector::Other,
            }
        }
        _ => return PodSelector::Nothing,
    };
    let labels: Option<Vec<(&String, &str)>> = match_labels
        .iter()
        .map(|(k, v)| v.as_str().map(|v| (k, v)))
        .collect();
    match labels {
        Some(labels) if !labels.is_empty() => PodSelector::Labels(labels),
        _ => PodSelector::Other,
    }
}

fn split_labels(labels: &[(&String, &str)]) -> (Vec<String>, Vec<String>) {
    labels
        .iter()
        .map(|(k, v)| ((*k).clone(), v.to_string()))
        .unzip()
}

fn owner_uids(object: &Value) -> impl Iterator<Item = &str> {
    object["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str())
}

fn labels(object: &Value) -> impl Iterator<Item = (&String, &str)> {
    object["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| (k, v)))
}

impl Indexes {
    fn add(&mut self, at: &ObjectRef, object: &Value) {
        if let Some(uid) = object["metadata"]["uid"].as_str() {
            self.by_uid.insert(uid.to_string(), at.clone());
            self.dangling.remove(uid);
        }
        for owner in owner_uids(object) {
            self.dependents
                .entry(owner.to_string())
                .or_default()
                .insert(at.clone());
            if !self.by_uid.contains_key(owner) {
                self.dangling.insert(owner.to_string());
            }
        }
        if !object["metadata"]["deletionTimestamp"].is_null() {
            self.terminating.insert(at.clone());
        }
        for (label, value) in labels(object) {
            self.labels
                .entry((
                    at.key.clone(),
                    at.namespace.clone(),
                    label.clone(),
                    value.to_string(),
                ))
                .or_default()
                .insert(at.name.clone());
        }
        let selectors = match pod_selector(&at.key, object) {
            PodSelector::Nothing => return,
            selector => self
                .pod_selectors
                .entry((at.key.clone(), at.namespace.clone()))
                .or_default()
                .with(selector),
        };
        selectors.insert(at.name.clone());
    }

    fn remove(&mut self, at: &ObjectRef, object: &Value) {
        if let Some(uid) = object["metadata"]["uid"].as_str()
            && self.by_uid.get(uid) == Some(at)
        {
            self.by_uid.remove(uid);
            if self.dependents.contains_key(uid) {
                self.dangling.insert(uid.to_string());
            }
        }
        for owner in owner_uids(object) {
            if let Some(set) = self.dependents.get_mut(owner) {
                set.remove(at);
                if set.is_empty() {
                    self.dependents.remove(owner);
                    self.dangling.remove(owner);
                }
            }
        }
        self.terminating.remove(at);
        for (label, value) in labels(object) {
            let entry = (
                at.key.clone(),
                at.namespace.clone(),
                label.clone(),
                value.to_string(),
            );
            if let Some(names) = self.labels.get_mut(&entry) {
                names.remove(&at.name);
                if names.is_empty() {
                    self.labels.remove(&entry);
                }
            }
        }
        let selector = pod_selector(&at.key, object);
        let entry = (at.key.clone(), at.namespace.clone());
        if matches!(selector, PodSelector::Nothing) {
            return;
        }
        let Some(selectors) = self.pod_selectors.get_mut(&entry) else {
            return;
        };
        selectors.remove(selector, &at.name);
        if selectors == &PodSelectors::default() {
            self.pod_selectors.remove(&entry);
        }
    }
}

impl PodSelectors {
    /// The set of names that `selector` belongs in.
    fn with(&mut self, selector: PodSelector<'_>) -> &mut BTreeSet<String> {
        match selector {
            PodSelector::Labels(labels) => {
                let (keys, values) = split_labels(&labels);
                self.by_labels
                    .entry(keys)
                    .or_default()
                    .entry(values)
                    .or_default()
            }
            _ => &mut self.other,
        }
    }

    fn remove(&mut self, selector: PodSelector<'_>, name: &str) {
        let PodSelector::Labels(labels) = selector else {
            self.other.remove(name);
            return;
        };
        let (keys, values) = split_labels(&labels);
        let Some(by_values) = self.by_labels.get_mut(&keys) else {
            return;
        };
        if let Some(names) = by_values.get_mut(&values) {
            names.remove(name);
            if names.is_empty() {
                by_values.remove(&values);
            }
        }
        if by_values.is_empty() {
            self.by_labels.remove(&keys);
        }
    }

    /// Names whose selector may select a pod with `labels`.
    fn selecting<'a>(&'a self, labels: &Value, into: &mut BTreeSet<&'a str>) {
        into.extend(self.other.iter().map(String::as_str));
        for (keys, by_values) in &self.by_labels {
            let values: Option<Vec<String>> = keys
                .iter()
                .map(|k| labels[k.as_str()].as_str().map(str::to_string))
                .collect();
            if let Some(names) = values.and_then(|values| by_values.get(&values)) {
                into.extend(names.iter().map(String::as_str));
            }
        }
    }
}

/// One committed write. `previous` is what selector-filtered watches compare against.
#[derive(Debug)]
pub struct Change {
    pub resource_version: u64,
    pub key: ResourceKey,
    pub change_type: ChangeType,
    /// Shared with the store (and with the next change's `previous`): one copy per version.
    pub object: Arc<Value>,
    pub previous: Option<Arc<Value>>,
}

/// How many changes watches can resume from before they get 410 Gone.
pub const DEFAULT_HISTORY_LIMIT: usize = 10_000;

pub struct Store {
    resource_version: u64,
    objects: BTreeMap<ResourceKey, BTreeMap<(String, String), Arc<Value>>>,
    index: Indexes,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Watches from below this version get 410 (set by compaction or history trimming).
    oldest_retained: u64,
    /// Per-resource start of history (custom resources start when their CRD is created).
    resource_history_start: HashMap<ResourceKey, u64>,
    changes: broadcast::Sender<Arc<Change>>,
    /// Changes trimmed from the history go to a thread that frees them: freeing an object
    /// version is a walk of its whole tree, and the store's lock is held here.
    retired: std::sync::mpsc::Sender<Arc<Change>>,
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        let (changes, _) = broadcast::channel(4096);
        let (retired, to_free) = std::sync::mpsc::channel::<Arc<Change>>();
        std::thread::Builder::new()
            .name("store-free".into())
            .spawn(move || to_free.into_iter().for_each(drop))
            .expect("a thread to free trimmed history");
        Store {
            resource_version: 1,
            objects: BTreeMap::new(),
            index: Indexes::default(),
            history: VecDeque::new(),
            history_limit,
            oldest_retained: 0,
            resource_history_start: HashMap::new(),
            changes,
            retired,
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
        self.get_shared(key, namespace, name).map(|o| &**o)
    }

    /// The stored version itself, shared: for work done outside the lock that must check, back
    /// under it, that the object has not changed since (`Arc::ptr_eq`).
    pub fn get_shared(
        &self,
        key: &ResourceKey,
        namespace: &str,
        name: &str,
    ) -> Option<&Arc<Value>> {
        self.objects
            .get(key)
            .and_then(|m| m.get(&(namespace.to_string(), name.to_string())))
    }

    /// Objects of a resource in a namespace (`None` = all namespaces), ordered by namespace and name.
    pub fn list(&self, key: &ResourceKey, namespace: Option<&str>) -> Vec<&Arc<Value>> {
        let Some(m) = self.objects.get(key) else {
            return Vec::new();
        };
        match namespace {
            None => m.values().collect(),
            // Keys sort by namespace first: one range, not a scan of every namespace.
            Some(ns) => m
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v)
                .collect(),
        }
    }

    pub fn get_ref(&self, at: &ObjectRef) -> Option<&Value> {
        self.get_ref_shared(at).map(|o| &**o)
    }

    fn get_ref_shared(&self, at: &ObjectRef) -> Option<&Arc<Value>> {
        self.objects
            .get(&at.key)?
            .get(&(at.namespace.clone(), at.name.clone()))
    }

    /// Where the object with this uid is stored.
    pub fn find_uid(&self, uid: &str) -> Option<&ObjectRef> {
        self.index.by_uid.get(uid)
    }

    /// The objects of `key` whose uid is one of `uids`, ordered by namespace and name (like
    /// [`Store::list`]). Costs O(uids), not O(objects).
    pub fn with_uids<'a>(
        &self,
        key: &ResourceKey,
        uids: impl IntoIterator<Item = &'a str>,
    ) -> Vec<&Arc<Value>> {
        let mut found: Vec<&ObjectRef> = uids
            .into_iter()
            .filter_map(|uid| self.find_uid(uid))
            .filter(|at| &at.key == key)
            .collect();
        found.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        found.dedup();
        found
            .into_iter()
            .filter_map(|at| self.get_ref_shared(at))
            .collect()
    }

    /// The objects whose ownerReferences name `owner_uid`, ordered like [`Store::all`].
    pub fn dependents(&self, owner_uid: &str) -> impl Iterator<Item = &ObjectRef> {
        self.index.dependents.get(owner_uid).into_iter().flatten()
    }

    /// The objects of `key` whose ownerReferences name `owner_uid`, ordered by namespace and name.
    pub fn dependents_of_kind(&self, key: &ResourceKey, owner_uid: &str) -> Vec<&Arc<Value>> {
        self.dependents(owner_uid)
            .filter(|at| &at.key == key)
            .filter_map(|at| self.get_ref_shared(at))
            .collect()
    }

    /// Owner uids that some object refers to but no stored object has.
    pub fn dangling_owners(&self) -> impl Iterator<Item = &str> {
        self.index.dangling.iter().map(String::as_str)
    }

    /// Objects with a deletionTimestamp, ordered like [`Store::all`].
    pub fn terminating(&self) -> impl Iterator<Item = &ObjectRef> {
        self.index.terminating.iter()
    }

    /// How many objects of `key` in `namespace` are labelled `label=value`.
    pub fn count_labeled(
        &self,
        key: &ResourceKey,
        namespace: &str,
        label: &str,
        value: &str,
    ) -> usize {
        let entry = (
            key.clone(),
            namespace.to_string(),
            label.to_string(),
            value.to_string(),
        );
        self.index.labels.get(&entry).map_or(0, BTreeSet::len)
    }

    /// Objects of `key` in `namespace` labelled `label=value`, ordered by name.
    pub fn labeled(
        &self,
        key: &ResourceKey,
        namespace: &str,
        label: &str,
        value: &str,
    ) -> Vec<&Arc<Value>> {
        let entry = (
            key.clone(),
            namespace.to_string(),
            label.to_string(),
            value.to_string(),
        );
        let Some(names) = self.index.labels.get(&entry) else {
            return Vec::new();
        };
        self.named(key, namespace, names.iter().map(String::as_str))
    }

    /// The stored objects of `key` in `namespace` with these names, in their order.
    fn named<'a>(
        &self,
        key: &ResourceKey,
        namespace: &str,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Vec<&Arc<Value>> {
        names
            .into_iter()
            .filter_map(|name| self.get_shared(key, namespace, name))
            .collect()
    }

    /// The Services or PodDisruptionBudgets (`key`) of `namespace` whose pod selector may select
    /// a pod with `labels` (a pod's metadata.labels), ordered by name: every one whose
    /// matchLabels the labels include, and every one with another kind of selector. Costs
    /// O(distinct matchLabels key sets), not O(objects).
    pub fn selecting_pod(
        &self,
        key: &ResourceKey,
        namespace: &str,
        labels: &Value,
    ) -> Vec<&Arc<Value>> {
        let Some(selectors) = self
            .index
            .pod_selectors
            .get(&(key.clone(), namespace.to_string()))
        else {
            return Vec::new();
        };
        let mut names = BTreeSet::new();
        selectors.selecting(labels, &mut names);
        self.named(key, namespace, names)
    }

    /// Every object in `namespace`, ordered like [`Store::all`].
    pub fn in_namespace(&self, namespace: &str) -> Vec<(&ResourceKey, &Value)> {
        self.objects
            .iter()
            .flat_map(|(k, m)| {
                m.range((namespace.to_string(), String::new())..)
                    .take_while(|((n, _), _)| n == namespace)
                    .map(move |(_, v)| (k, &**v))
            })
            .collect()
    }

    pub fn all(&self) -> impl Iterator<Item = (&ResourceKey, &Value)> {
        self.objects
            .iter()
            .flat_map(|(k, m)| m.values().map(move |v| (k, &**v)))
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
        let at = ObjectRef {
            key: key.clone(),
            namespace: namespace.clone(),
            name: name.clone(),
        };
        let object = Arc::new(object);
        let previous = self
            .objects
            .entry(key.clone())
            .or_default()
            .insert((namespace, name), object.clone());
        if let Some(previous) = &previous {
            self.index.remove(&at, previous);
        }
        self.index.add(&at, &object);
        self.record(key, change_type, object, previous, rv);
    }

    /// Removes an object; the DELETED event carries its last state with a new resourceVersion.
    pub fn remove(&mut self, key: &ResourceKey, namespace: &str, name: &str) -> Option<Arc<Value>> {
        let removed = self
            .objects
            .get_mut(key)?
            .remove(&(namespace.to_string(), name.to_string()))?;
        let at = ObjectRef {
            key: key.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        self.index.remove(&at, &removed);
        let rv = self.next_resource_version();
        let mut last = (*removed).clone();
        last["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        self.record(
            key,
            ChangeType::Deleted,
            Arc::new(last),
            Some(removed.clone()),
            rv,
        );
        Some(removed)
    }

    fn record(
        &mut self,
        key: &ResourceKey,
        change_type: ChangeType,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
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
                // Freed there, or here if that thread is gone.
                let _ = self.retired.send(dropped);
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pods() -> ResourceKey {
        ResourceKey::new("", "pods")
    }

    fn replicasets() -> ResourceKey {
        ResourceKey::new("apps", "replicasets")
    }

    fn object(ns: &str, name: &str, uid: &str, owners: &[&str], labels: Value) -> Value {
        let refs: Vec<Value> = owners.iter().map(|o| json!({"uid": o})).collect();
        json!({"metadata": {"namespace": ns, "name": name, "uid": uid, "labels": labels,
            "ownerReferences": refs, "resourceVersion": "1"}})
    }

    /// The indexes as they would be built from scratch over what is stored now.
    fn rebuilt(store: &Store) -> Indexes {
        let mut index = Indexes::default();
        for (key, objects) in &store.objects {
            for ((namespace, name), object) in objects {
                let at = ObjectRef {
                    key: key.clone(),
                    namespace: namespace.clone(),
                    name: name.clone(),
                };
                index.add(&at, object);
            }
        }
        index
    }

    fn names(objects: Vec<&Arc<Value>>) -> Vec<&str> {
        objects
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap_or(""))
            .collect()
    }

    fn dependents(store: &Store, owner: &str) -> Vec<String> {
        store.dependents(owner).map(|at| at.name.clone()).collect()
    }

    #[test]
    fn with_uids_finds_the_objects_of_one_kind_in_list_order() {
        let mut store = Store::new(100);
        for (ns, name, uid) in [
            ("b", "rs-1", "u-1"),
            ("a", "rs-2", "u-2"),
            ("a", "rs-3", "u-3"),
        ] {
            store.put(
                &replicasets(),
                object(ns, name, uid, &[], json!({})),
                ChangeType::Added,
            );
        }
        store.put(
            &pods(),
            object("a", "pod-1", "u-pod", &["u-2"], json!({})),
            ChangeType::Added,
        );
        let uids = ["u-1", "u-pod", "u-missing", "u-2", "u-1"];
        assert_eq!(
            names(store.with_uids(&replicasets(), uids)),
            ["rs-2", "rs-1"],
            "ReplicaSets only, each once, by namespace then name"
        );
        let scanned: Vec<&Arc<Value>> = store
            .list(&replicasets(), None)
            .into_iter()
            .filter(|o| uids.contains(&o["metadata"]["uid"].as_str().unwrap_or("")))
            .collect();
        assert_eq!(store.with_uids(&replicasets(), uids), scanned);
    }

    #[test]
    fn indexes_follow_creates_updates_and_deletes() {
        let mut store = Store::new(100);
        let check = |store: &Store, step: &str| {
            assert_eq!(store.index, rebuilt(store), "indexes after {step}");
        };
        // A dependent stored before its owner refers to a missing owner until the owner exists.
        store.put(
            &pods(),
            object("a", "pod-1", "u-pod-1", &["u-rs"], json!({"app": "x"})),
            ChangeType::Added,
        );
        check(&store, "a dependent of a missing owner");
        assert_eq!(store.dangling_owners().collect::<Vec<_>>(), ["u-rs"]);
        store.put(
            &replicasets(),
            object("a", "rs", "u-rs", &[], json!({"app": "x"})),
            ChangeType::Added,
        );
        check(&store, "its owner");
        assert_eq!(store.dangling_owners().count(), 0);
        assert_eq!(dependents(&store, "u-rs"), ["pod-1"]);
        assert_eq!(names(store.dependents_of_kind(&pods(), "u-rs")), ["pod-1"]);
        assert_eq!(store.dependents_of_kind(&replicasets(), "u-rs").len(), 0);
        assert_eq!(names(store.labeled(&pods(), "a", "app", "x")), ["pod-1"]);
        assert_eq!(
            store.find_uid("u-rs").map(|at| at.name.as_str()),
            Some("rs")
        );

        // An update that changes owners, labels and deletionTimestamp moves the entries.
        let mut moved = object("a", "pod-1", "u-pod-1", &["u-other"], json!({"app": "y"}));
        moved["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        store.put(&pods(), moved, ChangeType::Modified);
        check(&store, "an update");
        assert_eq!(dependents(&store, "u-rs"), Vec::<String>::new());
        assert_eq!(dependents(&store, "u-other"), ["pod-1"]);
        assert_eq!(store.dangling_owners().collect::<Vec<_>>(), ["u-other"]);
        assert_eq!(store.labeled(&pods(), "a", "app", "x").len(), 0);
        assert_eq!(names(store.labeled(&pods(), "a", "app", "y")), ["pod-1"]);
        assert_eq!(store.labeled(&pods(), "b", "app", "y").len(), 0);
        assert_eq!(
            store
                .terminating()
                .map(|at| at.name.as_str())
                .collect::<Vec<_>>(),
            ["pod-1"]
        );

        // Deleting an owner with dependents leaves them dangling; deleting them clears it.
        store.put(
            &pods(),
            object("a", "pod-1", "u-pod-1", &["u-rs"], json!({"app": "x"})),
            ChangeType::Modified,
        );
        store.put(
            &pods(),
            object("b", "pod-2", "u-pod-2", &["u-rs", "u-pod-1"], json!({})),
            ChangeType::Added,
        );
        check(&store, "a second dependent");
        assert_eq!(dependents(&store, "u-rs"), ["pod-1", "pod-2"]);
        assert_eq!(store.terminating().count(), 0);
        store.remove(&replicasets(), "a", "rs");
        check(&store, "deleting the owner");
        assert_eq!(store.dangling_owners().collect::<Vec<_>>(), ["u-rs"]);
        assert_eq!(store.find_uid("u-rs"), None);
        store.remove(&pods(), "a", "pod-1");
        check(&store, "deleting a dependent that is also an owner");
        assert_eq!(
            store.dangling_owners().collect::<Vec<_>>(),
            ["u-pod-1", "u-rs"]
        );
        store.remove(&pods(), "b", "pod-2");
        check(&store, "deleting the last dependent");
        assert_eq!(store.dangling_owners().count(), 0);
        assert_eq!(store.index, Indexes::default());
    }

    #[test]
    fn selecting_pod_finds_the_services_and_pdbs_whose_selector_may_match() {
        let services = ResourceKey::new("", "services");
        let pdbs = ResourceKey::new("policy", "poddisruptionbudgets");
        let with_spec = |ns: &str, name: &str, spec: Value| {
            // A PDB's selector is a LabelSelector: its uid differs from the Service's of that name.
            let kind = match spec["selector"].get("matchLabels").is_some()
                || spec["selector"].get("matchExpressions").is_some()
            {
                true => "pdb",
                false => "svc",
            };
            let mut o = object(ns, name, &format!("u-{kind}-{ns}-{name}"), &[], json!({}));
            o["spec"] = spec;
            o
        };
        let mut store = Store::new(100);
        for (ns, name, selector) in [
            ("a", "web", json!({"app": "web"})),
            ("a", "web-blue", json!({"app": "web", "track": "blue"})),
            ("a", "db", json!({"app": "db"})),
            ("b", "web", json!({"app": "web"})),
            ("a", "empty", json!({})),
        ] {
            store.put(
                &services,
                with_spec(ns, name, json!({"selector": selector})),
                ChangeType::Added,
            );
        }
        store.put(
            &services,
            with_spec("a", "external", json!({"type": "ExternalName"})),
            ChangeType::Added,
        );
        store.put(
            &pdbs,
            with_spec(
                "a",
                "web",
                json!({"selector": {"matchLabels": {"app": "web"}}}),
            ),
            ChangeType::Added,
        );
        store.put(
            &pdbs,
            with_spec(
                "a",
                "any-track",
                json!({"selector": {"matchExpressions":
                [{"key": "track", "operator": "Exists"}]}}),
            ),
            ChangeType::Added,
        );
        assert_eq!(store.index, rebuilt(&store));
        let pod = json!({"app": "web", "track": "blue", "pod-template-hash": "abc"});
        assert_eq!(
            names(store.selecting_pod(&services, "a", &pod)),
            ["empty", "web", "web-blue"],
            "every subset of the pod's labels, and the empty selector; not db, not namespace b"
        );
        assert_eq!(
            names(store.selecting_pod(&services, "a", &json!({"app": "web"}))),
            ["empty", "web"]
        );
        assert_eq!(
            names(store.selecting_pod(&pdbs, "a", &json!({"app": "db"}))),
            ["any-track"],
            "matchExpressions are left to the caller"
        );
        assert_eq!(store.selecting_pod(&services, "c", &pod).len(), 0);

        // A changed selector moves the entry; deletes empty the index.
        store.put(
            &services,
            with_spec("a", "web", json!({"selector": {"app": "db"}})),
            ChangeType::Modified,
        );
        assert_eq!(store.index, rebuilt(&store));
        assert_eq!(
            names(store.selecting_pod(&services, "a", &json!({"app": "db"}))),
            ["db", "empty", "web"]
        );
        for (key, ns, name) in [
            (&services, "a", "web"),
            (&services, "a", "web-blue"),
            (&services, "a", "db"),
            (&services, "b", "web"),
            (&services, "a", "empty"),
            (&services, "a", "external"),
            (&pdbs, "a", "web"),
            (&pdbs, "a", "any-track"),
        ] {
            store.remove(key, ns, name);
        }
        assert_eq!(store.index, Indexes::default());
    }

    #[test]
    fn list_in_a_namespace_is_that_namespace_only() {
        let mut store = Store::new(100);
        for (ns, name) in [("a", "x"), ("ab", "x"), ("b", "y"), ("a", "z"), ("", "c")] {
            store.put(
                &pods(),
                object(ns, name, &format!("{ns}/{name}"), &[], json!({})),
                ChangeType::Added,
            );
        }
        assert_eq!(names(store.list(&pods(), Some("a"))), ["x", "z"]);
        assert_eq!(names(store.list(&pods(), Some("ab"))), ["x"]);
        assert_eq!(names(store.list(&pods(), Some(""))), ["c"]);
        assert_eq!(store.list(&pods(), Some("c")).len(), 0);
        assert_eq!(store.list(&pods(), None).len(), 5);
        let in_a: Vec<&str> = store
            .in_namespace("a")
            .into_iter()
            .map(|(_, o)| o["metadata"]["name"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(in_a, ["x", "z"]);
    }
}
