//! The Job controller: runs pods up to `parallelism` until `completions` succeeded, or marks
//! the Job Failed past `backoffLimit`. Pods finish only when told to (`finish_pods`).

use serde_json::{Value, json};

use super::{
    MANAGER, Scope, controlled_by, is_terminating, name, namespace, owner_reference, pod_ready,
    resource, timestamp, uid,
};
use crate::api::State;
use crate::system::{record_event, write_as};

fn finished(job: &Value) -> bool {
    job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
}

fn condition(type_: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({"type": type_, "status": "True", "lastProbeTime": now, "lastTransitionTime": now, "reason": reason, "message": message})
}

/// Labels Kubernetes puts on a Job's pod template and selector.
pub fn job_labels(job: &Value) -> serde_json::Map<String, Value> {
    let mut labels = serde_json::Map::new();
    labels.insert("batch.kubernetes.io/controller-uid".into(), json!(uid(job)));
    labels.insert("batch.kubernetes.io/job-name".into(), json!(name(job)));
    labels.insert("controller-uid".into(), json!(uid(job)));
    labels.insert("job-name".into(), json!(name(job)));
    labels
}

pub fn reconcile(state: &mut State, now: jiff::Timestamp, scope: &Scope) {
    let (Some(job_rt), Some(pod_rt)) = (
        resource(state, "batch", "v1", "jobs"),
        resource(state, "", "v1", "pods"),
    ) else {
        return;
    };
    let now_text = timestamp(now);
    for job in scope.touched_where(state, &job_rt, |job| {
        !(is_terminating(job) || finished(job) || job["spec"]["suspend"] == Value::Bool(true))
    }) {
        let mut pods: Vec<std::sync::Arc<Value>> = controlled_by(state, &pod_rt, &job);
        pods.retain(|p| !is_terminating(p));
        let phase = |p: &Value| {
            p["status"]["phase"]
                .as_str()
                .unwrap_or("Pending")
                .to_string()
        };
        let succeeded = pods.iter().filter(|p| phase(p) == "Succeeded").count() as i64;
        let failed = pods.iter().filter(|p| phase(p) == "Failed").count() as i64;
        let active: Vec<&Value> = pods
            .iter()
            .filter(|p| !matches!(phase(p).as_str(), "Succeeded" | "Failed"))
            .map(|p| &**p)
            .collect();
        let completions = job["spec"]["completions"].as_i64().unwrap_or(1);
        let parallelism = job["spec"]["parallelism"].as_i64().unwrap_or(1);
        let backoff_limit = job["spec"]["backoffLimit"].as_i64().unwrap_or(6);

        let mut status = serde_json::Map::new();
        status.insert(
            "startTime".into(),
            job["status"]
                .get("startTime")
                .cloned()
                .unwrap_or(json!(now_text)),
        );
        let mut conditions = Vec::new();
        if succeeded >= completions {
            let message = "Reached expected number of succeeded pods";
            conditions.push(condition(
                "SuccessCriteriaMet",
                "CompletionsReached",
                message,
                &now_text,
            ));
            conditions.push(condition(
                "Complete",
                "CompletionsReached",
                message,
                &now_text,
            ));
            status.insert("completionTime".into(), json!(now_text));
            record_event(
                state,
                &job,
                "Completed",
                "Job completed",
                "job-controller",
                &now_text,
            );
        } else if failed > backoff_limit {
            let message = "Job has reached the specified backoff limit";
            conditions.push(condition(
                "FailureTarget",
                "BackoffLimitExceeded",
                message,
                &now_text,
            ));
            conditions.push(condition(
                "Failed",
                "BackoffLimitExceeded",
                message,
                &now_text,
            ));
            record_event(
                state,
                &job,
                "BackoffLimitExceeded",
                message,
                "job-controller",
                &now_text,
            );
        } else {
            let wanted = parallelism.min(completions - succeeded);
            for _ in active.len() as i64..wanted {
                let pod = job_pod(&job, &now_text);
                let created = write_as(state, &pod_rt, None, pod, MANAGER, None, &now_text);
                record_event(
                    state,
                    &job,
                    "SuccessfulCreate",
                    &format!("Created pod: {}", name(&created)),
                    "job-controller",
                    &now_text,
                );
            }
        }
        let still_active = if conditions.is_empty() {
            (active.len() as i64).max(parallelism.min(completions - succeeded))
        } else {
            0
        };
        if still_active > 0 {
            status.insert("active".into(), json!(still_active));
        }
        if succeeded > 0 {
            status.insert("succeeded".into(), json!(succeeded));
        }
        if failed > 0 {
            status.insert("failed".into(), json!(failed));
        }
        status.insert(
            "ready".into(),
            json!(active.iter().filter(|p| pod_ready(p)).count()),
        );
        status.insert("terminating".into(), json!(0));
        status.insert("uncountedTerminatedPods".into(), json!({}));
        if !conditions.is_empty() {
            status.insert("conditions".into(), json!(conditions));
        }
        let status = Value::Object(status);
        if job["status"] != status {
            let mut updated = super::working_copy(&job);
            updated["status"] = status;
            write_as(
                state,
                &job_rt,
                Some(&job),
                updated,
                MANAGER,
                Some("status"),
                &now_text,
            );
        }
    }
}

fn job_pod(job: &Value, now: &str) -> Value {
    let template = &job["spec"]["template"];
    let mut labels = template["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    labels.extend(job_labels(job));
    let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..5].to_string();
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("{}-{suffix}", name(job)),
            "generateName": format!("{}-", name(job)),
            "namespace": namespace(job),
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": now,
            "labels": labels,
            "ownerReferences": [owner_reference(job)],
        },
        "spec": template["spec"],
    });
    crate::defaults::apply("Pod", &mut pod);
    pod
}
