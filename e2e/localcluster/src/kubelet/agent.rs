//! The pod runner as a node agent of a real API server, for the real control plane the
//! end-to-end tests run on: it registers a Node, renews the node's Lease, runs the pods the real
//! scheduler binds to it (the same sandbox, volume and container code as the emulator's pod
//! runner) and reports their status through `pods/status`, as a kubelet does. It also acts as a
//! local-path provisioner: claims of its StorageClass get a hostPath PersistentVolume, which the
//! real PV controller binds.
//!
//! It stands in for kubelet + containerd + CNI, which cannot run here (no container images);
//! `docs/testing.md` lists where it differs from a kubelet.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::network::Bridge;
use super::{AbortOnDrop, KubeletInner, KubeletOptions, ObjectSource, Worker, status, uid};
use crate::controllers::{is_terminating, timestamp};

/// The field manager of the agent's status writes, as the kubelet's.
const MANAGER: &str = "kubelet";
/// The provisioner name of the agent's StorageClass.
pub const PROVISIONER: &str = "kbeast.io/local-path";

/// Settings of a node agent.
#[derive(Debug, Clone)]
pub struct NodeAgentOptions {
    pub node_name: String,
    /// Names the pod bridge (`kblc<id>`); unique among agents running at once, e.g. the API
    /// server's port.
    pub network_id: u16,
    /// The StorageClass created (as the default class) and provisioned by the agent.
    pub storage_class: String,
    pub kubelet: KubeletOptions,
    /// How often pods are re-examined without a change (probes and restarts notify at once).
    pub tick: Duration,
    /// The API server's port, when it listens on every address: pods then reach it at the
    /// bridge address (`KUBERNETES_SERVICE_HOST`), where kube-proxy would send them.
    pub api_server_port: Option<u16>,
    /// A hollow node (as kubemark's): pods are not started but reported running and ready at
    /// this address, where one shared process answers for all of them. For scale tests, where
    /// hundreds of pod processes would not fit the machine.
    pub hollow_pod_ip: Option<std::net::Ipv4Addr>,
}

impl NodeAgentOptions {
    pub fn new(node_name: &str, network_id: u16) -> Self {
        NodeAgentOptions {
            node_name: node_name.to_string(),
            network_id,
            storage_class: "local-path".to_string(),
            kubelet: KubeletOptions::default(),
            tick: Duration::from_millis(500),
            api_server_port: None,
            hollow_pod_ip: None,
        }
    }
}

/// The kubelet's fields of a pod's status, sent as a strategic merge patch so that conditions
/// of other writers (readiness gates) are kept.
const STATUS_FIELDS: [&str; 8] = [
    "phase",
    "hostIP",
    "hostIPs",
    "podIP",
    "podIPs",
    "startTime",
    "containerStatuses",
    "initContainerStatuses",
];
const KUBELET_CONDITIONS: [&str; 4] = [
    "PodReadyToStartContainers",
    "Initialized",
    "Ready",
    "ContainersReady",
];

/// Watch caches of what pods refer to, plus the tokens requested for running pods.
struct ApiObjects {
    secrets: Store<Secret>,
    config_maps: Store<ConfigMap>,
    claims: Store<PersistentVolumeClaim>,
    tokens: Mutex<HashMap<String, Vec<u8>>>,
    api_server_env: Vec<(String, String)>,
}

fn to_value<K: Serialize>(object: Option<Arc<K>>) -> Option<Value> {
    object.and_then(|o| serde_json::to_value(o.as_ref()).ok())
}

impl ObjectSource for ApiObjects {
    fn core_object(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        match plural {
            "secrets" => to_value(self.secrets.get(&ObjectRef::new(name).within(namespace))),
            "configmaps" => to_value(
                self.config_maps
                    .get(&ObjectRef::new(name).within(namespace)),
            ),
            "persistentvolumeclaims" => {
                to_value(self.claims.get(&ObjectRef::new(name).within(namespace)))
            }
            _ => None,
        }
    }

