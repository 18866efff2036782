//! Facts derived from a project's spec alone: child names, labels, child metadata, endpoints,
//! the embedding model id and the Secrets it references. Every step reads them from here, so no
//! step needs another step's module for them. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kbeast_api::labels::*;
use kbeast_api::query_contract::{self, API_KEYS_FILE_KEY};
use kbeast_api::{EmbeddingProvider, KnowledgeProject};
use kube::{Resource, ResourceExt};

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
        kbeast_api::rollout_record::config_map_name(&project.name_any())
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

/// A host and port the query pods must reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: i32,
}

/// Host and port of an `http(s)://host[:port][/path]` URL.
pub fn parse_endpoint(url: &str) -> Option<Endpoint> {
    let (scheme, rest) = url.split_once("://")?;
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(port) => port.parse().ok().filter(|p| (1..=65535).contains(p))?,
        None => default_port,
    };
    (!host.is_empty()).then(|| Endpoint {
        host: host.to_string(),
        port,
    })
}

/// The model id the pods must report in `/v1/stats` (the query contract's naming).
pub fn embedding_model(project: &KnowledgeProject) -> String {
    match project.spec.embedding.provider {
        EmbeddingProvider::Builtin => query_contract::BUILTIN_MODEL_ID.to_string(),
        EmbeddingProvider::Hash => query_contract::HASH_MODEL_ID.to_string(),
        EmbeddingProvider::Openai => {
            query_contract::openai_model_id(project.spec.embedding.model.as_deref().unwrap_or(""))
        }
    }
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
mod tests {
    use super::*;

    #[test]
    fn endpoint_parsing_covers_ports_ipv6_and_bad_urls() {
        let cases = [
            ("https://api.openai.com/v1", Some(("api.openai.com", 443))),
            ("http://tei.ml.svc:8080", Some(("tei.ml.svc", 8080))),
            ("http://10.0.0.7", Some(("10.0.0.7", 80))),
            ("http://[fd00::1]:9000/x", Some(("fd00::1", 9000))),
            ("http://user:pw@minio:9000", Some(("minio", 9000))),
            ("ftp://host", None),
            ("http://host:99999", None),
            ("http://:80", None),
            ("no-scheme", None),
        ];
        for (url, expected) in cases {
            let parsed = parse_endpoint(url);
            let expected = expected.map(|(host, port)| Endpoint {
                host: host.to_string(),
                port,
            });
            assert_eq!(parsed, expected, "{url}");
        }
    }
}
