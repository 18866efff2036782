//! How the operator configures a `kbeast-query` pod: port, paths and environment variables.
//! The query binary reads the same names, so both sides change together.

/// Container port of the query HTTP API, health checks and metrics.
pub const HTTP_PORT: i32 = 8080;
/// Name of that port on the container and the Service.
pub const HTTP_PORT_NAME: &str = "http";
/// Where the data volume is mounted.
pub const DATA_DIR: &str = "/var/lib/kbeast/data";
/// Where the API-keys Secret is mounted.
pub const API_KEYS_DIR: &str = "/etc/kbeast/keys";
/// Key, in the API-keys Secret, of the file the query pod reads.
pub const API_KEYS_FILE_KEY: &str = "api-keys.json";
/// Keys, in a generated API-keys Secret, of the bare tokens handed to clients.
pub const READ_TOKEN_KEY: &str = "read-key";
pub const WRITE_TOKEN_KEY: &str = "write-key";
pub const ADMIN_TOKEN_KEY: &str = "admin-key";

/// Model id the built-in hash embedder reports in `/v1/stats` and stores with its table.
pub const HASH_MODEL_ID: &str = "hash-v1";

/// Model id of the built-in embedder (all-MiniLM-L6-v2, run in the query pod).
pub const BUILTIN_MODEL_ID: &str = "minilm-l6-v2";
/// Vector dimension of the built-in embedder; `spec.embedding.dimension` must match it.
pub const BUILTIN_DIMENSION: usize = 384;

/// Model id an OpenAI-compatible embedder serving `model` reports.
pub fn openai_model_id(model: &str) -> String {
    format!("openai:{model}")
}

/// Environment variables understood by `kbeast-query serve`.
pub mod env {
    pub const DATA: &str = "KBEAST_DATA";
    pub const LISTEN: &str = "KBEAST_LISTEN";
    pub const API_KEYS: &str = "KBEAST_API_KEYS";
    pub const PROJECT: &str = "KBEAST_PROJECT";
    pub const EMBEDDING_PROVIDER: &str = "KBEAST_EMBEDDER";
    pub const EMBEDDING_MODEL: &str = "KBEAST_OPENAI_MODEL";
    pub const EMBEDDING_DIMENSION: &str = "KBEAST_EMBEDDING_DIM";
    pub const BUILTIN_MODEL_DIR: &str = "KBEAST_BUILTIN_MODEL_DIR";
    pub const EMBEDDING_ENDPOINT: &str = "KBEAST_OPENAI_BASE_URL";
    pub const EMBEDDING_API_KEY: &str = "KBEAST_OPENAI_API_KEY";
    pub const DEFAULT_SEARCH_MODE: &str = "KBEAST_DEFAULT_SEARCH_MODE";
    pub const CHUNK_SIZE: &str = "KBEAST_CHUNK_SIZE";
    pub const CHUNK_OVERLAP: &str = "KBEAST_CHUNK_OVERLAP";
    pub const MAX_DOCUMENTS: &str = "KBEAST_MAX_DOCUMENTS";
    pub const MAX_BYTES: &str = "KBEAST_MAX_BYTES";
    /// Object-store settings, in the names the AWS SDKs and `object_store` read.
    pub const AWS_REGION: &str = "AWS_REGION";
    pub const AWS_ENDPOINT: &str = "AWS_ENDPOINT";
    pub const AWS_ALLOW_HTTP: &str = "AWS_ALLOW_HTTP";
}
