//! API-key rotation with real query pods: the tenant rewrites the keys Secret in two steps
//! (add the new keys beside the old ones, move the clients, drop the old keys). The pods reload
//! the mounted keys file without a restart; old keys stop working, new ones work, and a client
//! that queries throughout never sees a failure.
//!
//! Runs on the test control plane only: every pod is checked at its pod IP.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kbeast_client::{SearchMode, SearchRequest};
use kbeast_e2e::harness::{PodCluster, QueryLoop, api_keys, pod_url};
use kbeast_e2e::{binary, rolled_out_for_generation, start_operator, wait_for};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

const IMAGE: &str = "ghcr.io/kbeast/kbeast:e2e";
const NAMESPACE: &str = "e2e-key-rotation";

/// The keys file entries the generated Secret starts with.
fn keys_file(secret: &BTreeMap<String, String>) -> Vec<Value> {
    serde_json::from_str(&secret["api-keys.json"]).expect("keys file is JSON")
}

/// Replaces the keys Secret's data: the keys file and the bare tokens clients read.
async fn write_keys(client: &Client, entries: &[Value], read: &str, write: &str, admin: &str) {
    let data = BTreeMap::from([
        (
            "api-keys.json".to_string(),
            ByteString(serde_json::to_vec(entries).expect("JSON")),
        ),
        ("read-key".to_string(), ByteString(read.as_bytes().to_vec())),
        (
            "write-key".to_string(),
            ByteString(write.as_bytes().to_vec()),
        ),
        (
            "admin-key".to_string(),
            ByteString(admin.as_bytes().to_vec()),
        ),
    ]);
    Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .patch(
            "docs-api-keys",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "data": data })),
        )
        .await
        .expect("keys Secret replaced");
}

/// A search client per running pod, each straight at its pod, with `key`.
async fn per_pod_clients(
    client: &Client,
    pods: &Api<Pod>,
    key: &str,
) -> Vec<(String, kbeast_client::Client)> {
    let mut clients = Vec::new();
    for pod in pods.list(&ListParams::default()).await.expect("pods").items {
        let name = pod.metadata.name.expect("name");
        let url = pod_url(client, NAMESPACE, &name, 8080).await;
        let client = kbeast_client::Client::new(url, Some(key.into())).expect("client");
        clients.push((name, client));
    }
    clients
}

/// Waits until `key` gets `expected` (true: answers, false: 401) from every pod.
async fn wait_until_every_pod(
    cluster: &Client,
    pods: &Api<Pod>,
    key: &str,
    accepted: bool,
    what: &str,
) {
    let clients = per_pod_clients(cluster, pods, key).await;
    assert_eq!(clients.len(), 2, "both pods");
    wait_for(what, Duration::from_secs(30), || async {
        for (_, client) in &clients {
            let answer = client
                .search(&SearchRequest::new("anything", SearchMode::Keyword, 1))
                .await;
            let ok = match &answer {
                Ok(_) => accepted,
                Err(error) => !accepted && error.status().is_some_and(|s| s.as_u16() == 401),
            };
            if !ok {
                return false;
            }
        }
        true
    })
    .await;
}

fn new_key(prefix: &str) -> String {
    format!("{prefix}{}", "rotated-secret-0123456789abcdef")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_without_a_restart_and_without_failed_queries() {
    if std::env::var_os("KBEAST_E2E_KUBECONFIG").is_some() {
        eprintln!("skipped on a real cluster: every pod is checked at its pod IP");
        return;
    }
    let env = PodCluster::start(&[(IMAGE, binary("kbeast-query"))], None).await;
    let (cluster, client) = (&env.client, env.client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let _operator = start_operator(&env.kubeconfig, IMAGE);
    let projects = env
        .create_ready_project(
            NAMESPACE,
            json!({
                "apiVersion": "kbeast.io/v1alpha1", "kind": "KnowledgeProject",
                "metadata": {"name": "docs"},
                "spec": {"replicas": 2, "storage": {"volume": {"size": "1Gi", "accessMode": "ReadWriteMany"}}},
            }),
        )
        .await;
    let pod_names = |list: Vec<Pod>| {
        let mut names: Vec<String> = list.into_iter().filter_map(|p| p.metadata.name).collect();
        names.sort();
        names
    };
    let running = pod_names(pods.list(&ListParams::default()).await.expect("pods").items);
    let revision = projects
        .get("docs")
        .await
        .expect("project")
        .status
        .and_then(|s| s.update_revision);

    let old = api_keys(&client, NAMESPACE, "docs").await;
    let service = env.service_url(NAMESPACE, "docs", 8080).await;
    let old_client = QueryLoop::start(
        kbeast_client::Client::new(service.clone(), Some(old["read-key"].clone())).expect("client"),
        "aardvark",
    );
    old_client.wait_for_more(3, Duration::from_secs(30)).await;

    // 1. The new keys join the old ones; the Secret's tokens already name the new ones.
    let (read, write, admin) = (new_key("kb_r_"), new_key("kb_w_"), new_key("kb_a_"));
    let mut both = keys_file(&old);
    both.extend([
        json!({"id": "read-2", "secret": read, "scopes": ["read"]}),
        json!({"id": "write-2", "secret": write, "scopes": ["read", "write"]}),
        json!({"id": "admin-2", "secret": admin, "scopes": ["read", "write", "admin"]}),
    ]);
    write_keys(&client, &both, &read, &write, &admin).await;
    wait_until_every_pod(cluster, &pods, &read, true, "every pod accepts the new key").await;
    // The old key keeps working alongside the new one.
    old_client.wait_for_more(6, Duration::from_secs(30)).await;
    assert_eq!(
        api_keys(&client, NAMESPACE, "docs").await["read-key"],
        read,
        "the operator keeps the tenant's keys"
    );

    // 2. The clients move to the new key; the old one is dropped.
    let new_client = QueryLoop::start(
        kbeast_client::Client::new(service, Some(read.clone())).expect("client"),
        "aardvark",
    );
    let (old_succeeded, old_failed) = old_client.finish().await;
    assert_eq!(
        old_failed, 0,
        "no query with the old key failed before it was dropped"
    );
    assert!(old_succeeded > 5, "the old client kept querying");
    let only_new = [
        json!({"id": "read-2", "secret": read, "scopes": ["read"]}),
        json!({"id": "write-2", "secret": write, "scopes": ["read", "write"]}),
        json!({"id": "admin-2", "secret": admin, "scopes": ["read", "write", "admin"]}),
    ];
    write_keys(&client, &only_new, &read, &write, &admin).await;
    wait_until_every_pod(
        cluster,
        &pods,
        &old["read-key"],
        false,
        "every pod rejects the old key",
    )
    .await;
    wait_until_every_pod(cluster, &pods, &read, true, "the new key still works").await;
    new_client.wait_for_more(6, Duration::from_secs(30)).await;
    let (succeeded, failed) = new_client.finish().await;
    assert_eq!(failed, 0, "no query with the new key failed");
    assert!(succeeded > 5, "the new client kept querying");

    // No restart: the same pods, the same revision, Ready throughout.
    assert_eq!(
        pod_names(pods.list(&ListParams::default()).await.expect("pods").items),
        running,
        "the pods reloaded the keys instead of being replaced"
    );
    let project = projects.get("docs").await.expect("project");
    assert!(rolled_out_for_generation(&project));
    assert_eq!(project.status.and_then(|s| s.update_revision), revision);
}