    fn service_account_token(&self, pod: &Value) -> Option<Vec<u8>> {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&uid(pod))
            .cloned()
    }

    fn api_server_env(&self) -> Vec<(String, String)> {
        self.api_server_env.clone()
    }
}

/// A running node agent; dropping it kills every pod process and removes the pod network.
pub struct NodeAgent {
    inner: Arc<KubeletInner>,
    tasks: Vec<AbortOnDrop>,
    owned_work_dir: bool,
}

impl NodeAgent {
    /// Registers the node, starts its heartbeat, the provisioner and the pod manager.
    pub async fn start(client: Client, options: NodeAgentOptions) -> anyhow::Result<NodeAgent> {
        let (work_dir, owned_work_dir) = match &options.kubelet.work_dir {
            Some(dir) => (dir.clone(), false),
            None => (
                std::env::temp_dir().join(format!(
                    "kbeast-node-agent-{}-{}",
                    std::process::id(),
                    options.network_id
                )),
                true,
            ),
        };
        std::fs::create_dir_all(&work_dir)?;
        let bridge = Bridge::create(options.network_id)?;
        let inner = Arc::new(KubeletInner {
            options: options.kubelet.clone(),
            bridge,
            work_dir,
            process_groups: Mutex::default(),
            sandboxes: Mutex::default(),
            notify: Notify::new(),
            shutting_down: AtomicBool::new(false),
        });
        let mut agent = NodeAgent {
            inner: inner.clone(),
            tasks: Vec::new(),
            owned_work_dir,
        };
        register_node(
            &client,
            &options.node_name,
            &inner.bridge.gateway().to_string(),
        )
        .await?;
        ensure_storage_class(&client, &options.storage_class).await?;
        agent
            .tasks
            .push(spawn(heartbeat(client.clone(), options.node_name.clone())));

        let changed = Arc::new(Notify::new());
        let (secrets, task) = reflect::<Secret>(Api::all(client.clone()), None, &changed, false);
        agent.tasks.push(task);
        let (config_maps, task) =
            reflect::<ConfigMap>(Api::all(client.clone()), None, &changed, false);
        agent.tasks.push(task);
        let (claims, task) =
            reflect::<PersistentVolumeClaim>(Api::all(client.clone()), None, &changed, true);
        agent.tasks.push(task);
        let (volumes, task) =
            reflect::<PersistentVolume>(Api::all(client.clone()), None, &changed, true);
        agent.tasks.push(task);
        let selector = format!("spec.nodeName={}", options.node_name);
        let (pods, task) =
            reflect::<Pod>(Api::all(client.clone()), Some(&selector), &changed, true);
        agent.tasks.push(task);
        for ready in [
            secrets.wait_until_ready().await,
            config_maps.wait_until_ready().await,
            claims.wait_until_ready().await,
            volumes.wait_until_ready().await,
            pods.wait_until_ready().await,
        ] {
            ready.map_err(|e| anyhow::anyhow!("watch cache: {e}"))?;
        }
        let gateway = inner.bridge.gateway().to_string();
        let api_server_env = options
            .api_server_port
            .map(|port| {
                vec![
                    ("KUBERNETES_SERVICE_HOST".to_string(), gateway.clone()),
                    ("KUBERNETES_SERVICE_PORT".to_string(), port.to_string()),
                    (
                        "KUBERNETES_SERVICE_PORT_HTTPS".to_string(),
                        port.to_string(),
                    ),
                    (
                        "KUBERNETES_PORT".to_string(),
                        format!("tcp://{gateway}:{port}"),
                    ),
                ]
            })
            .unwrap_or_default();
        let objects = Arc::new(ApiObjects {
            secrets,
            config_maps,
            claims: claims.clone(),
            tokens: Mutex::default(),
            api_server_env,
        });
        agent.tasks.push(spawn(provision(
            client.clone(),
            claims,
            volumes,
            options.storage_class.clone(),
            inner.pvc_root(),
            changed.clone(),
        )));
        agent.tasks.push(spawn(manage_pods(
            client,
            pods,
            objects,
            inner,
            changed,
            options.tick,
            options.hollow_pod_ip,
        )));
        Ok(agent)
    }

