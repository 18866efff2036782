use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, PersistentVolumeClaimVolumeSource,
    PodAffinity, PodAffinityTerm, PodReadinessGate, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SeccompProfile, SecretEnvSource, SecretKeySelector,
    SecretVolumeSource, SecurityContext, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kbeast_api::labels::{
    CONFIG_HASH_ANNOTATION, POD_REVISION_LABEL, REVISION_ANNOTATION, SMOKE_PASSED_CONDITION,
};
use kbeast_api::quantity::parse_bytes;
use kbeast_api::query_contract::{self, HTTP_PORT, HTTP_PORT_NAME, env};
use kbeast_api::{KnowledgeProject, VolumeAccessMode};

use super::{ObservedFacts, stable_hash, with_desired_hash};
use crate::facts::{child_meta, names, selector_labels};
use crate::settings::OperatorSettings;

/// The query binary, on the PATH of the query image (which may also hold the operator).
pub const QUERY_BINARY: &str = "kbeast-query";
/// UID and GID of the query process (the distroless `nonroot` user).
const QUERY_UID: i64 = 65532;
const DATA_VOLUME: &str = "data";
const KEYS_VOLUME: &str = "api-keys";
const TMP_VOLUME: &str = "tmp";
/// `sizeLimit` of the pods' `/tmp`.
const TMP_SIZE_LIMIT: &str = "256Mi";
/// Room for the container's logs and writable layer in its default `ephemeral-storage` limit.
const LOGS_AND_LAYER_BYTES: u64 = 512 * 1024 * 1024;

/// Name of the query container in every pod.
pub fn query_container_name() -> &'static str {
    "query"
}

/// The query Deployment.
///
/// `replicas` is omitted when autoscaling is enabled, so the operator never fights the HPA; the
/// apply step hands the field over first, see `apply::hand_over_replicas`.
pub fn desired_deployment(
    project: &KnowledgeProject,
    settings: &OperatorSettings,
    config_map: &ConfigMap,
    facts: &ObservedFacts,
) -> Deployment {
    let spec = &project.spec;
    let rollout = &spec.rollout;
    let replicas = (!spec.autoscaling_enabled()).then(|| spec.replicas.unwrap_or(1));

    let mut pod_annotations = spec.pod_annotations.clone().unwrap_or_default();
    pod_annotations.insert(
        CONFIG_HASH_ANNOTATION.to_string(),
        stable_hash(&(&config_map.data, &facts.secrets_hash)),
    );
    let mut pod_labels = selector_labels(project);
    pod_labels.insert(
        kbeast_api::labels::PROJECT_LABEL.to_string(),
        names::workload(project),
    );

    let mut template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(pod_annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(pod_spec(project, settings)),
    };
    let revision = template_revision(&template);
    // Labelled after hashing, so pods of one revision can be selected.
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.insert(POD_REVISION_LABEL.to_string(), revision.clone());
    }
    let mut metadata = child_meta(project, names::workload(project));
    metadata.annotations = Some(BTreeMap::from([(
        REVISION_ANNOTATION.to_string(),
        revision,
    )]));

    with_desired_hash(Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas,
            selector: LabelSelector {
                match_labels: Some(selector_labels(project)),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_string()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(rollout.max_surge.clone().unwrap_or(IntOrString::Int(1))),
                    max_unavailable: Some(
                        rollout
                            .max_unavailable
                            .clone()
                            .unwrap_or(IntOrString::Int(0)),
                    ),
                }),
            }),
            progress_deadline_seconds: Some(rollout.progress_deadline_seconds),
            revision_history_limit: Some(10),
            paused: rollout.paused.then_some(true),
            template,
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    })
}

/// The Deployment with another pod template and its revision: how a rollback is applied.
pub fn with_pod_template(
    mut deployment: Deployment,
    template: PodTemplateSpec,
    revision: &str,
) -> Deployment {
    if let Some(annotations) = deployment.metadata.annotations.as_mut() {
        annotations.remove(kbeast_api::labels::DESIRED_HASH_ANNOTATION);
        annotations.insert(REVISION_ANNOTATION.to_string(), revision.to_string());
    }
    if let Some(spec) = deployment.spec.as_mut() {
        spec.template = template;
    }
    with_desired_hash(deployment)
}

