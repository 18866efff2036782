//! JSON wire format of the query API. The server serialises exactly these types,
//! so the format is defined once; `docs/query-api.md` describes it for humans.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Free-form JSON object attached to a document and returned with every hit.
pub type Metadata = Map<String, Value>;

/// `POST /v1/documents`
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IngestRequest {
    pub documents: Vec<DocumentInput>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DocumentInput {
    /// Omitted: derived from source and text, so retrying the same request is idempotent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IngestResponse {
    pub documents: Vec<IngestedDocument>,
    /// Table version of the commit that made the documents visible.
    pub version: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IngestedDocument {
    pub id: String,
    pub chunks: u32,
}

/// `GET /v1/documents/{id}`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DocumentResponse {
    pub id: String,
    pub source: Option<String>,
    pub metadata: Metadata,
    pub chunks: Vec<ChunkView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChunkView {
    pub chunk_id: String,
    pub index: u32,
    pub text: String,
}

/// Selects documents. All given conditions must hold (AND); metadata matches
/// when every given key has exactly the given JSON value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.ids.is_none() && self.source.is_none() && self.metadata.is_none()
    }

    /// A condition that is given but selects by nothing (`"metadata": {}`, `"ids": []`) would
    /// match every document, or none: refused, as (field, message).
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.metadata.as_ref().is_some_and(|m| m.is_empty()) {
            return Err((
                "metadata",
                "metadata must name at least one key (an empty object would match every document)",
            ));
        }
        if self.ids.as_ref().is_some_and(|ids| ids.is_empty()) {
            return Err(("ids", "ids must list at least one document id"));
        }
        Ok(())
    }
}

/// `POST /v1/documents:delete` takes a [`Filter`] as its body.
pub type DeleteByFilterRequest = Filter;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeleteResponse {
    pub deleted_documents: u64,
    pub deleted_chunks: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    Vector,
    Keyword,
    Hybrid,
}

impl SearchMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SearchMode::Vector => "vector",
            SearchMode::Keyword => "keyword",
            SearchMode::Hybrid => "hybrid",
        }
    }
}

pub const DEFAULT_TOP_K: u32 = 10;
pub const MAX_TOP_K: u32 = 100;

fn default_top_k() -> u32 {
    DEFAULT_TOP_K
}

/// `POST /v1/search`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    pub query: String,
    /// The server's default mode (`--default-search-mode`, hybrid unless set) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SearchMode>,
    /// 1..=100
    #[serde(default = "default_top_k")]
    pub top_k: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
}

impl SearchRequest {
    pub fn new(query: impl Into<String>, mode: SearchMode, top_k: u32) -> Self {
        Self {
            query: query.into(),
            mode: Some(mode),
            top_k,
            filter: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SearchResponse {
    pub hits: Vec<Hit>,
    pub mode: SearchMode,
    /// True when the requested mode could not be served and a fallback was used.
    pub degraded: bool,
    pub took_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hit {
    pub doc_id: String,
    pub chunk_id: String,
    pub text: String,
    /// Higher is better. vector: cosine similarity; keyword: BM25; hybrid: RRF.
    pub score: f32,
    pub source: Option<String>,
    pub metadata: Metadata,
}

/// `GET /v1/stats`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatsResponse {
    pub documents: u64,
    pub chunks: u64,
    /// UTF-8 bytes of stored chunk text (what `--max-bytes` limits).
    pub bytes: u64,
    /// Bytes of table data and index files on storage.
    pub storage_bytes: u64,
    pub table_version: u64,
    pub model: String,
    pub dimension: u32,
    /// The table's indices (full-text, BTree, vector) and their coverage.
    #[serde(default)]
    pub indices: Vec<IndexState>,
    /// LanceDB cache budgets in force; None when LanceDB's defaults are used.
    #[serde(default)]
    pub cache: Option<CacheConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexState {
    pub name: String,
    pub columns: Vec<String>,
    /// LanceDB's index type, e.g. `BTREE`, `FTS`, `IVF_PQ`.
    pub index_type: String,
    pub indexed_rows: Option<u64>,
    /// Rows written since the index was last updated (searched by a scan).
    pub unindexed_rows: Option<u64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct CacheConfig {
    pub index_cache_bytes: u64,
    pub metadata_cache_bytes: u64,
}

/// `POST /v1/documents:erase`: the documents matching the filter are deleted
/// and physically removed from storage, old versions included.
pub type EraseRequest = Filter;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EraseResponse {
    pub erased_documents: u64,
    pub erased_chunks: u64,
    /// Data files rewritten without the erased rows.
    pub fragments_rewritten: u64,
    /// Table versions removed (they still held the rows).
    pub versions_removed: u64,
    pub bytes_removed: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    #[default]
    Healthy,
    Degraded,
    Unhealthy,
}

/// `GET /readyz`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReadyResponse {
    pub status: HealthStatus,
    pub components: ReadyComponents,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReadyComponents {
    pub store: StoreHealth,
    pub embedder: EmbedderHealth,
    pub disk: DiskHealth,
    /// Not ready until the table is open and warm.
    #[serde(default)]
    pub warmup: WarmupHealth,
}

/// Steps a server takes after start before it reports ready.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct WarmupHealth {
    pub status: HealthStatus,
    pub table_open: bool,
    /// Indices loaded into the cache.
    pub indices_loaded: bool,
    /// A keyword search and a nearest-neighbour query ran.
    pub query_path: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoreHealth {
    pub status: HealthStatus,
    pub latency_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EmbedderHealth {
    pub status: HealthStatus,
    pub model: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DiskHealth {
    pub status: HealthStatus,
    pub available_bytes: Option<u64>,
}

/// Body of every 4xx and 5xx response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_argument`, `quota_exceeded`.
    pub code: String,
    pub message: String,
    /// The request field at fault, as a path like `documents[2].text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Request header that carries an API key where `Authorization: Bearer` cannot: the
/// Kubernetes API server's service proxy keeps that header (the caller's own credential).
pub const API_KEY_HEADER: &str = "x-api-key";

/// Scopes an API key can hold. `admin` implies the others.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Admin,
}

/// One entry of the API keys file (a JSON or YAML list of these).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    pub id: String,
    pub secret: String,
    pub scopes: Vec<Scope>,
}
