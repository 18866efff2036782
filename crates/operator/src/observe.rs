//! Reads what a project's reconcile needs from the API: its live children and the Secrets it
//! references. Besides `apply` and the status patch, the only step that talks to the API.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kbeast_api::KnowledgeProject;
use kbeast_api::query_contract::API_KEYS_FILE_KEY;
use kube::api::{Api, ListParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::build::names;
use crate::error::Result;

/// The live children, looked up by name. `None` when absent.
#[derive(Clone, Debug, Default)]
pub struct LiveChildren {
    pub service_account: Option<ServiceAccount>,
    pub network_policy: Option<NetworkPolicy>,
    pub config_map: Option<ConfigMap>,
    pub api_keys_secret: Option<Secret>,
    pub pvc: Option<PersistentVolumeClaim>,
    pub service: Option<Service>,
    pub deployment: Option<Deployment>,
    pub pdb: Option<PodDisruptionBudget>,
    pub hpa: Option<HorizontalPodAutoscaler>,
    /// The durable rollout record (see `rollout::record`).
    pub rollout_record: Option<ConfigMap>,
}

/// A Secret the spec names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretReference {
    /// The spec field that names it.
    pub field: &'static str,
    pub name: String,
    /// Key that must be present, if the reference names one.
    pub required_key: Option<String>,
}

/// Every Secret the spec references.
pub fn secret_references(project: &KnowledgeProject) -> Vec<SecretReference> {
    let spec = &project.spec;
    let mut references = Vec::new();
    if let Some(auth) = &spec.auth {
        references.push(SecretReference {
            field: "spec.auth.apiKeysSecretRef",
            name: auth.api_keys_secret_ref.name.clone(),
            required_key: Some(API_KEYS_FILE_KEY.to_string()),
        });
    }
    if let Some(key_ref) = &spec.embedding.api_key_secret_ref {
        references.push(SecretReference {
            field: "spec.embedding.apiKeySecretRef",
            name: key_ref.name.clone(),
            required_key: Some(key_ref.key.clone()),
        });
    }
    if let Some(credentials) = spec
        .storage
        .object_store
        .as_ref()
        .and_then(|s| s.credentials_secret_ref.as_ref())
    {
        references.push(SecretReference {
            field: "spec.storage.objectStore.credentialsSecretRef",
            name: credentials.name.clone(),
            required_key: None,
        });
    }
    references
}

/// A referenced Secret, and what was found.
#[derive(Clone, Debug)]
pub struct ReferencedSecret {
    pub reference: SecretReference,
    pub secret: Option<Secret>,
}

/// Everything observed for one project.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub children: LiveChildren,
    pub referenced_secrets: Vec<ReferencedSecret>,
    /// The project's query pods, of every revision.
    pub pods: Vec<Pod>,
}

impl Observed {
    /// Describes the first missing Secret or key, naming it and the field that references it.
    pub fn missing_secret(&self) -> Option<String> {
        self.referenced_secrets.iter().find_map(|found| {
            let reference = &found.reference;
            let Some(secret) = &found.secret else {
                return Some(format!(
                    "Secret {:?} named by {} does not exist",
                    reference.name, reference.field
                ));
            };
            let key = reference.required_key.as_ref()?;
            let has_key = secret.data.as_ref().is_some_and(|d| d.contains_key(key))
                || secret
                    .string_data
                    .as_ref()
                    .is_some_and(|d| d.contains_key(key));
            (!has_key).then(|| {
                format!(
                    "Secret {:?} named by {} has no key {key:?}",
                    reference.name, reference.field
                )
            })
        })
    }

    /// The API-keys file the pods read (`api-keys.json` of the generated or referenced Secret).
    pub fn api_keys_file(&self) -> Option<String> {
        let secret = self.children.api_keys_secret.as_ref().or_else(|| {
            self.referenced_secrets
                .iter()
                .find(|r| r.reference.field == "spec.auth.apiKeysSecretRef")
                .and_then(|r| r.secret.as_ref())
        })?;
        let bytes = secret.data.as_ref()?.get(API_KEYS_FILE_KEY)?;
        String::from_utf8(bytes.0.clone()).ok()
    }

