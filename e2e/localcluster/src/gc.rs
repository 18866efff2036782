//! Deletion semantics and the controllers that run inside the emulator's write path:
//! finalizers, owner-reference garbage collection (background, foreground, orphan),
//! namespace population and cleanup, and CRD establishment.

use std::collections::{BTreeSet, HashSet};

use serde_json::{Value, json};

use crate::api::State;
use crate::registry::{ResourceType, crd_resource_types};

use crate::store::{ChangeType, ObjectRef, ResourceKey};

pub enum Deleted {
    /// Finalizers keep the object; it now has a deletionTimestamp.
    Terminating(Value),
    Removed(Value),
}

fn finalizers(object: &Value) -> Vec<String> {
    object["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn store_update(state: &mut State, key: &ResourceKey, mut object: Value) -> Value {
    let rv = state.store.next_resource_version();
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
    state.store.put(key, object.clone(), ChangeType::Modified);
    object
}

/// Deletes one object the way the API server does: finalizers (plus the propagation
/// policy's own finalizer) turn the delete into setting deletionTimestamp.
pub fn delete_object(
    state: &mut State,
    rt: &ResourceType,
    object: &Value,
    propagation: &str,
    now: &str,
) -> Deleted {
    // Controllers pass working copies without managedFields; delete the stored version.
    let meta = &object["metadata"];
    let stored = state
        .store
        .get(
            &rt.key(),
            meta["namespace"].as_str().unwrap_or(""),
            meta["name"].as_str().unwrap_or(""),
        )
        .cloned();
    let object = stored.as_ref().unwrap_or(object);
    delete_object_with_grace(state, rt, object, propagation, None, now)
}

/// The grace period of a pod deletion when a pod runner will stop its processes: `None`
/// deletes at once (unscheduled or finished pods, forced deletes, no runner).
fn pod_grace_period(state: &State, pod: &Value, requested: Option<i64>) -> Option<i64> {
    let phase = pod["status"]["phase"].as_str().unwrap_or("");
    if !state.graceful_pod_deletion
        || pod["spec"]["nodeName"].is_null()
        || matches!(phase, "Succeeded" | "Failed")
    {
        return None;
    }
    let grace = requested
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30);
    (grace > 0).then_some(grace)
}

/// [`delete_object`] with the `gracePeriodSeconds` of the request (pods only).
pub fn delete_object_with_grace(
    state: &mut State,
    rt: &ResourceType,
    object: &Value,
    propagation: &str,
    grace_period: Option<i64>,
    now: &str,
) -> Deleted {
    let key = rt.key();
    if rt.kind == "Pod"
        && !object["metadata"]["deletionTimestamp"].is_null()
        && grace_period == Some(0)
        && finalizers(object).is_empty()
    {
        // A forced delete of a terminating pod removes it without waiting for the kubelet.
        let ns = object["metadata"]["namespace"].as_str().unwrap_or("");
        let name = object["metadata"]["name"].as_str().unwrap_or("");
        let removed = state.store.remove(&key, ns, name);
        return Deleted::Removed(removed.map_or_else(|| object.clone(), |r| (*r).clone()));
    }
    if rt.kind == "Pod"
        && object["metadata"]["deletionTimestamp"].is_null()
        && let Some(grace) = pod_grace_period(state, object, grace_period)
    {
        // Graceful pod deletion (as the API server does for a pod on a node): the pod stays
        // with deletionTimestamp = now + grace until its kubelet reports the processes gone.
        let mut terminating = object.clone();
        let deadline = now
            .parse::<jiff::Timestamp>()
            .ok()
            .and_then(|t| t.checked_add(jiff::SignedDuration::from_secs(grace)).ok())
            .map(crate::controllers::timestamp)
            .unwrap_or_else(|| now.to_string());
        terminating["metadata"]["deletionTimestamp"] = json!(deadline);
        terminating["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        if let Some(g) = terminating["metadata"]["generation"].as_i64() {
            terminating["metadata"]["generation"] = json!(g + 1);
        }
        return Deleted::Terminating(store_update(state, &key, terminating));
    }
    let ns = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if !object["metadata"]["deletionTimestamp"].is_null() {
        return Deleted::Terminating(object.clone());
    }
    let mut f = finalizers(object);
    match propagation {
        "Foreground" if has_dependents(state, object) => f.push("foregroundDeletion".into()),
        "Orphan" if has_dependents(state, object) => f.push("orphan".into()),
        _ => {}
    }
    if rt.resource == "namespaces" {
        let mut terminating = object.clone();
        terminating["metadata"]["deletionTimestamp"] = json!(now);
        terminating["status"]["phase"] = json!("Terminating");
        let terminating = store_update(state, &key, terminating);
        return Deleted::Terminating(terminating);
    }
    if f.is_empty() && rt.kind == "CustomResourceDefinition" {
        stop_serving_crd(state, object);
    }
    if f.is_empty() {
        let removed = state
            .store
            .remove(&key, &ns, &name)
            .map_or_else(|| object.clone(), |r| (*r).clone());
        if rt.kind == "Pod" {
            // An unscheduled pod is removed at once; the response shows the graceful delete.
            let mut shown = removed;
            shown["metadata"]["deletionTimestamp"] = json!(now);
            shown["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if let Some(g) = shown["metadata"]["generation"].as_i64() {
                shown["metadata"]["generation"] = json!(g + 1);
            }
            return Deleted::Removed(shown);
        }
        return Deleted::Removed(removed);
    }
    let mut terminating = object.clone();
    terminating["metadata"]["finalizers"] = json!(f);
    terminating["metadata"]["deletionTimestamp"] = json!(now);
    terminating["metadata"]["deletionGracePeriodSeconds"] = json!(0);
    if rt.is_custom()
        && let Some(g) = terminating["metadata"]["generation"].as_i64()
    {
        terminating["metadata"]["generation"] = json!(g + 1);
    }
    Deleted::Terminating(store_update(state, &key, terminating))
}

