//! The disruption controller: PodDisruptionBudget status (expected, healthy, allowed).

use serde_json::{Value, json};

use super::{
    MANAGER, Scope, controller_uid, is_terminating, label_selector, namespace, pod_ready, resource,
    scaled_value, selector_candidates, timestamp,
};
use crate::api::State;
use crate::system::write_as;

/// The replica count of a pod's top controller (Deployment through ReplicaSet, or the ReplicaSet).
fn controller_scale(state: &State, pod: &Value) -> Option<(String, i64)> {
    let rs_rt = resource(state, "apps", "v1", "replicasets")?;
    let deploy_rt = resource(state, "apps", "v1", "deployments")?;
    let owner = controller_uid(pod)?;
    // By uid through the store's index, in the pod's namespace.
    let by_uid = |key: &crate::store::ResourceKey, wanted: &str| {
        state
            .store
            .find_uid(wanted)
            .filter(|at| &at.key == key && at.namespace == namespace(pod))
            .and_then(|at| state.store.get_ref(at))
    };
    let rs = by_uid(&rs_rt.key(), owner)?;
    if let Some(d_uid) = controller_uid(rs)
        && let Some(d) = by_uid(&deploy_rt.key(), d_uid)
    {
        return Some((
            d_uid.to_string(),
            d["spec"]["replicas"].as_i64().unwrap_or(1),
        ));
    }
    Some((
        owner.to_string(),
        rs["spec"]["replicas"].as_i64().unwrap_or(1),
    ))
}

pub fn reconcile(state: &mut State, now: jiff::Timestamp, scope: &Scope) {
    let (Some(pdb_rt), Some(pod_rt)) = (
        resource(state, "policy", "v1", "poddisruptionbudgets"),
        resource(state, "", "v1", "pods"),
    ) else {
        return;
    };
    let now_text = timestamp(now);
    let affected = |pdb: &Value| {
        let selector = &pdb["spec"]["selector"];
        scope.touches(pdb)
            || match selector["matchExpressions"]
                .as_array()
                .is_none_or(Vec::is_empty)
            {
                // matchLabels only: compared as is, without building a selector per pod.
                true => scope.touches_pods(namespace(pdb), &selector["matchLabels"], |pod| {
                    selector["matchLabels"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .all(|(k, v)| pod["metadata"]["labels"].get(k) == Some(v))
                }),
                false => {
                    let parsed = label_selector(selector);
                    scope.touches_pods(namespace(pdb), &selector["matchLabels"], |pod| {
                        parsed.as_ref().is_none_or(|s| s.matches(pod))
                    })
                }
            }
    };
    for pdb in scope.selecting_changed_pods(state, &pdb_rt, false, affected) {
        if is_terminating(&pdb) {
            continue;
        }
        let ns = namespace(&pdb).to_string();
        let Some(selector) = label_selector(&pdb["spec"]["selector"]) else {
            continue;
        };
        let mut pods = selector_candidates(state, &pod_rt, &ns, &pdb["spec"]["selector"]);
        pods.retain(|p| selector.matches(p) && !is_terminating(p));
        let healthy = pods.iter().filter(|p| pod_ready(p)).count() as i64;
        let spec = &pdb["spec"];
        // Integer minAvailable counts pods; percentages and maxUnavailable use controller scale.
        let by_scale = spec["maxUnavailable"].is_number()
            || spec["maxUnavailable"].is_string()
            || spec["minAvailable"].is_string();
        let expected = if by_scale {
            let mut controllers = std::collections::BTreeMap::new();
            for p in &pods {
                if let Some((id, scale)) = controller_scale(state, p) {
                    controllers.insert(id, scale);
                }
            }
            controllers.values().sum::<i64>()
        } else {
            pods.len() as i64
        };
        let desired = if !spec["maxUnavailable"].is_null() {
            (expected - scaled_value(&spec["maxUnavailable"], expected, true)).max(0)
        } else if !spec["minAvailable"].is_null() {
            scaled_value(&spec["minAvailable"], expected, true)
        } else {
            0
        };
        let allowed = (healthy - desired).max(0);
        let generation = pdb["metadata"]["generation"].clone();
        let (status_text, reason) = if allowed > 0 {
            ("True", "SufficientPods")
        } else {
            ("False", "InsufficientPods")
        };
        let mut conditions = pdb["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let transition = conditions
            .iter()
            .find(|c| c["type"] == "DisruptionAllowed" && c["status"] == status_text)
            .map(|c| c["lastTransitionTime"].clone())
            .unwrap_or(json!(now_text));
        conditions.retain(|c| c["type"] != "DisruptionAllowed");
        conditions.push(json!({"type": "DisruptionAllowed", "status": status_text, "observedGeneration": generation,
            "lastTransitionTime": transition, "reason": reason, "message": ""}));
        let status = json!({"observedGeneration": generation, "disruptionsAllowed": allowed, "currentHealthy": healthy,
            "desiredHealthy": desired, "expectedPods": expected, "conditions": conditions});
        if pdb["status"] != status {
            let mut updated = super::working_copy(&pdb);
            updated["status"] = status;
            write_as(
                state,
                &pdb_rt,
                Some(&pdb),
                updated,
                MANAGER,
                Some("status"),
                &now_text,
            );
        }
    }
}
