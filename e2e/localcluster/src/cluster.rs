//! The library entry point: start an emulated cluster on a free loopback port, get a
//! `kube::Client` for it, inspect the request log, inject faults, stop it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{self, Shared, State};
use crate::controllers::{self, ControllerSet};
use crate::error::Error;
use crate::faults::Fault;
use crate::kubelet::{AbortOnDrop, Kubelet, KubeletOptions};
use crate::registry::Registry;
use crate::request_log::{RequestFilter, RequestRecord};
use crate::store::{DEFAULT_HISTORY_LIMIT, Store};

#[derive(Debug, Clone)]
pub struct Options {
    /// Port to bind on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Where to write the kubeconfig; `None` writes one into a temporary directory that is
    /// removed when the cluster is dropped.
    pub kubeconfig_path: Option<PathBuf>,
    /// Interval of BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
    /// Changes retained for watch resumption before clients get 410 Gone.
    pub history_limit: usize,
    /// Which emulated controllers run (all by default).
    pub controllers: ControllerSet,
    /// How often the controllers resync (a full pass; spaced further on a large cluster).
    /// Time-based state (deadlines, minReadySeconds) is rechecked per object when due.
    pub controller_tick: Duration,
    /// Load the state saved here on start and save it on stop (see `persistence`).
    pub data_dir: Option<PathBuf>,
    /// The pod runner's settings (used when `controllers.kubelet` is on).
    pub kubelet: KubeletOptions,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 0,
            kubeconfig_path: None,
            bookmark_interval: Duration::from_secs(1),
            history_limit: DEFAULT_HISTORY_LIMIT,
            controllers: ControllerSet::all(),
            controller_tick: Duration::from_millis(200),
            data_dir: None,
            kubelet: KubeletOptions::default(),
        }
    }
}

/// A running emulated cluster. Dropping it stops the server.
pub struct LocalCluster {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    controller_task: Option<JoinHandle<()>>,
    kubeconfig_path: PathBuf,
    /// The temporary directory holding the kubeconfig, when the emulator chose it.
    owned_kubeconfig_dir: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    kubelet: Option<Kubelet>,
    /// Port-forward listeners, stopped with the cluster.
    forwards: Mutex<Vec<AbortOnDrop>>,
}

