//! Workload controllers of the emulated controller manager and scheduler: Deployment →
//! ReplicaSet → Pods (rolling updates), a scheduler binding pods to one fake node,
//! Endpoints from ready pods, and PodDisruptionBudget status.
//!
//! They run in one background task, under the store's lock: after every burst of changes
//! each controller reconciles what the changes touch, and objects whose time-based state
//! (deadlines, minReadySeconds) comes due are rechecked then; a full pass on the tick resyncs.
//! Pods run only with the pod runner (`kubelet`); without it tests mark them ready through
//! `LocalCluster::set_pods_ready`.

pub mod autoscaler;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod job;
pub mod replicaset;
pub mod scheduler;
pub mod volumes;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::api::{Shared, State};
use crate::registry::ResourceType;
use crate::selectors::LabelSelector;
use crate::store::Change;

/// Which controllers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerSet {
    pub workloads: bool,
    pub scheduler: bool,
    pub endpoints: bool,
    pub disruption: bool,
    /// Binds pending PersistentVolumeClaims.
    pub volumes: bool,
    /// The pod runner (a local kubelet, see `kubelet`): runs pods as processes. Off in
    /// `all()`; needs root. Turn it on with [`ControllerSet::with_kubelet`].
    pub kubelet: bool,
}

impl ControllerSet {
    pub fn all() -> Self {
        ControllerSet {
            workloads: true,
            scheduler: true,
            endpoints: true,
            disruption: true,
            volumes: true,
            kubelet: false,
        }
    }
    /// These controllers plus the pod runner.
    pub fn with_kubelet(self) -> Self {
        ControllerSet {
            kubelet: true,
            ..self
        }
    }
    pub fn none() -> Self {
        ControllerSet {
            workloads: false,
            scheduler: false,
            endpoints: false,
            disruption: false,
            volumes: false,
            kubelet: false,
        }
    }
    pub fn any(&self) -> bool {
        self.workloads || self.scheduler || self.endpoints || self.disruption || self.volumes
    }
}

pub const NODE_NAME: &str = "localcluster-node";
pub const MANAGER: &str = "kube-controller-manager";

/// Shortest pause between two controller passes; bursts of changes coalesce into one pass.
const MIN_PASS_GAP: Duration = Duration::from_millis(20);

/// A full pass runs at most this many times as long as the last one took, apart from it.
/// Time-based state (minReadySeconds, progress deadlines) does not wait for it: controllers
/// ask for a [`Scope::recheck_at`], so full passes are only a resync.
const FULL_PASS_SPACING: u32 = 40;

/// Runs the controllers until the shared state is dropped.
///
/// A pass after changes looks only at what they can affect ([`Scope`]), plus the objects whose
/// recheck time has come ([`Scope::recheck_at`], like kube-controller-manager's `AddAfter`).
/// A full pass runs on the tick as a resync, and after a missed change. On a large cluster
/// full passes are spaced to many times their own cost: they hold the store's lock and cost
/// O(objects).
pub async fn run(shared: std::sync::Weak<Shared>, set: ControllerSet, tick: Duration) {
    let mut changes = match shared.upgrade() {
        Some(s) => s.lock().store.subscribe(),
        None => return,
    };
    let mut pending = Changes::default();
    let mut missed_changes = true;
    let mut last_full: Option<(std::time::Instant, Duration)> = None;
    let mut rechecks = Rechecks::default();
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let pass = std::time::Instant::now();
        rechecks.take_due(jiff::Timestamp::now(), &mut pending);
        let full_due = missed_changes
            || last_full
                .is_none_or(|(at, took)| at.elapsed() >= tick.max(took * FULL_PASS_SPACING));
        let scope = match full_due {
            true => Scope::all(),
            false => Scope::changed(std::mem::take(&mut pending)),
        };
        if full_due {
            pending = Changes::default();
            missed_changes = false;
        }
        reconcile(&shared, set, &scope);
        drop(shared);
        rechecks.add(scope.rechecks.take());
        if full_due {
            last_full = Some((pass, pass.elapsed()));
        }
        // A pass holds the store's lock: leave the API at least as much time as the pass took,
        // so that many objects do not starve requests.
        tokio::time::sleep(pass.elapsed().max(MIN_PASS_GAP)).await;
        let mut received = |r: Result<Arc<Change>, broadcast::error::TryRecvError>| match r {
            Ok(change) => {
                pending.record(&change);
                true
            }
            Err(broadcast::error::TryRecvError::Lagged(_)) => {
                missed_changes = true;
                true
            }
            Err(_) => false,
        };
        let wait = rechecks
            .until_next(jiff::Timestamp::now())
            .map_or(tick, |due| due.min(tick));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            r = changes.recv() => {
                let r = r.map_err(|e| match e {
                    broadcast::error::RecvError::Closed => broadcast::error::TryRecvError::Closed,
                    broadcast::error::RecvError::Lagged(n) => broadcast::error::TryRecvError::Lagged(n),
                });
                if matches!(r, Err(broadcast::error::TryRecvError::Closed)) {
                    return;
                }
                received(r);
            }
        }
        // Coalesce bursts of changes into one pass.
        while received(changes.try_recv()) {}
    }
}