/// Revision of a pod template: every change to it is a new revision.
pub fn template_revision(template: &PodTemplateSpec) -> String {
    stable_hash(template)
}

/// Image of the query pods.
pub fn query_image(project: &KnowledgeProject, settings: &OperatorSettings) -> String {
    project
        .spec
        .image
        .clone()
        .unwrap_or_else(|| settings.query_image.clone())
}

fn pod_spec(project: &KnowledgeProject, settings: &OperatorSettings) -> PodSpec {
    let spec = &project.spec;
    PodSpec {
        service_account_name: Some(names::workload(project)),
        automount_service_account_token: Some(false),
        security_context: Some(pod_security_context()),
        containers: vec![query_container(project, settings)],
        volumes: Some(volumes(project)),
        node_selector: spec.node_selector.clone(),
        tolerations: spec.tolerations.clone(),
        affinity: affinity(project),
        topology_spread_constraints: topology_spread(project),
        priority_class_name: spec.priority_class_name.clone(),
        termination_grace_period_seconds: Some(30),
        // The operator's smoke check decides when a pod may take traffic (see `rollout`).
        readiness_gates: Some(vec![PodReadinessGate {
            condition_type: SMOKE_PASSED_CONDITION.to_string(),
        }]),
        ..PodSpec::default()
    }
}

