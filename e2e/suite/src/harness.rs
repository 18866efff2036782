//! One environment per test: the local control plane (or the cluster of
//! `KBEAST_E2E_KUBECONFIG`), a client, the CRD, and operator processes started as a user would.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use kbeast_api::KnowledgeProject;
use kbeast_localcluster::FaultProxy;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::control_plane::{ControlPlane, OPERATOR_ACCOUNT, OPERATOR_NAMESPACE};
use crate::{
    Operator, create_namespace, repo_root, rolled_out_for_generation, start_operator_with,
    wait_for, wait_for_crd,
};

/// Where the test runs.
pub enum Target {
    /// The real control plane of `scripts/control-plane.sh` with a node agent (the default).
    ControlPlane(ControlPlane),
    /// The cluster of `KBEAST_E2E_KUBECONFIG`.
    Real,
}

pub struct Env {
    pub target: Target,
    /// An admin's kubeconfig.
    pub kubeconfig: PathBuf,
    /// The operator's: the chart's ServiceAccount on the control plane and a real cluster.
    pub operator_kubeconfig: PathBuf,
    pub query_image: String,
    /// An admin's client.
    pub client: Client,
    _dir: tempfile::TempDir,
}

/// A point in a target's request history, for counting requests made after it.
#[derive(Debug, Clone, Copy)]
pub enum Mark {
    Audit(jiff::Timestamp),
}

/// The operator's user name in the API server's audit log.
fn operator_user() -> String {
    format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}")
}

/// The query image the operator is told to use; the node agent maps it to this build's
/// `kbeast-query`.
pub const LOCAL_QUERY_IMAGE: &str = "kbeast-query:e2e";

impl Env {
    /// The default target: a real cluster when `KBEAST_E2E_KUBECONFIG` is set, else the real
    /// control plane with a node agent running this build's `kbeast-query` (needs root).
    pub async fn start() -> Env {
        Env::start_with(&[], None).await
    }

