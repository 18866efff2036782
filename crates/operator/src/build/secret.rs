use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kbeast_api::KnowledgeProject;
use kbeast_api::query_contract::{
    ADMIN_TOKEN_KEY, API_KEYS_FILE_KEY, READ_TOKEN_KEY, WRITE_TOKEN_KEY,
};
use kbeast_client::Scope;

use crate::facts::{child_meta, names};

/// A read, a write and an admin token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeySet {
    pub read: String,
    pub write: String,
    pub admin: String,
}

impl ApiKeySet {
    pub fn generate() -> Self {
        Self {
            read: Scope::Read.new_token(),
            write: Scope::Write.new_token(),
            admin: Scope::Admin.new_token(),
        }
    }

    pub fn keys_file(&self) -> String {
        let keys = [
            Scope::Read.entry("read", &self.read),
            Scope::Write.entry("write", &self.write),
            Scope::Admin.entry("admin", &self.admin),
        ];
        serde_json::to_string_pretty(&keys).expect("key entries serialise")
    }
}

pub fn desired_api_keys_secret(project: &KnowledgeProject, keys: &ApiKeySet) -> Secret {
    let data = BTreeMap::from([
        (
            API_KEYS_FILE_KEY.to_string(),
            ByteString(keys.keys_file().into_bytes()),
        ),
        (
            READ_TOKEN_KEY.to_string(),
            ByteString(keys.read.clone().into_bytes()),
        ),
        (
            WRITE_TOKEN_KEY.to_string(),
            ByteString(keys.write.clone().into_bytes()),
        ),
        (
            ADMIN_TOKEN_KEY.to_string(),
            ByteString(keys.admin.clone().into_bytes()),
        ),
    ]);
    Secret {
        metadata: child_meta(project, names::generated_api_keys_secret(project)),
        type_: Some("Opaque".to_string()),
        data: Some(data),
        ..Secret::default()
    }
}
