//! The Deployment controller: ReplicaSets per pod template, RollingUpdate and Recreate
//! arithmetic, revisions, status and the Available/Progressing conditions, as in
//! kubernetes/pkg/controller/deployment.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{
    MANAGER, Scope, controlled_by, is_terminating, label_selector, name, namespace,
    owner_reference, resource, scaled_value, timestamp, uid,
};
use crate::api::State;
use crate::system::{record_event, write_as};

const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX: &str = "deployment.kubernetes.io/max-replicas";
const HASH_LABEL: &str = "pod-template-hash";

/// FNV-1a over the pod template, encoded like Kubernetes' `rand.SafeEncodeString`.
pub fn pod_template_hash(template: &Value, collision_count: i64) -> String {
    let mut hash: u32 = 0x811c9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x01000193);
        }
    };
    feed(template.to_string().as_bytes());
    if collision_count > 0 {
        feed(collision_count.to_string().as_bytes());
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn spec_replicas(rs: &Value) -> i64 {
    int(&rs["spec"]["replicas"])
}

fn revision(rs: &Value) -> i64 {
    rs["metadata"]["annotations"][REVISION]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Whether a ReplicaSet's pod template is the Deployment's, apart from the pod-template-hash
/// label (`EqualIgnoreHash`). Compared in place: every sync asks it of every ReplicaSet.
fn same_template_ignoring_hash(rs_template: &Value, template: &Value) -> bool {
    fn entries<'a>(object: &'a Value, skip: &str) -> Vec<(&'a str, &'a Value)> {
        object
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.as_str() != skip)
            .map(|(k, v)| (k.as_str(), v))
            .collect()
    }
    let (Some(a), Some(b)) = (rs_template.as_object(), template.as_object()) else {
        return rs_template == template;
    };
    let same_metadata = |ma: &Value, mb: &Value| {
        entries(ma, "labels") == entries(mb, "labels")
            && entries(&ma["labels"], HASH_LABEL) == entries(&mb["labels"], HASH_LABEL)
    };
    a.len() == b.len()
        && a.iter().all(|(k, v)| match (k.as_str(), b.get(k)) {
            (_, None) => false,
            ("metadata", Some(other)) => same_metadata(v, other),
            (_, Some(other)) => v == other,
        })
}

/// maxSurge and maxUnavailable resolved against the desired replicas (`ResolveFenceposts`).
pub fn fenceposts(deployment: &Value) -> (i64, i64) {
    let replicas = int(&deployment["spec"]["replicas"]);
    let strategy = &deployment["spec"]["strategy"];
    if strategy["type"] != "RollingUpdate" {
        return (0, 0);
    }
    let ru = &strategy["rollingUpdate"];
    let surge = scaled_value(&ru["maxSurge"], replicas, true);
    let mut unavailable = scaled_value(&ru["maxUnavailable"], replicas, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable.min(replicas))
}

fn creation(rs: &Value) -> String {
    rs["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

pub fn reconcile(state: &mut State, now: jiff::Timestamp, scope: &Scope) {
    let (Some(deploy_rt), Some(_)) = (
        resource(state, "apps", "v1", "deployments"),
        resource(state, "apps", "v1", "replicasets"),
    ) else {
        return;
    };
    for d in scope.touched_where(state, &deploy_rt, |d| !is_terminating(d)) {
        sync_deployment(state, &d, now, scope);
    }
}

struct Sync<'a> {
    state: &'a mut State,
    now: jiff::Timestamp,
    now_text: String,
}

impl Sync<'_> {
    fn rs_rt(&self) -> std::sync::Arc<crate::registry::ResourceType> {
        resource(self.state, "apps", "v1", "replicasets").expect("replicasets are served")
    }

    fn scale(&mut self, d: &Value, rs: &Arc<Value>, replicas: i64) -> Arc<Value> {
        let old_count = spec_replicas(rs);
        if old_count == replicas {
            return Arc::clone(rs);
        }
        let (surge, _) = fenceposts(d);
        let mut updated = super::working_copy(rs);
        updated["spec"]["replicas"] = json!(replicas);
        let annotations = updated["metadata"]["annotations"].as_object_mut();
        if let Some(a) = annotations {
            a.insert(
                DESIRED.into(),
                json!(int(&d["spec"]["replicas"]).to_string()),
            );
            a.insert(
                MAX.into(),
                json!((int(&d["spec"]["replicas"]) + surge).to_string()),
            );
        }
        let rt = self.rs_rt();
        let stored = write_as(
            self.state,
            &rt,
            Some(rs),
            updated,
            MANAGER,
            None,
            &self.now_text,
        );
        let direction = if replicas > old_count { "up" } else { "down" };
        record_event(
            self.state,
            d,
            "ScalingReplicaSet",
            &format!(
                "Scaled {direction} replica set {} from {old_count} to {replicas}",
                name(rs)
            ),
            "deployment-controller",
            &self.now_text,
        );
        Arc::new(stored)
    }
}

