use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kbeast_api::KnowledgeProject;

use super::with_desired_hash;
use crate::facts::{child_meta, names, selector_labels};

/// A PodDisruptionBudget that never blocks a drain: `maxUnavailable` (default 1, never 0, which
/// validate() rejects) lets at least one pod go even at one replica, and `AlwaysAllow` lets
/// unhealthy pods be evicted whatever the budget says.
pub fn desired_pdb(project: &KnowledgeProject) -> PodDisruptionBudget {
    let max_unavailable = project
        .spec
        .disruption
        .as_ref()
        .and_then(|d| d.max_unavailable.clone())
        .unwrap_or(IntOrString::Int(1));
    with_desired_hash(PodDisruptionBudget {
        metadata: child_meta(project, names::workload(project)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(max_unavailable),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(project)),
                ..LabelSelector::default()
            }),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_string()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}