fn uid(object: &Value) -> &str {
    object["metadata"]["uid"].as_str().unwrap_or("")
}

fn owner_uids(object: &Value) -> Vec<String> {
    object["metadata"]["ownerReferences"]
        .as_array()
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r["uid"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn has_dependents(state: &State, owner: &Value) -> bool {
    state.store.dependents(uid(owner)).next().is_some()
}

/// Runs the garbage collector and namespace controller until nothing changes.
pub fn collect(state: &mut State, now: &str) {
    for _ in 0..50 {
        if !collect_once(state, now) {
            return;
        }
    }
}

fn has_finalizer(object: &Value, finalizer: &str) -> bool {
    object["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == finalizer))
}

/// The first dependent (in storage order) whose owners are all gone, or whose owner is being
/// deleted in the foreground. Found through the store's owner index: this runs after every
/// write, so it must cost O(affected objects), not O(objects).
fn find_orphan(state: &State) -> Option<Value> {
    let store = &state.store;
    let foreground: HashSet<&str> = store
        .terminating()
        .filter_map(|at| store.get_ref(at))
        .filter(|o| has_finalizer(o, "foregroundDeletion"))
        .map(uid)
        .collect();
    let candidates: BTreeSet<&ObjectRef> = store
        .dangling_owners()
        .chain(foreground.iter().copied())
        .flat_map(|owner| store.dependents(owner))
        .collect();
    candidates
        .into_iter()
        .filter_map(|at| store.get_ref(at))
        .find(|object| {
            let owners = owner_uids(object);
            !owners.is_empty()
                && object["metadata"]["deletionTimestamp"].is_null()
                && (owners.iter().all(|u| store.find_uid(u).is_none())
                    || owners.iter().any(|u| foreground.contains(u.as_str())))
                && find_type(state, object).is_some()
        })
        .cloned()
}

fn collect_once(state: &mut State, now: &str) -> bool {
    if let Some(object) = find_orphan(state)
        && let Some(rt) = find_type(state, &object)
    {
        delete_object(state, &rt, &object, "Background", now);
        return true;
    }

    // Objects being deleted: finalizers the collector owns, and namespaces being emptied.
    let terminating: Vec<ObjectRef> = state.store.terminating().cloned().collect();
    for at in &terminating {
        let Some(object) = state.store.get_ref(at).cloned() else {
            continue;
        };
        let key = &at.key;
        let f = finalizers(&object);
        let u = uid(&object).to_string();
        let dependents: Vec<(ResourceKey, Value)> = state
            .store
            .dependents(&u)
            .filter_map(|d| Some((d.key.clone(), state.store.get_ref(d)?.clone())))
            .collect();
        if f.iter().any(|x| x == "orphan") {
            for (dkey, dep) in &dependents {
                let mut d = dep.clone();
                let refs: Vec<Value> = d["metadata"]["ownerReferences"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|r| r["uid"].as_str() != Some(&u))
                    .collect();
                match refs.is_empty() {
                    true => d["metadata"]
                        .as_object_mut()
                        .map(|m| m.remove("ownerReferences")),
                    false => d["metadata"]
                        .as_object_mut()
                        .map(|m| m.insert("ownerReferences".into(), json!(refs))),
                };
                match find_type(state, dep) {
                    Some(rt) => system_update(state, &rt, d, now, None, Some(dep)),
                    None => {
                        store_update(state, dkey, d);
                    }
                }
            }
            remove_finalizer(state, key, &object, "orphan");
            return true;
        }
        if f.iter().any(|x| x == "foregroundDeletion") && dependents.is_empty() {
            remove_finalizer(state, key, &object, "foregroundDeletion");
            return true;
        }
        if key.resource == "namespaces" && key.group.is_empty() {
            let ns = object["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let contents: Vec<Value> = state
                .store
                .in_namespace(&ns)
                .into_iter()
                .map(|(_, o)| o.clone())
                .collect();
            let mut changed = false;
            for o in &contents {
                if o["metadata"]["deletionTimestamp"].is_null()
                    && let Some(rt) = find_type(state, o)
                {
                    delete_object(state, &rt, o, "Background", now);
                    changed = true;
                }
            }
            if contents.is_empty() {
                state.store.remove(key, "", &ns);
                return true;
            }
            if changed {
                return true;
            }
        }
    }
    false
}

fn find_type(state: &State, object: &Value) -> Option<std::sync::Arc<ResourceType>> {
    let api_version = object["apiVersion"].as_str()?;
    let kind = object["kind"].as_str()?;
    state.registry.find_kind(api_version, kind)
}

fn remove_finalizer(state: &mut State, key: &ResourceKey, object: &Value, finalizer: &str) {
    let mut o = object.clone();
    let remaining: Vec<String> = finalizers(object)
        .into_iter()
        .filter(|f| f != finalizer)
        .collect();
    let ns = o["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
    if remaining.is_empty() {
        o["metadata"]
            .as_object_mut()
            .map(|m| m.remove("finalizers"));
        store_update(state, key, o);
        state.store.remove(key, &ns, &name);
    } else {
        o["metadata"]["finalizers"] = json!(remaining);
        store_update(state, key, o);
    }
}

const CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

fn system_update(
    state: &mut State,
    kind_rt: &ResourceType,
    object: Value,
    now: &str,
    subresource: Option<&str>,
    old: Option<&Value>,
) {
    let manager = if kind_rt.is_custom() || kind_rt.group == "apiextensions.k8s.io" {
        "kube-apiserver"
    } else {
        "kube-controller-manager"
    };
    crate::system::write_as(state, kind_rt, old, object, manager, subresource, now);
}

/// What the controller manager adds to every new namespace.
pub fn populate_namespace(state: &mut State, ns: &str) {
    let now = crate::write::now();
    if let Some(rt) = state.registry.find("", "v1", "configmaps")
        && state.store.get(&rt.key(), ns, "kube-root-ca.crt").is_none()
    {
        let cm = json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "kube-root-ca.crt", "namespace": ns,
            "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now,
            "annotations": {"kubernetes.io/description": CA_DESCRIPTION}},
            "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nbG9jYWxjbHVzdGVyIGZha2UgQ0E=\n-----END CERTIFICATE-----\n"}});
        system_update(state, &rt, cm, &now, None, None);
    }
    if let Some(rt) = state.registry.find("", "v1", "serviceaccounts")
        && state.store.get(&rt.key(), ns, "default").is_none()
    {
        let sa = json!({"kind": "ServiceAccount", "apiVersion": "v1", "metadata": {"name": "default", "namespace": ns,
            "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now}});
        let rv = state.store.next_resource_version();
        let mut sa = sa;
        sa["metadata"]["resourceVersion"] = json!(rv.to_string());
        state.store.put(&rt.key(), sa, ChangeType::Added);
    }
}

/// Starts serving a CRD's resources and marks it NamesAccepted and Established.
pub fn establish_crd(state: &mut State, crd: &Value, now: &str) {
    let name = crd["metadata"]["name"].as_str().unwrap_or("").to_string();
    if !crd["metadata"]["deletionTimestamp"].is_null() {
        return;
    }
    let types = crd_resource_types(crd);
    for t in &types {
        if state
            .registry
            .find(&t.group, &t.version, &t.resource)
            .is_none()
        {
            state.store.start_history(&t.key());
        }
    }
    state.registry.set_crd_types(&name, types);
    let established = crd["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
    });
    if established {
        return;
    }
    let Some(rt) = state
        .registry
        .find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    else {
        return;
    };
    let mut updated = crd.clone();
    let names = &crd["spec"]["names"];
    let mut accepted = json!({});
    for k in [
        "plural",
        "singular",
        "shortNames",
        "kind",
        "listKind",
        "categories",
    ] {
        if let Some(v) = names.get(k) {
            accepted[k] = v.clone();
        }
    }
    updated["status"] = json!({
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}
        ],
        "acceptedNames": accepted,
        "storedVersions": crd["status"]["storedVersions"].clone(),
    });
    system_update(state, &rt, updated, now, Some("status"), Some(crd));
}

/// A deleted CRD stops being served and its custom resources are removed.
fn stop_serving_crd(state: &mut State, crd: &Value) {
    let name = crd["metadata"]["name"].as_str().unwrap_or("").to_string();
    let keys: Vec<ResourceKey> = crd_resource_types(crd).iter().map(|t| t.key()).collect();
    for key in keys {
        let objects: Vec<(String, String)> = state
            .store
            .list(&key, None)
            .into_iter()
            .map(|o| {
                (
                    o["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    o["metadata"]["name"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        for (ns, n) in objects {
            state.store.remove(&key, &ns, &n);
        }
    }
    state.registry.set_crd_types(&name, Vec::new());
}