fn sync_deployment(state: &mut State, d: &Value, now: jiff::Timestamp, scope: &Scope) {
    let mut s = Sync {
        state,
        now,
        now_text: timestamp(now),
    };
    let rs_rt = s.rs_rt();
    let deploy_rt = resource(s.state, "apps", "v1", "deployments").expect("deployments are served");
    let ns = namespace(d).to_string();
    if label_selector(&d["spec"]["selector"]).is_none() {
        return;
    }
    let mut all: Vec<Arc<Value>> = controlled_by(s.state, &rs_rt, d);
    all.retain(|rs| !is_terminating(rs));
    all.sort_by_key(|rs| creation(rs));
    let replicas = int(&d["spec"]["replicas"]);
    let template = &d["spec"]["template"];
    let paused = d["spec"]["paused"] == Value::Bool(true);
    let mut deployment = super::working_copy(d);

    let mut new_rs = all
        .iter()
        .find(|rs| same_template_ignoring_hash(&rs["spec"]["template"], template))
        .cloned();
    let max_revision = all.iter().map(|rs| revision(rs)).max().unwrap_or(0);
    if new_rs.is_none() && !paused {
        // A new ReplicaSet for the current template, sized as NewRSNewReplicas allows.
        let collision = int(&d["status"]["collisionCount"]);
        let hash = pod_template_hash(template, collision);
        let (surge, _) = fenceposts(d);
        let current: i64 = all.iter().map(|rs| spec_replicas(rs)).sum();
        let size = if d["spec"]["strategy"]["type"] == "Recreate" {
            if all.iter().all(|rs| spec_replicas(rs) == 0) {
                replicas
            } else {
                0
            }
        } else {
            let max_total = replicas + surge;
            if current >= max_total {
                0
            } else {
                (max_total - current).min(replicas)
            }
        };
        let mut labels = template["metadata"]["labels"].clone();
        labels[HASH_LABEL] = json!(hash);
        let mut selector_value = d["spec"]["selector"].clone();
        selector_value["matchLabels"][HASH_LABEL] = json!(hash);
        let mut rs_template = template.clone();
        rs_template["metadata"]["labels"] = labels.clone();
        let mut spec =
            json!({"replicas": size, "selector": selector_value, "template": rs_template});
        if int(&d["spec"]["minReadySeconds"]) > 0 {
            spec["minReadySeconds"] = d["spec"]["minReadySeconds"].clone();
        }
        let rs = json!({
            "metadata": {
                "name": format!("{}-{hash}", name(d)),
                "namespace": ns,
                "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": s.now_text,
                "generation": 1,
                "labels": labels,
                "annotations": {
                    DESIRED: replicas.to_string(),
                    MAX: (replicas + surge).to_string(),
                    REVISION: (max_revision + 1).to_string(),
                },
                "ownerReferences": [owner_reference(d)],
            },
            "spec": spec,
            "status": {"replicas": 0},
        });
        let created = write_as(s.state, &rs_rt, None, rs, MANAGER, None, &s.now_text);
        if size > 0 {
            record_event(
                s.state,
                d,
                "ScalingReplicaSet",
                &format!("Scaled up replica set {} from 0 to {size}", name(&created)),
                "deployment-controller",
                &s.now_text,
            );
        }
        // First status write: revision annotation and Progressing/NewReplicaSetCreated.
        deployment["metadata"]["annotations"][REVISION] = json!((max_revision + 1).to_string());
        let mut conditions = deployment["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        set_deployment_condition(
            &mut conditions,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            &format!("Created new replica set \"{}\"", name(&created)),
            &s.now_text,
        );
        deployment["status"]["conditions"] = json!(conditions);
        deployment = write_as(
            s.state,
            &deploy_rt,
            Some(d),
            deployment,
            MANAGER,
            Some("status"),
            &s.now_text,
        );
        let created = Arc::new(created);
        all.push(Arc::clone(&created));
        new_rs = Some(created);
    } else if let Some(rs) = &new_rs {
        // Keep the deployment's revision annotation in line with its newest ReplicaSet.
        let rev = revision(rs).to_string();
        if deployment["metadata"]["annotations"][REVISION].as_str() != Some(rev.as_str()) {
            let mut updated = deployment.clone();
            updated["metadata"]["annotations"][REVISION] = json!(rev);
            deployment = write_as(
                s.state,
                &deploy_rt,
                Some(&deployment),
                updated,
                MANAGER,
                Some("status"),
                &s.now_text,
            );
        }
    }

    if !paused && let Some(new) = new_rs.clone() {
        let old: Vec<Arc<Value>> = all
            .iter()
            .filter(|rs| uid(rs) != uid(&new))
            .cloned()
            .collect();
        if deployment["spec"]["strategy"]["type"] == "Recreate" {
            recreate(&mut s, &deployment, &old, &new);
        } else {
            rolling(&mut s, &deployment, &old, &new);
        }
    } else if paused {
        // Paused: only proportional scaling of the current ReplicaSet is done here.
        if let Some(new) = new_rs.clone()
            && all.len() == 1
            && spec_replicas(&new) != replicas
        {
            s.scale(&deployment, &new, replicas);
        }
    }

    // Re-read what the sync wrote, then compute status.
    let mut all: Vec<Arc<Value>> = controlled_by(s.state, &rs_rt, d);
    all.retain(|rs| !is_terminating(rs));
    let new = new_rs.and_then(|n| all.iter().find(|rs| uid(rs) == uid(&n)).cloned());
    cleanup_history(&mut s, &deployment, &all, new.as_deref());
    // Cloned only when the status changes.
    let current = s
        .state
        .store
        .get(&deploy_rt.key(), &ns, name(d))
        .unwrap_or(&deployment);
    let status = calculate_status(current, &all, new.as_deref(), paused, &s.now_text, s.now);
    if let Some(at) = progress_deadline(current, &status) {
        scope.recheck_at(current, at);
    }
    if status != current["status"] {
        let current = super::working_copy(current);
        let mut updated = current.clone();
        updated["status"] = status;
        write_as(
            s.state,
            &deploy_rt,
            Some(&current),
            updated,
            MANAGER,
            Some("status"),
            &s.now_text,
        );
    }
}