    /// As [`Env::start`], with more images mapped to local programs and a shorter
    /// CrashLoopBackOff.
    pub async fn start_with(images: &[(&str, PathBuf)], backoff_base: Option<Duration>) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        if let Some(path) = std::env::var_os("KBEAST_E2E_KUBECONFIG") {
            let kubeconfig = PathBuf::from(path);
            let client = client_for(&kubeconfig).await;
            let image =
                std::env::var("KBEAST_E2E_IMAGE").expect("KBEAST_E2E_IMAGE names the query image");
            // The chart's RBAC, applied the same way as on the control plane.
            create_namespace(&client, OPERATOR_NAMESPACE).await;
            let rendered = crate::helm_template(&[]);
            crate::kubectl_apply(&kubeconfig, &crate::rbac_documents(&rendered));
            let operator_kubeconfig = crate::service_account_kubeconfig(
                &client,
                &kubeconfig,
                dir.path(),
                OPERATOR_NAMESPACE,
                OPERATOR_ACCOUNT,
            )
            .await;
            return Env::finish(
                Target::Real,
                kubeconfig,
                operator_kubeconfig,
                image,
                client,
                dir,
            )
            .await;
        }
        Env::on_control_plane(ControlPlane::start(images, backoff_base).await, dir).await
    }

    /// The real control plane with a hollow node (pods run no process; one shared
    /// `kbeast-query` answers for them, see [`crate::hollow`]): for scale tests, where hundreds
    /// of query processes would not fit this machine. Not available on a real cluster.
    pub async fn start_hollow() -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let plane = ControlPlane::start_hollow(crate::hollow::HOLLOW_POD_IP).await;
        Env::on_control_plane(plane, dir).await
    }

    /// The chart's RBAC on `plane`, and the operator's kubeconfig as its ServiceAccount.
    async fn on_control_plane(plane: ControlPlane, dir: tempfile::TempDir) -> Env {
        create_namespace(&plane.client, OPERATOR_NAMESPACE).await;
        plane.install_chart_rbac(&[]);
        let operator_kubeconfig = plane.operator_kubeconfig().await;
        let kubeconfig = plane.admin_kubeconfig.clone();
        let client = plane.client.clone();
        Env::finish(
            Target::ControlPlane(plane),
            kubeconfig,
            operator_kubeconfig,
            LOCAL_QUERY_IMAGE.to_string(),
            client,
            dir,
        )
        .await
    }

    async fn finish(
        target: Target,
        kubeconfig: PathBuf,
        operator_kubeconfig: PathBuf,
        query_image: String,
        client: Client,
        dir: tempfile::TempDir,
    ) -> Env {
        wait_for_crd(&client).await;
        create_namespace(&client, "kbeast-system").await;
        Env {
            target,
            kubeconfig,
            operator_kubeconfig,
            query_image,
            client,
            _dir: dir,
        }
    }

    pub fn control_plane(&self) -> Option<&ControlPlane> {
        match &self.target {
            Target::ControlPlane(plane) => Some(plane),
            _ => None,
        }
    }

    /// Now, in the API server's audit log; None on a real cluster, whose requests the suite
    /// cannot see.
    pub fn mark(&self, check: &str) -> Option<Mark> {
        match &self.target {
            Target::ControlPlane(_) => Some(Mark::Audit(jiff::Timestamp::now())),
            Target::Real => {
                eprintln!("skipped on a real cluster: {check} needs the request history");
                None
            }
        }
    }

    /// The operator's writes since `mark`, Lease renewals and Events aside, described.
    pub fn operator_writes_since(&self, mark: Mark) -> Vec<String> {
        match (&self.target, mark) {
            (Target::ControlPlane(plane), Mark::Audit(since)) => {
                // The audit log is written as requests complete; give it a moment.
                std::thread::sleep(Duration::from_millis(500));
                let user = operator_user();
                plane
                    .audit_records(since)
                    .into_iter()
                    .filter(|r| {
                        r.user == user
                            && r.is_write()
                            && r.resource != "leases"
                            && r.resource != "events"
                    })
                    .map(|r| format!("{r:?}"))
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    /// How many requests the operator made since `mark`.
    pub fn operator_requests_since(&self, mark: Mark) -> usize {
        match (&self.target, mark) {
            (Target::ControlPlane(plane), Mark::Audit(since)) => {
                let user = operator_user();
                plane
                    .audit_records(since)
                    .iter()
                    .filter(|r| r.user == user)
                    .count()
            }
            _ => 0,
        }
    }

    /// Requests since `mark` counted by "client verb resource" (the operator, the controller
    /// manager's controllers, the scheduler, the node agent, …), from the audit log.
    pub fn requests_since_by_client(
        &self,
        mark: Mark,
    ) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        if let (Target::ControlPlane(plane), Mark::Audit(since)) = (&self.target, mark) {
            std::thread::sleep(Duration::from_millis(500));
            let operator = operator_user();
            for r in plane.audit_records(since) {
                let client = if r.user == operator {
                    "operator".to_string()
                } else {
                    r.user
                        .trim_start_matches("system:serviceaccount:kube-system:")
                        .to_string()
                };
                *counts
                    .entry(format!("{client} {} {}", r.verb, r.resource))
                    .or_default() += 1;
            }
        }
        counts
    }

    /// A fault-injecting proxy in front of the control plane's API server (see
    /// [`Env::operator_through`]). Test control plane only.
    pub async fn fault_proxy(&self) -> FaultProxy {
        let plane = self
            .control_plane()
            .expect("a fault proxy needs the test control plane");
        let config =
            kube::config::Kubeconfig::read_from(&plane.admin_kubeconfig).expect("kubeconfig");
        let server = config.clusters[0]
            .cluster
            .as_ref()
            .and_then(|c| c.server.clone())
            .expect("server");
        let ca = std::fs::read(plane.dir.path().join("pki/ca.crt")).expect("CA");
        FaultProxy::start(&server, &ca)
            .await
            .expect("fault proxy starts")
    }

    /// As [`Env::operator`], with the operator's requests going through `proxy`.
    pub fn operator_through(&self, proxy: &FaultProxy, extra: &[&str]) -> (Operator, u16) {
        let mut config =
            kube::config::Kubeconfig::read_from(&self.operator_kubeconfig).expect("kubeconfig");
        for named in &mut config.clusters {
            if let Some(cluster) = named.cluster.as_mut() {
                cluster.server = Some(proxy.url());
                cluster.certificate_authority = None;
            }
        }
        let path = self._dir.path().join("operator-through-proxy.kubeconfig");
        std::fs::write(&path, serde_yaml::to_string(&config).expect("YAML")).expect("written");
        self.operator_with_kubeconfig(&path, extra)
    }

    /// `kbeast-operator run` with the e2e query image, metrics on a free port, and `extra`.
    pub fn operator(&self, extra: &[&str]) -> (Operator, u16) {
        self.operator_with_kubeconfig(&self.operator_kubeconfig, extra)
    }

    fn operator_with_kubeconfig(
        &self,
        kubeconfig: &std::path::Path,
        extra: &[&str],
    ) -> (Operator, u16) {
        let port = free_port();
        let mut args = vec![
            "run".to_string(),
            format!("--listen=127.0.0.1:{port}"),
            "--operator-namespace=kbeast-system".to_string(),
            format!("--query-image={}", self.query_image),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        (start_operator_with(kubeconfig, &args), port)
    }

    pub fn projects(&self, namespace: &str) -> Api<KnowledgeProject> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Creates a namespace and, in it, the project of `config/samples/<sample>`, changed by `edit`.
    pub async fn create_project(
        &self,
        namespace: &str,
        sample: &str,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> KnowledgeProject {
        create_namespace(&self.client, namespace).await;
        let text = std::fs::read_to_string(repo_root().join("config/samples").join(sample))
            .expect("sample");
        let mut value: serde_json::Value = serde_yaml::from_str(&text).expect("sample parses");
        crate::with_test_embedder(&mut value);
        edit(&mut value);
        let project: KnowledgeProject = serde_json::from_value(value).expect("valid project");
        self.projects(namespace)
            .create(&PostParams::default(), &project)
            .await
            .expect("project created")
    }

    /// Waits for `Ready=True` for the project's current generation.
    pub async fn wait_ready(&self, namespace: &str, name: &str, timeout: Duration) {
        let projects = self.projects(namespace);
        wait_for(
            &format!("{namespace}/{name} Ready for its generation"),
            timeout,
            || async {
                projects
                    .get(name)
                    .await
                    .is_ok_and(|p| rolled_out_for_generation(&p))
            },
        )
        .await;
    }

    /// `http://…` reaching port `port` of a Service from this process, or None on a real
    /// cluster (no route to its pods from here).
    pub async fn service_url(&self, namespace: &str, service: &str, port: u16) -> Option<String> {
        match &self.target {
            Target::ControlPlane(plane) => Some(plane.service_url(namespace, service, port).await),
            Target::Real => None,
        }
    }
}

/// A client for the cluster of `kubeconfig`.
pub async fn client_for(kubeconfig: &std::path::Path) -> Client {
    Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig"),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("kubeconfig loads"),
    )
    .expect("client")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("address")
        .port()
}

/// The body of `GET http://127.0.0.1:<port><path>`, if it answers 200.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.starts_with("HTTP/1.1 200").then_some(response)
}

/// The value of one series in the operator's `/metrics`, e.g. `kbeast_managed_projects`.
pub fn metric_value(port: u16, series: &str) -> Option<f64> {
    let text = http_get(port, "/metrics")?;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.trim().parse().ok())?
        })
}

