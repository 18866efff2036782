//! Health-gated rollouts that fail while their pods run: a revision whose embedder does not
//! answer passes the kubelet's probes but fails its smoke check, never becomes Ready and is
//! rolled back at the deadline — also when the operator is killed in the middle of it, since
//! the deadline and the last good template come from the durable rollout record. A corrected
//! spec applied while a rollout is failing proceeds at once. A client queries throughout and
//! sees no failure.
//!
//! The smoke checks reach pod IPs from the test machine, as on the test control plane.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kbeast_api::KnowledgeProject;
use kbeast_client::{DocumentInput, IngestRequest};
use kbeast_e2e::harness::{
    PodCluster, QueryLoop, api_keys, current_condition, free_port, metric_value, status_of,
};
use kbeast_e2e::{Operator, binary, rolled_out_for_generation, start_operator_with, wait_for};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

const IMAGE: &str = "ghcr.io/kbeast/kbeast:e2e";
const NAMESPACE: &str = "e2e-rollout-recovery";
const DEADLINE_SECONDS: u64 = 30;
/// An OpenAI-compatible endpoint on the pod's own loopback where nothing listens: the pod
/// starts and answers its probes, but every embedding call fails.
const DEAD_EMBEDDER: &str = "http://127.0.0.1:1/v1";
const SMOKE_CONDITION: &str = "kbeast.io/smoke-passed";

fn operator(kubeconfig: &std::path::Path) -> (Operator, u16) {
    let port = free_port();
    let listen = format!("--listen=127.0.0.1:{port}");
    let image = format!("--query-image={IMAGE}");
    let args = [
        "run",
        listen.as_str(),
        "--operator-namespace=kbeast-system",
        image.as_str(),
    ];
    (start_operator_with(kubeconfig, &args), port)
}

/// Live pods of `revision`, by name.
async fn pods_of(pods: &Api<Pod>, revision: &str) -> Vec<Pod> {
    let selector = ListParams::default().labels(&format!("kbeast.io/revision={revision}"));
    let mut live: Vec<Pod> = pods
        .list(&selector)
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    live.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    live
}

fn names(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

/// The message of a failed smoke check on one of `pods`.
fn smoke_failure(pods: &[Pod]) -> Option<String> {
    pods.iter().find_map(|p| {
        p.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == SMOKE_CONDITION && c.status == "False")
            .and_then(|c| c.message.clone())
    })
}

/// Polls `probe` every 200 ms until it gives a value, for at most `timeout`.
async fn poll<T, Fut>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the project reports a new update revision, and returns it.
async fn new_update_revision(projects: &Api<KnowledgeProject>, previous: &str) -> String {
    poll("a new update revision", Duration::from_secs(30), || async {
        let project = projects.get("docs").await.ok()?;
        let status = status_of(&project);
        (status.observed_generation == project.metadata.generation)
            .then_some(status.update_revision)
            .flatten()
            .filter(|r| r != previous)
    })
    .await
}