fn rolling(s: &mut Sync<'_>, d: &Value, old: &[Arc<Value>], new: &Arc<Value>) {
    let replicas = int(&d["spec"]["replicas"]);
    let (surge, max_unavailable) = fenceposts(d);
    // reconcileNewReplicaSet
    let new_count = spec_replicas(new);
    if new_count != replicas {
        let target = if new_count > replicas {
            replicas
        } else {
            let current: i64 = old.iter().map(|rs| spec_replicas(rs)).sum::<i64>() + new_count;
            let max_total = replicas + surge;
            if current >= max_total {
                new_count
            } else {
                new_count + (max_total - current).min(replicas - new_count)
            }
        };
        if target != new_count {
            s.scale(d, new, target);
            return;
        }
    }
    // reconcileOldReplicaSets
    let old_pods: i64 = old.iter().map(|rs| spec_replicas(rs)).sum();
    if old_pods == 0 {
        return;
    }
    let all_pods = old_pods + spec_replicas(new);
    let min_available = replicas - max_unavailable;
    let new_unavailable = spec_replicas(new) - int(&new["status"]["availableReplicas"]);
    let max_scaled_down = all_pods - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return;
    }
    let mut old: Vec<Arc<Value>> = old.to_vec();
    old.sort_by_key(|rs| creation(rs));
    // cleanupUnhealthyReplicas: scale down old pods that are not available first.
    let mut cleaned = 0;
    for rs in old.iter_mut() {
        if cleaned >= max_scaled_down {
            break;
        }
        let count = spec_replicas(rs);
        let available = int(&rs["status"]["availableReplicas"]);
        if count == 0 || count == available {
            continue;
        }
        let down = (max_scaled_down - cleaned).min(count - available);
        *rs = s.scale(d, rs, count - down);
        cleaned += down;
    }
    // scaleDownOldReplicaSetsForRollingUpdate: keep minAvailable available pods.
    let available: i64 = old
        .iter()
        .map(|rs| int(&rs["status"]["availableReplicas"]))
        .sum::<i64>()
        + int(&new["status"]["availableReplicas"]);
    if available <= min_available {
        return;
    }
    let total = available - min_available;
    let mut done = 0;
    for rs in &old {
        if done >= total {
            break;
        }
        let count = spec_replicas(rs);
        if count == 0 {
            continue;
        }
        let down = count.min(total - done);
        s.scale(d, rs, count - down);
        done += down;
    }
}

