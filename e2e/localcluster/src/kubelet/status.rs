//! The kubelet's part of a pod's status, merged into the stored pod: phase, IPs, start
//! time, container statuses and the conditions the kubelet owns. Other conditions (the
//! scheduler's PodScheduled, readiness-gate conditions written by others) are kept as they
//! are; Ready honours `spec.readinessGates`.

use serde_json::{Value, json};

use super::pod::{ContainerRuntime, ContainerState, PodRuntime};
use crate::controllers::set_condition;

fn state_json(state: &ContainerState) -> Value {
    match state {
        ContainerState::Waiting { reason, message } => {
            let mut w = json!({"reason": reason});
            if let Some(m) = message {
                w["message"] = json!(m);
            }
            json!({"waiting": w})
        }
        ContainerState::Running { started_at } => json!({"running": {"startedAt": started_at}}),
        ContainerState::Terminated {
            exit_code,
            reason,
            started_at,
            finished_at,
            container_id,
            message,
        } => {
            let mut t = json!({"exitCode": exit_code, "reason": reason, "startedAt": started_at,
                "finishedAt": finished_at, "containerID": container_id});
            if let Some(m) = message {
                t["message"] = json!(m);
            }
            json!({"terminated": t})
        }
    }
}

fn container_status(c: &ContainerRuntime) -> Value {
    let mut s = json!({
        "name": c.name,
        "state": state_json(&c.state),
        "lastState": c.last_state.as_ref().map(state_json).unwrap_or_else(|| json!({})),
        "ready": c.ready,
        "restartCount": c.restart_count,
        "image": c.image,
        "imageID": "",
        "started": c.started,
    });
    if let Some(id) = &c.container_id {
        s["containerID"] = json!(id);
    }
    s
}

/// Why the readiness gates are not all True, if they are not.
fn gates_not_ready(pod: &Value) -> Option<String> {
    let conditions = pod["status"]["conditions"].as_array();
    for gate in pod["spec"]["readinessGates"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let type_ = gate["conditionType"].as_str().unwrap_or("");
        let found = conditions
            .into_iter()
            .flatten()
            .find(|c| c["type"] == type_);
        match found {
            None => {
                return Some(format!(
                    "corresponding condition of pod readiness gate \"{type_}\" does not exist."
                ));
            }
            Some(c) if c["status"] != "True" => {
                return Some(format!(
                    "the status of pod readiness gate \"{type_}\" is not \"True\", but {}",
                    c["status"].as_str().unwrap_or("")
                ));
            }
            Some(_) => {}
        }
    }
    None
}

fn condition(type_: &str, ok: bool, reason: Option<&str>, message: Option<String>) -> Value {
    let mut c = json!({"type": type_, "status": if ok { "True" } else { "False" }});
    if !ok {
        if let Some(r) = reason {
            c["reason"] = json!(r);
        }
        if let Some(m) = message {
            c["message"] = json!(m);
        }
    }
    c
}

/// The pod with the kubelet's status fields from `rt`.
pub fn compose(pod: &Value, rt: &PodRuntime, now: &str, host_ip: &str) -> Value {
    let mut p = pod.clone();
    let phase = rt.terminal_phase.unwrap_or_else(|| {
        if rt.initialized && rt.containers.iter().all(|c| c.ever_started) {
            "Running"
        } else {
            "Pending"
        }
    });
    let status = &mut p["status"];
    if !status.is_object() {
        *status = json!({});
    }
    status["phase"] = json!(phase);
    status["hostIP"] = json!(host_ip);
    status["hostIPs"] = json!([{"ip": host_ip}]);
    if let Some(ip) = rt.ip {
        status["podIP"] = json!(ip.to_string());
        status["podIPs"] = json!([{"ip": ip.to_string()}]);
    }
    status["startTime"] = json!(rt.start_time);
    status["containerStatuses"] = json!(
        rt.containers
            .iter()
            .map(container_status)
            .collect::<Vec<_>>()
    );
    if !rt.init_containers.is_empty() {
        status["initContainerStatuses"] = json!(
            rt.init_containers
                .iter()
                .map(container_status)
                .collect::<Vec<_>>()
        );
    }
    let unready: Vec<&str> = rt
        .containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let completed = rt.terminal_phase == Some("Succeeded");
    let containers_reason = if completed {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let containers_message = (!unready.is_empty() && !completed)
        .then(|| format!("containers with unready status: [{}]", unready.join(" ")));
    let containers_ready = unready.is_empty() && rt.terminal_phase.is_none();
    let gates = gates_not_ready(pod);
    let (ready, ready_reason, ready_message) = match (&containers_ready, &gates) {
        (true, None) => (true, None, None),
        (true, Some(m)) => (false, Some("ReadinessGatesNotReady"), Some(m.clone())),
        (false, _) => (false, Some(containers_reason), containers_message.clone()),
    };
    let incomplete: Vec<&str> = rt
        .init_containers
        .iter()
        .filter(|c| !matches!(c.state, ContainerState::Terminated { exit_code: 0, .. }))
        .map(|c| c.name.as_str())
        .collect();
    let mut conditions = status["conditions"].as_array().cloned().unwrap_or_default();
    for c in [
        condition("PodReadyToStartContainers", rt.sandbox_ready, None, None),
        condition(
            "Initialized",
            rt.initialized,
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                incomplete.join(" ")
            )),
        ),
        condition("Ready", ready, ready_reason, ready_message),
        condition(
            "ContainersReady",
            containers_ready,
            Some(containers_reason),
            containers_message,
        ),
    ] {
        set_condition(&mut conditions, c, now, false);
    }
    for c in conditions.iter_mut() {
        if [
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
        ]
        .contains(&c["type"].as_str().unwrap_or(""))
        {
            c["lastProbeTime"] = Value::Null;
        }
    }
    status["conditions"] = json!(conditions);
    p
}
