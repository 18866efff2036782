//! Command-line flags. Every flag can also be set from a `KBEAST_…` variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::embed::HashEmbedder;
use crate::ingest::chunking::ChunkConfig;

#[derive(Debug, Parser)]
#[command(
    name = "kbeast-query",
    version,
    about = "Ingest and search server of one kbeast knowledge base"
)]
pub struct Cli {
    /// Log filter (RUST_LOG syntax), e.g. `info` or `kbeast_query=debug,info`.
    #[arg(long, env = "KBEAST_LOG", default_value = "info", global = true)]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API over a LanceDB directory.
    Serve(ServeArgs),
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
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// LanceDB data directory (created if missing).
    #[arg(long, env = "KBEAST_DATA")]
    pub data: PathBuf,
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
    #[arg(long, env = "KBEAST_MAX_DOCUMENTS")]
    pub max_documents: Option<u64>,
    /// Most bytes of chunk text the knowledge base may hold; ingests beyond get 507.
    #[arg(long, env = "KBEAST_MAX_BYTES")]
    pub max_bytes: Option<u64>,
    /// Maximum chunk length in characters (Unicode scalar values).
    #[arg(long, env = "KBEAST_CHUNK_SIZE", default_value_t = ChunkConfig::DEFAULT_SIZE)]
    pub chunk_size: usize,
    /// Characters repeated from the previous chunk; less than half the chunk size.
    #[arg(long, env = "KBEAST_CHUNK_OVERLAP", default_value_t = ChunkConfig::DEFAULT_OVERLAP)]
    pub chunk_overlap: usize,
    /// Compact files, update indices and prune old versions after this many
    /// write commits (0 disables).
    #[arg(long, env = "KBEAST_OPTIMIZE_EVERY_COMMITS", default_value_t = 100)]
    pub optimize_every_commits: u64,
    /// Build an IVF-PQ vector index once the table holds this many chunks
    /// (below it, vector search is exact). 0 disables.
    #[arg(long, env = "KBEAST_VECTOR_INDEX_MIN_ROWS", default_value_t = 100_000)]
    pub vector_index_min_rows: u64,
    #[arg(long, env = "KBEAST_EMBEDDER", value_enum, default_value_t = EmbedderKind::Hash)]
    pub embedder: EmbedderKind,
    /// Vector dimension of the `hash` embedder.
    #[arg(long, env = "KBEAST_EMBEDDING_DIM", default_value_t = HashEmbedder::DEFAULT_DIMENSION)]
    pub embedding_dim: usize,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// LanceDB data directory (or URI) of the knowledge base to delete.
    #[arg(long, env = "KBEAST_DATA")]
    pub data: String,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// LanceDB directory (or URI) of the knowledge base.
    #[arg(long, env = "KBEAST_DATA")]
    pub data: String,
    /// Directory (or URI) to write the snapshot to; must not hold one already.
    #[arg(long, env = "KBEAST_SNAPSHOT")]
    pub out: String,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
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
