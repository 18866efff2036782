//! `kbeast-query`: the data-plane server of one kbeast knowledge base.

mod cli;
mod embed;
mod http;
mod ingest;
mod purge;
mod search;
mod serve;
mod serve_lock;
mod snapshot;
mod store;
mod telemetry;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    kbeast_memory::limit_arenas();
    let cli = cli::Cli::parse();
    telemetry::init_logging(&cli.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        match cli.command {
            cli::Command::Serve(args) => serve::run(*args).await,
            cli::Command::Purge(args) => purge::run(args).await,
            cli::Command::Snapshot(args) => snapshot::snapshot(args).await,
            cli::Command::Restore(args) => snapshot::restore(args).await,
        }
    });
    if let Err(error) = &result {
        tracing::error!(error = format!("{error:#}"), "exiting");
    }
    result
}
