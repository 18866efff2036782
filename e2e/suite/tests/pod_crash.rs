//! A query pod crashes in the middle of a stream of writes: the pod runner restarts its
//! container, the pod becomes Ready again, and every write that was acknowledged before the
//! crash is there, on the project's volume.
//!
//! Runs on the emulator only: the crash is a SIGKILL to the container's process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kbeast_client::{DocumentInput, IngestRequest};
use kbeast_e2e::harness::{PodCluster, api_keys, kill_pod_process};
use kbeast_e2e::{binary, repo_root, rolled_out_for_generation, start_operator, wait_for};
use kube::api::{Api, ListParams};

const IMAGE: &str = "ghcr.io/kbeast/kbeast:e2e";
const NAMESPACE: &str = "e2e-pod-crash";

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|c| c.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_query_pod_comes_back_with_every_acknowledged_write() {
    if std::env::var_os("KBEAST_E2E_KUBECONFIG").is_some() {
        eprintln!("skipped on a real cluster: the crash is a SIGKILL to a pod-runner process");
        return;
    }
    let env = PodCluster::start(
        &[(IMAGE, binary("kbeast-query"))],
        Some(Duration::from_secs(1)),
    )
    .await;
    let client = env.client.clone();
    let _operator = start_operator(&env.kubeconfig, IMAGE);
    // The minimal sample: one pod on a volume.
    let sample: serde_json::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join("config/samples/minimal.yaml")).expect("sample"),
    )
    .expect("sample parses");
    let projects = env.create_ready_project(NAMESPACE, sample).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let pod = pods
        .list(&ListParams::default())
        .await
        .expect("pods")
        .items
        .into_iter()
        .next()
        .expect("one pod");
    let pod_name = pod.metadata.name.clone().expect("name");
    assert_eq!(restarts(&pod), 0);

    let keys = api_keys(&client, NAMESPACE, "docs").await;
    let base_url = env.service_url(NAMESPACE, "docs", 8080).await;
    let writer =
        kbeast_client::Client::new(base_url, Some(keys["write-key"].clone())).expect("client");

    // A stream of small writes; the ids the server acknowledged are kept.
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let stream = {
        let (writer, acknowledged, stop) = (writer.clone(), acknowledged.clone(), stop.clone());
        tokio::spawn(async move {
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let id = format!("doc-{n}");
                let request = IngestRequest {
                    documents: vec![DocumentInput {
                        id: Some(id.clone()),
                        text: format!("Document {n} tells of the aardvark number {n}."),
                        source: Some("crash-test".into()),
                        metadata: None,
                    }],
                };
                if writer.ingest(&request).await.is_ok() {
                    acknowledged.lock().expect("lock").push(id);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    wait_for(
        "some writes acknowledged",
        Duration::from_secs(60),
        || async { acknowledged.lock().expect("lock").len() >= 20 },
    )
    .await;
    let pid = kill_pod_process(&pod_name, "kbeast-query");
    let acknowledged_before_crash = acknowledged.lock().expect("lock").clone();
    eprintln!(
        "killed kbeast-query (pid {pid}) after {} acknowledged writes",
        acknowledged_before_crash.len()
    );

    wait_for(
        "the same pod restarted and Ready again",
        Duration::from_secs(120),
        || async {
            pods.get(&pod_name)
                .await
                .is_ok_and(|p| restarts(&p) >= 1 && ready(&p))
        },
    )
    .await;
    wait_for(
        "writes acknowledged again after the restart",
        Duration::from_secs(60),
        || async {
            acknowledged.lock().expect("lock").len() >= acknowledged_before_crash.len() + 10
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    stream.await.expect("write stream");
    let acknowledged = acknowledged.lock().expect("lock").clone();
    let missing: Vec<&String> = {
        let mut missing = Vec::new();
        for id in &acknowledged {
            if writer.get_document(id).await.is_err() {
                missing.push(id);
            }
        }
        missing
    };
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged documents are missing: {missing:?}",
        missing.len(),
        acknowledged.len()
    );
    let stats = writer.stats().await.expect("stats");
    assert!(
        stats.documents >= acknowledged.len() as u64,
        "stats count every acknowledged document ({} < {})",
        stats.documents,
        acknowledged.len()
    );
    let project = projects.get("docs").await.expect("project");
    assert!(
        rolled_out_for_generation(&project),
        "the project is Ready again"
    );
}