fn recreate(s: &mut Sync<'_>, d: &Value, old: &[Arc<Value>], new: &Arc<Value>) {
    let active: Vec<&Arc<Value>> = old.iter().filter(|rs| spec_replicas(rs) > 0).collect();
    if !active.is_empty() {
        for rs in active {
            s.scale(d, rs, 0);
        }
        return;
    }
    // Wait until the old pods are gone before scaling up.
    if old.iter().any(|rs| int(&rs["status"]["replicas"]) > 0) {
        return;
    }
    let replicas = int(&d["spec"]["replicas"]);
    if spec_replicas(new) != replicas {
        s.scale(d, new, replicas);
    }
}

/// Deletes old, empty ReplicaSets beyond revisionHistoryLimit once the rollout is complete.
fn cleanup_history(s: &mut Sync<'_>, d: &Value, all: &[Arc<Value>], new: Option<&Value>) {
    let limit = d["spec"]["revisionHistoryLimit"].as_i64().unwrap_or(10);
    let mut old: Vec<&Arc<Value>> = all
        .iter()
        .filter(|rs| new.is_none_or(|n| uid(n) != uid(rs)))
        .filter(|rs| spec_replicas(rs) == 0 && int(&rs["status"]["replicas"]) == 0)
        .collect();
    if (old.len() as i64) <= limit {
        return;
    }
    old.sort_by_key(|rs| revision(rs));
    let excess = old.len() - limit.max(0) as usize;
    let rt = s.rs_rt();
    for rs in old.into_iter().take(excess) {
        crate::gc::delete_object(s.state, &rt, rs, "Background", &s.now_text);
    }
}

/// `SetDeploymentCondition`: same status and reason is a no-op; otherwise the condition is
/// replaced (moving to the end) and keeps its lastTransitionTime while the status holds.
fn set_deployment_condition(
    conditions: &mut Vec<Value>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
) {
    let existing = conditions.iter().position(|c| c["type"] == type_);
    let mut transition = json!(now);
    if let Some(i) = existing {
        let c = &conditions[i];
        if c["status"] == status && c["reason"] == reason {
            return;
        }
        if c["status"] == status {
            transition = c["lastTransitionTime"].clone();
        }
        conditions.remove(i);
    }
    conditions.push(json!({
        "type": type_,
        "status": status,
        "lastUpdateTime": now,
        "lastTransitionTime": transition,
        "reason": reason,
        "message": message,
    }));
}

fn put_nonzero(status: &mut serde_json::Map<String, Value>, key: &str, value: i64) {
    if value != 0 {
        status.insert(key.into(), json!(value));
    }
}

/// When a rollout still progressing times out: one second after lastUpdateTime plus
/// progressDeadlineSeconds (the check is "more than the deadline", in whole seconds).
fn progress_deadline(d: &Value, status: &Value) -> Option<jiff::Timestamp> {
    let deadline = d["spec"]["progressDeadlineSeconds"].as_i64()?;
    let progressing = status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Progressing")?;
    if progressing["status"] != "True" || progressing["reason"] == "NewReplicaSetAvailable" {
        return None;
    }
    let since: jiff::Timestamp = progressing["lastUpdateTime"].as_str()?.parse().ok()?;
    Some(since + jiff::SignedDuration::from_secs(deadline + 1))
}