/// The cluster's initial state: the system namespaces.
fn bootstrap(history_limit: usize) -> State {
    let mut state = State {
        store: Store::new(history_limit),
        registry: Registry::builtin(),
        graceful_pod_deletion: false,
    };
    let now = crate::write::now();
    let rt = state
        .registry
        .find("", "v1", "namespaces")
        .expect("namespaces are built in");
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let rv = state.store.next_resource_version();
        let ns = serde_json::json!({"kind": "Namespace", "apiVersion": "v1",
            "metadata": {"name": name, "uid": uuid::Uuid::new_v4().to_string(), "resourceVersion": rv.to_string(),
                "creationTimestamp": now, "labels": {"kubernetes.io/metadata.name": name}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        state
            .store
            .put(&rt.key(), ns, crate::store::ChangeType::Added);
        crate::gc::populate_namespace(&mut state, name);
    }
    state
}

pub fn kubeconfig_yaml(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: localcluster\n  cluster:\n    server: {server}\ncontexts:\n- name: localcluster\n  context:\n    cluster: localcluster\n    user: localcluster\n    namespace: default\ncurrent-context: localcluster\nusers:\n- name: localcluster\n  user:\n    token: localcluster\n"
    )
}

impl LocalCluster {
    pub async fn start(options: Options) -> Result<LocalCluster, Error> {
        let restored = match &options.data_dir {
            Some(dir) => crate::persistence::load(dir, options.history_limit)?,
            None => None,
        };
        let state = restored.unwrap_or_else(|| bootstrap(options.history_limit));
        let shared = Arc::new(Shared::new(state, options.bookmark_interval));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port)).await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .fallback(api::handle)
            .with_state(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        let controller_task = options.controllers.any().then(|| {
            tokio::spawn(controllers::run(
                Arc::downgrade(&shared),
                options.controllers,
                options.controller_tick,
            ))
        });
        let kubelet = match options.controllers.kubelet {
            true => Some(Kubelet::start(
                &shared,
                options.kubelet.clone(),
                options.data_dir.as_deref(),
                addr.port(),
                options.controller_tick,
            )?),
            false => None,
        };
        let (kubeconfig_path, owned_kubeconfig_dir) = match options.kubeconfig_path {
            Some(path) => (path, None),
            None => {
                let dir = std::env::temp_dir().join(format!(
                    "kbeast-localcluster-{}-{}",
                    std::process::id(),
                    addr.port()
                ));
                std::fs::create_dir_all(&dir)?;
                (dir.join("kubeconfig"), Some(dir))
            }
        };
        write_atomically(
            &kubeconfig_path,
            &kubeconfig_yaml(&format!("http://{addr}")),
        )?;
        Ok(LocalCluster {
            addr,
            shared,
            shutdown: Some(tx),
            server: Some(server),
            controller_task,
            kubeconfig_path,
            owned_kubeconfig_dir,
            data_dir: options.data_dir,
            kubelet,
            forwards: Mutex::default(),
        })
    }

    /// Like `kubectl port-forward`: a listener on 127.0.0.1 (a free port) whose connections
    /// go to `pod/<name>` at `port`, or to a ready endpoint of `svc/<name>` for the Service
    /// port `port` (round-robin, target ports resolved through the Endpoints).
    pub async fn port_forward(
        &self,
        namespace: &str,
        target: &str,
        port: u16,
    ) -> Result<SocketAddr, Error> {
        self.port_forward_on(namespace, target, port, 0).await
    }

    /// [`LocalCluster::port_forward`] on a chosen local port (0 = any free one).
    pub async fn port_forward_on(
        &self,
        namespace: &str,
        target: &str,
        port: u16,
        local_port: u16,
    ) -> Result<SocketAddr, Error> {
        let target = crate::portforward::Target::parse(namespace, target, port)?;
        let (addr, task) = crate::portforward::listen(
            Arc::downgrade(&self.shared),
            target,
            SocketAddr::from(([127, 0, 0, 1], local_port)),
        )
        .await?;
        self.forwards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(AbortOnDrop(task));
        Ok(addr)
    }

    /// The pod runner's directory (pod volumes and logs under `pods/`, PVC data under
    /// `pvc/`), when it runs.
    pub fn kubelet_dir(&self) -> Option<&Path> {
        self.kubelet.as_ref().map(|k| k.work_dir())
    }

    /// What a container of a pod run by the pod runner wrote to stdout and stderr (all its
    /// restarts, appended).
    pub fn pod_log(&self, namespace: &str, pod: &str, container: &str) -> Result<String, Error> {
        let uid = {
            let state = self.shared.lock();
            state
                .registry
                .find("", "v1", "pods")
                .and_then(|rt| state.store.get(&rt.key(), namespace, pod).cloned())
                .and_then(|p| p["metadata"]["uid"].as_str().map(String::from))
        };
        let (Some(kubelet), Some(uid)) = (&self.kubelet, uid) else {
            return Ok(String::new());
        };
        let path = kubelet
            .work_dir()
            .join("pods")
            .join(format!("{namespace}_{pod}_{uid}"))
            .join("logs")
            .join(format!("{container}.log"));
        match std::fs::read(&path) {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e.into()),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// The kubeconfig pointing at this cluster (for processes such as the operator binary).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// A client talking to this cluster, with the given default namespace.
    pub fn client_in(&self, namespace: &str) -> Result<kube::Client, Error> {
        let url: http::Uri = self
            .url()
            .parse()
            .map_err(|e: http::uri::InvalidUri| Error::Kubeconfig(e.to_string()))?;
        let mut config = kube::Config::new(url);
        config.default_namespace = namespace.to_string();
        Ok(kube::Client::try_from(config)?)
    }
    pub fn client(&self) -> Result<kube::Client, Error> {
        self.client_in("default")
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.request_log.records()
    }
    pub fn count_requests(&self, filter: &RequestFilter) -> usize {
        self.shared.request_log.count(filter)
    }
    pub fn clear_requests(&self) {
        self.shared.request_log.clear();
    }
    /// Milliseconds since start, the clock of [`RequestRecord::at_ms`].
    pub fn elapsed_ms(&self) -> u128 {
        self.shared.request_log.elapsed_ms()
    }

    pub fn inject_fault(&self, fault: Fault) {
        self.shared.faults.add(fault);
    }
    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// Drops all watch history, like an etcd compaction: older watches get 410 Gone.
    pub fn compact(&self) {
        self.shared.lock().store.compact();
    }

    /// Stops serving; with a data directory, saves the state there first.
    pub async fn stop(mut self) -> Result<(), Error> {
        self.shutdown_now().await;
        self.save()
    }

    /// Saves the state to the data directory now (no-op without one).
    pub fn save(&self) -> Result<(), Error> {
        match &self.data_dir {
            Some(dir) => Ok(crate::persistence::save(&self.shared.lock(), dir)?),
            None => Ok(()),
        }
    }

    /// Acts as the kubelet for matching pods: phase Running, a pod IP, and Ready /
    /// ContainersReady conditions (`ready = false` flips them back). Returns how many pods
    /// were changed. Pods never run processes in the emulator.
    pub fn set_pods_ready(&self, namespace: &str, label_selector: &str, ready: bool) -> usize {
        let selector = crate::selectors::LabelSelector::parse(label_selector).unwrap_or_default();
        let (rt, pods) = {
            let state = self.shared.lock();
            let Some(rt) = state.registry.find("", "v1", "pods") else {
                return 0;
            };
            let pods: Vec<Arc<serde_json::Value>> = state
                .store
                .list(&rt.key(), Some(namespace))
                .into_iter()
                .map(Arc::clone)
                .collect();
            (rt, pods)
        };
        let now = crate::write::now();
        let status_text = if ready { "True" } else { "False" };
        // The pod as the kubelet would write it, or `None` when its status is settled.
        let with_status = |i: usize, pod: &serde_json::Value| {
            if pod_status_is(pod, status_text) {
                return None;
            }
            let mut status = pod["status"].clone();
            status["phase"] = serde_json::json!("Running");
            if status["podIP"].is_null() {
                let ip = format!(
                    "10.244.0.{}",
                    10 + (crate::store::parse_rv(pod) as usize + i) % 240
                );
                status["podIP"] = serde_json::json!(ip);
                status["podIPs"] = serde_json::json!([{"ip": ip}]);
                status["hostIP"] = serde_json::json!("127.0.0.1");
                status["startTime"] = serde_json::json!(now);
            }
            let mut conditions = status["conditions"].as_array().cloned().unwrap_or_default();
            for type_ in POD_CONDITIONS {
                controllers::set_condition(
                    &mut conditions,
                    serde_json::json!({"type": type_, "status": pod_condition_status(type_, status_text)}),
                    &now,
                    false,
                );
            }
            status["conditions"] = serde_json::json!(conditions);
            (status != pod["status"]).then(|| {
                let mut updated = controllers::working_copy(pod);
                updated["status"] = status;
                updated
            })
        };
        // Tests call this every few hundred milliseconds over every pod of a namespace: the
        // pods are looked at outside the store's lock, which is taken only to write the
        // changed ones (computed again for a pod that changed meanwhile).
        let updates: Vec<(usize, Arc<serde_json::Value>, serde_json::Value)> = pods
            .into_iter()
            .filter(|p| selector.matches(p))
            .enumerate()
            .filter_map(|(i, pod)| with_status(i, &pod).map(|updated| (i, pod, updated)))
            .collect();
        let key = rt.key();
        let mut state = self.shared.lock();
        let mut changed = 0;
        for (i, seen, updated) in updates {
            let Some(stored) = state
                .store
                .get_shared(&key, namespace, controllers::name(&seen))
                .cloned()
            else {
                continue;
            };
            let updated = match Arc::ptr_eq(&stored, &seen) {
                true => Some(updated),
                false if selector.matches(&stored) => with_status(i, &stored),
                false => None,
            };
            let Some(updated) = updated else {
                continue;
            };
            let written = crate::system::write_as(
                &mut state,
                &rt,
                Some(&stored),
                updated,
                "kubelet",
                Some("status"),
                &now,
            );
            if written["metadata"]["resourceVersion"] != stored["metadata"]["resourceVersion"] {
                changed += 1;
            }
        }
        changed
    }

    /// Acts as the kubelet for finished containers: matching pods get phase Succeeded
    /// (or Failed) and are no longer ready. Returns how many pods changed.
    pub fn finish_pods(&self, namespace: &str, label_selector: &str, succeeded: bool) -> usize {
        let selector = crate::selectors::LabelSelector::parse(label_selector).unwrap_or_default();
        let mut state = self.shared.lock();
        let Some(rt) = state.registry.find("", "v1", "pods") else {
            return 0;
        };
        let pods: Vec<serde_json::Value> = state
            .store
            .list(&rt.key(), Some(namespace))
            .into_iter()
            .filter(|p| selector.matches(p))
            .map(|p| (**p).clone())
            .collect();
        let now = crate::write::now();
        let phase = if succeeded { "Succeeded" } else { "Failed" };
        let mut changed = 0;
        for pod in &pods {
            let mut updated = pod.clone();
            updated["status"]["phase"] = serde_json::json!(phase);
            let mut conditions = updated["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for type_ in ["Ready", "ContainersReady"] {
                controllers::set_condition(
                    &mut conditions,
                    serde_json::json!({"type": type_, "status": "False", "reason": "PodCompleted"}),
                    &now,
                    false,
                );
            }
            updated["status"]["conditions"] = serde_json::json!(conditions);
            let stored = crate::system::write_as(
                &mut state,
                &rt,
                Some(pod),
                updated,
                "kubelet",
                Some("status"),
                &now,
            );
            if &stored != pod {
                changed += 1;
            }
        }
        changed
    }

    /// Kills every pod process, removes the pod network and the port-forwards.
    fn stop_pods(&mut self) {
        self.forwards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        if let Some(mut kubelet) = self.kubelet.take() {
            kubelet.shutdown();
        }
    }

    async fn shutdown_now(&mut self) {
        self.stop_pods();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.controller_task.take() {
            task.abort();
        }
        if let Some(server) = self.server.take() {
            // Open watches keep graceful shutdown waiting; do not hang on them.
            let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop_pods();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
        if let Some(task) = self.controller_task.take() {
            task.abort();
        }
        if let Some(dir) = self.owned_kubeconfig_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(tmp, path)
}

/// Whether `set_pods_ready` would leave this pod as it is: Running with an IP, and each of its
/// conditions already what it would set (same status, no other fields). Checked before
/// cloning anything.
fn pod_status_is(pod: &serde_json::Value, ready_status: &str) -> bool {
    let status = &pod["status"];
    status["phase"] == "Running"
        && status["podIP"].is_string()
        && POD_CONDITIONS.into_iter().all(|type_| {
            controllers::condition(pod, type_).is_some_and(|c| {
                c["status"] == pod_condition_status(type_, ready_status)
                    && c["lastTransitionTime"].is_string()
                    && c.as_object().is_some_and(|m| m.len() == 3)
            })
        })
}

/// The pod conditions `set_pods_ready` sets.
const POD_CONDITIONS: [&str; 4] = ["Initialized", "Ready", "ContainersReady", "PodScheduled"];

/// The status `set_pods_ready` gives a pod condition: Ready and ContainersReady follow
/// `ready_status`, the others are True.
fn pod_condition_status<'a>(type_: &str, ready_status: &'a str) -> &'a str {
    match type_ {
        "Ready" | "ContainersReady" => ready_status,
        _ => "True",
    }
}
