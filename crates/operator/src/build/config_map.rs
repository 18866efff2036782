use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kbeast_api::quantity::parse_bytes;
use kbeast_api::query_contract::{self, env};
use kbeast_api::{EmbeddingProvider, KnowledgeProject};
use kube::ResourceExt;

use super::with_desired_hash;
use crate::facts::{child_meta, names};

/// Query configuration, as the environment variables `kbeast-query serve` reads.
pub fn desired_config_map(project: &KnowledgeProject) -> ConfigMap {
    let spec = &project.spec;
    let mut data = BTreeMap::from([
        (env::PROJECT, project.name_any()),
        (
            env::LISTEN,
            format!("0.0.0.0:{}", query_contract::HTTP_PORT),
        ),
        (env::DATA, data_location(project)),
        (
            env::API_KEYS,
            format!(
                "{}/{}",
                query_contract::API_KEYS_DIR,
                query_contract::API_KEYS_FILE_KEY
            ),
        ),
        (
            env::EMBEDDING_PROVIDER,
            spec.embedding.provider.as_str().to_string(),
        ),
        (
            env::EMBEDDING_DIMENSION,
            spec.embedding.dimension.to_string(),
        ),
        (
            env::DEFAULT_SEARCH_MODE,
            spec.search.default_mode.as_str().to_string(),
        ),
        (env::CHUNK_SIZE, spec.search.chunk_size.to_string()),
        (env::CHUNK_OVERLAP, spec.search.chunk_overlap.to_string()),
    ]);
    // The builtin and hash embedders have no model id or endpoint to set (the builtin model's
    // weights are in the query image); only openai takes them.
    if spec.embedding.provider == EmbeddingProvider::Openai {
        let model = spec.embedding.model.clone().unwrap_or_default();
        data.insert(env::EMBEDDING_MODEL, model);
        if let Some(endpoint) = &spec.embedding.endpoint {
            data.insert(env::EMBEDDING_ENDPOINT, endpoint.clone());
        }
    }
    if let Some(quota) = &spec.quota {
        if let Some(max_documents) = quota.max_documents {
            data.insert(env::MAX_DOCUMENTS, max_documents.to_string());
        }
        // validate() has rejected unparsable quantities before any builder runs.
        if let Some(bytes) = quota.max_bytes.as_deref().and_then(|q| parse_bytes(q).ok()) {
            data.insert(env::MAX_BYTES, bytes.to_string());
        }
    }
    if let Some(store) = &spec.storage.object_store {
        if let Some(region) = &store.region {
            data.insert(env::AWS_REGION, region.clone());
        }
        if let Some(endpoint) = &store.endpoint {
            data.insert(env::AWS_ENDPOINT, endpoint.clone());
            if endpoint.starts_with("http://") {
                data.insert(env::AWS_ALLOW_HTTP, "true".to_string());
            }
        }
    }
    with_desired_hash(ConfigMap {
        metadata: child_meta(project, names::config_map(project)),
        data: Some(data.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
        ..ConfigMap::default()
    })
}

/// `--data` of the query pods: the mounted volume, or the bucket URI.
pub fn data_location(project: &KnowledgeProject) -> String {
    match &project.spec.storage.object_store {
        Some(store) => store.uri.clone(),
        None => query_contract::DATA_DIR.to_string(),
    }
}
