//! The real control plane as a test target: etcd, kube-apiserver (RBAC on),
//! kube-controller-manager and kube-scheduler started by `scripts/control-plane.sh`, plus a node
//! agent that runs the scheduled pods as local processes. The chart's CRD and RBAC are installed,
//! and the operator runs as the chart's ServiceAccount, never as an admin.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kbeast_localcluster::{NodeAgent, NodeAgentOptions};
use kube::Client;
use kube::api::Api;
use serde_json::Value;

use crate::harness::client_for;
use crate::{repo_root, wait_for};

/// The namespace and name of the operator's ServiceAccount in the chart (release `kbeast`).
pub const OPERATOR_NAMESPACE: &str = "kbeast-system";
pub const OPERATOR_ACCOUNT: &str = "kbeast";

/// A running control plane; dropping it stops the node agent's pods and the four processes.
pub struct ControlPlane {
    pub dir: tempfile::TempDir,
    pub admin_kubeconfig: PathBuf,
    pub client: Client,
    pub agent: NodeAgent,
}

/// The node the agent registers.
pub const NODE_NAME: &str = "kbeast-node";

fn script() -> PathBuf {
    repo_root().join("scripts/control-plane.sh")
}

fn api_port(kubeconfig: &Path) -> u16 {
    let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server: https://127.0.0.1:"))
        .and_then(|p| p.trim().parse().ok())
        .expect("API server port in the kubeconfig")
}

impl ControlPlane {
    /// Starts the control plane and a node agent whose images map repositories to programs
    /// (the kbeast images run this build's `kbeast-query` by default). Needs root.
    pub async fn start(images: &[(&str, PathBuf)], backoff_base: Option<Duration>) -> ControlPlane {
        ControlPlane::launch(images, backoff_base, None).await
    }

    /// Starts the control plane with a hollow node: pods run no process and are reported
    /// running and ready at `pod_ip` (see [`crate::hollow`]).
    pub async fn start_hollow(pod_ip: std::net::Ipv4Addr) -> ControlPlane {
        ControlPlane::launch(&[], None, Some(pod_ip)).await
    }

    async fn launch(
        images: &[(&str, PathBuf)],
        backoff_base: Option<Duration>,
        hollow_pod_ip: Option<std::net::Ipv4Addr>,
    ) -> ControlPlane {
        let dir = tempfile::Builder::new()
            .prefix("kbeast-control-plane-")
            .tempdir()
            .expect("temp dir");
        let status = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir.path())
            .status()
            .expect("scripts/control-plane.sh runs");
        assert!(
            status.success(),
            "the control plane did not start (logs in {})",
            dir.path().display()
        );
        let admin_kubeconfig = dir.path().join("admin.kubeconfig");
        let client = client_for(&admin_kubeconfig).await;
        let port = api_port(&admin_kubeconfig);
        let mut options = NodeAgentOptions::new(NODE_NAME, port);
        options.api_server_port = Some(port);
        options.hollow_pod_ip = hollow_pod_ip;
        options
            .kubelet
            .images
            .extend(kbeast_localcluster::kubelet::agent::image_map(images));
        if let Some(base) = backoff_base {
            options.kubelet.backoff_base = base;
        }
        options.kubelet.work_dir = Some(dir.path().join("node"));
        let agent = NodeAgent::start(client.clone(), options)
            .await
            .expect("node agent starts (needs root)");
        let plane = ControlPlane {
            dir,
            admin_kubeconfig,
            client,
            agent,
        };
        plane.wait_for_node().await;
        plane
    }

    /// Waits until the scheduler may place pods on the node: Ready, and no not-ready taint.
    async fn wait_for_node(&self) {
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
        wait_for(
            "the node is Ready and untainted",
            Duration::from_secs(60),
            || async {
                nodes.get(NODE_NAME).await.is_ok_and(|node| {
                    let ready = node
                        .status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True");
                    let tainted = node
                        .spec
                        .and_then(|s| s.taints)
                        .is_some_and(|t| !t.is_empty());
                    ready && !tainted
                })
            },
        )
        .await;
    }

    /// Applies the chart's CRD and RBAC with `helm template … | kubectl apply --server-side`.
    pub fn install_chart_rbac(&self, values: &[&str]) {
        let rendered = crate::helm_template(values);
        crate::kubectl_apply(&self.admin_kubeconfig, &crate::rbac_documents(&rendered));
    }

    /// A kubeconfig that authenticates as ServiceAccount `namespace/name` with a bound token.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        crate::service_account_kubeconfig(
            &self.client,
            &self.admin_kubeconfig,
            self.dir.path(),
            namespace,
            name,
        )
        .await
    }

    /// The operator's kubeconfig: the chart's ServiceAccount.
    pub async fn operator_kubeconfig(&self) -> PathBuf {
        self.service_account_kubeconfig(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT)
            .await
    }

    /// `http://127.0.0.1:<port>`, forwarded to port `port` of Service `namespace/service`
    /// (there is no kube-proxy here; see [`kbeast_localcluster::kubelet::agent::forward_service`]).
    pub async fn service_url(&self, namespace: &str, service: &str, port: u16) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("local port");
        let address = listener.local_addr().expect("address");
        tokio::spawn(kbeast_localcluster::kubelet::agent::forward_service(
            self.client.clone(),
            namespace.to_string(),
            service.to_string(),
            port,
            listener,
        ));
        format!("http://{address}")
    }

    /// The API server's audit records since `since` (RFC 3339), in order.
    pub fn audit_records(&self, since: jiff::Timestamp) -> Vec<AuditRecord> {
        let text = std::fs::read_to_string(self.dir.path().join("audit.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| event["stage"] == "ResponseComplete")
            .filter_map(|event| AuditRecord::from_event(&event))
            .filter(|record| record.at >= since)
            .collect()
    }

    /// The log of a container of a pod run by the node agent.
    pub fn pod_log(&self, namespace: &str, pod: &str, container: &str) -> Option<String> {
        self.agent.pod_log(namespace, pod, container)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.agent.shutdown();
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// One request as the API server's audit log recorded it.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub at: jiff::Timestamp,
    pub user: String,
    pub verb: String,
    /// `deployments`, or `pods/status` for a subresource.
    pub resource: String,
    pub namespace: String,
    pub name: String,
    pub code: u16,
}

impl AuditRecord {
    fn from_event(event: &Value) -> Option<AuditRecord> {
        let object = &event["objectRef"];
        let text = |v: &Value| v.as_str().unwrap_or("").to_string();
        let mut resource = text(&object["resource"]);
        if let Some(sub) = object["subresource"].as_str() {
            resource = format!("{resource}/{sub}");
        }
        Some(AuditRecord {
            at: event["requestReceivedTimestamp"].as_str()?.parse().ok()?,
            user: text(&event["user"]["username"]),
            verb: text(&event["verb"]),
            resource,
            namespace: text(&object["namespace"]),
            name: text(&object["name"]),
            code: event["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
        })
    }

    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }
}
