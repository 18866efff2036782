//! The pod runner: a local "kubelet" for the node `localcluster-node`. Each pod bound to the
//! node gets a network namespace on the cluster's bridge, its volumes on disk, and its
//! containers as local processes (the image names a local binary); probes, restarts with
//! back-off, readiness gates and graceful deletion behave as the kubelet's do. Status is
//! written through `pods/status` as manager `kubelet`, touching only the kubelet's fields.
//!
//! See `docs/testing.md` ("Pod runner") for the mapping of images and the fidelity gaps.

pub mod agent;
pub mod env;
pub mod launch;
pub mod network;
pub mod pod;
pub mod probe;
pub mod status;
pub mod volumes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Notify, watch};

use crate::api::Shared;
use crate::controllers::{NODE_NAME, is_terminating, objects, timestamp};
use crate::error::Error;
use network::{Bridge, Sandbox};
use pod::{Control, PodRuntime};

/// Settings of the pod runner.
#[derive(Debug, Clone)]
pub struct KubeletOptions {
    /// Image repository (without tag or digest, e.g. `ghcr.io/kbeast/kbeast`) → the local
    /// binary that is the image's entrypoint. See [`default_images`].
    pub images: BTreeMap<String, PathBuf>,
    /// First crash-loop back-off (the kubelet's is 10 s); doubles per restart.
    pub backoff_base: Duration,
    /// Longest crash-loop back-off (the kubelet's is 5 min).
    pub backoff_max: Duration,
    /// How often Secret/ConfigMap volumes are rewritten from the current objects.
    pub volume_sync: Duration,
    /// Pod directories (volumes, logs) and PVC data. Default: `<data_dir>/kubelet` with a
    /// data directory, else a temporary directory removed with the cluster.
    pub work_dir: Option<PathBuf>,
}

impl Default for KubeletOptions {
    fn default() -> Self {
        KubeletOptions {
            images: default_images(),
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            volume_sync: Duration::from_secs(1),
            work_dir: None,
        }
    }
}

/// `kbeast-query` of this build: `$KBEAST_QUERY_BIN`, else next to the running executable
/// (or its parent directory, for test executables in `target/<profile>/deps`).
pub fn find_query_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KBEAST_QUERY_BIN") {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [Some(dir), dir.parent().filter(|_| dir.ends_with("deps"))]
        .into_iter()
        .flatten()
        .map(|d| d.join("kbeast-query"))
        .find(|p| p.is_file())
}

/// The built-in image map: kbeast's images run `kbeast-query` of this build (when found),
/// `busybox` runs `/bin/sh`.
pub fn default_images() -> BTreeMap<String, PathBuf> {
    let mut images = BTreeMap::new();
    if let Some(query) = find_query_binary() {
        for repo in [
            "ghcr.io/kbeast/kbeast",
            "ghcr.io/kbeast/kbeast-query",
            "kbeast",
            "kbeast-query",
        ] {
            images.insert(repo.to_string(), query.clone());
        }
    }
    for repo in ["busybox", "docker.io/library/busybox"] {
        images.insert(repo.to_string(), PathBuf::from("/bin/sh"));
    }
    images
}

/// An image reference without its tag and digest: `ghcr.io/kbeast/kbeast:0.1.0` →
/// `ghcr.io/kbeast/kbeast` (a registry port such as `host:5000/x` is kept).
pub fn image_repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let name_start = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image[name_start..].rfind(':') {
        Some(i) => &image[..name_start + i],
        None => image,
    }
}

/// Finds a program the way `execvp` would, with the container's `PATH`.
pub fn resolve_in_path(program: &str, env: &[(String, String)]) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("/usr/bin:/bin");
    path.split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// The program and leading arguments for a container: the image's binary, or `command[0]`
/// resolved against it (same file name, or a file next to it), then the host's `PATH`.
pub fn resolve_program(
    images: &BTreeMap<String, PathBuf>,
    image: &str,
    command: Option<&[String]>,
    env: &[(String, String)],
) -> Result<(PathBuf, Vec<String>), String> {
    let repo = image_repository(image);
    let entrypoint = images.get(repo).ok_or_else(|| {
        format!(
            "image {image:?} is not mapped to a local binary: map repository {repo:?} (Options.kubelet.images or --image-map {repo}=PATH)"
        )
    })?;
    let Some((first, rest)) = command.and_then(|c| c.split_first()) else {
        return Ok((entrypoint.clone(), Vec::new()));
    };
    let name = Path::new(first)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(first);
    let program = if entrypoint.file_name().and_then(|n| n.to_str()) == Some(name) {
        Some(entrypoint.clone())
    } else {
        entrypoint
            .parent()
            .map(|d| d.join(name))
            .filter(|p| p.is_file() && !first.contains('/'))
            .or_else(|| resolve_in_path(first, env))
    };
    let program = program.ok_or_else(|| {
        format!(
            "exec: {first:?}: executable file not found (image {image:?}, binary {})",
            entrypoint.display()
        )
    })?;
    Ok((program, rest.to_vec()))
}