    /// The node's address as pods see it (their gateway): host services listening on every
    /// address are reachable there.
    pub fn node_address(&self) -> std::net::Ipv4Addr {
        self.inner.bridge.gateway()
    }

    /// Where pod directories (`pods/<ns>_<name>_<uid>/logs/<container>.log`) and volume data live.
    pub fn work_dir(&self) -> &std::path::Path {
        &self.inner.work_dir
    }

    /// The log of a container of a pod (all restarts appended), as `kubectl logs` would show.
    pub fn pod_log(&self, namespace: &str, pod: &str, container: &str) -> Option<String> {
        let prefix = format!("{namespace}_{pod}_");
        std::fs::read_dir(self.inner.work_dir.join("pods"))
            .ok()?
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .and_then(|e| {
                std::fs::read_to_string(e.path().join("logs").join(format!("{container}.log"))).ok()
            })
    }

    /// Kills every pod process and removes the pod network (synchronous, for drop).
    pub fn shutdown(&mut self) {
        self.tasks.clear();
        self.inner.kill_everything();
        if self.owned_work_dir {
            let _ = std::fs::remove_dir_all(&self.inner.work_dir);
        }
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(task))
}

/// A watch cache of `api`, optionally filtered by a field selector; `notify` is woken on every
/// change when `wake` is set.
fn reflect<K>(
    api: Api<K>,
    field_selector: Option<&str>,
    notify: &Arc<Notify>,
    wake: bool,
) -> (Store<K>, AbortOnDrop)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let mut config = watcher::Config::default();
    if let Some(selector) = field_selector {
        config = config.fields(selector);
    }
    let notify = notify.clone();
    let stream = watcher(api, config)
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let task = spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(error) = event {
                tracing::warn!(%error, "node agent watch");
            } else if wake {
                notify.notify_one();
            }
        }
    });
    (reader, task)
}

async fn register_node(client: &Client, name: &str, address: &str) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        }},
    }))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => return Err(anyhow::anyhow!("register node {name}: {error}")),
    }
    let now = timestamp(jiff::Timestamp::now());
    let capacity =
        json!({"cpu": "64", "memory": "256Gi", "pods": "5000", "ephemeral-storage": "500Gi"});
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let status = json!({"status": {
        "capacity": capacity,
        "allocatable": capacity,
        "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}],
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kbeast node agent is posting ready status"),
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
            "osImage": "kbeast node agent", "containerRuntimeVersion": "kbeast-process://0",
            "kubeletVersion": "v1.36.3", "kubeProxyVersion": "", "operatingSystem": "linux",
            "architecture": std::env::consts::ARCH,
        },
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(|e| anyhow::anyhow!("node {name} status: {e}"))?;
    Ok(())
}

/// Renews the node's Lease every 10 s, which keeps the node controller from marking it
/// unreachable (and evicting its pods).
async fn heartbeat(client: Client, node: String) {
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    loop {
        let now = MicroTime(jiff::Timestamp::now());
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": node},
            "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": now},
        });
        if let Err(error) = leases
            .patch(
                &node,
                &PatchParams::apply("kbeast-node-agent").force(),
                &Patch::Apply(&lease),
            )
            .await
        {
            tracing::warn!(%error, "node lease renewal");
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

async fn ensure_storage_class(client: &Client, name: &str) -> anyhow::Result<()> {
    let classes: Api<StorageClass> = Api::all(client.clone());
    let class: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }))?;
    match classes.create(&PostParams::default(), &class).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(anyhow::anyhow!("StorageClass {name}: {error}")),
    }
}

/// The directory holding a claim's data (the same layout as the emulator's pod runner).
fn claim_dir(pvc_root: &std::path::Path, claim: &PersistentVolumeClaim) -> PathBuf {
    let meta = &claim.metadata;
    pvc_root
        .join(meta.namespace.as_deref().unwrap_or(""))
        .join(format!(
            "{}-{}",
            meta.name.as_deref().unwrap_or(""),
            meta.uid.as_deref().unwrap_or("")
        ))
}