/// Objects (by uid) to reconcile again at a given time, whether or not anything changed.
#[derive(Debug, Default)]
struct Rechecks {
    due: BTreeMap<jiff::Timestamp, HashSet<String>>,
}

impl Rechecks {
    fn add(&mut self, requested: Vec<(String, jiff::Timestamp)>) {
        for (uid, at) in requested {
            self.due.entry(at).or_default().insert(uid);
        }
    }

    /// Moves the uids due by `now` into `changes`.
    fn take_due(&mut self, now: jiff::Timestamp, changes: &mut Changes) {
        let later = self
            .due
            .split_off(&(now + jiff::SignedDuration::from_nanos(1)));
        for uids in std::mem::replace(&mut self.due, later).into_values() {
            changes.uids.extend(uids);
        }
    }

    /// How long until the next recheck is due.
    fn until_next(&self, now: jiff::Timestamp) -> Option<Duration> {
        let next = *self.due.keys().next()?;
        Some(Duration::try_from(next.duration_since(now)).unwrap_or(Duration::ZERO))
    }
}

/// What the changes since the last pass can affect: the changed objects and their owners (by
/// uid), their namespace/name (an Endpoints object, an autoscaler's target), and the labels of
/// changed pods (for selectors). Before and after each change.
#[derive(Debug, Default)]
pub struct Changes {
    uids: HashSet<String>,
    /// Namespace → names.
    names: HashMap<String, HashSet<String>>,
    /// Namespace → the changed pods' labels.
    pods: HashMap<String, ChangedPods>,
}

/// The labels of a namespace's changed pods: each pod's, and every `key → values` among them
/// (so that a selector no changed pod can match is ruled out without testing each pod).
#[derive(Debug, Default)]
struct ChangedPods {
    pods: Vec<Value>,
    label_values: HashMap<String, HashSet<String>>,
}

impl ChangedPods {
    fn may_match(&self, match_labels: &Value) -> bool {
        match_labels
            .as_object()
            .into_iter()
            .flatten()
            .all(|(k, v)| {
                v.as_str()
                    .is_some_and(|v| self.label_values.get(k).is_some_and(|vs| vs.contains(v)))
            })
    }
}

impl Changes {
    pub fn record(&mut self, change: &Change) {
        let is_pod = change.key.group.is_empty() && change.key.resource == "pods";
        for object in std::iter::once(&change.object).chain(change.previous.as_ref()) {
            self.uids.insert(uid(object).to_string());
            for owner in object["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["uid"].as_str())
            {
                self.uids.insert(owner.to_string());
            }
            self.names
                .entry(namespace(object).to_string())
                .or_default()
                .insert(name(object).to_string());
            if is_pod {
                let changed = self.pods.entry(namespace(object).to_string()).or_default();
                for (k, v) in object["metadata"]["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                {
                    if let Some(v) = v.as_str() {
                        changed
                            .label_values
                            .entry(k.clone())
                            .or_default()
                            .insert(v.to_string());
                    }
                }
                changed
                    .pods
                    .push(json!({"metadata": {"labels": object["metadata"]["labels"]}}));
            }
        }
    }
}

/// Which objects a controller pass reconciles: all, or those [`Changes`] can affect.
#[derive(Debug)]
pub struct Scope {
    changes: Option<Changes>,
    rechecks: RefCell<Vec<(String, jiff::Timestamp)>>,
}

impl Scope {
    pub fn all() -> Self {
        Scope {
            changes: None,
            rechecks: RefCell::default(),
        }
    }

