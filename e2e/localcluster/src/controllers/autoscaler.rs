//! The HPA controller as it behaves without a metrics API (as recorded): it reads the
//! target's scale and reports that metrics are unavailable; it never changes replicas.

use serde_json::{Value, json};

use super::{MANAGER, Scope, is_terminating, namespace, objects_where, resource, timestamp};
use crate::api::State;
use crate::system::write_as;

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    previous: &Value,
    now: &str,
) -> Value {
    let transition = previous["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_ && c["status"] == status)
        .map(|c| c["lastTransitionTime"].clone())
        .unwrap_or(json!(now));
    json!({"type": type_, "status": status, "lastTransitionTime": transition, "reason": reason, "message": message})
}

pub fn reconcile(state: &mut State, now: jiff::Timestamp, scope: &Scope) {
    let Some(hpa_rt) = resource(state, "autoscaling", "v2", "horizontalpodautoscalers") else {
        return;
    };
    let now_text = timestamp(now);
    let affected = |hpa: &Value| {
        scope.touches(hpa)
            || scope.touches_name(
                namespace(hpa),
                hpa["spec"]["scaleTargetRef"]["name"].as_str().unwrap_or(""),
            )
    };
    for hpa in objects_where(state, &hpa_rt, None, affected) {
        if is_terminating(&hpa) {
            continue;
        }
        let target = &hpa["spec"]["scaleTargetRef"];
        let kind = target["kind"].as_str().unwrap_or("");
        let plural = format!("{}s", kind.to_lowercase());
        let group = target["apiVersion"]
            .as_str()
            .and_then(|v| v.split_once('/'))
            .map(|(g, _)| g)
            .unwrap_or("");
        let scaled = resource(state, group, "v1", &plural).and_then(|rt| {
            state
                .store
                .get(
                    &rt.key(),
                    namespace(&hpa),
                    target["name"].as_str().unwrap_or(""),
                )
                .cloned()
        });
        let previous = &hpa["status"];
        let mut status =
            json!({"desiredReplicas": previous["desiredReplicas"].as_i64().unwrap_or(0)});
        let conditions = match &scaled {
            Some(object) => {
                status["currentReplicas"] =
                    json!(object["status"]["replicas"].as_i64().unwrap_or(0));
                status["currentMetrics"] = json!([{"type": ""}]);
                let metric = hpa["spec"]["metrics"][0]["resource"]["name"]
                    .as_str()
                    .unwrap_or("cpu")
                    .to_string();
                vec![
                    condition(
                        "AbleToScale",
                        "True",
                        "SucceededGetScale",
                        "the HPA controller was able to get the target's current scale",
                        previous,
                        &now_text,
                    ),
                    condition(
                        "ScalingActive",
                        "False",
                        "FailedGetResourceMetric",
                        &format!(
                            "the HPA was unable to compute the replica count: failed to get {metric} utilization: unable to get metrics for resource {metric}: unable to fetch metrics from resource metrics API: the server could not find the requested resource (get pods.metrics.k8s.io)"
                        ),
                        previous,
                        &now_text,
                    ),
                ]
            }
            None => {
                status["currentMetrics"] = Value::Null;
                vec![condition(
                    "AbleToScale",
                    "False",
                    "FailedGetScale",
                    &format!(
                        "the HPA controller was unable to get the target's current scale: {plural}.{group} \"{}\" not found",
                        target["name"].as_str().unwrap_or("")
                    ),
                    previous,
                    &now_text,
                )]
            }
        };
        status["conditions"] = json!(conditions);
        if hpa["status"] != status {
            let mut updated = super::working_copy(&hpa);
            updated["status"] = status;
            write_as(
                state,
                &hpa_rt,
                Some(&hpa),
                updated,
                MANAGER,
                Some("status"),
                &now_text,
            );
        }
    }
}
