//! Rolling-update health gating: a new revision proceeds only while its pods prove healthy, and
//! a failed one is halted and rolled back. See `docs/rollouts.md`.
//!
//! - [`decide`]: the pure state machine.
//! - [`gate`]: one reconcile's gate: checks, decision, record, Events.
//! - [`record`]: the durable record it keeps in a ConfigMap.
//! - [`smoke`]: the smoke check of one pod.
//!
//! This module's functions do the I/O around them: checking pods and writing their readiness
//! gate condition through `pods/status`.

pub mod decide;
pub mod gate;
pub mod record;
pub mod smoke;

use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kbeast_api::labels::SMOKE_PASSED_CONDITION;
use kbeast_api::query_contract::HTTP_PORT;
use kbeast_api::{FIELD_MANAGER, KnowledgeProject};
use kbeast_client::{ApiKeyEntry, Scope};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

pub use decide::{Decision, Finished, Phase, PodView, RolloutInput, TemplateChoice, decide};
pub use gate::{GateContext, Gated, RolloutState, gate_rollout};
pub use record::{RolloutRecord, desired_record_config_map, record_from};
pub use smoke::{BUILT_IN_SMOKE_QUERY, SmokeExpectation, SmokeFailure, smoke_check};

use crate::error::{Error, Result};
use crate::facts::embedding_model;
use crate::metrics::Metrics;

/// Reason of the gate condition when the check passed, and when it failed.
pub const SMOKE_PASSED_REASON: &str = "SmokeCheckPassed";
pub const SMOKE_FAILED_REASON: &str = "SmokeCheckFailed";

/// What a healthy pod of `project` answers, and the key to ask with.
pub fn smoke_expectation(
    project: &KnowledgeProject,
    api_keys_file: Option<&str>,
) -> SmokeExpectation {
    let spec = &project.spec;
    SmokeExpectation {
        model: embedding_model(project),
        dimension: u32::try_from(spec.embedding.dimension).unwrap_or(0),
        query: spec
            .rollout
            .smoke_query
            .clone()
            .unwrap_or_else(|| BUILT_IN_SMOKE_QUERY.to_string()),
        api_key: api_keys_file.and_then(read_key),
    }
}

/// The first key of the keys file that may search.
fn read_key(keys_file: &str) -> Option<String> {
    let entries: Vec<ApiKeyEntry> = serde_yaml::from_str(keys_file).ok()?;
    entries
        .into_iter()
        .find(|e| e.scopes.contains(&Scope::Read) || e.scopes.contains(&Scope::Admin))
        .map(|e| e.secret)
}

/// Smoke-checks every pod that needs it (concurrently) and records each result in the pod's
/// `kbeast.io/smoke-passed` condition. `pods` are updated to what was written. A failed check
/// is written only when its message changes, so retries do not write.
pub async fn gate_pods(
    client: &Client,
    metrics: &Metrics,
    http: &reqwest::Client,
    namespace: &str,
    pods: &mut [PodView],
    expected: &SmokeExpectation,
    now: &Time,
) -> Result<()> {
    let port = u16::try_from(HTTP_PORT).expect("the query port fits in u16");
    let candidates: Vec<usize> = (0..pods.len())
        .filter(|&i| pods[i].needs_smoke_check())
        .collect();
    let checks = candidates.iter().map(|&i| {
        let ip = pods[i].ip.clone().unwrap_or_default();
        async move { smoke_check(http, &ip, port, expected).await }
    });
    let results = join_all(checks).await;
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    for (i, result) in candidates.into_iter().zip(results) {
        let pod = &mut pods[i];
        let (passed, reason, message) = match result {
            Ok(()) => (true, SMOKE_PASSED_REASON, "smoke check passed".to_string()),
            Err(failure) => {
                metrics
                    .smoke_check_failures
                    .with_label_values(&[failure.label()])
                    .inc();
                (false, SMOKE_FAILED_REASON, failure.to_string())
            }
        };
        if pod.smoke_passed == Some(passed) && pod.smoke_message.as_deref() == Some(&message) {
            continue;
        }
        let mut condition = json!({
            "type": SMOKE_PASSED_CONDITION,
            "status": if passed { "True" } else { "False" },
            "reason": reason,
            "message": message,
        });
        if pod.smoke_passed != Some(passed) {
            condition["lastTransitionTime"] = json!(now);
        }
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        // Strategic merge: conditions merge by type, so the kubelet's stay untouched.
        let body = json!({"status": {"conditions": [condition]}});
        match api
            .patch_status(&pod.name, &params, &Patch::Strategic(&body))
            .await
        {
            Ok(_) => {}
            // The pod went away meanwhile; nothing to gate.
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(source) => {
                return Err(Error::WriteSmokeCondition {
                    pod: pod.name.clone(),
                    source,
                });
            }
        }
        pod.smoke_passed = Some(passed);
        pod.smoke_message = Some(message);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
