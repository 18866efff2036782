//! Command-line flags. Every flag can also be set from a `KBEAST_…` variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::embed::HashEmbedder;
use crate::ingest::IngestLimits;
use crate::ingest::chunking::{ChunkConfig, ChunkUnit};
use crate::store::VectorIndexKind;

#[derive(Debug, Parser)]
#[command(
    name = "kbeast-query",
    version,
    about = "Ingest and search server of one kbeast knowledge base"
)]
pub struct Cli {
    /// Log filter (RUST_LOG syntax). LanceDB (`lance*` targets) is noisy at info.
    #[arg(
        long,
        env = "KBEAST_LOG",
        default_value = "info,lance=warn",
        global = true
    )]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API over a LanceDB directory.
    Serve(Box<ServeArgs>),
    /// Delete all of a knowledge base's data (the chunks table and generated keys).
    Purge(PurgeArgs),
    /// Copy the current version of the chunks table elsewhere (safe while serving).
    Snapshot(SnapshotArgs),
    /// Replace the chunks table with a snapshot's (stop the server first).
    Restore(RestoreArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmbedderKind {
    /// Built-in deterministic feature hashing; no model needed.
    Hash,
    /// OpenAI (or compatible) embeddings API; see the `--openai-*` flags.
    Openai,
    /// all-MiniLM-L6-v2 in this process (384 dimensions); see the `--builtin-*` flags.
    Builtin,
}

/// `--default-search-mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DefaultSearchMode {
    Vector,
    Keyword,
    Hybrid,
}

