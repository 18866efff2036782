//! Reads what a project's reconcile needs from the API: its live children, the Secrets it
//! references and its query pods; and checks that every child it found is its own.

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
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::facts::{ReferencedSecret, names, secret_references, selector_labels};

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

/// Everything observed for one project.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub children: LiveChildren,
    pub referenced_secrets: Vec<ReferencedSecret>,
    /// The project's query pods, of every revision.
    pub pods: Vec<Pod>,
}

impl Observed {
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
}

/// Reads the live children and referenced Secrets of `project`.
pub async fn observe(
    client: &Client,
    project: &KnowledgeProject,
    namespace: &str,
) -> Result<Observed> {
    let namespace = namespace.to_string();
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
    let selector = selector_labels(project)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::List {
            kind: "Pod",
            selector: selector.clone(),
            source,
        })?
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
        + k8s_openapi::Resource
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.get_opt(name).await.map_err(|source| Error::Observe {
        kind: <K as k8s_openapi::Resource>::KIND,
        name: name.to_string(),
        source,
    })
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
