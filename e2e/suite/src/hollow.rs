//! The one real `kbeast-query` that answers for every pod of a hollow node (scale tests). The
//! node agent reports each pod running at [`HOLLOW_POD_IP`]; this process listens there on the
//! query port, configured from a project's ConfigMap, and accepts every project's keys, merged
//! from their Secrets into its keys file. The operator's smoke checks therefore reach a real
//! server with each project's own read key; what differs from real pods is that all projects
//! share one process and one table.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kbeast_api::query_contract::{self, env};
use kube::Client;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

/// The address every hollow pod reports; a loopback address, so nothing else listens there.
pub const HOLLOW_POD_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// The shared query process and the task that keeps its keys file current.
pub struct HollowQueryBackend {
    process: Child,
    keys_task: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

impl HollowQueryBackend {
    /// Merges the keys of every project in `namespace` from now on, waits for a project's
    /// ConfigMap and starts `kbeast-query` with it.
    pub async fn start(client: &Client, namespace: &str) -> HollowQueryBackend {
        let dir = tempfile::tempdir().expect("temp dir");
        let keys_file = dir.path().join("api-keys.json");
        write_atomically(&keys_file, "[]");
        let keys_task = tokio::spawn(merge_keys(
            Api::namespaced(client.clone(), namespace),
            keys_file.clone(),
        ));
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let config = loop {
            let found = config_maps
                .list(&Default::default())
                .await
                .ok()
                .and_then(|list| {
                    list.items
                        .into_iter()
                        .filter_map(|c| c.data)
                        .find(|data| data.contains_key(env::EMBEDDING_PROVIDER))
                });
            if let Some(found) = found {
                break found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no project ConfigMap in {namespace} after 120 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if let Err(error) =
            std::net::TcpListener::bind((HOLLOW_POD_IP, query_contract::HTTP_PORT as u16))
        {
            panic!(
                "{HOLLOW_POD_IP}:{} is taken ({error}): a hollow backend of a killed run? \
                 (pkill -f 'kbeast-query serve')",
                query_contract::HTTP_PORT
            );
        }
        let binary = kbeast_localcluster::kubelet::find_query_binary()
            .expect("kbeast-query of this build (KBEAST_QUERY_BIN or next to the test)");
        let log = std::fs::File::create(dir.path().join("query.log")).expect("log file");
        let process = Command::new(binary)
            .arg("serve")
            .envs(config)
            .env(
                env::LISTEN,
                format!("{HOLLOW_POD_IP}:{}", query_contract::HTTP_PORT),
            )
            .env(env::DATA, dir.path().join("data"))
            .env(env::API_KEYS, &keys_file)
            .env("KBEAST_KEYS_RELOAD_MS", "100")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kbeast-query starts");
        let mut backend = HollowQueryBackend {
            process,
            keys_task,
            dir,
        };
        backend.wait_until_listening().await;
        backend
    }

    /// Waits until the process accepts connections; panics with its log if it exits.
    async fn wait_until_listening(&mut self) {
        let address = (HOLLOW_POD_IP, query_contract::HTTP_PORT as u16);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(address).await.is_err() {
            if let Ok(Some(status)) = self.process.try_wait() {
                let log =
                    std::fs::read_to_string(self.dir.path().join("query.log")).unwrap_or_default();
                panic!("the hollow query backend exited ({status}): {log}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the hollow query backend is not listening after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for HollowQueryBackend {
    fn drop(&mut self) {
        self.keys_task.abort();
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Rewrites `keys_file` with the keys of every Secret holding a keys file, each key's id
/// prefixed with its Secret's name (ids must be unique in one file).
async fn merge_keys(secrets: Api<Secret>, keys_file: PathBuf) {
    let stream = watcher(secrets, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut keys: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    // A (re)list in progress: replaces `keys` when complete.
    let mut listing: Option<BTreeMap<String, Vec<serde_json::Value>>> = None;
    let mut written = String::new();
    while let Some(event) = stream.next().await {
        let mut next = Some(event);
        // Apply every event already waiting, then write once.
        while let Some(event) = next {
            match event {
                Ok(watcher::Event::Init) => listing = Some(BTreeMap::new()),
                Ok(watcher::Event::InitApply(secret)) => {
                    if let Some(listing) = listing.as_mut() {
                        listing.insert(secret.name_any(), keys_of(&secret));
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(listed) = listing.take() {
                        keys = listed;
                    }
                }
                Ok(watcher::Event::Apply(secret)) => {
                    keys.insert(secret.name_any(), keys_of(&secret));
                }
                Ok(watcher::Event::Delete(secret)) => {
                    keys.remove(&secret.name_any());
                }
                Err(_) => {}
            }
            next = futures::FutureExt::now_or_never(stream.next()).flatten();
        }
        let merged: Vec<&serde_json::Value> = keys.values().flatten().collect();
        let text = serde_json::to_string(&merged).expect("keys serialize");
        if text != written {
            write_atomically(&keys_file, &text);
            written = text;
        }
    }
}

/// The keys of a project's keys Secret, ids prefixed with the Secret's name; none for other
/// Secrets.
fn keys_of(secret: &Secret) -> Vec<serde_json::Value> {
    let name = secret.name_any();
    let Some(file) = secret
        .data
        .as_ref()
        .and_then(|d| d.get(query_contract::API_KEYS_FILE_KEY))
    else {
        return Vec::new();
    };
    let keys: Vec<serde_json::Value> = serde_yaml::from_slice(&file.0).unwrap_or_default();
    keys.into_iter()
        .map(|mut key| {
            let id = key["id"].as_str().unwrap_or_default().to_string();
            key["id"] = format!("{name}/{id}").into();
            key
        })
        .collect()
}

fn write_atomically(path: &Path, text: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).expect("write keys");
    std::fs::rename(&temporary, path).expect("replace keys");
}