impl From<DefaultSearchMode> for kbeast_client::SearchMode {
    fn from(mode: DefaultSearchMode) -> Self {
        match mode {
            DefaultSearchMode::Vector => Self::Vector,
            DefaultSearchMode::Keyword => Self::Keyword,
            DefaultSearchMode::Hybrid => Self::Hybrid,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChunkUnitArg {
    Chars,
    Tokens,
}

impl From<ChunkUnitArg> for ChunkUnit {
    fn from(unit: ChunkUnitArg) -> Self {
        match unit {
            ChunkUnitArg::Chars => Self::Chars,
            ChunkUnitArg::Tokens => Self::Tokens,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VectorIndexKindArg {
    #[value(name = "ivf-pq")]
    Pq,
    #[value(name = "ivf-sq")]
    Sq,
    #[value(name = "ivf-hnsw-sq")]
    HnswSq,
}

impl From<VectorIndexKindArg> for VectorIndexKind {
    fn from(kind: VectorIndexKindArg) -> Self {
        match kind {
            VectorIndexKindArg::Pq => Self::Pq,
            VectorIndexKindArg::Sq => Self::Sq,
            VectorIndexKindArg::HnswSq => Self::HnswSq,
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where the chunks table lives: a local directory (created if missing) or
    /// `s3://bucket/prefix` (then `--api-keys` is required).
    #[arg(long, env = "KBEAST_DATA")]
    pub data: String,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[arg(long, env = "KBEAST_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// API keys file (JSON or YAML list of {id, secret, scopes}). Without it,
    /// `<data>/api-keys.yaml` is used and generated with one admin key if missing.
    #[arg(long, env = "KBEAST_API_KEYS")]
    pub api_keys: Option<PathBuf>,
    /// How often the keys file is checked for changes, in milliseconds.
    #[arg(long, env = "KBEAST_KEYS_RELOAD_MS", default_value_t = 2000)]
    pub keys_reload_ms: u64,
    /// Largest accepted request body; larger ones get 413.
    #[arg(long, env = "KBEAST_MAX_BODY_BYTES", default_value_t = 10 << 20)]
    pub max_body_bytes: usize,
    /// Requests taking longer get 408.
    #[arg(long, env = "KBEAST_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// Most documents the knowledge base may hold; ingests beyond get 429.
    /// Documents in one ingest request; more get 413.
    #[arg(long, env = "KBEAST_MAX_INGEST_DOCUMENTS", default_value_t = IngestLimits::DEFAULT_MAX_DOCUMENTS)]
    pub max_ingest_documents: usize,
    /// Chunks one ingest request may produce; more get 413.
    #[arg(long, env = "KBEAST_MAX_INGEST_CHUNKS", default_value_t = IngestLimits::DEFAULT_MAX_CHUNKS)]
    pub max_ingest_chunks: usize,
    /// Bytes of one document's metadata as JSON (stored with every chunk); more get 413.
    #[arg(long, env = "KBEAST_MAX_METADATA_BYTES", default_value_t = IngestLimits::DEFAULT_MAX_METADATA_BYTES)]
    pub max_metadata_bytes: usize,
    /// Time a client has to send a request's headers; slower connections are closed.
    #[arg(long, env = "KBEAST_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// Open client connections; further clients wait to be accepted.
    #[arg(long, env = "KBEAST_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// `/v1` requests in progress at once; more get 503 with Retry-After (probes and
    /// /metrics are not counted).
    #[arg(long, env = "KBEAST_MAX_REQUESTS_IN_FLIGHT", default_value_t = 256)]
    pub max_requests_in_flight: usize,
    /// Ingest requests in progress at once; more get 503 with Retry-After.
    #[arg(long, env = "KBEAST_MAX_CONCURRENT_INGESTS", default_value_t = 4)]
    pub max_concurrent_ingests: usize,
    #[arg(long, env = "KBEAST_MAX_DOCUMENTS")]
    pub max_documents: Option<u64>,
    /// Most bytes of chunk text the knowledge base may hold; ingests beyond get 507.
    #[arg(long, env = "KBEAST_MAX_BYTES")]
    pub max_bytes: Option<u64>,
    /// Maximum chunk length, in --chunk-unit units.
    #[arg(long, env = "KBEAST_CHUNK_SIZE", default_value_t = ChunkConfig::DEFAULT_SIZE)]
    pub chunk_size: usize,
    /// Units repeated from the previous chunk; less than half the chunk size.
    #[arg(long, env = "KBEAST_CHUNK_OVERLAP", default_value_t = ChunkConfig::DEFAULT_OVERLAP)]
    pub chunk_overlap: usize,
    /// What --chunk-size and --chunk-overlap count: characters (Unicode scalar
    /// values) or tokens (whitespace-delimited words).
    #[arg(long, env = "KBEAST_CHUNK_UNIT", value_enum, default_value_t = ChunkUnitArg::Chars)]
    pub chunk_unit: ChunkUnitArg,
    /// Compact files, update indices and prune old versions after this many
    /// write commits (0 disables).
    #[arg(long, env = "KBEAST_OPTIMIZE_EVERY_COMMITS", default_value_t = 100)]
    pub optimize_every_commits: u64,
    /// Fold new rows into the indices after this many chunks were written
    /// (0 disables; optimize does it too).
    #[arg(long, env = "KBEAST_INDEX_EVERY_CHUNKS", default_value_t = 1000)]
    pub index_every_chunks: u64,
    /// Build an IVF-PQ vector index once the table holds this many chunks
    /// (below it, vector search is exact). 0 disables.
    #[arg(long, env = "KBEAST_VECTOR_INDEX_MIN_ROWS", default_value_t = 100_000)]
    pub vector_index_min_rows: u64,
    /// Kind of vector index built at --vector-index-min-rows.
    #[arg(long, env = "KBEAST_VECTOR_INDEX_TYPE", value_enum, default_value_t = VectorIndexKindArg::Pq)]
    pub vector_index_type: VectorIndexKindArg,
    /// IVF partitions of the vector index (0: LanceDB's default, one per 8,192
    /// rows).
    #[arg(long, env = "KBEAST_VECTOR_INDEX_PARTITIONS", default_value_t = 0)]
    pub vector_index_partitions: u32,
    /// PQ sub-vectors of the vector index (0: LanceDB's default, dimension / 16);
    /// more keep distances more exact and cost more memory.
    #[arg(long, env = "KBEAST_VECTOR_INDEX_SUB_VECTORS", default_value_t = 0)]
    pub vector_index_sub_vectors: u32,
    /// IVF partitions probed per vector query once the vector index exists.
    #[arg(long, env = "KBEAST_VECTOR_NPROBES", default_value_t = 40)]
    pub vector_nprobes: usize,
    /// Candidates re-ranked with their full vectors, as a multiple of top_k,
    /// once the vector index exists.
    #[arg(long, env = "KBEAST_VECTOR_REFINE_FACTOR", default_value_t = 10)]
    pub vector_refine_factor: u32,
    /// Candidates kept by an HNSW search (ivf-hnsw-sq indices only).
    #[arg(long, env = "KBEAST_VECTOR_EF", default_value_t = 100)]
    pub vector_ef: usize,
    /// After SIGTERM, keep serving this long, answering with `Connection: close` and a
    /// failing /readyz, so clients move to other pods before this one stops accepting.
    #[arg(long, env = "KBEAST_SHUTDOWN_DELAY_MS", default_value_t = 3000)]
    pub shutdown_delay_ms: u64,
    /// Mode of searches that name none.
    #[arg(long, env = "KBEAST_DEFAULT_SEARCH_MODE", value_enum, default_value_t = DefaultSearchMode::Hybrid)]
    pub default_search_mode: DefaultSearchMode,
    /// Name of the KnowledgeProject this server belongs to, for logs.
    #[arg(long, env = "KBEAST_PROJECT")]
    pub project: Option<String>,
    /// Embedding provider. `hash` needs no model, so a bare `serve` starts anywhere;
    /// the operator and scripts/run-local.sh choose `builtin`.
    #[arg(long, env = "KBEAST_EMBEDDER", value_enum, default_value_t = EmbedderKind::Hash)]
    pub embedder: EmbedderKind,
    /// Vector dimension (for `openai`, sent as `dimensions`; `builtin` has 384).
    #[arg(long, env = "KBEAST_EMBEDDING_DIM", default_value_t = HashEmbedder::DEFAULT_DIMENSION)]
    pub embedding_dim: usize,
    /// Byte budget of LanceDB's index cache (index pages kept in memory).
    /// Suffixes k, M, G (powers of 1024) are accepted.
    #[arg(long, env = "KBEAST_INDEX_CACHE_BYTES", default_value = "256M", value_parser = parse_bytes)]
    pub index_cache_bytes: u64,
    /// Byte budget of LanceDB's metadata cache (manifests, file footers).
    /// Small by default: it otherwise fills with the manifests of old versions.
    #[arg(long, env = "KBEAST_METADATA_CACHE_BYTES", default_value = "16M", value_parser = parse_bytes)]
    pub metadata_cache_bytes: u64,
    /// Memory of the in-memory vector index: vectors kept in memory and
    /// searched by a scan, one byte per dimension for tables too large for
    /// full floats. Tables beyond it are searched in LanceDB. 0 turns it off.
    #[arg(long, env = "KBEAST_VECTOR_MEMORY_BYTES", default_value = "64M", value_parser = parse_bytes)]
    pub vector_memory_bytes: u64,
    /// How often to look for commits of other processes writing the same
    /// table, in milliseconds (searches see them at most this late; stats and
    /// filters too). 0 turns it off: only for a single writer.
    #[arg(long, env = "KBEAST_REFRESH_INTERVAL_MS", default_value_t = 1000)]
    pub refresh_interval_ms: u64,
    #[command(flatten)]
    pub openai: OpenAiArgs,
    #[command(flatten)]
    pub builtin: BuiltinArgs,
}

/// Settings of the `builtin` embedder.
#[derive(Debug, Args)]
pub struct BuiltinArgs {
    /// Directory of the all-MiniLM-L6-v2 weights, as scripts/fetch-minilm.sh
    /// prints it; the query image has them at the default.
    #[arg(
        long,
        env = "KBEAST_BUILTIN_MODEL_DIR",
        default_value = "/usr/local/share/kbeast/models/all-MiniLM-L6-v2"
    )]
    pub builtin_model_dir: PathBuf,
    /// Threads that run the model (0: one per CPU).
    #[arg(long, env = "KBEAST_BUILTIN_THREADS", default_value_t = 0)]
    pub builtin_threads: usize,
    /// Texts per forward pass of the model.
    #[arg(long, env = "KBEAST_BUILTIN_BATCH_SIZE", default_value_t = 16)]
    pub builtin_batch_size: usize,
}

/// Object storage settings, passed to LanceDB as storage options. Unset ones
/// fall back to the standard `AWS_*` variables (`AWS_ENDPOINT_URL`,
/// `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`)
/// and then to the usual AWS credential chain (web identity, instance profile).
#[derive(Debug, Clone, Default, Args)]
pub struct StorageArgs {
    /// S3 endpoint, for S3-compatible stores (MinIO, Ceph, moto).
    #[arg(long, env = "KBEAST_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "KBEAST_S3_REGION")]
    pub s3_region: Option<String>,
    #[arg(long, env = "KBEAST_S3_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,
    #[arg(long, env = "KBEAST_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// Allow plain-http endpoints (test servers only).
    #[arg(long, env = "KBEAST_S3_ALLOW_HTTP")]
    pub s3_allow_http: bool,
}

impl StorageArgs {
    /// LanceDB storage options for the flags that are set.
    pub fn storage_options(&self) -> Vec<(String, String)> {
        let mut options = Vec::new();
        let mut set = |key: &str, value: Option<&String>| {
            if let Some(value) = value {
                options.push((key.to_string(), value.clone()));
            }
        };
        set("aws_endpoint", self.s3_endpoint.as_ref());
        set("aws_region", self.s3_region.as_ref());
        set("aws_access_key_id", self.s3_access_key_id.as_ref());
        set("aws_secret_access_key", self.s3_secret_access_key.as_ref());
        if self.s3_allow_http {
            options.push(("allow_http".into(), "true".into()));
        }
        options
    }
}

/// Parses `1048576`, `512k`, `256M`, `1G` (binary units) into bytes.
pub fn parse_bytes(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let (digits, multiplier) = match value.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let multiplier = match c.to_ascii_lowercase() {
                'k' => 1u64 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                _ => return Err(format!("unknown unit {c:?} in {value:?}; use k, M or G")),
            };
            (&value[..i], multiplier)
        }
        _ => (value, 1),
    };
    let number: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a byte size such as 268435456 or 256M"))?;
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{value:?} is too large"))
}

#[derive(Debug, Args)]
pub struct OpenAiArgs {
    /// Base URL of the embeddings API, up to the version.
    #[arg(
        long,
        env = "KBEAST_OPENAI_BASE_URL",
        default_value = "https://api.openai.com/v1"
    )]
    pub openai_base_url: String,
    /// Bearer key for the embeddings API (prefer the environment variable).
    #[arg(long, env = "KBEAST_OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<String>,
    #[arg(
        long,
        env = "KBEAST_OPENAI_MODEL",
        default_value = "text-embedding-3-small"
    )]
    pub openai_model: String,
    /// Most texts per embeddings request.
    #[arg(long, env = "KBEAST_OPENAI_BATCH_SIZE", default_value_t = 64)]
    pub openai_batch_size: usize,
    /// Timeout of one embeddings request. A whole call, retries included, also ends after
    /// three quarters of --request-timeout-secs and then counts as a provider failure.
    #[arg(long, env = "KBEAST_OPENAI_TIMEOUT_MS", default_value_t = 30_000)]
    pub openai_timeout_ms: u64,
    /// Retries of transient failures (timeouts, 429, 5xx) per request.
    #[arg(long, env = "KBEAST_OPENAI_MAX_RETRIES", default_value_t = 3)]
    pub openai_max_retries: u32,
    /// First retry delay; doubles with each retry.
    #[arg(long, env = "KBEAST_OPENAI_BACKOFF_MS", default_value_t = 200)]
    pub openai_backoff_ms: u64,
    /// Consecutive failed calls that open the circuit breaker.
    #[arg(long, env = "KBEAST_EMBEDDER_BREAKER_FAILURES", default_value_t = 3)]
    pub embedder_breaker_failures: u32,
    /// How long an open breaker fails calls fast before one trial call.
    #[arg(
        long,
        env = "KBEAST_EMBEDDER_BREAKER_COOLDOWN_MS",
        default_value_t = 30_000
    )]
    pub embedder_breaker_cooldown_ms: u64,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Data directory or `s3://` URI of the knowledge base to delete.
    #[arg(long, env = "KBEAST_DATA")]
    pub data: String,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// LanceDB directory (or URI) of the knowledge base.
    #[arg(long, env = "KBEAST_DATA")]
    pub data: String,
    /// Directory (or URI) to write the snapshot to; must not hold one already.
    #[arg(long, env = "KBEAST_SNAPSHOT")]
    pub out: String,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Snapshot directory (or URI) written by `snapshot`.
    #[arg(long, env = "KBEAST_SNAPSHOT")]
    pub from: String,
    /// LanceDB directory (or URI) of the knowledge base to restore into.
    #[arg(long, env = "KBEAST_DATA")]
    pub data: String,
    /// Replace an existing chunks table.
    #[arg(long, env = "KBEAST_RESTORE_FORCE")]
    pub force: bool,
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, Command, parse_bytes};

    #[test]
    fn byte_sizes_parse_with_binary_units() {
        for (input, expected) in [
            ("0", Ok(0)),
            ("1048576", Ok(1 << 20)),
            ("512k", Ok(512 << 10)),
            ("256M", Ok(256 << 20)),
            ("2g", Ok(2 << 30)),
            (" 64M ", Ok(64 << 20)),
        ] {
            assert_eq!(parse_bytes(input), expected, "{input:?}");
        }
        for bad in ["", "M", "lots", "-1", "1.5G", "5T", "99999999999999999999G"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn s3_flags_become_lancedb_storage_options() {
        let cli = Cli::try_parse_from([
            "kbeast-query",
            "serve",
            "--data",
            "s3://bucket/kb",
            "--s3-endpoint",
            "http://127.0.0.1:9000",
            "--s3-region",
            "eu-west-1",
            "--s3-access-key-id",
            "AK",
            "--s3-secret-access-key",
            "SK",
            "--s3-allow-http",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        let mut options = args.storage.storage_options();
        options.sort();
        let expected: Vec<(String, String)> = [
            ("allow_http", "true"),
            ("aws_access_key_id", "AK"),
            ("aws_endpoint", "http://127.0.0.1:9000"),
            ("aws_region", "eu-west-1"),
            ("aws_secret_access_key", "SK"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(options, expected);
        // Unset flags add nothing, so LanceDB falls back to the AWS_* variables.
        assert!(super::StorageArgs::default().storage_options().is_empty());
    }

    /// The operator configures query pods through these variables (kbeast-api's
    /// `query_contract`); every one must be a flag of `serve`.
    #[test]
    fn serve_reads_every_variable_the_operator_sets() {
        use kbeast_api::query_contract::env;
        let command = Cli::command();
        let serve = command
            .get_subcommands()
            .find(|c| c.get_name() == "serve")
            .expect("serve subcommand");
        let read: Vec<String> = serve
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        for name in [
            env::DATA,
            env::LISTEN,
            env::API_KEYS,
            env::PROJECT,
            env::EMBEDDING_PROVIDER,
            env::EMBEDDING_MODEL,
            env::EMBEDDING_DIMENSION,
            env::BUILTIN_MODEL_DIR,
            env::EMBEDDING_ENDPOINT,
            env::EMBEDDING_API_KEY,
            env::DEFAULT_SEARCH_MODE,
            env::CHUNK_SIZE,
            env::CHUNK_OVERLAP,
            env::MAX_DOCUMENTS,
            env::MAX_BYTES,
        ] {
            assert!(
                read.iter().any(|r| r == name),
                "serve does not read {name}: {read:?}"
            );
        }
    }
}