    pub fn changed(changes: Changes) -> Self {
        Scope {
            changes: Some(changes),
            rechecks: RefCell::default(),
        }
    }

    /// Asks for `object` to be reconciled again at `at`, for state that changes with time
    /// alone (a pod becoming available after minReadySeconds, a progress deadline passing).
    pub fn recheck_at(&self, object: &Value, at: jiff::Timestamp) {
        self.rechecks
            .borrow_mut()
            .push((uid(object).to_string(), at));
    }

    /// The object changed, or one of the objects it owns did.
    pub fn touches(&self, object: &Value) -> bool {
        self.changes
            .as_ref()
            .is_none_or(|c| c.uids.contains(uid(object)))
    }

    /// The objects of `rt` that [`Scope::touches`] and `keep` accept, ordered like
    /// [`objects_where`]. A scoped pass finds them through the store's uid index:
    /// it runs after every burst of writes, and a scan would make it O(objects).
    pub fn touched_where(
        &self,
        state: &State,
        rt: &ResourceType,
        keep: impl Fn(&Value) -> bool,
    ) -> Vec<Arc<Value>> {
        match &self.changes {
            None => objects_where(state, rt, None, keep),
            Some(c) => state
                .store
                .with_uids(&rt.key(), c.uids.iter().map(String::as_str))
                .into_iter()
                .filter(|object| keep(object))
                .map(Arc::clone)
                .collect(),
        }
    }

    /// The Services or PodDisruptionBudgets (`rt`) that `keep` accepts, for a pass that
    /// follows pods: in a scoped pass only those changed themselves, named like a changed
    /// object (when `by_name`: a Service and its Endpoints), or whose selector may select a
    /// changed pod (through the store's selector index). Ordered like [`objects_where`]. A
    /// scan would make every scoped pass O(objects).
    pub fn selecting_changed_pods(
        &self,
        state: &State,
        rt: &ResourceType,
        by_name: bool,
        keep: impl Fn(&Value) -> bool,
    ) -> Vec<Arc<Value>> {
        let Some(c) = &self.changes else {
            return objects_where(state, rt, None, keep);
        };
        let key = rt.key();
        let store = &state.store;
        let mut found: Vec<&Arc<Value>> = store.with_uids(&key, c.uids.iter().map(String::as_str));
        if by_name {
            for (ns, names) in &c.names {
                found.extend(names.iter().filter_map(|n| store.get_shared(&key, ns, n)));
            }
        }
        for (ns, changed) in &c.pods {
            for pod in &changed.pods {
                found.extend(store.selecting_pod(&key, ns, &pod["metadata"]["labels"]));
            }
        }
        let found: BTreeMap<(&str, &str), &Arc<Value>> = found
            .into_iter()
            .map(|object| ((namespace(object), name(object)), object))
            .collect();
        found
            .into_values()
            .filter(|object| keep(object))
            .map(Arc::clone)
            .collect()
    }

    /// An object named `namespace/name` (of any kind) changed.
    pub fn touches_name(&self, namespace: &str, name: &str) -> bool {
        self.changes.as_ref().is_none_or(|c| {
            c.names
                .get(namespace)
                .is_some_and(|names| names.contains(name))
        })
    }

