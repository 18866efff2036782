use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use kbeast_api::KnowledgeProject;

use super::with_desired_hash;
use crate::facts::{child_meta, names};

/// CPU target when the project names none.
pub const DEFAULT_CPU_UTILIZATION: i32 = 80;

/// The HorizontalPodAutoscaler, when autoscaling is enabled.
pub fn desired_hpa(project: &KnowledgeProject) -> Option<HorizontalPodAutoscaler> {
    let autoscaling = project.spec.autoscaling.as_ref().filter(|a| a.enabled)?;
    let mut metrics = Vec::new();
    let cpu = match (
        autoscaling.target_cpu_utilization_percentage,
        autoscaling.target_memory_utilization_percentage,
    ) {
        (Some(cpu), _) => Some(cpu),
        (None, None) => Some(DEFAULT_CPU_UTILIZATION),
        (None, Some(_)) => None,
    };
    if let Some(cpu) = cpu {
        metrics.push(utilization_metric("cpu", cpu));
    }
    if let Some(memory) = autoscaling.target_memory_utilization_percentage {
        metrics.push(utilization_metric("memory", memory));
    }
    Some(with_desired_hash(HorizontalPodAutoscaler {
        metadata: child_meta(project, names::workload(project)),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_string()),
                kind: "Deployment".to_string(),
                name: names::workload(project),
            },
            min_replicas: Some(autoscaling.min_replicas.unwrap_or(1)),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(metrics),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        ..HorizontalPodAutoscaler::default()
    }))
}

fn utilization_metric(resource: &str, percent: i32) -> MetricSpec {
    MetricSpec {
        type_: "Resource".to_string(),
        resource: Some(ResourceMetricSource {
            name: resource.to_string(),
            target: MetricTarget {
                type_: "Utilization".to_string(),
                average_utilization: Some(percent),
                ..MetricTarget::default()
            },
        }),
        ..MetricSpec::default()
    }
}
