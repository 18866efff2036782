//! One environment per test: the local control plane (or the cluster of
//! `KBEAST_E2E_KUBECONFIG`), a client, the CRD, and operator processes started as a user would.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use kbeast_api::KnowledgeProject;
use kbeast_localcluster::{ControllerSet, KubeletOptions, LocalCluster, Options, RequestRecord};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::{
    Operator, create_namespace, install_crd, ready_for_generation, repo_root, start_operator_with,
    wait_for,
};

/// Where the test runs.
pub enum Target {
    Local(LocalCluster),
    /// The cluster of `KBEAST_E2E_KUBECONFIG`.
    Real,
}

pub struct Env {
    pub target: Target,
    pub kubeconfig: PathBuf,
    pub query_image: String,
    pub client: Client,
    _dir: tempfile::TempDir,
}

impl Env {
    pub async fn start() -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let (target, kubeconfig, query_image) = match std::env::var_os("KBEAST_E2E_KUBECONFIG") {
            Some(path) => (
                Target::Real,
                PathBuf::from(path),
                std::env::var("KBEAST_E2E_IMAGE").expect("KBEAST_E2E_IMAGE names the query image"),
            ),
            None => {
                let kubeconfig = dir.path().join("kubeconfig");
                let cluster = LocalCluster::start(Options {
                    kubeconfig_path: Some(kubeconfig.clone()),
                    ..Options::default()
                })
                .await
                .expect("local cluster starts");
                (
                    Target::Local(cluster),
                    kubeconfig,
                    "kbeast-query:e2e".to_string(),
                )
            }
        };
        let client = client_for(&kubeconfig).await;
        install_crd(&client).await;
        create_namespace(&client, "kbeast-system").await;
        Env {
            target,
            kubeconfig,
            query_image,
            client,
            _dir: dir,
        }
    }

    pub fn local(&self) -> Option<&LocalCluster> {
        match &self.target {
            Target::Local(cluster) => Some(cluster),
            Target::Real => None,
        }
    }

    /// The emulator's request log, or a message saying why the check is skipped.
    pub fn request_log_or_skip(&self, check: &str) -> Option<&LocalCluster> {
        let local = self.local();
        if local.is_none() {
            eprintln!("skipped on a real cluster: {check} needs the emulator's request log");
        }
        local
    }

    /// `kbeast-operator run` with the e2e query image, metrics on a free port, and `extra`.
    pub fn operator(&self, extra: &[&str]) -> (Operator, u16) {
        let port = free_port();
        let mut args = vec![
            "run".to_string(),
            format!("--listen=127.0.0.1:{port}"),
            "--operator-namespace=kbeast-system".to_string(),
            format!("--query-image={}", self.query_image),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        (start_operator_with(&self.kubeconfig, &args), port)
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
        edit(&mut value);
        let project: KnowledgeProject = serde_json::from_value(value).expect("valid project");
        self.projects(namespace)
            .create(&PostParams::default(), &project)
            .await
            .expect("project created")
    }

    /// Plays the kubelet where no pod runner runs the query pods: marks them ready.
    pub fn ready_pods(&self, namespace: &str) {
        if let Some(cluster) = self.local() {
            cluster.set_pods_ready(namespace, "app.kubernetes.io/name=kbeast-query", true);
        }
    }

    /// Waits for `Ready=True` for the project's current generation.
    pub async fn wait_ready(&self, namespace: &str, name: &str, timeout: Duration) {
        let projects = self.projects(namespace);
        wait_for(
            &format!("{namespace}/{name} Ready for its generation"),
            timeout,
            || async {
                self.ready_pods(namespace);
                projects
                    .get(name)
                    .await
                    .is_ok_and(|p| ready_for_generation(&p))
            },
        )
        .await;
    }

    /// Writes recorded by the emulator since `since_ms`, Lease renewals and Events aside.
    pub fn writes_since(&self, since_ms: u128) -> Vec<RequestRecord> {
        self.local()
            .map(|cluster| {
                cluster
                    .requests()
                    .into_iter()
                    .filter(|r| {
                        r.at_ms >= since_ms
                            && r.is_write()
                            && r.resource != "leases"
                            && r.resource != "events"
                    })
                    .collect()
            })
            .unwrap_or_default()
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

/// A local control plane whose pod runner runs `images` (repository → program) as real
/// processes; the kubeconfig is written to `kubeconfig`. Needs root.
pub async fn cluster_with_pod_runner(
    kubeconfig: &std::path::Path,
    images: &[(&str, PathBuf)],
    backoff_base: Option<Duration>,
) -> LocalCluster {
    let mut kubelet = KubeletOptions::default();
    if let Some(base) = backoff_base {
        kubelet.backoff_base = base;
    }
    for (image, program) in images {
        let repo = kbeast_localcluster::kubelet::image_repository(image);
        kubelet.images.insert(repo.to_string(), program.clone());
    }
    LocalCluster::start(Options {
        kubeconfig_path: Some(kubeconfig.to_path_buf()),
        controllers: ControllerSet::all().with_kubelet(),
        kubelet,
        ..Options::default()
    })
    .await
    .expect("local cluster with the pod runner starts (needs root)")
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

/// SIGKILLs the process `program` (file name) of the pod runner's pod `pod`, found by the
/// `HOSTNAME` every container gets; returns its pid. Local control plane only.
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

/// The local control plane with the pod runner, the CRD, and the operator's namespace: the
/// set-up of the tests that run real query pods. Emulator only.
pub struct PodCluster {
    pub cluster: LocalCluster,
    pub kubeconfig: PathBuf,
    pub client: Client,
    _dir: tempfile::TempDir,
}

impl PodCluster {
    /// `images` maps image repositories to local programs; `backoff_base` shortens the
    /// CrashLoopBackOff delays.
    pub async fn start(images: &[(&str, PathBuf)], backoff_base: Option<Duration>) -> PodCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        let cluster = cluster_with_pod_runner(&kubeconfig, images, backoff_base).await;
        let client = cluster.client().expect("client");
        install_crd(&client).await;
        create_namespace(&client, "kbeast-system").await;
        PodCluster {
            cluster,
            kubeconfig,
            client,
            _dir: dir,
        }
    }

    /// Creates `project` (a KnowledgeProject as JSON) in `namespace` and waits until it is
    /// Ready for its generation through real probes and smoke checks.
    pub async fn create_ready_project(
        &self,
        namespace: &str,
        project: serde_json::Value,
    ) -> Api<KnowledgeProject> {
        create_namespace(&self.client, namespace).await;
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
                    .is_ok_and(|p| ready_for_generation(&p))
            },
        )
        .await;
        projects
    }

    /// `http://<address>` of port `port` of a Service, forwarded to this process.
    pub async fn service_url(&self, namespace: &str, service: &str, port: u16) -> String {
        let address = self
            .cluster
            .port_forward(namespace, &format!("svc/{service}"), port)
            .await
            .expect("port-forward to the Service");
        format!("http://{address}")
    }
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