    /// A changed pod of `namespace` is one that `selects` accepts (before or after the change).
    /// `match_labels` (the selector's matchLabels, or null) rules out at once the selectors
    /// whose labels no changed pod carries: scoped passes test every Service and PDB.
    pub fn touches_pods(
        &self,
        namespace: &str,
        match_labels: &Value,
        selects: impl Fn(&Value) -> bool,
    ) -> bool {
        self.changes.as_ref().is_none_or(|c| {
            c.pods.get(namespace).is_some_and(|changed| {
                changed.may_match(match_labels) && changed.pods.iter().any(selects)
            })
        })
    }
}

/// One full pass of every controller in `set`.
pub fn reconcile_all(shared: &Arc<Shared>, set: ControllerSet) {
    reconcile(shared, set, &Scope::all());
}

pub fn reconcile(shared: &Arc<Shared>, set: ControllerSet, scope: &Scope) {
    let mut state = shared.lock();
    let now = jiff::Timestamp::now();
    if set.workloads {
        deployment::reconcile(&mut state, now, scope);
        replicaset::reconcile(&mut state, now, scope);
        job::reconcile(&mut state, now, scope);
    }
    if set.scheduler {
        scheduler::reconcile(&mut state, now, scope);
    }
    if set.endpoints {
        endpoints::reconcile(&mut state, now, scope);
    }
    if set.disruption {
        disruption::reconcile(&mut state, now, scope);
        autoscaler::reconcile(&mut state, now, scope);
    }
    if set.volumes {
        volumes::reconcile(&mut state, now, scope);
    }
}

pub fn timestamp(now: jiff::Timestamp) -> String {
    now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn resource(
    state: &State,
    group: &str,
    version: &str,
    plural: &str,
) -> Option<Arc<ResourceType>> {
    state.registry.find(group, version, plural)
}

/// A copy of a stored object for a controller to change and write, without its managedFields,
/// which are often the larger part of an object and which `write_as` sets from the stored
/// version. Controllers read the stored objects themselves (shared, see [`objects_where`]) and
/// copy only what they write.
pub fn working_copy(object: &Value) -> Value {
    let Some(map) = object.as_object() else {
        return object.clone();
    };
    Value::Object(
        map.iter()
            .map(|(k, v)| {
                let v = match (k.as_str(), v.as_object()) {
                    ("metadata", Some(meta)) => Value::Object(
                        meta.iter()
                            .filter(|(mk, _)| mk.as_str() != "managedFields")
                            .map(|(mk, mv)| (mk.clone(), mv.clone()))
                            .collect(),
                    ),
                    _ => v.clone(),
                };
                (k.clone(), v)
            })
            .collect(),
    )
}

/// Objects of a resource, shared with the store (controllers write while iterating).
pub fn objects(state: &State, rt: &ResourceType, namespace: Option<&str>) -> Vec<Arc<Value>> {
    objects_where(state, rt, namespace, |_| true)
}

/// The objects of `rt` in `namespace` that `keep` accepts, shared with the store: a stored
/// version never changes, so holding one costs no copy.
pub fn objects_where(
    state: &State,
    rt: &ResourceType,
    namespace: Option<&str>,
    keep: impl Fn(&Value) -> bool,
) -> Vec<Arc<Value>> {
    state
        .store
        .list(&rt.key(), namespace)
        .into_iter()
        .filter(|object| keep(object))
        .map(Arc::clone)
        .collect()
}

/// The objects of `rt` in the owner's namespace whose controller is `owner`, ordered by name.
/// Through the store's owner index: controllers look these up for every owner on every pass,
/// and a scan of the namespace would make a pass O(owners × objects).
pub fn controlled_by(state: &State, rt: &ResourceType, owner: &Value) -> Vec<Arc<Value>> {
    let (owner_uid, ns) = (uid(owner), namespace(owner));
    state
        .store
        .dependents_of_kind(&rt.key(), owner_uid)
        .into_iter()
        .filter(|o| namespace(o) == ns && controller_uid(o) == Some(owner_uid))
        .map(Arc::clone)
        .collect()
}

/// The objects of `rt` in `namespace` that a `metav1.LabelSelector` can match: those carrying
/// its rarest matchLabel (through the store's label index), or all of the namespace when it
/// has none. Callers still match the whole selector.
pub fn selector_candidates(
    state: &State,
    rt: &ResourceType,
    namespace: &str,
    selector: &Value,
) -> Vec<Arc<Value>> {
    let key = rt.key();
    let rarest = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| (k, v)))
        .min_by_key(|(k, v)| state.store.count_labeled(&key, namespace, k, v));
    let candidates = match rarest {
        Some((label, value)) => state.store.labeled(&rt.key(), namespace, label, value),
        None => state.store.list(&rt.key(), Some(namespace)),
    };
    candidates.into_iter().map(Arc::clone).collect()
}

