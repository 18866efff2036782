//! The cluster, namespace and project a command works on.

use anyhow::{Context, Result, bail};
use kbeast_api::KnowledgeProject;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::cli::ClusterArgs;

pub struct Target {
    pub client: Client,
    pub namespace: String,
}

impl Target {
    /// Connects as kubectl would: `--kubeconfig`, else `$KUBECONFIG` or `~/.kube/config`, else
    /// the in-cluster ServiceAccount; `--context` picks a context.
    pub async fn connect(args: &ClusterArgs) -> Result<Self> {
        let options = KubeConfigOptions {
            context: args.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = match (&args.kubeconfig, &args.context) {
            (Some(path), _) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
                Config::from_custom_kubeconfig(kubeconfig, &options).await?
            }
            (None, Some(_)) => Config::from_kubeconfig(&options).await?,
            (None, None) => Config::infer()
                .await
                .context("no kubeconfig found: pass --kubeconfig or set KUBECONFIG")?,
        };
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config)?;
        Ok(Self { client, namespace })
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The project, or an error saying where it was looked for.
    pub async fn project(&self, name: &str) -> Result<KnowledgeProject> {
        match self.api::<KnowledgeProject>().get_opt(name).await {
            Ok(Some(project)) => Ok(project),
            Ok(None) => bail!(
                "no KnowledgeProject {name:?} in namespace {:?} (list them with `kubectl get kp -n {}`)",
                self.namespace,
                self.namespace
            ),
            Err(kube::Error::Api(status)) if status.code == 404 => bail!(
                "the KnowledgeProject API is not installed on this cluster (install kbeast's CRDs first)"
            ),
            Err(error) => Err(error).with_context(|| format!("reading KnowledgeProject {name:?}")),
        }
    }
}
