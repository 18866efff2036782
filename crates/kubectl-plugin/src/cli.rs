//! Command line of `kubectl kbeast`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kbeast_client::SearchMode;

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-kbeast",
    bin_name = "kubectl kbeast",
    version,
    about = "Status, query, ingest, rollout and key commands for kbeast KnowledgeProjects"
)]
pub struct Cli {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Which cluster and namespace, as kubectl takes them.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// Namespace of the project (default: the context's namespace).
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
    /// Kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Conditions, revisions, pods, endpoint, documents and storage of a project.
    Status {
        project: String,
        /// Redraw every 2 s until interrupted.
        #[arg(short, long)]
        watch: bool,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Search a project (through the API server's service proxy, with the read key).
    Query {
        project: String,
        text: String,
        #[arg(long, value_enum)]
        mode: Option<Mode>,
        #[arg(long, default_value_t = 5)]
        top_k: u32,
        #[command(flatten)]
        key: KeyArgs,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Ingest a file, every file under a directory, or standard input (`-`): text and Markdown
    /// files become one document each (id: the path), JSON Lines files one per line.
    Ingest {
        project: String,
        path: PathBuf,
        /// Documents per request.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[command(flatten)]
        key: KeyArgs,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Pause, resume, retry or undo the project's rollout.
    Rollout {
        project: String,
        #[arg(value_enum)]
        action: RolloutAction,
    },
    /// Rotate the project's API keys in two steps: `rotate`, then `retire` once clients moved.
    Keys {
        project: String,
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Args, Debug)]
pub struct KeyArgs {
    /// API key to use instead of the one in the project's keys Secret.
    #[arg(long, env = "KBEAST_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Mode {
    Vector,
    Keyword,
    Hybrid,
}

impl From<Mode> for SearchMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Vector => SearchMode::Vector,
            Mode::Keyword => SearchMode::Keyword,
            Mode::Hybrid => SearchMode::Hybrid,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutAction {
    /// Hold the rollout where it is (`spec.rollout.paused: true`).
    Pause,
    /// Continue a paused rollout.
    Resume,
    /// Try the current spec again after a failed rollout (a new revision of the same spec).
    Retry,
    /// Put back the spec that last rolled out completely.
    Undo,
}

#[derive(Subcommand, Debug, Clone, Copy)]
pub enum KeysAction {
    /// Add new keys beside the old ones and hand out the new tokens; old keys keep working.
    Rotate {
        #[arg(long, value_enum, default_value_t = ScopeArg::All)]
        scope: ScopeArg,
    },
    /// Remove the keys a `rotate` replaced; they stop working at the pods' next reload.
    Retire,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeArg {
    Read,
    Write,
    Admin,
    All,
}
