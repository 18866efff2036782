//! `kbeast-localcluster --kubeconfig FILE [--port P] [--data-dir D]`: serve until SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use kbeast_localcluster::{LocalCluster, Options};

#[derive(Parser)]
#[command(about = "In-memory Kubernetes API server emulator for kbeast end-to-end tests")]
struct Args {
    /// Kubeconfig file to write once the server is listening.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Keep state across restarts: loaded from here on start, saved here on SIGTERM.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    if let Some(dir) = &args.data_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let cluster = LocalCluster::start(Options {
        port: args.port,
        kubeconfig_path: Some(args.kubeconfig.clone()),
        data_dir: args.data_dir.clone(),
        ..Options::default()
    })
    .await
    .context("starting the local cluster")?;
    eprintln!(
        "kbeast-localcluster serving on {} (kubeconfig {})",
        cluster.url(),
        args.kubeconfig.display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    cluster.stop().await.context("saving the state")?;
    Ok(())
}
