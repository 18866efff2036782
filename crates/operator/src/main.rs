//! `kbeast-operator`: command line → runtime. The logic lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use futures::FutureExt;
use kbeast_operator::http::{self, ServerState};
use kbeast_operator::leader::{LeaderElector, LeaseTiming};
use kbeast_operator::metrics::Metrics;
use kbeast_operator::policy::{self, TenantPolicy};
use kbeast_operator::reconcile::Context;
use kbeast_operator::settings::OperatorSettings;
use kbeast_operator::{controller, render, telemetry};
use kube::Client;
use tracing::{error, info};

#[derive(Parser)]
#[command(
    name = "kbeast-operator",
    version,
    about = "Runs one isolated knowledge base per KnowledgeProject"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator against the cluster of the current kubeconfig (or in-cluster config).
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Print the child manifests of a KnowledgeProject, offline, for review.
    Render {
        /// KnowledgeProject YAML file ("-" for standard input).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[command(flatten)]
        settings: SettingsArgs,
    },
}

#[derive(clap::Args)]
struct SettingsArgs {
    /// Query image for projects that set no spec.image.
    #[arg(
        long,
        env = "KBEAST_QUERY_IMAGE",
        default_value = "ghcr.io/kbeast/kbeast:0.1.0"
    )]
    query_image: String,
    /// Namespace the operator runs in; always allowed through project NetworkPolicies.
    #[arg(
        long,
        env = "KBEAST_OPERATOR_NAMESPACE",
        default_value = "kbeast-system"
    )]
    operator_namespace: String,
    /// Cluster DNS domain, for status.endpoint.
    #[arg(long, env = "KBEAST_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Buckets spec.storage.objectStore.uri may name (comma-separated); none: any.
    #[arg(long, env = "KBEAST_ALLOWED_BUCKETS", value_delimiter = ',')]
    allowed_buckets: Vec<String>,
    /// Prefix every object-store path must start with ({namespace} and {name} filled in);
    /// empty: any.
    #[arg(
        long,
        env = "KBEAST_OBJECT_STORE_PREFIX",
        default_value = policy::DEFAULT_OBJECT_STORE_PREFIX
    )]
    object_store_prefix: String,
    /// Prefixes spec.image must start with (comma-separated); none: any image.
    #[arg(long, env = "KBEAST_ALLOWED_IMAGES", value_delimiter = ',')]
    allowed_images: Vec<String>,
    /// Prefixes of pod annotation keys tenants may not set (comma-separated).
    #[arg(
        long,
        env = "KBEAST_DENIED_POD_ANNOTATIONS",
        value_delimiter = ',',
        default_values_t = policy::DEFAULT_DENIED_POD_ANNOTATIONS.map(String::from)
    )]
    denied_pod_annotations: Vec<String>,
    /// Keys tolerations may name (comma-separated); none: any.
    #[arg(long, env = "KBEAST_ALLOWED_TOLERATION_KEYS", value_delimiter = ',')]
    allowed_toleration_keys: Vec<String>,
}

impl SettingsArgs {
    fn settings(&self) -> OperatorSettings {
        OperatorSettings {
            query_image: self.query_image.clone(),
            operator_namespace: self.operator_namespace.clone(),
            cluster_domain: self.cluster_domain.clone(),
            policy: TenantPolicy {
                allowed_buckets: non_empty(&self.allowed_buckets),
                object_store_prefix: Some(self.object_store_prefix.clone())
                    .filter(|p| !p.is_empty()),
                allowed_images: non_empty(&self.allowed_images),
                denied_pod_annotations: non_empty(&self.denied_pod_annotations),
                allowed_toleration_keys: non_empty(&self.allowed_toleration_keys),
            },
        }
    }
}

/// The entries of a comma-separated list, without empty ones (`--flag=` clears a default).
fn non_empty(values: &[String]) -> Vec<String> {
    values
        .iter()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    settings: SettingsArgs,
    /// Kubeconfig file; default: $KUBECONFIG, ~/.kube/config, then in-cluster.
    #[arg(long, env = "KBEAST_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Comma-separated namespaces to watch; empty watches all namespaces.
    #[arg(
        long,
        env = "KBEAST_WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    watch_namespaces: Vec<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "KBEAST_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Projects reconciled at once.
    #[arg(long, env = "KBEAST_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Elect a leader through a Lease, so that several replicas are safe.
    #[arg(long, env = "KBEAST_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the leader Lease, in the operator namespace.
    #[arg(
        long,
        env = "KBEAST_LEASE_NAME",
        default_value = "kbeast-operator-leader"
    )]
    lease_name: String,
    /// Identity in the Lease; default: $POD_NAME, then the host name.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Log filter in RUST_LOG syntax.
    #[arg(long, env = "KBEAST_LOG", default_value = "info,kube=warn")]
    log: String,
}

fn main() -> anyhow::Result<()> {
    // Before the runtime starts its threads: mallopt must run while the process has one.
    kbeast_memory::limit_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run_command(Cli::parse().command))
}

async fn run_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Crd => {
            print!("{}", render::crd_yaml());
            Ok(())
        }
        Command::Render { file, settings } => {
            let yaml = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let keys = kbeast_operator::build::ApiKeySet::generate();
            let manifests = render::render_children(&yaml, &settings.settings(), &keys)
                .with_context(|| format!("rendering {}", file.display()))?;
            print!("{manifests}");
            Ok(())
        }
        Command::Run(args) => run(args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(&args.log);
    kbeast_memory::spawn_release_loop();
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("kbeast-operator-{}", std::process::id()));
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shutdown = {
        let mut stop_rx = stop_rx.clone();
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        }
        .boxed()
        .shared()
    };
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown signal received");
        let _ = stop_tx.send(true);
    });

    let server = tokio::spawn(http::serve(
        args.listen,
        ServerState {
            metrics: metrics.clone(),
            ready: ready.clone(),
        },
        shutdown.clone(),
    ));

    client
        .apiserver_version()
        .await
        .context("the Kubernetes API server did not answer")?;
    ready.store(true, Ordering::Relaxed);
    info!(listen = %args.listen, identity, "kbeast-operator started");

    let elector = args.leader_election.then(|| {
        LeaderElector::new(
            client.clone(),
            &args.settings.operator_namespace,
            &args.lease_name,
            &identity,
            LeaseTiming::default(),
        )
    });
    if let Some(elector) = &elector {
        tokio::select! {
            _ = elector.acquire() => {}
            _ = shutdown.clone() => {
                let _ = server.await;
                return Ok(());
            }
        }
    }
    metrics.leader.set(1);

    let ctx = Arc::new(Context::new(
        client,
        args.settings.settings(),
        metrics.clone(),
        Some(identity.clone()),
    ));
    let namespaces: Vec<String> = args
        .watch_namespaces
        .into_iter()
        .filter(|n| !n.is_empty())
        .collect();
    let controllers = controller::run(ctx, namespaces, args.concurrency, shutdown.clone());

    let lost_leadership = match &elector {
        Some(elector) => {
            tokio::select! {
                _ = controllers => false,
                _ = elector.hold() => true,
            }
        }
        None => {
            controllers.await;
            false
        }
    };
    metrics.leader.set(0);
    if lost_leadership {
        error!("lost leadership; exiting so that only the new leader reconciles");
        std::process::exit(1);
    }
    if let Some(elector) = &elector {
        elector.release().await;
    }
    let _ = server.await;
    info!("kbeast-operator stopped");
    Ok(())
}

async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no Kubernetes configuration found")?,
    };
    Client::try_from(config).context("building the Kubernetes client")
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