/// Gives each pending claim of `class` a hostPath PersistentVolume bound to it by claimRef, and
/// deletes released volumes of the agent with their data (reclaim policy Delete).
async fn provision(
    client: Client,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    class: String,
    pvc_root: PathBuf,
    changed: Arc<Notify>,
) {
    let api: Api<PersistentVolume> = Api::all(client);
    let mut created: HashSet<String> = HashSet::new();
    loop {
        for claim in claims.state() {
            let spec = claim.spec.clone().unwrap_or_default();
            let pending = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending");
            if !pending
                || spec.volume_name.is_some()
                || spec.storage_class_name.as_deref() != Some(class.as_str())
                || claim.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            let name = format!("pvc-{}", claim.metadata.uid.as_deref().unwrap_or(""));
            if created.contains(&name) {
                continue;
            }
            let dir = claim_dir(&pvc_root, &claim);
            let storage = spec
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .map(|q| q.0.clone())
                .unwrap_or_else(|| "1Gi".to_string());
            let volume = json!({
                "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
                "spec": {
                    "capacity": {"storage": storage},
                    "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
                    "persistentVolumeReclaimPolicy": "Delete",
                    "storageClassName": class,
                    "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
                    "hostPath": {"path": dir, "type": "DirectoryOrCreate"},
                    "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                        "namespace": claim.metadata.namespace, "name": claim.metadata.name,
                        "uid": claim.metadata.uid},
                },
            });
            let result = match serde_json::from_value::<PersistentVolume>(volume) {
                Ok(volume) => api
                    .create(&PostParams::default(), &volume)
                    .await
                    .map(|_| ()),
                Err(error) => {
                    tracing::warn!(%error, "persistent volume");
                    continue;
                }
            };
            match result {
                Ok(()) => {
                    let _ = std::fs::create_dir_all(&dir);
                    created.insert(name);
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    created.insert(name);
                }
                Err(error) => tracing::warn!(%error, volume = %name, "provisioning"),
            }
        }
        for volume in volumes.state() {
            let ours = volume
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("pv.kubernetes.io/provisioned-by"))
                .is_some_and(|p| p == PROVISIONER);
            let released =
                volume.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
            if !ours || !released || volume.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let name = volume.metadata.name.clone().unwrap_or_default();
            if let Some(path) = volume
                .spec
                .as_ref()
                .and_then(|s| s.host_path.as_ref())
                .map(|h| PathBuf::from(&h.path))
                .filter(|p| p.starts_with(&pvc_root))
            {
                let _ = std::fs::remove_dir_all(path);
            }
            if let Err(error) = api.delete(&name, &DeleteParams::default()).await {
                tracing::warn!(%error, volume = %name, "deleting a released volume");
            }
        }
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Whether any of the pod's projected volumes asks for a service-account token.
fn wants_token(pod: &Value) -> bool {
    pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|v| {
            v["projected"]["sources"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["serviceAccountToken"].is_object())
        })
}

/// A bound token for the pod's service account (TokenRequest), as the kubelet requests one.
async fn request_token(client: &Client, pod: &Value) -> anyhow::Result<Vec<u8>> {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let account = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default");
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(3607),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod["metadata"]["name"].as_str().map(str::to_string),
                uid: pod["metadata"]["uid"].as_str().map(str::to_string),
            }),
        },
        ..TokenRequest::default()
    };
    let issued = accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await?;
    Ok(issued
        .status
        .map(|s| s.token.into_bytes())
        .unwrap_or_default())
}

