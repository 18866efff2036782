//! `kbeast-node-agent --kubeconfig FILE [--node NAME] [--image-map REPO=PATH]...
//! [--forward NS/svc/NAME:PORT=LOCALPORT]...`: a node of a real API server whose pods run as
//! local processes (needs root), until SIGTERM. Used by `make sandbox` on the real control plane.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use kbeast_localcluster::kubelet::agent::forward_service;
use kbeast_localcluster::portforward::ForwardSpec;
use kbeast_localcluster::{NodeAgent, NodeAgentOptions};

#[derive(Parser)]
#[command(about = "A node agent for a real Kubernetes API server: pods run as local processes")]
struct Args {
    /// Kubeconfig of a user that may register nodes and write pod status (an admin).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The Node to register.
    #[arg(long, default_value = "kbeast-node")]
    node: String,
    /// Names the pod bridge (`kblc<id>`); unique among agents on this machine.
    #[arg(long, default_value_t = 1)]
    network_id: u16,
    /// Pod directories and volume data (default: a temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Image repository → local binary, e.g. `ghcr.io/kbeast/kbeast=/path/to/kbeast-query`
    /// (repeatable; adds to the defaults).
    #[arg(long = "image-map", value_name = "REPO=PATH")]
    image_map: Vec<String>,
    /// The API server's port when it listens on every address (scripts/control-plane.sh):
    /// pods reach it at their bridge's address.
    #[arg(long)]
    api_server_port: Option<u16>,
    /// Forward a local port to a Service, e.g. `default/svc/docs:8080=18080` (repeatable).
    #[arg(long = "forward", value_name = "NS/svc/NAME:PORT=LOCALPORT")]
    forward: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let mut options = NodeAgentOptions::new(&args.node, args.network_id);
    options.kubelet.work_dir = args.work_dir.clone();
    options.api_server_port = args.api_server_port;
    for entry in &args.image_map {
        let (repo, path) = entry
            .split_once('=')
            .with_context(|| format!("--image-map {entry:?}: expected REPO=PATH"))?;
        options
            .kubelet
            .images
            .insert(repo.to_string(), PathBuf::from(path));
    }
    let forwards: Vec<ForwardSpec> = args
        .forward
        .iter()
        .map(|f| f.parse().map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()?;
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&args.kubeconfig)?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .context("loading the kubeconfig")?;
    let client = kube::Client::try_from(config)?;
    let mut agent = NodeAgent::start(client.clone(), options)
        .await
        .context("starting the node agent")?;
    for f in forwards {
        let service = f
            .target
            .strip_prefix("svc/")
            .with_context(|| format!("--forward {}: only svc/NAME targets", f.target))?
            .to_string();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", f.local_port))
            .await
            .with_context(|| format!("listening on 127.0.0.1:{}", f.local_port))?;
        eprintln!(
            "forwarding 127.0.0.1:{} -> {}/svc/{}:{}",
            f.local_port, f.namespace, service, f.port
        );
        tokio::spawn(forward_service(
            client.clone(),
            f.namespace,
            service,
            f.port,
            listener,
        ));
    }
    eprintln!("kbeast-node-agent: node {} registered", args.node);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    agent.shutdown();
    Ok(())
}