fn calculate_status(
    d: &Value,
    all: &[Arc<Value>],
    new: Option<&Value>,
    paused: bool,
    now_text: &str,
    now: jiff::Timestamp,
) -> Value {
    let replicas = int(&d["spec"]["replicas"]);
    let sum = |f: &str| all.iter().map(|rs| int(&rs["status"][f])).sum::<i64>();
    let available = sum("availableReplicas");
    let total_spec: i64 = all.iter().map(|rs| spec_replicas(rs)).sum();
    let actual = sum("replicas");
    let updated = new.map(|n| int(&n["status"]["replicas"])).unwrap_or(0);
    let ready = sum("readyReplicas");
    let unavailable = (total_spec - available).max(0);

    let old = &d["status"];
    let mut status = serde_json::Map::new();
    status.insert(
        "observedGeneration".into(),
        d["metadata"]["generation"].clone(),
    );
    put_nonzero(&mut status, "replicas", actual);
    put_nonzero(&mut status, "updatedReplicas", updated);
    put_nonzero(&mut status, "readyReplicas", ready);
    put_nonzero(&mut status, "availableReplicas", available);
    put_nonzero(&mut status, "unavailableReplicas", unavailable);
    status.insert(
        "terminatingReplicas".into(),
        json!(sum("terminatingReplicas")),
    );
    if let Some(c) = old.get("collisionCount") {
        status.insert("collisionCount".into(), c.clone());
    }
    let mut conditions = old["conditions"].as_array().cloned().unwrap_or_default();
    let (_, max_unavailable) = fenceposts(d);
    if available >= replicas - max_unavailable {
        set_deployment_condition(
            &mut conditions,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            now_text,
        );
    } else {
        set_deployment_condition(
            &mut conditions,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            now_text,
        );
    }

    let new_name = new.map(|n| name(n).to_string()).unwrap_or_default();
    let progressing = conditions
        .iter()
        .find(|c| c["type"] == "Progressing")
        .cloned();
    if paused {
        set_deployment_condition(
            &mut conditions,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused",
            now_text,
        );
    } else if progressing
        .as_ref()
        .is_some_and(|c| c["reason"] == "DeploymentPaused")
    {
        set_deployment_condition(
            &mut conditions,
            "Progressing",
            "Unknown",
            "DeploymentResumed",
            "Deployment is resumed",
            now_text,
        );
    } else if d["spec"]["progressDeadlineSeconds"].is_i64() {
        let complete_already = actual == updated
            && progressing
                .as_ref()
                .is_some_and(|c| c["reason"] == "NewReplicaSetAvailable");
        let generation_seen =
            int(&d["metadata"]["generation"]) <= int(&status["observedGeneration"]);
        let complete =
            updated == replicas && actual == replicas && available == replicas && generation_seen;
        let old_old = int(&old["replicas"]) - int(&old["updatedReplicas"]);
        let progressed = updated > int(&old["updatedReplicas"])
            || (actual - updated) < old_old
            || ready > int(&old["readyReplicas"])
            || available > int(&old["availableReplicas"]);
        let deadline = int(&d["spec"]["progressDeadlineSeconds"]);
        let timed_out = progressing.as_ref().is_some_and(|c| {
            c["reason"] == "ProgressDeadlineExceeded"
                || c["lastUpdateTime"]
                    .as_str()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .is_some_and(|t| now.as_second() - t.as_second() > deadline)
        });
        if !complete_already {
            if complete {
                set_deployment_condition(
                    &mut conditions,
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    &format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                    now_text,
                );
            } else if progressed {
                // Progress refreshes lastUpdateTime even when the reason stays the same.
                conditions.retain(|c| {
                    !(c["type"] == "Progressing"
                        && c["status"] == "True"
                        && c["reason"] == "ReplicaSetUpdated")
                });
                let transition = progressing
                    .as_ref()
                    .filter(|c| c["status"] == "True")
                    .map(|c| c["lastTransitionTime"].clone());
                set_deployment_condition(
                    &mut conditions,
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    &format!("ReplicaSet \"{new_name}\" is progressing."),
                    now_text,
                );
                if let (Some(t), Some(last)) = (transition, conditions.last_mut()) {
                    last["lastTransitionTime"] = t;
                }
            } else if timed_out {
                set_deployment_condition(
                    &mut conditions,
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    &format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                    now_text,
                );
            }
        }
    }
    status.insert("conditions".into(), json!(conditions));
    Value::Object(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_matches_its_replica_sets_apart_from_the_hash_label() {
        let template = json!({"metadata": {"labels": {"app": "a"}, "annotations": {"x": "1"}},
            "spec": {"containers": [{"name": "c", "image": "i:1"}]}});
        let mut rs = template.clone();
        rs["metadata"]["labels"][HASH_LABEL] = json!("abc");
        assert!(same_template_ignoring_hash(&rs, &template));
        let mut other_image = rs.clone();
        other_image["spec"]["containers"][0]["image"] = json!("i:2");
        assert!(!same_template_ignoring_hash(&other_image, &template));
        let mut other_label = rs.clone();
        other_label["metadata"]["labels"]["app"] = json!("b");
        assert!(!same_template_ignoring_hash(&other_label, &template));
        let mut extra_annotation = rs.clone();
        extra_annotation["metadata"]["annotations"]["y"] = json!("2");
        assert!(!same_template_ignoring_hash(&extra_annotation, &template));
        let mut extra_field = rs;
        extra_field["spec"]["hostname"] = json!("h");
        assert!(!same_template_ignoring_hash(&extra_field, &template));
    }
}