/// `value` without null members, recursively: how the API server stores it.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// The kubelet's part of a composed pod's status: the patch body.
fn kubelet_status(composed: &Value) -> Value {
    let status = &composed["status"];
    let mut out = serde_json::Map::new();
    for field in STATUS_FIELDS {
        if !status[field].is_null() {
            out.insert(field.to_string(), without_nulls(&status[field]));
        }
    }
    let conditions: Vec<Value> = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| KUBELET_CONDITIONS.contains(&c["type"].as_str().unwrap_or("")))
        .map(without_nulls)
        .collect();
    out.insert("conditions".into(), Value::Array(conditions));
    Value::Object(out)
}

async fn delete_now(pods: &Api<Pod>, pod: &Value) {
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid(pod)),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match pods.delete(name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
        Err(error) => tracing::warn!(%error, pod = name, "final pod delete"),
    }
}

/// Writes the kubelet's part of `composed` when it differs from the stored status and from
/// the last patch sent for the pod (a slow watch would otherwise cause repeats). False when
/// the write failed.
async fn send_status(
    api: &Api<Pod>,
    name: &str,
    id: &str,
    pod: &Value,
    composed: &Value,
    sent: &mut HashMap<String, Value>,
) -> bool {
    let patch = kubelet_status(composed);
    let current = kubelet_status(&json!({"status": without_nulls(&pod["status"])}));
    if patch == current || sent.get(id) == Some(&patch) {
        return true;
    }
    let body = json!({"status": patch});
    match api
        .patch_status(name, &PatchParams::apply(MANAGER), &Patch::Strategic(&body))
        .await
    {
        Ok(_) => {
            sent.insert(id.to_string(), patch);
            true
        }
        Err(error) => {
            tracing::warn!(%error, pod = %name, "pod status");
            false
        }
    }
}

/// The agent's pod loop: start pods bound to the node, stop deleted ones, and write each pod's
/// status when it changes.
async fn manage_pods(
    client: Client,
    pods: Store<Pod>,
    objects: Arc<ApiObjects>,
    inner: Arc<KubeletInner>,
    changed: Arc<Notify>,
    tick: Duration,
    hollow_pod_ip: Option<std::net::Ipv4Addr>,
) {
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut hollow: HashMap<String, super::pod::PodRuntime> = HashMap::new();
    // Hollow pods' resourceVersions already handled, by uid.
    let mut hollow_seen: HashMap<String, String> = HashMap::new();
    let mut done: HashSet<String> = HashSet::new();
    // The last status patch sent per pod, so that a slow watch does not cause repeats.
    let mut sent: HashMap<String, Value> = HashMap::new();
    loop {
        let now = timestamp(jiff::Timestamp::now());
        let host_ip = inner.bridge.gateway().to_string();
        let mut present = HashSet::new();
        for stored in pods.state() {
            // A hollow pod needs work only when it changed (its status follows its spec and
            // conditions alone); at hundreds of pods, re-reading each on every event would not
            // keep up.
            if hollow_pod_ip.is_some() {
                let key = (
                    stored.metadata.uid.clone().unwrap_or_default(),
                    stored.metadata.resource_version.clone().unwrap_or_default(),
                );
                if hollow_seen.get(&key.0) == Some(&key.1) {
                    present.insert(key.0);
                    continue;
                }
                hollow_seen.insert(key.0, key.1);
            }
            let Ok(pod) = serde_json::to_value(stored.as_ref()) else {
                continue;
            };
            let id = uid(&pod);
            let namespace = pod["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
            let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            present.insert(id.clone());
            if let Some(ip) = hollow_pod_ip {
                if is_terminating(&pod) {
                    delete_now(&api, &pod).await;
                    continue;
                }
                let runtime = hollow
                    .entry(id.clone())
                    .or_insert_with(|| super::pod::PodRuntime::hollow(&pod, &now, ip));
                let composed = status::compose(&pod, runtime, &now, &host_ip);
                if !send_status(&api, &name, &id, &pod, &composed, &mut sent).await {
                    hollow_seen.remove(&id);
                }
                continue;
            }
            if let Some(worker) = workers.get(&id) {
                if is_terminating(&pod) {
                    worker.stop_for_deletion(&pod);
                }
                let runtime = worker.runtime();
                let composed = status::compose(&pod, &runtime, &now, &host_ip);
                send_status(&api, &name, &id, &pod, &composed, &mut sent).await;
                if runtime.finished {
                    if is_terminating(&pod) {
                        delete_now(&api, &pod).await;
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
                    delete_now(&api, &pod).await;
                }
                continue;
            }
            if is_terminating(&pod) {
                // Never started here: nothing to stop.
                delete_now(&api, &pod).await;
                continue;
            }
            if inner.shutting_down.load(Ordering::SeqCst) {
                continue;
            }
            if wants_token(&pod) {
                match request_token(&client, &pod).await {
                    Ok(token) => {
                        objects
                            .tokens
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(id.clone(), token);
                    }
                    Err(error) => {
                        tracing::warn!(%error, pod = %name, "service account token");
                        continue;
                    }
                }
            }
            let Some(ip) = inner.bridge.allocate() else {
                tracing::warn!(pod = %name, "no free pod IP");
                continue;
            };
            let source: Arc<dyn ObjectSource> = objects.clone();
            workers.insert(id, Worker::spawn(&inner, source, pod, ip, &now));
        }
        // Pods removed from the API (forced deletes, namespace cleanup): stop them at once.
        workers.retain(|id, worker| {
            if present.contains(id) {
                return true;
            }
            worker
                .control
                .send_replace(super::pod::Control::Stop(Duration::ZERO));
            !worker.runtime().finished
        });
        done.retain(|id| present.contains(id));
        hollow.retain(|id, _| present.contains(id));
        hollow_seen.retain(|id, _| present.contains(id));
        sent.retain(|id, _| present.contains(id));
        objects
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| present.contains(id) || workers.contains_key(id));
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = inner.notify.notified() => {}
            _ = changed.notified() => {}
        }
    }
}

