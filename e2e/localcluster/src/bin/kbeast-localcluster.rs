//! `kbeast-localcluster --kubeconfig FILE [--port P] [--data-dir D] [--kubelet]
//! [--image-map REPO=PATH]... [--forward NS/KIND/NAME:PORT=LOCALPORT]...`: serve until SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use kbeast_localcluster::portforward::ForwardSpec;
use kbeast_localcluster::{ControllerSet, KubeletOptions, LocalCluster, Options};

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
    /// Run pods as local processes (the pod runner; needs root for network namespaces).
    #[arg(long)]
    kubelet: bool,
    /// Image repository → local binary for the pod runner, e.g.
    /// `ghcr.io/kbeast/kbeast=/path/to/kbeast-query` (repeatable; adds to the defaults).
    #[arg(long = "image-map", value_name = "REPO=PATH")]
    image_map: Vec<String>,
    /// Forward a local port like `kubectl port-forward`, e.g. `default/svc/web:80=8080`
    /// (repeatable; KIND is `svc` or `pod`).
    #[arg(long = "forward", value_name = "NS/KIND/NAME:PORT=LOCALPORT")]
    forward: Vec<String>,
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
    let mut kubelet = KubeletOptions::default();
    for entry in &args.image_map {
        let (repo, path) = entry
            .split_once('=')
            .with_context(|| format!("--image-map {entry:?}: expected REPO=PATH"))?;
        kubelet.images.insert(repo.to_string(), PathBuf::from(path));
    }
    let forwards: Vec<ForwardSpec> = args
        .forward
        .iter()
        .map(|f| f.parse().map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()?;
    let mut controllers = ControllerSet::all();
    controllers.kubelet = args.kubelet;
    let cluster = LocalCluster::start(Options {
        port: args.port,
        kubeconfig_path: Some(args.kubeconfig.clone()),
        data_dir: args.data_dir.clone(),
        controllers,
        kubelet,
        ..Options::default()
    })
    .await
    .context("starting the local cluster")?;
    for f in &forwards {
        let addr = cluster
            .port_forward_on(&f.namespace, &f.target, f.port, f.local_port)
            .await
            .with_context(|| format!("forwarding {}/{}:{}", f.namespace, f.target, f.port))?;
        eprintln!(
            "forwarding {addr} -> {}/{}:{}",
            f.namespace, f.target, f.port
        );
    }
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
