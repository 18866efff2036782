use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kbeast_api::KnowledgeProject;
use kbeast_api::query_contract::{
    ADMIN_TOKEN_KEY, API_KEYS_FILE_KEY, READ_TOKEN_KEY, WRITE_TOKEN_KEY,
};
use serde::Serialize;

use crate::facts::{child_meta, names};

/// A read, a write and an admin token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeySet {
    pub read: String,
    pub write: String,
    pub admin: String,
}

impl ApiKeySet {
    /// Three 256-bit tokens from the operating system's CSPRNG.
    pub fn generate() -> Self {
        Self {
            read: random_token("kb_r_"),
            write: random_token("kb_w_"),
            admin: random_token("kb_a_"),
        }
    }

    /// The keys file the query pod reads: `[{id, secret, scopes}]`. Typed entries keep the
    /// bytes, and so the config hash, the same in every build.
    pub fn keys_file(&self) -> String {
        let keys = [
            KeyFileEntry {
                id: "read",
                secret: &self.read,
                scopes: &["read"],
            },
            KeyFileEntry {
                id: "write",
                secret: &self.write,
                scopes: &["read", "write"],
            },
            KeyFileEntry {
                id: "admin",
                secret: &self.admin,
                scopes: &["read", "write", "admin"],
            },
        ];
        serde_json::to_string_pretty(&keys).expect("key entries serialise")
    }
}

/// One entry of the keys file.
#[derive(Serialize)]
struct KeyFileEntry<'a> {
    id: &'a str,
    secret: &'a str,
    scopes: &'a [&'a str],
}

fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source is available");
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The generated API-keys Secret: the keys file for the pods plus bare tokens for clients.
/// It is created once and never overwritten, so keys stay stable across reconciles.
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