    /// The Secrets the query pods read as environment variables (embedder key, object-store
    /// credentials), for the config hash. The API-keys file is mounted and reloaded by the
    /// pods, so rotating keys restarts nothing.
    pub fn env_secrets(&self) -> Vec<&Secret> {
        self.referenced_secrets
            .iter()
            .filter(|r| r.reference.field != "spec.auth.apiKeysSecretRef")
            .filter_map(|r| r.secret.as_ref())
            .collect()
    }
}

/// Reads the live children and referenced Secrets of `project`.
pub async fn observe(client: &Client, project: &KnowledgeProject) -> Result<Observed> {
    let namespace = project
        .namespace()
        .ok_or_else(|| crate::error::Error::MissingNamespace(project.name_any()))?;
    let workload = names::workload(project);
    let children = LiveChildren {
        service_account: get(client, &namespace, &workload).await?,
        network_policy: get(client, &namespace, &workload).await?,
        config_map: get(client, &namespace, &names::config_map(project)).await?,
        api_keys_secret: match project.spec.auth {
            None => {
                get(
                    client,
                    &namespace,
                    &names::generated_api_keys_secret(project),
                )
                .await?
            }
            Some(_) => None,
        },
        pvc: match project.spec.storage.volume {
            Some(_) => get(client, &namespace, &names::pvc(project)).await?,
            None => None,
        },
        service: get(client, &namespace, &workload).await?,
        deployment: get(client, &namespace, &workload).await?,
        pdb: get(client, &namespace, &workload).await?,
        hpa: get(client, &namespace, &workload).await?,
        rollout_record: get(client, &namespace, &names::rollout_record(project)).await?,
    };

    let mut referenced_secrets = Vec::new();
    for reference in secret_references(project) {
        referenced_secrets.push(ReferencedSecret {
            secret: get(client, &namespace, &reference.name).await?,
            reference,
        });
    }
    let selector = crate::build::selector_labels(project)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    Ok(Observed {
        children,
        referenced_secrets,
        pods,
    })
}

async fn get<K>(client: &Client, namespace: &str, name: &str) -> Result<Option<K>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    Ok(api.get_opt(name).await?)
}

/// Whether `object` is controlled by `project` (its controller owner reference has the project's UID).
pub fn is_owned_by<K: Resource>(object: &K, project: &KnowledgeProject) -> bool {
    let Some(uid) = project.meta().uid.as_deref() else {
        return false;
    };
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|owner| owner.uid == uid && owner.controller == Some(true))
}

/// Children whose names are taken by objects this project does not control. They are never
/// adopted silently.
pub fn ownership_conflicts(project: &KnowledgeProject, live: &LiveChildren) -> Vec<String> {
    let LiveChildren {
        service_account,
        network_policy,
        config_map,
        api_keys_secret,
        pvc,
        service,
        deployment,
        pdb,
        hpa,
        rollout_record,
    } = live;
    let children: [(&str, Option<&dyn OwnedObject>); 10] = [
        ("ServiceAccount", service_account.as_ref().map(|o| o as _)),
        ("NetworkPolicy", network_policy.as_ref().map(|o| o as _)),
        ("ConfigMap", config_map.as_ref().map(|o| o as _)),
        ("Secret", api_keys_secret.as_ref().map(|o| o as _)),
        ("PersistentVolumeClaim", pvc.as_ref().map(|o| o as _)),
        ("Service", service.as_ref().map(|o| o as _)),
        ("Deployment", deployment.as_ref().map(|o| o as _)),
        ("PodDisruptionBudget", pdb.as_ref().map(|o| o as _)),
        ("HorizontalPodAutoscaler", hpa.as_ref().map(|o| o as _)),
        ("ConfigMap", rollout_record.as_ref().map(|o| o as _)),
    ];
    children
        .into_iter()
        .filter_map(|(kind, object)| object.map(|o| (kind, o)))
        .filter(|(_, object)| !object.owned_by(project))
        .map(|(kind, object)| {
            format!(
                "{kind} {:?} already exists and is not owned by this KnowledgeProject",
                object.object_name()
            )
        })
        .collect()
}

/// Object-safe view of a child for the ownership check.
trait OwnedObject {
    fn owned_by(&self, project: &KnowledgeProject) -> bool;
    fn object_name(&self) -> String;
}

impl<K: Resource> OwnedObject for K {
    fn owned_by(&self, project: &KnowledgeProject) -> bool {
        is_owned_by(self, project)
    }
    fn object_name(&self) -> String {
        self.meta().name.clone().unwrap_or_default()
    }
}