/// Images mapped to programs, for [`KubeletOptions::images`]: repository → binary.
pub fn image_map(images: &[(&str, PathBuf)]) -> BTreeMap<String, PathBuf> {
    images
        .iter()
        .map(|(image, program)| (super::image_repository(image).to_string(), program.clone()))
        .collect()
}

/// Serves `listener` as a port-forward to port `port` of Service `namespace/service`: each
/// connection goes to the Service's target port on one of its ready endpoints (EndpointSlices
/// kept by the real controller manager), round-robin. Stands in for kube-proxy, which does not
/// run here.
pub async fn forward_service(
    client: Client,
    namespace: String,
    service: String,
    port: u16,
    listener: tokio::net::TcpListener,
) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    while let Ok((mut inbound, _)) = listener.accept().await {
        let (client, namespace, service, next) = (
            client.clone(),
            namespace.clone(),
            service.clone(),
            next.clone(),
        );
        tokio::spawn(async move {
            let targets = service_targets(&client, &namespace, &service, port).await;
            if targets.is_empty() {
                return;
            }
            let target = &targets[next.fetch_add(1, Ordering::Relaxed) % targets.len()];
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// `ip:port` of the ready endpoints behind a Service port.
async fn service_targets(
    client: &Client,
    namespace: &str,
    service: &str,
    port: u16,
) -> Vec<String> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let Ok(svc) = services.get(service).await else {
        return Vec::new();
    };
    let service_port = svc
        .spec
        .and_then(|s| s.ports)
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.port == i32::from(port));
    let Some(service_port) = service_port else {
        return Vec::new();
    };
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let Ok(list) = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
    else {
        return Vec::new();
    };
    let mut targets = Vec::new();
    for slice in list {
        let target_port = slice
            .ports
            .unwrap_or_default()
            .into_iter()
            .find(|p| p.name == service_port.name)
            .and_then(|p| p.port);
        let Some(target_port) = target_port else {
            continue;
        };
        for endpoint in slice.endpoints {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(false);
            if ready {
                for address in endpoint.addresses {
                    targets.push(format!("{address}:{target_port}"));
                }
            }
        }
    }
    targets.sort();
    targets
}
