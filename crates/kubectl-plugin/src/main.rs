//! `kubectl kbeast`: status, query, ingest, rollout and key commands for kbeast
//! KnowledgeProjects. Installed as a kubectl plugin by putting `kubectl-kbeast` on the PATH.

mod cli;
mod ingest;
mod keys;
mod output;
mod query_proxy;
mod rollout;
mod search;
mod status;
mod target;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};
use target::Target;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let target = Target::connect(&cli.cluster).await?;
    match cli.command {
        Command::Status {
            project,
            watch,
            output,
        } => status::run(&target, &project, watch, output).await,
        Command::Query {
            project,
            text,
            mode,
            top_k,
            key,
            output,
        } => {
            let mode = mode.map(Into::into);
            search::run(&target, &project, &text, mode, top_k, key.key, output).await
        }
        Command::Ingest {
            project,
            path,
            batch,
            key,
            output,
        } => ingest::run(&target, &project, &path, batch, key.key, output).await,
        Command::Rollout { project, action } => rollout::run(&target, &project, action).await,
        Command::Keys { project, action } => keys::run(&target, &project, action).await,
    }
}
