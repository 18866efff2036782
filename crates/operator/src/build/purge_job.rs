use k8s_openapi::api::batch::v1::{Job, JobSpec};
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMapEnvSource, Container, EnvFromSource, PodSpec, PodTemplateSpec, ResourceRequirements,
    SecretEnvSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kbeast_api::KnowledgeProject;
use kbeast_api::labels::{COMPONENT_LABEL, PURGE_FOR_UID_ANNOTATION};
use kube::ResourceExt;

use super::deployment::{
    QUERY_BINARY, container_security_context, pod_security_context, query_image,
};
use crate::facts::{common_labels, names};
use crate::settings::OperatorSettings;

/// Seconds a finished purge Job is kept for inspection.
const FINISHED_JOB_TTL_SECONDS: i32 = 3600;

/// Job that deletes an object-store project's data, run by the finalizer for
/// `deletionPolicy: Delete`. It reuses the project's ConfigMap and credentials. It is not owned
/// by the project (a foreground deletion would have the garbage collector delete it, and the
/// project's ServiceAccount, before it ran): the annotation `kbeast.io/purge-for-uid` ties it
/// to the project, and its pod runs as the namespace's `default` ServiceAccount, without a
/// token.
pub fn desired_purge_job(project: &KnowledgeProject, settings: &OperatorSettings) -> Option<Job> {
    let store = project.spec.storage.object_store.as_ref()?;
    let mut env_from = vec![EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource {
            name: names::config_map(project),
            optional: Some(true),
        }),
        ..EnvFromSource::default()
    }];
    if let Some(credentials) = &store.credentials_secret_ref {
        env_from.push(EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: credentials.name.clone(),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        });
    }
    let mut labels = common_labels(project);
    labels.insert(COMPONENT_LABEL.to_string(), "purge".to_string());
    let metadata = ObjectMeta {
        name: Some(names::purge_job(project)),
        namespace: project.namespace(),
        labels: Some(labels.clone()),
        annotations: Some(BTreeMap::from([(
            PURGE_FOR_UID_ANNOTATION.to_string(),
            project.uid().unwrap_or_default(),
        )])),
        ..ObjectMeta::default()
    };
    let quantity = |q: &str| Quantity(q.to_string());
    Some(Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(4),
            ttl_seconds_after_finished: Some(FINISHED_JOB_TTL_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("OnFailure".to_string()),
                    automount_service_account_token: Some(false),
                    security_context: Some(pod_security_context()),
                    containers: vec![Container {
                        name: "purge".to_string(),
                        image: Some(query_image(project, settings)),
                        command: Some(vec![QUERY_BINARY.to_string()]),
                        args: Some(vec![
                            "purge".to_string(),
                            "--data".to_string(),
                            store.uri.clone(),
                        ]),
                        env_from: Some(env_from),
                        security_context: Some(container_security_context()),
                        resources: Some(ResourceRequirements {
                            requests: Some(BTreeMap::from([
                                ("cpu".to_string(), quantity("50m")),
                                ("memory".to_string(), quantity("64Mi")),
                            ])),
                            limits: Some(BTreeMap::from([
                                ("cpu".to_string(), quantity("500m")),
                                ("memory".to_string(), quantity("256Mi")),
                            ])),
                            ..ResourceRequirements::default()
                        }),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}
