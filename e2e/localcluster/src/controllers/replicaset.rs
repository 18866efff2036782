//! The ReplicaSet controller: creates and deletes Pods to match `spec.replicas` and reports
//! replicas, fullyLabeled, ready and available counts.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{
    MANAGER, Scope, controlled_by, is_terminating, label_selector, name, namespace,
    owner_reference, pod_available, pod_ready, resource, timestamp,
};
use crate::api::State;
use crate::system::{record_event, write_as};

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// The Pod a ReplicaSet creates from its template (before API defaulting and admission).
pub fn pod_from_template(rs: &Value, now: &str) -> Value {
    let template = &rs["spec"]["template"];
    let prefix = format!("{}-", name(rs));
    let mut metadata = json!({
        "name": format!("{prefix}{}", random_suffix()),
        "generateName": prefix,
        "namespace": namespace(rs),
        "uid": uuid::Uuid::new_v4().to_string(),
        "creationTimestamp": now,
        "labels": template["metadata"]["labels"],
        "ownerReferences": [owner_reference(rs)],
    });
    if let Some(a) = template["metadata"].get("annotations") {
        metadata["annotations"] = a.clone();
    }
    let mut pod =
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]});
    crate::defaults::apply("Pod", &mut pod);
    pod
}

pub fn reconcile(state: &mut State, now: jiff::Timestamp, scope: &Scope) {
    let (Some(rs_rt), Some(pod_rt)) = (
        resource(state, "apps", "v1", "replicasets"),
        resource(state, "", "v1", "pods"),
    ) else {
        return;
    };
    let now_text = timestamp(now);
    for rs in scope.touched_where(state, &rs_rt, |rs| !is_terminating(rs)) {
        let ns = namespace(&rs).to_string();
        let Some(selector) = label_selector(&rs["spec"]["selector"]) else {
            continue;
        };
        let (mut pods, terminating): (Vec<Arc<Value>>, Vec<Arc<Value>>) =
            controlled_by(state, &pod_rt, &rs)
                .into_iter()
                .partition(|p| !is_terminating(p));
        let desired = rs["spec"]["replicas"].as_i64().unwrap_or(1);
        let diff = desired - pods.len() as i64;
        if diff > 0 {
            for _ in 0..diff {
                let pod = pod_from_template(&rs, &now_text);
                let created = write_as(state, &pod_rt, None, pod, MANAGER, None, &now_text);
                record_event(
                    state,
                    &rs,
                    "SuccessfulCreate",
                    &format!("Created pod: {}", name(&created)),
                    "replicaset-controller",
                    &now_text,
                );
                pods.push(Arc::new(created));
            }
        } else if diff < 0 {
            // Delete the least useful pods first: unscheduled, not ready, newest.
            pods.sort_by_key(|p| {
                (
                    !p["spec"]["nodeName"].is_null(),
                    pod_ready(p),
                    std::cmp::Reverse(
                        p["metadata"]["creationTimestamp"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                    ),
                )
            });
            let victims: Vec<Arc<Value>> = pods.drain(..(-diff) as usize).collect();
            for p in victims {
                crate::gc::delete_object(state, &pod_rt, &p, "Background", &now_text);
                record_event(
                    state,
                    &rs,
                    "SuccessfulDelete",
                    &format!("Deleted pod: {}", name(&p)),
                    "replicaset-controller",
                    &now_text,
                );
            }
        }
        let min_ready = rs["spec"]["minReadySeconds"].as_i64().unwrap_or(0);
        let count = |f: &dyn Fn(&Value) -> bool| pods.iter().filter(|p| f(p)).count() as i64;
        let mut status = serde_json::Map::new();
        status.insert("replicas".into(), json!(pods.len()));
        let labeled = count(&|p| selector.matches(p));
        if labeled > 0 {
            status.insert("fullyLabeledReplicas".into(), json!(labeled));
        }
        let ready = count(&|p| pod_ready(p));
        if ready > 0 {
            status.insert("readyReplicas".into(), json!(ready));
        }
        let available = count(&|p| pod_available(p, min_ready, now));
        // Ready pods not yet available become so with time alone.
        if let Some(at) = pods
            .iter()
            .filter(|p| pod_ready(p) && !pod_available(p, min_ready, now))
            .filter_map(|p| super::ready_since(p))
            .min()
        {
            scope.recheck_at(&rs, at + jiff::SignedDuration::from_secs(min_ready));
        }
        if available > 0 {
            status.insert("availableReplicas".into(), json!(available));
        }
        // Pods with deletionTimestamp still stopping (only a pod runner keeps them around).
        status.insert("terminatingReplicas".into(), json!(terminating.len()));
        status.insert(
            "observedGeneration".into(),
            rs["metadata"]["generation"].clone(),
        );
        let status = Value::Object(status);
        let current = state
            .store
            .get_shared(&rs_rt.key(), &ns, name(&rs))
            .cloned()
            .unwrap_or(rs);
        if current["status"] != status {
            let mut updated = super::working_copy(&current);
            updated["status"] = status;
            write_as(
                state,
                &rs_rt,
                Some(&current),
                updated,
                MANAGER,
                Some("status"),
                &now_text,
            );
        }
    }
}