/// Waits until a pod of `revision` has failed its smoke check, and returns the message.
async fn wait_for_smoke_failure(pods: &Api<Pod>, revision: &str) -> String {
    poll(
        "a pod of the bad revision failing its smoke check",
        Duration::from_secs(60),
        || async { smoke_failure(&pods_of(pods, revision).await) },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_revisions_roll_back_across_an_operator_restart_and_fixes_roll_forward() {
    if std::env::var_os("KBEAST_E2E_KUBECONFIG").is_some() {
        eprintln!(
            "skipped on a real cluster: an operator outside the cluster cannot reach pod IPs"
        );
        return;
    }
    let env = PodCluster::start(&[(IMAGE, binary("kbeast-query"))], None).await;
    let client = env.client.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let (first_operator, _) = operator(&env.kubeconfig);
    let projects = env
        .create_ready_project(
            NAMESPACE,
            json!({
                "apiVersion": "kbeast.io/v1alpha1", "kind": "KnowledgeProject",
                "metadata": {"name": "docs"},
                // One pod on ephemeral storage: a shared volume would hold the good revision's
                // table, whose model the bad revision's embedder does not match, so its pods
                // would not start instead of failing their smoke check.
                "spec": {"replicas": 1, "storage": {"ephemeral": {}},
                         "rollout": {"progressDeadlineSeconds": DEADLINE_SECONDS}},
            }),
        )
        .await;
    let good_revision = status_of(&projects.get("docs").await.expect("project"))
        .update_revision
        .expect("revision");
    let serving = names(&pods_of(&pods, &good_revision).await);
    assert_eq!(serving.len(), 1);

    let keys = api_keys(&client, NAMESPACE, "docs").await;
    let base_url = env.service_url(NAMESPACE, "docs", 8080).await;
    kbeast_client::Client::new(base_url.clone(), Some(keys["write-key"].clone()))
        .expect("client")
        .ingest(&IngestRequest {
            documents: vec![DocumentInput {
                id: Some("doc-1".into()),
                text: "The aardvark digs burrows at night.".into(),
                source: None,
                metadata: None,
            }],
        })
        .await
        .expect("ingested");
    let querying = QueryLoop::start(
        kbeast_client::Client::new(base_url, Some(keys["read-key"].clone())).expect("client"),
        "aardvark",
    );

    // 1. An embedder that does not answer: the pod runs and passes its probes, but the smoke
    //    check fails, so the revision never becomes Ready.
    let started = Instant::now();
    projects
        .patch(
            "docs",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"embedding": {
                "provider": "openai", "endpoint": DEAD_EMBEDDER, "model": "e5-small"}}})),
        )
        .await
        .expect("spec changed");
    let bad_revision = new_update_revision(&projects, &good_revision).await;
    let smoke_message = wait_for_smoke_failure(&pods, &bad_revision).await;
    eprintln!("smoke check failed: {smoke_message}");
    let project = projects.get("docs").await.expect("project");
    assert!(
        current_condition(&project, "Progressing").is_some_and(|(s, _, _)| s == "True"),
        "Progressing while the revision is checked"
    );
    // Ready means available to serve: the good revision's pods still do.
    assert!(
        current_condition(&project, "Ready")
            .is_some_and(|(s, _, m)| s == "True" && m.contains("rolling out")),
        "Ready while the good revision serves and the bad one is checked: {:?}",
        current_condition(&project, "Ready")
    );
    assert!(
        pods_of(&pods, &bad_revision).await.iter().all(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "False"))
        }),
        "the gate keeps the bad pods out of the Service"
    );

    // 2. The operator dies mid-rollout; its successor waits out the dead leader's lease. The
    //    deadline still counts from the start recorded in the rollout ConfigMap.
    drop(first_operator);
    let killed_at = started.elapsed();
    tokio::time::sleep(Duration::from_secs(DEADLINE_SECONDS / 2)).await;
    let (_second_operator, metrics_port) = operator(&env.kubeconfig);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert_eq!(
            names(&pods_of(&pods, &good_revision).await),
            serving,
            "the good pods were never removed"
        );
        let project = projects.get("docs").await.expect("project");
        if current_condition(&project, "Degraded")
            .is_some_and(|(s, r, _)| s == "True" && r == "RolloutFailed")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no rollback after the restart");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rolled_back_after = started.elapsed();
    eprintln!(
        "operator killed after {:.1} s; rolled back after {:.1} s",
        killed_at.as_secs_f64(),
        rolled_back_after.as_secs_f64()
    );
    // A successor that restarted the clock would need the restart delay plus the whole
    // deadline; one that resumed the record needs the deadline plus a margin.
    let restarted_clock = Duration::from_secs(DEADLINE_SECONDS / 2 + DEADLINE_SECONDS) + killed_at;
    assert!(
        rolled_back_after < restarted_clock,
        "the deadline counted from the recorded start ({rolled_back_after:?} vs {restarted_clock:?})"
    );
    let project = projects.get("docs").await.expect("project");
    let (_, _, message) = current_condition(&project, "Degraded").expect("Degraded");
    eprintln!("Degraded: {message}");
    assert!(
        message.contains("progressDeadlineSeconds") && message.contains("smoke check"),
        "names the deadline and the failed smoke check: {message}"
    );
    let status = status_of(&project);
    assert_eq!(
        status.failed_revision.as_deref(),
        Some(bad_revision.as_str())
    );
    assert_eq!(
        status.last_good_revision.as_deref(),
        Some(good_revision.as_str())
    );
    wait_for(
        "the Deployment back on the good template, the bad pods gone",
        Duration::from_secs(60),
        || async {
            let on_good = deployments.get("docs").await.is_ok_and(|d| {
                d.metadata
                    .annotations
                    .unwrap_or_default()
                    .get("kbeast.io/revision")
                    == Some(&good_revision)
            });
            on_good && pods_of(&pods, &bad_revision).await.is_empty()
        },
    )
    .await;
    assert_eq!(
        metric_value(
            metrics_port,
            r#"kbeast_rollouts_total{result="rolled_back"}"#
        ),
        Some(1.0),
        "the successor counted the rollback"
    );

    // 3. The failed revision is not retried: for a while, no pod of it comes back.
    let quiet_until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < quiet_until {
        assert!(
            pods_of(&pods, &bad_revision).await.is_empty(),
            "the failed revision was retried"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // 4. Fix-forward while a rollout is failing: another bad spec, with a long deadline, is
    //    replaced by a good one as soon as its pod fails the smoke check.
    projects
        .patch(
            "docs",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {
                "embedding": {"model": "e5-large"},
                "rollout": {"progressDeadlineSeconds": 600}}})),
        )
        .await
        .expect("spec changed");
    let second_bad = new_update_revision(&projects, &good_revision).await;
    assert_ne!(second_bad, bad_revision);
    wait_for_smoke_failure(&pods, &second_bad).await;
    let fixed_at = Instant::now();
    projects
        .patch(
            "docs",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {
                "embedding": {"provider": "hash", "endpoint": null, "model": null},
                "search": {"defaultMode": "keyword"}}})),
        )
        .await
        .expect("spec fixed");
    wait_for(
        "the fix Ready, on one revision",
        Duration::from_secs(120),
        || async {
            projects.get("docs").await.is_ok_and(|p| {
                let s = status_of(&p);
                rolled_out_for_generation(&p)
                    && s.failed_revision.is_none()
                    && s.update_revision.as_deref() != Some(good_revision.as_str())
                    && s.update_revision.as_deref() != Some(second_bad.as_str())
                    && s.current_revision == s.update_revision
                    && s.last_good_revision == s.update_revision
            })
        },
    )
    .await;
    eprintln!(
        "the fix was Ready {:.1} s after it was applied",
        fixed_at.elapsed().as_secs_f64()
    );
    assert!(
        pods_of(&pods, &second_bad).await.is_empty(),
        "the failing revision's pods are gone"
    );
    let (succeeded, failed) = querying.finish().await;
    assert_eq!(failed, 0, "no query failed at all");
    assert!(succeeded > 20, "the client kept querying");
}