pub fn uid(object: &Value) -> &str {
    object["metadata"]["uid"].as_str().unwrap_or("")
}

pub fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or("")
}

pub fn namespace(object: &Value) -> &str {
    object["metadata"]["namespace"].as_str().unwrap_or("")
}

pub fn is_terminating(object: &Value) -> bool {
    !object["metadata"]["deletionTimestamp"].is_null()
}

/// The controller owner reference's uid, if any.
pub fn controller_uid(object: &Value) -> Option<&str> {
    object["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == Value::Bool(true))
        .and_then(|r| r["uid"].as_str())
}

pub fn owner_reference(owner: &Value) -> Value {
    serde_json::json!({
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// A `metav1.LabelSelector` (matchLabels and matchExpressions) as a selector.
pub fn label_selector(selector: &Value) -> Option<LabelSelector> {
    let mut parts = Vec::new();
    for (k, v) in selector["matchLabels"].as_object().into_iter().flatten() {
        parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
    }
    for e in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or("");
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match e["operator"].as_str().unwrap_or("") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return None,
        });
    }
    LabelSelector::parse(&parts.join(",")).ok()
}

/// Whether a pod's Ready condition is True.
pub fn pod_ready(pod: &Value) -> bool {
    condition(pod, "Ready").is_some_and(|c| c["status"] == "True")
}

pub fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Ready for at least `min_ready_seconds` (the definition of an available pod).
pub fn pod_available(pod: &Value, min_ready_seconds: i64, now: jiff::Timestamp) -> bool {
    if !pod_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    ready_since(pod).is_some_and(|t| now.as_second() - t.as_second() >= min_ready_seconds)
}

/// When a pod's Ready condition last changed.
pub fn ready_since(pod: &Value) -> Option<jiff::Timestamp> {
    condition(pod, "Ready")?["lastTransitionTime"]
        .as_str()?
        .parse()
        .ok()
}

/// Sets or replaces a condition, keeping lastTransitionTime while the status is unchanged.
pub fn set_condition(
    conditions: &mut Vec<Value>,
    mut new: Value,
    now: &str,
    with_update_time: bool,
) {
    let type_ = new["type"].clone();
    match conditions.iter_mut().find(|c| c["type"] == type_) {
        Some(existing) => {
            let same_status = existing["status"] == new["status"];
            new["lastTransitionTime"] = if same_status {
                existing["lastTransitionTime"].clone()
            } else {
                serde_json::json!(now)
            };
            if with_update_time {
                let same = existing["reason"] == new["reason"]
                    && existing["message"] == new["message"]
                    && same_status;
                new["lastUpdateTime"] = if same {
                    existing["lastUpdateTime"].clone()
                } else {
                    serde_json::json!(now)
                };
            }
            *existing = order_condition(new, with_update_time);
        }
        None => {
            new["lastTransitionTime"] = serde_json::json!(now);
            if with_update_time {
                new["lastUpdateTime"] = serde_json::json!(now);
            }
            conditions.push(order_condition(new, with_update_time));
        }
    }
}

fn order_condition(c: Value, with_update_time: bool) -> Value {
    let mut out = serde_json::Map::new();
    let mut keys = vec!["type", "status"];
    if with_update_time {
        keys.push("lastUpdateTime");
    }
    keys.extend(["lastTransitionTime", "reason", "message"]);
    for k in keys {
        if let Some(v) = c.get(k) {
            out.insert(k.to_string(), v.clone());
        }
    }
    Value::Object(out)
}

/// Resolves an int-or-percent against `total` (Kubernetes `GetScaledValueFromIntOrPercent`).
pub fn scaled_value(value: &Value, total: i64, round_up: bool) -> i64 {
    match value {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(percent) => {
                let product = percent * total;
                if round_up {
                    (product + 99) / 100
                } else {
                    product / 100
                }
            }
            None => s.parse().unwrap_or(0),
        },
        _ => 0,
    }
}