/// Sum of every series of a metric family (all label values).
pub fn metric_sum(port: u16, family: &str) -> Option<f64> {
    let text = http_get(port, "/metrics")?;
    Some(
        text.lines()
            .filter(|l| l.starts_with(family) && !l.starts_with('#'))
            .filter(|l| {
                let rest = &l[family.len()..];
                rest.starts_with('{') || rest.starts_with(' ')
            })
            .filter_map(|l| {
                l.rsplit_once(' ')
                    .and_then(|(_, v)| v.trim().parse::<f64>().ok())
            })
            .sum(),
    )
}

/// A client that searches without pause, as a tenant would during a change, and counts the
/// answers. Every failure is printed.
pub struct QueryLoop {
    stop: Arc<AtomicBool>,
    succeeded: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl QueryLoop {
    /// Keyword searches for `query`, one every 50 ms. Only the call's success counts: pods on
    /// ephemeral storage each hold their own data.
    pub fn start(client: kbeast_client::Client, query: &str) -> QueryLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let (succeeded, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let request =
            kbeast_client::SearchRequest::new(query, kbeast_client::SearchMode::Keyword, 3);
        let task = {
            let (stop, succeeded, failed) = (stop.clone(), succeeded.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match client.search(&request).await {
                        Ok(_) => succeeded.fetch_add(1, Ordering::Relaxed),
                        Err(error) => {
                            eprintln!("query failed: {error}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        QueryLoop {
            stop,
            succeeded,
            failed,
            task,
        }
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Waits until `more` further queries have succeeded, so that a check spans real traffic
    /// however fast the change under test was. Panics after `timeout`.
    pub async fn wait_for_more(&self, more: u64, timeout: Duration) {
        let target = self.succeeded.load(Ordering::Relaxed) + more;
        let deadline = tokio::time::Instant::now() + timeout;
        while self.succeeded.load(Ordering::Relaxed) < target {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the query loop made no progress in {timeout:?} ({} failed)",
                self.failed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the loop; returns (succeeded, failed).
    pub async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("query loop");
        (
            self.succeeded.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// The generated API keys of `project` (Secret `<project>-api-keys`): key name → secret.
pub async fn api_keys(
    client: &Client,
    namespace: &str,
    project: &str,
) -> std::collections::BTreeMap<String, String> {
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), namespace)
        .get(&format!("{project}-api-keys"))
        .await
        .expect("generated API-keys Secret");
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).expect("UTF-8 key")))
        .collect()
}

/// SIGKILLs the process `program` (file name) of the node agent's pod `pod`, found by the
/// `HOSTNAME` every container gets; returns its pid.
pub fn kill_pod_process(pod: &str, program: &str) -> u32 {
    let hostname = format!("HOSTNAME={pod}");
    let pid = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            exe.is_some_and(|e| e.file_name().is_some_and(|n| n == program))
                && environ
                    .split(|b| *b == 0)
                    .any(|var| var == hostname.as_bytes())
        })
        .unwrap_or_else(|| panic!("no {program} process of pod {pod}"));
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "SIGKILL to {pid}");
    pid
}

/// The real control plane with a node agent, the chart's CRD and RBAC, and the operator's
/// namespace: the set-up of the tests that run real query pods. Needs root.
pub struct PodCluster {
    pub plane: ControlPlane,
    /// The operator's kubeconfig: the chart's ServiceAccount.
    pub kubeconfig: PathBuf,
    /// An admin's client.
    pub client: Client,
}

impl PodCluster {
    /// `images` maps image repositories to local programs; `backoff_base` shortens the
    /// CrashLoopBackOff delays.
    pub async fn start(images: &[(&str, PathBuf)], backoff_base: Option<Duration>) -> PodCluster {
        let plane = ControlPlane::start(images, backoff_base).await;
        let client = plane.client.clone();
        create_namespace(&client, OPERATOR_NAMESPACE).await;
        plane.install_chart_rbac(&[]);
        wait_for_crd(&client).await;
        let kubeconfig = plane.operator_kubeconfig().await;
        PodCluster {
            plane,
            kubeconfig,
            client,
        }
    }

    /// Creates `project` (a KnowledgeProject as JSON) in `namespace` and waits until it is
    /// Ready for its generation through real probes and smoke checks.
    pub async fn create_ready_project(
        &self,
        namespace: &str,
        mut project: serde_json::Value,
    ) -> Api<KnowledgeProject> {
        create_namespace(&self.client, namespace).await;
        crate::with_test_embedder(&mut project);
        let project: KnowledgeProject = serde_json::from_value(project).expect("valid project");
        let name = project.metadata.name.clone().expect("name");
        let projects: Api<KnowledgeProject> = Api::namespaced(self.client.clone(), namespace);
        projects
            .create(&PostParams::default(), &project)
            .await
            .expect("project created");
        wait_for(
            &format!("{namespace}/{name} Ready with real pods"),
            Duration::from_secs(180),
            || async {
                projects
                    .get(&name)
                    .await
                    .is_ok_and(|p| rolled_out_for_generation(&p))
            },
        )
        .await;
        projects
    }

    /// `http://<address>` of port `port` of a Service, forwarded to this process.
    pub async fn service_url(&self, namespace: &str, service: &str, port: u16) -> String {
        self.plane.service_url(namespace, service, port).await
    }
}

/// `http://<pod IP>:<port>` of a pod: the node agent's pod network is routed from the host.
pub async fn pod_url(client: &Client, namespace: &str, pod: &str, port: u16) -> String {
    let pod = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), namespace)
        .get(pod)
        .await
        .expect("pod");
    let ip = pod.status.and_then(|s| s.pod_ip).expect("pod IP");
    format!("http://{ip}:{port}")
}

/// The project's status, or an empty one.
pub fn status_of(project: &KnowledgeProject) -> kbeast_api::KnowledgeProjectStatus {
    project.status.clone().unwrap_or_default()
}

/// (status, reason, message) of the condition `type_` for the project's current generation.
pub fn current_condition(
    project: &KnowledgeProject,
    type_: &str,
) -> Option<(String, String, String)> {
    status_of(project)
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.observed_generation == project.metadata.generation)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}
