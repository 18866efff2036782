//! Pure builders of the desired child objects, one module per kind.
//!
//! Each builder takes the project plus observed facts and returns a typed object; nothing here
//! talks to the API server.

mod config_map;
mod deployment;
mod hpa;
mod network_policy;
mod pdb;
mod purge_job;
mod pvc;
mod secret;
mod service;
mod service_account;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kbeast_api::KnowledgeProject;
use kbeast_api::labels::*;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::settings::OperatorSettings;

pub use config_map::{data_location, desired_config_map, embedding_model};
pub use deployment::{
    desired_deployment, query_container_name, query_image, secrets_hash, template_revision,
    with_pod_template,
};
pub use hpa::desired_hpa;
pub use network_policy::{Endpoint, desired_network_policy, parse_endpoint};
pub use pdb::desired_pdb;
pub use purge_job::desired_purge_job;
pub use pvc::desired_pvc;
pub use secret::{ApiKeySet, desired_api_keys_secret};
pub use service::desired_service;
pub use service_account::desired_service_account;

/// Facts from the cluster that the builders need.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedFacts {
    /// Hash of the data of the Secrets the pods read as environment variables (embedder key,
    /// object-store credentials), so that rotating one rolls the pods. API keys are not in
    /// it: the pods reload their mounted keys file.
    pub secrets_hash: String,
}

/// Every child the project should have. Optional ones are `None` when not wanted.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredChildren {
    pub service_account: ServiceAccount,
    pub network_policy: NetworkPolicy,
    pub config_map: ConfigMap,
    pub pvc: Option<PersistentVolumeClaim>,
    pub service: Service,
    pub deployment: Deployment,
    pub pdb: PodDisruptionBudget,
    pub hpa: Option<HorizontalPodAutoscaler>,
}

/// Builds every child the project should have (the API-keys Secret is built separately: it is
/// created once and never overwritten).
pub fn desired_children(
    project: &KnowledgeProject,
    settings: &OperatorSettings,
    facts: &ObservedFacts,
) -> DesiredChildren {
    let config_map = desired_config_map(project);
    DesiredChildren {
        service_account: desired_service_account(project),
        network_policy: desired_network_policy(project, settings),
        pvc: desired_pvc(project),
        service: desired_service(project),
        deployment: desired_deployment(project, settings, &config_map, facts),
        pdb: desired_pdb(project),
        hpa: desired_hpa(project),
        config_map,
    }
}

/// Names of a project's children.
pub mod names {
    use kbeast_api::KnowledgeProject;
    use kube::ResourceExt;

    /// Deployment, Service, ServiceAccount, HPA, PDB and NetworkPolicy share the project's name.
    pub fn workload(project: &KnowledgeProject) -> String {
        project.name_any()
    }
    pub fn config_map(project: &KnowledgeProject) -> String {
        format!("{}-config", project.name_any())
    }
    pub fn generated_api_keys_secret(project: &KnowledgeProject) -> String {
        format!("{}-api-keys", project.name_any())
    }
    /// The Secret the pods read keys from: the referenced one, or the generated one.
    pub fn api_keys_secret(project: &KnowledgeProject) -> String {
        match &project.spec.auth {
            Some(auth) => auth.api_keys_secret_ref.name.clone(),
            None => generated_api_keys_secret(project),
        }
    }
    pub fn pvc(project: &KnowledgeProject) -> String {
        format!("{}-data", project.name_any())
    }
    /// The ConfigMap with the durable rollout record.
    pub fn rollout_record(project: &KnowledgeProject) -> String {
        format!("{}-rollout", project.name_any())
    }
    pub fn purge_job(project: &KnowledgeProject) -> String {
        format!("{}-purge", project.name_any())
    }
}

/// Labels that select a project's query pods. Never change them: Deployment selectors are immutable.
pub fn selector_labels(project: &KnowledgeProject) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_string(), APP_NAME.to_string()),
        (INSTANCE_LABEL.to_string(), project.name_any()),
    ])
}

/// Labels on every child.
pub fn common_labels(project: &KnowledgeProject) -> BTreeMap<String, String> {
    let mut labels = selector_labels(project);
    labels.insert(COMPONENT_LABEL.to_string(), "knowledge-base".to_string());
    labels.insert(PART_OF_LABEL.to_string(), "kbeast".to_string());
    labels.insert(MANAGED_BY_LABEL.to_string(), "kbeast-operator".to_string());
    labels.insert(PROJECT_LABEL.to_string(), project.name_any());
    labels
}

/// Metadata of a child: name, namespace, labels and the controller owner reference.
pub fn child_meta(project: &KnowledgeProject, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: project.namespace(),
        labels: Some(common_labels(project)),
        owner_references: project.controller_owner_ref(&()).map(|owner| vec![owner]),
        ..ObjectMeta::default()
    }
}

/// Short, stable hash of any serialisable value.
pub fn stable_hash<T: Serialize>(value: &T) -> String {
    let json = serde_json::to_vec(value).expect("child objects serialise to JSON");
    let digest = Sha256::digest(&json);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Records the hash of the object in its `kbeast.io/desired-hash` annotation. Any change of what
/// we want, including a field we stop setting, changes it, so "annotation matches" plus "every
/// desired field is live" means nothing needs applying.
pub fn with_desired_hash<K: Resource + Serialize>(mut object: K) -> K {
    let hash = stable_hash(&object);
    object
        .meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(DESIRED_HASH_ANNOTATION.to_string(), hash);
    object
}

#[cfg(test)]
pub(crate) mod test_support {
    use kbeast_api::KnowledgeProject;

    /// Loads a sample from `config/samples/` and gives it the identity the API server would.
    pub fn sample(file: &str) -> KnowledgeProject {
        let path = format!("{}/../../config/samples/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut project: KnowledgeProject =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        project
            .metadata
            .namespace
            .get_or_insert_with(|| "tenants".to_string());
        project.metadata.uid = Some("6a3c1f2e-0000-4000-8000-000000000001".to_string());
        project.metadata.generation = Some(1);
        project
    }
}

#[cfg(test)]
mod tests;
