use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapEnvSource, Container, EnvFromSource, PodSpec, PodTemplateSpec, SecretEnvSource,
};
use kbeast_api::KnowledgeProject;

use super::deployment::{
    QUERY_BINARY, container_security_context, pod_security_context, query_image,
};
use crate::facts::{child_meta, names};
use crate::settings::OperatorSettings;

/// Seconds a finished purge Job is kept for inspection.
const FINISHED_JOB_TTL_SECONDS: i32 = 3600;

/// Job that deletes an object-store project's data, run by the finalizer for
/// `deletionPolicy: Delete`. It reuses the project's ConfigMap and credentials.
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
    let mut metadata = child_meta(project, names::purge_job(project));
    metadata.labels.get_or_insert_default().insert(
        "app.kubernetes.io/component".to_string(),
        "purge".to_string(),
    );
    Some(Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(4),
            ttl_seconds_after_finished: Some(FINISHED_JOB_TTL_SECONDS),
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(PodSpec {
                    restart_policy: Some("OnFailure".to_string()),
                    automount_service_account_token: Some(false),
                    service_account_name: Some(names::workload(project)),
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