/// Where a pod's containers get the objects they refer to (Secrets, ConfigMaps, PVCs) and their
/// service-account tokens: the emulator's store, or a real API server's watch caches.
pub trait ObjectSource: Send + Sync {
    /// An object of a core/v1 resource (`secrets`, `configmaps`, `persistentvolumeclaims`).
    fn core_object(&self, plural: &str, namespace: &str, name: &str) -> Option<Value>;
    /// A token for the pod's service account, for `serviceAccountToken` projections.
    fn service_account_token(&self, pod: &Value) -> Option<Vec<u8>>;
    /// The `KUBERNETES_SERVICE_*` variables of every container: where the API server answers.
    fn api_server_env(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// The emulator's store as an [`ObjectSource`].
struct StoreObjects(Weak<Shared>);

impl ObjectSource for StoreObjects {
    fn core_object(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let shared = self.0.upgrade()?;
        let state = shared.lock();
        let rt = state.registry.find("", "v1", plural)?;
        state.store.get(&rt.key(), namespace, name).cloned()
    }

    fn service_account_token(&self, _pod: &Value) -> Option<Vec<u8>> {
        // The emulator accepts any bearer token.
        Some(b"localcluster".to_vec())
    }
}

/// A task aborted when its handle is dropped.
pub(crate) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the manager and the pod workers share.
pub struct KubeletInner {
    pub options: KubeletOptions,
    pub bridge: Bridge,
    pub work_dir: PathBuf,
    /// Process groups of running containers, killed synchronously on shutdown.
    pub process_groups: Mutex<HashSet<u32>>,
    /// Live pod network namespaces, removed on shutdown.
    pub sandboxes: Mutex<HashMap<String, Sandbox>>,
    /// Wakes the manager when a pod's runtime state changed.
    pub notify: Notify,
    pub shutting_down: AtomicBool,
}

impl KubeletInner {
    pub fn pvc_root(&self) -> PathBuf {
        self.work_dir.join("pvc")
    }
    pub fn pod_dir(&self, namespace: &str, name: &str, uid: &str) -> PathBuf {
        self.work_dir
            .join("pods")
            .join(format!("{namespace}_{name}_{uid}"))
    }
    /// Records a container's process group for shutdown; during shutdown kills it instead.
    pub fn register_process(&self, pgid: u32) {
        let mut groups = self
            .process_groups
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if self.shutting_down.load(Ordering::SeqCst) {
            launch::signal_group(pgid, libc::SIGKILL);
        } else {
            groups.insert(pgid);
        }
    }

    /// Records a pod's network namespace for shutdown; during shutdown deletes it instead
    /// (false).
    pub fn register_sandbox(&self, sandbox: &Sandbox) -> bool {
        let mut sandboxes = self.sandboxes.lock().unwrap_or_else(|e| e.into_inner());
        if self.shutting_down.load(Ordering::SeqCst) {
            sandbox.delete();
            return false;
        }
        sandboxes.insert(sandbox.netns.clone(), sandbox.clone());
        true
    }

    fn kill_everything(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        for pgid in self
            .process_groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
        {
            launch::signal_group(pgid, libc::SIGKILL);
        }
        for (_, sandbox) in self
            .sandboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
        {
            sandbox.delete();
        }
        self.bridge.delete();
    }
}

struct Worker {
    runtime: Arc<Mutex<PodRuntime>>,
    control: watch::Sender<Control>,
    _task: AbortOnDrop,
}

impl Worker {
    /// Starts running `pod` at `ip` in its own task.
    fn spawn(
        inner: &Arc<KubeletInner>,
        objects: Arc<dyn ObjectSource>,
        pod: Value,
        ip: std::net::Ipv4Addr,
        now: &str,
    ) -> Worker {
        let runtime = Arc::new(Mutex::new(PodRuntime::new(&pod, now)));
        let (control, control_rx) = watch::channel(Control::Run);
        let ctx = Arc::new(pod::PodCtx {
            objects,
            kubelet: inner.clone(),
            layout: volumes::Layout {
                pod_dir: inner.pod_dir(
                    pod["metadata"]["namespace"].as_str().unwrap_or(""),
                    pod["metadata"]["name"].as_str().unwrap_or(""),
                    &uid(&pod),
                ),
                pvc_root: inner.pvc_root(),
            },
            pod,
            runtime: runtime.clone(),
            ip,
            host_ip: inner.bridge.gateway().to_string(),
        });
        let task = tokio::spawn(pod::run_pod(ctx, control_rx));
        Worker {
            runtime,
            control,
            _task: AbortOnDrop(task),
        }
    }

    /// Asks the containers to stop within the pod's grace period (once).
    fn stop_for_deletion(&self, pod: &Value) {
        let grace = pod["metadata"]["deletionGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(0);
        self.control.send_if_modified(|c| {
            let stop = Control::Stop(Duration::from_secs(grace));
            let changed = *c != stop && matches!(c, Control::Run);
            if changed {
                *c = stop;
            }
            changed
        });
    }

    fn runtime(&self) -> PodRuntime {
        self.runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The running pod runner of a cluster.
pub struct Kubelet {
    inner: Arc<KubeletInner>,
    task: Option<AbortOnDrop>,
    owned_work_dir: bool,
}

impl Kubelet {
    /// Creates the cluster's bridge and starts reconciling pods bound to the node.
    pub fn start(
        shared: &Arc<Shared>,
        options: KubeletOptions,
        data_dir: Option<&Path>,
        port: u16,
        tick: Duration,
    ) -> Result<Kubelet, Error> {
        let (work_dir, owned_work_dir) = match (&options.work_dir, data_dir) {
            (Some(dir), _) => (dir.clone(), false),
            (None, Some(data)) => (data.join("kubelet"), false),
            (None, None) => (
                std::env::temp_dir().join(format!(
                    "kbeast-localcluster-{}-{port}-kubelet",
                    std::process::id()
                )),
                true,
            ),
        };
        std::fs::create_dir_all(&work_dir)?;
        let bridge = Bridge::create(port)?;
        shared.lock().graceful_pod_deletion = true;
        let _ = shared.pod_dirs.set(work_dir.join("pods"));
        let inner = Arc::new(KubeletInner {
            options,
            bridge,
            work_dir,
            process_groups: Mutex::default(),
            sandboxes: Mutex::default(),
            notify: Notify::new(),
            shutting_down: AtomicBool::new(false),
        });
        let task = tokio::spawn(run(Arc::downgrade(shared), inner.clone(), tick));
        Ok(Kubelet {
            inner,
            task: Some(AbortOnDrop(task)),
            owned_work_dir,
        })
    }

    pub fn work_dir(&self) -> &Path {
        &self.inner.work_dir
    }

    /// Kills every pod process and removes the pod network (synchronous, for drop).
    pub fn shutdown(&mut self) {
        self.task.take();
        self.inner.kill_everything();
        if self.owned_work_dir {
            let _ = std::fs::remove_dir_all(&self.inner.work_dir);
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn run(shared: Weak<Shared>, inner: Arc<KubeletInner>, tick: Duration) {
    let mut changes = match shared.upgrade() {
        Some(s) => s.lock().store.subscribe(),
        None => return,
    };
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut done: HashSet<String> = HashSet::new();
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        sync(&strong, &shared, &inner, &mut workers, &mut done);
        drop(strong);
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = inner.notify.notified() => {}
            r = changes.recv() => {
                if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    return;
                }
                while changes.try_recv().is_ok() {}
            }
        }
    }
}

fn uid(pod: &Value) -> String {
    pod["metadata"]["uid"].as_str().unwrap_or("").to_string()
}

/// The kubelet's final delete: the pod's processes are gone, remove the object (unless
/// finalizers still hold it).
fn finish_deletion(state: &mut crate::api::State, pod: &Value, now: &str) {
    let Some(rt) = state.registry.find("", "v1", "pods") else {
        return;
    };
    if pod["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty())
    {
        return;
    }
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    state.store.remove(&rt.key(), ns, name);
    crate::gc::collect(state, now);
}

fn sync(
    shared: &Arc<Shared>,
    weak: &Weak<Shared>,
    inner: &Arc<KubeletInner>,
    workers: &mut HashMap<String, Worker>,
    done: &mut HashSet<String>,
) {
    let mut state = shared.lock();
    let Some(pod_rt) = state.registry.find("", "v1", "pods") else {
        return;
    };
    let now = timestamp(jiff::Timestamp::now());
    let host_ip = inner.bridge.gateway().to_string();
    let pods: Vec<Value> = objects(&state, &pod_rt, None)
        .into_iter()
        .filter(|p| p["spec"]["nodeName"] == NODE_NAME)
        .map(std::sync::Arc::unwrap_or_clone)
        .collect();
    let mut present = HashSet::new();
    for pod in pods {
        let id = uid(&pod);
        present.insert(id.clone());
        if let Some(worker) = workers.get(&id) {
            if is_terminating(&pod) {
                worker.stop_for_deletion(&pod);
            }
            let runtime = worker.runtime();
            let updated = status::compose(&pod, &runtime, &now, &host_ip);
            let stored = crate::system::write_as(
                &mut state,
                &pod_rt,
                Some(&pod),
                updated,
                "kubelet",
                Some("status"),
                &now,
            );
            if runtime.finished {
                if is_terminating(&stored) {
                    finish_deletion(&mut state, &stored, &now);
                }
                workers.remove(&id);
                done.insert(id);
            }
            continue;
        }
        let phase = pod["status"]["phase"].as_str().unwrap_or("");
        if done.contains(&id) || matches!(phase, "Succeeded" | "Failed") {
            done.insert(id);
            if is_terminating(&pod) {
                finish_deletion(&mut state, &pod, &now);
            }
            continue;
        }
        if is_terminating(&pod) {
            // Never started here: nothing to stop.
            finish_deletion(&mut state, &pod, &now);
            continue;
        }
        if inner.shutting_down.load(Ordering::SeqCst) {
            continue;
        }
        let Some(ip) = inner.bridge.allocate() else {
            tracing::warn!(pod = %pod["metadata"]["name"], "no free pod IP");
            continue;
        };
        let objects = Arc::new(StoreObjects(weak.clone()));
        workers.insert(id, Worker::spawn(inner, objects, pod, ip, &now));
    }
    // Pods removed from the API (forced deletes, namespace cleanup): stop them at once.
    workers.retain(|id, worker| {
        if present.contains(id) {
            return true;
        }
        worker.control.send_replace(Control::Stop(Duration::ZERO));
        !worker.runtime().finished
    });
    done.retain(|id| present.contains(id));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_repository_drops_tag_and_digest() {
        for (image, want) in [
            ("ghcr.io/kbeast/kbeast:0.1.0", "ghcr.io/kbeast/kbeast"),
            ("ghcr.io/kbeast/kbeast", "ghcr.io/kbeast/kbeast"),
            ("busybox", "busybox"),
            ("busybox:1.36", "busybox"),
            ("localhost:5000/app:v2", "localhost:5000/app"),
            ("localhost:5000/app", "localhost:5000/app"),
            ("app@sha256:abcd", "app"),
            ("reg/app:1@sha256:abcd", "reg/app"),
        ] {
            assert_eq!(image_repository(image), want, "{image}");
        }
    }

    #[test]
    fn command_resolves_against_the_image_binary() {
        let images = BTreeMap::from([("img".to_string(), PathBuf::from("/bin/sh"))]);
        let env = vec![("PATH".to_string(), "/usr/bin:/bin".to_string())];
        let (program, args) = resolve_program(&images, "img:1", None, &env).unwrap();
        assert_eq!((program, args), (PathBuf::from("/bin/sh"), vec![]));
        let cmd = vec!["sh".to_string(), "-c".to_string()];
        let (program, args) = resolve_program(&images, "img", Some(&cmd), &env).unwrap();
        assert_eq!(
            (program, args),
            (PathBuf::from("/bin/sh"), vec!["-c".to_string()])
        );
        let cmd = vec!["/usr/local/bin/sh".to_string()];
        let (program, _) = resolve_program(&images, "img", Some(&cmd), &env).unwrap();
        assert_eq!(
            program,
            PathBuf::from("/bin/sh"),
            "same file name as the image binary"
        );
        let err = resolve_program(&images, "other:2", None, &env).unwrap_err();
        assert!(err.contains("--image-map other=PATH"), "{err}");
    }
}