fn query_container(project: &KnowledgeProject, settings: &OperatorSettings) -> Container {
    let spec = &project.spec;
    let mut env_from = vec![EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource {
            name: names::config_map(project),
            optional: Some(false),
        }),
        ..EnvFromSource::default()
    }];
    if let Some(credentials) = spec
        .storage
        .object_store
        .as_ref()
        .and_then(|s| s.credentials_secret_ref.as_ref())
    {
        env_from.push(EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: credentials.name.clone(),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        });
    }
    let env = spec.embedding.api_key_secret_ref.as_ref().map(|key_ref| {
        vec![EnvVar {
            name: env::EMBEDDING_API_KEY.to_string(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: key_ref.name.clone(),
                    key: key_ref.key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }]
    });
    let mut mounts = vec![
        VolumeMount {
            name: KEYS_VOLUME.to_string(),
            mount_path: query_contract::API_KEYS_DIR.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: TMP_VOLUME.to_string(),
            mount_path: "/tmp".to_string(),
            ..VolumeMount::default()
        },
    ];
    if spec.storage.object_store.is_none() {
        mounts.insert(
            0,
            VolumeMount {
                name: DATA_VOLUME.to_string(),
                mount_path: query_contract::DATA_DIR.to_string(),
                ..VolumeMount::default()
            },
        );
    }
    Container {
        name: query_container_name().to_string(),
        image: Some(query_image(project, settings)),
        command: Some(vec![QUERY_BINARY.to_string()]),
        args: Some(vec!["serve".to_string()]),
        env_from: Some(env_from),
        env,
        ports: Some(vec![ContainerPort {
            name: Some(HTTP_PORT_NAME.to_string()),
            container_port: HTTP_PORT,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        liveness_probe: Some(http_probe("/healthz", 10, 6)),
        startup_probe: Some(http_probe("/healthz", 2, 60)),
        resources: Some(
            spec.resources
                .clone()
                .unwrap_or_else(|| default_resources(project)),
        ),
        security_context: Some(container_security_context()),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String(HTTP_PORT_NAME.to_string()),
            scheme: Some("HTTP".to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(2),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

/// Requests and limits when the project names none: enough for a small tenant with the hash
/// embedder, and an `ephemeral-storage` limit that holds the pod's emptyDirs (their size limits)
/// plus its logs and writable layer.
fn default_resources(project: &KnowledgeProject) -> ResourceRequirements {
    let empty_dirs = [
        Some(TMP_SIZE_LIMIT),
        project
            .spec
            .storage
            .ephemeral
            .as_ref()
            .map(|e| e.size_limit()),
    ];
    // validate() has rejected unparsable quantities before any builder runs.
    let ephemeral_bytes: u64 = empty_dirs
        .into_iter()
        .flatten()
        .filter_map(|q| parse_bytes(q).ok())
        .sum::<u64>()
        + LOGS_AND_LAYER_BYTES;
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("100m".to_string())),
            ("memory".to_string(), Quantity("256Mi".to_string())),
        ])),
        limits: Some(BTreeMap::from([
            ("memory".to_string(), Quantity("1Gi".to_string())),
            (
                "ephemeral-storage".to_string(),
                Quantity(ephemeral_bytes.to_string()),
            ),
        ])),
        ..ResourceRequirements::default()
    }
}

pub(crate) fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(QUERY_UID),
        run_as_group: Some(QUERY_UID),
        fs_group: Some(QUERY_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

pub(crate) fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

fn volumes(project: &KnowledgeProject) -> Vec<Volume> {
    let storage = &project.spec.storage;
    let mut volumes = vec![
        Volume {
            name: KEYS_VOLUME.to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names::api_keys_secret(project)),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: TMP_VOLUME.to_string(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity(TMP_SIZE_LIMIT.to_string())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    let data = if storage.volume.is_some() {
        Some(Volume {
            name: DATA_VOLUME.to_string(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: names::pvc(project),
                read_only: None,
            }),
            ..Volume::default()
        })
    } else {
        storage.ephemeral.as_ref().map(|ephemeral| Volume {
            name: DATA_VOLUME.to_string(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity(ephemeral.size_limit().to_string())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        })
    };
    if let Some(data) = data {
        volumes.insert(0, data);
    }
    volumes
}

/// Whether all pods must share one node: a ReadWriteOnce volume attaches to one node only.
fn pinned_to_one_node(project: &KnowledgeProject) -> bool {
    project
        .spec
        .storage
        .volume
        .as_ref()
        .is_some_and(|v| v.access_mode == VolumeAccessMode::ReadWriteOnce)
}

/// The user's affinity; with a ReadWriteOnce volume, plus a required co-location with the
/// project's other pods, so a surge pod can mount the volume during an update.
fn affinity(project: &KnowledgeProject) -> Option<Affinity> {
    let user = project.spec.affinity.clone();
    if !pinned_to_one_node(project) {
        return user;
    }
    let mut affinity = user.unwrap_or_default();
    let pod_affinity = affinity
        .pod_affinity
        .get_or_insert_with(PodAffinity::default);
    pod_affinity
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(Vec::new)
        .push(PodAffinityTerm {
            label_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(project)),
                ..LabelSelector::default()
            }),
            topology_key: "kubernetes.io/hostname".to_string(),
            ..PodAffinityTerm::default()
        });
    Some(affinity)
}

/// Spread replicas over nodes and zones when they can move freely.
fn topology_spread(project: &KnowledgeProject) -> Option<Vec<TopologySpreadConstraint>> {
    if pinned_to_one_node(project) {
        return None;
    }
    let constraint = |topology_key: &str| TopologySpreadConstraint {
        max_skew: 1,
        topology_key: topology_key.to_string(),
        when_unsatisfiable: "ScheduleAnyway".to_string(),
        label_selector: Some(LabelSelector {
            match_labels: Some(selector_labels(project)),
            ..LabelSelector::default()
        }),
        ..TopologySpreadConstraint::default()
    };
    Some(vec![
        constraint("kubernetes.io/hostname"),
        constraint("topology.kubernetes.io/zone"),
    ])
}

/// Hash of the data of the Secrets the pods read, in a stable order.
pub fn secrets_hash<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> String {
    let mut parts: Vec<(String, &Option<BTreeMap<String, k8s_openapi::ByteString>>)> = secrets
        .into_iter()
        .map(|s| (s.metadata.name.clone().unwrap_or_default(), &s.data))
        .collect();
    parts.sort_by(|a, b| a.0.cmp(&b.0));
    stable_hash(&parts)
}
