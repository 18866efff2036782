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
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kbeast_api::KnowledgeProject;
use kbeast_api::labels::DESIRED_HASH_ANNOTATION;
use kube::Resource;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::settings::OperatorSettings;

pub use config_map::{data_location, desired_config_map};
pub use deployment::{
    desired_deployment, query_container_name, query_image, secrets_hash, template_revision,
    with_pod_template,
};
pub use hpa::desired_hpa;
pub use network_policy::desired_network_policy;
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

/// One desired child. [`DesiredChildren::in_apply_order`] lists them in the one order both
/// `apply` and `render` use.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // A handful per reconcile, each moved once: boxing buys nothing.
pub enum DesiredChild {
    ServiceAccount(ServiceAccount),
    NetworkPolicy(NetworkPolicy),
    ConfigMap(ConfigMap),
    /// The generated API-keys Secret: created once, never overwritten.
    ApiKeysSecret(Secret),
    Pvc(PersistentVolumeClaim),
    Service(Service),
    Deployment(Deployment),
    Pdb(PodDisruptionBudget),
    Hpa(HorizontalPodAutoscaler),
}

impl DesiredChild {
    /// The object as YAML.
    pub fn to_yaml(&self) -> String {
        let yaml = match self {
            Self::ServiceAccount(o) => serde_yaml::to_string(o),
            Self::NetworkPolicy(o) => serde_yaml::to_string(o),
            Self::ConfigMap(o) => serde_yaml::to_string(o),
            Self::ApiKeysSecret(o) => serde_yaml::to_string(o),
            Self::Pvc(o) => serde_yaml::to_string(o),
            Self::Service(o) => serde_yaml::to_string(o),
            Self::Deployment(o) => serde_yaml::to_string(o),
            Self::Pdb(o) => serde_yaml::to_string(o),
            Self::Hpa(o) => serde_yaml::to_string(o),
        };
        yaml.expect("child objects serialise to YAML")
    }
}

impl DesiredChildren {
    /// Every child in apply order: the NetworkPolicy isolates the pods before any exists, the
    /// configuration and Secret exist before the Deployment reads them, and the PDB and HPA
    /// follow the Deployment they select.
    pub fn in_apply_order(self, api_keys_secret: Option<Secret>) -> Vec<DesiredChild> {
        let Self {
            service_account,
            network_policy,
            config_map,
            pvc,
            service,
            deployment,
            pdb,
            hpa,
        } = self;
        [
            Some(DesiredChild::ServiceAccount(service_account)),
            Some(DesiredChild::NetworkPolicy(network_policy)),
            Some(DesiredChild::ConfigMap(config_map)),
            api_keys_secret.map(DesiredChild::ApiKeysSecret),
            pvc.map(DesiredChild::Pvc),
            Some(DesiredChild::Service(service)),
            Some(DesiredChild::Deployment(deployment)),
            Some(DesiredChild::Pdb(pdb)),
            hpa.map(DesiredChild::Hpa),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
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
mod tests;