#[cfg(test)]
mod scope_tests {
    use super::*;
    use crate::store::{ChangeType, ResourceKey};

    fn pod_change(previous_labels: Value, labels: Value) -> Change {
        let pod = |labels: Value| {
            json!({"metadata": {"namespace": "a", "name": "pod-1", "uid": "u-pod",
                "labels": labels, "ownerReferences": [{"uid": "u-rs", "controller": true}]}})
        };
        Change {
            resource_version: 2,
            key: ResourceKey::new("", "pods"),
            change_type: ChangeType::Modified,
            object: Arc::new(pod(labels)),
            previous: Some(Arc::new(pod(previous_labels))),
        }
    }

    fn object(ns: &str, name: &str, uid: &str) -> Value {
        json!({"metadata": {"namespace": ns, "name": name, "uid": uid}})
    }

    #[test]
    fn a_pod_change_touches_the_pod_its_owner_and_selectors_of_its_old_and_new_labels() {
        let mut changes = Changes::default();
        changes.record(&pod_change(json!({"app": "old"}), json!({"app": "new"})));
        let scope = Scope::changed(changes);
        assert!(scope.touches(&object("a", "pod-1", "u-pod")), "the pod");
        assert!(scope.touches(&object("a", "rs", "u-rs")), "its owner");
        assert!(
            !scope.touches(&object("a", "rs-2", "u-other")),
            "an unrelated owner"
        );
        assert!(scope.touches_name("a", "pod-1"));
        assert!(
            !scope.touches_name("b", "pod-1"),
            "same name, other namespace"
        );
        let selects =
            |app: &'static str| move |pod: &Value| pod["metadata"]["labels"]["app"] == app;
        let app = |app: &str| json!({"app": app});
        assert!(
            scope.touches_pods("a", &app("new"), selects("new")),
            "selector of the new labels"
        );
        assert!(
            scope.touches_pods("a", &app("old"), selects("old")),
            "selector of the old labels"
        );
        assert!(!scope.touches_pods("a", &app("other"), selects("other")));
        assert!(
            !scope.touches_pods("a", &app("other"), |_| true),
            "ruled out by its matchLabels alone"
        );
        assert!(
            scope.touches_pods("a", &Value::Null, selects("new")),
            "no matchLabels: the pods decide"
        );
        assert!(
            !scope.touches_pods("b", &app("new"), selects("new")),
            "other namespace"
        );
    }

    #[test]
    fn rechecks_come_due_once_at_their_time() {
        let t0: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let secs = jiff::SignedDuration::from_secs;
        let mut rechecks = Rechecks::default();
        rechecks.add(vec![
            ("late".into(), t0 + secs(5)),
            ("soon".into(), t0 + secs(2)),
        ]);
        assert_eq!(rechecks.until_next(t0), Some(Duration::from_secs(2)));
        let mut changes = Changes::default();
        rechecks.take_due(t0 + secs(1), &mut changes);
        assert!(changes.uids.is_empty(), "nothing is due yet");
        rechecks.take_due(t0 + secs(2), &mut changes);
        assert_eq!(changes.uids, HashSet::from(["soon".to_string()]));
        assert_eq!(
            rechecks.until_next(t0 + secs(6)),
            Some(Duration::ZERO),
            "overdue"
        );
        let mut changes = Changes::default();
        rechecks.take_due(t0 + secs(6), &mut changes);
        assert_eq!(changes.uids, HashSet::from(["late".to_string()]));
        assert_eq!(rechecks.until_next(t0 + secs(6)), None);
    }

    #[test]
    fn a_full_pass_touches_everything() {
        let scope = Scope::all();
        assert!(scope.touches(&object("a", "x", "u-x")));
        assert!(scope.touches_name("a", "x"));
        assert!(scope.touches_pods("a", &json!({"app": "x"}), |_| false));
    }

    #[test]
    fn no_changes_touch_nothing() {
        let scope = Scope::changed(Changes::default());
        assert!(!scope.touches(&object("a", "x", "u-x")));
        assert!(!scope.touches_name("a", "x"));
        assert!(!scope.touches_pods("a", &Value::Null, |_| true));
    }
}
