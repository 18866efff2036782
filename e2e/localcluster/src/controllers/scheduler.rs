//! A scheduler for one fake node: binds every pending, unscheduled pod to it.

use serde_json::json;

use super::{NODE_NAME, Scope, is_terminating, resource, set_condition, timestamp};
use crate::api::State;
use crate::system::write_as;

/// The node pods are bound to (created when the scheduler runs).
pub fn ensure_node(state: &mut State, now: &str) {
    let Some(rt) = resource(state, "", "v1", "nodes") else {
        return;
    };
    if state.store.get(&rt.key(), "", NODE_NAME).is_some() {
        return;
    }
    let node = json!({
        "metadata": {"name": NODE_NAME, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now,
            "labels": {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {
            "capacity": {"cpu": "2", "memory": "24Gi", "pods": "110"},
            "allocatable": {"cpu": "2", "memory": "24Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": now, "lastTransitionTime": now,
                "reason": "KubeletReady", "message": "kubelet is posting ready status (emulated)"}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE_NAME}],
            "nodeInfo": {"kubeletVersion": "v1.36.2", "operatingSystem": "linux", "architecture": "amd64",
                "containerRuntimeVersion": "localcluster://0", "kernelVersion": "", "osImage": "kbeast-localcluster",
                "machineID": "", "systemUUID": "", "bootID": "", "kubeProxyVersion": ""}
        }
    });
    write_as(state, &rt, None, node, "kubelet", None, now);
}

pub fn reconcile(state: &mut State, now: jiff::Timestamp, scope: &Scope) {
    let Some(pod_rt) = resource(state, "", "v1", "pods") else {
        return;
    };
    let now_text = timestamp(now);
    ensure_node(state, &now_text);
    // A scoped pass looks at the changed pods only (a new pod is a change); nearly every pod
    // is bound already.
    let pending = scope.touched_where(state, &pod_rt, |pod| {
        let scheduler = pod["spec"]["schedulerName"]
            .as_str()
            .unwrap_or("default-scheduler");
        !is_terminating(pod)
            && pod["spec"]["nodeName"].is_null()
            && scheduler == "default-scheduler"
    });
    for pod in pending {
        let mut bound = super::working_copy(&pod);
        bound["spec"]["nodeName"] = json!(super::NODE_NAME);
        let mut conditions = bound["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        set_condition(
            &mut conditions,
            json!({"type": "PodScheduled", "status": "True"}),
            &now_text,
            false,
        );
        if let Some(last) = conditions.iter_mut().find(|c| c["type"] == "PodScheduled") {
            last["lastProbeTime"] = serde_json::Value::Null;
        }
        bound["status"]["conditions"] = json!(conditions);
        write_as(
            state,
            &pod_rt,
            Some(&pod),
            bound,
            "kube-scheduler",
            None,
            &now_text,
        );
    }
}
