//! Health-gated rollouts with real query pods on the local control plane's pod runner: a good
//! update rolls with zero failed queries, a crash-looping revision is halted and rolled back
//! (old pods never leave, queries never fail), and a fix rolls forward.
//!
//! Runs on the emulator only: the crashing image is a pod-runner image mapping.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kbeast_client::{DocumentInput, IngestRequest};
use kbeast_e2e::harness::{PodCluster, QueryLoop, api_keys, current_condition, status_of};
use kbeast_e2e::{binary, rolled_out_for_generation, start_operator, wait_for};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

const GOOD_IMAGE: &str = "ghcr.io/kbeast/kbeast:e2e";
/// Mapped to a program that exits at once with an error: a revision that crash-loops.
const CRASHING_IMAGE: &str = "ghcr.io/kbeast/crashing:e2e";
const NAMESPACE: &str = "e2e-rollouts";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_updates_roll_without_failed_queries_and_crashing_ones_roll_back() {
    if std::env::var_os("KBEAST_E2E_KUBECONFIG").is_some() {
        eprintln!("skipped on a real cluster: the crashing revision is a pod-runner image mapping");
        return;
    }
    // A `kbeast-query` that refuses its arguments, like a binary given a flag it does not know.
    // Outside /tmp: the pod's own /tmp volume hides the host's.
    let crashing = binary("kbeast-query")
        .parent()
        .expect("target dir")
        .join(format!("e2e-crashing-{}/kbeast-query", std::process::id()));
    std::fs::create_dir_all(crashing.parent().expect("parent")).expect("dir");
    std::fs::write(
        &crashing,
        "#!/bin/sh\necho \"error: unexpected argument\" >&2\nexit 2\n",
    )
    .expect("script");
    std::fs::set_permissions(
        &crashing,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("executable");
    let env = PodCluster::start(
        &[
            (GOOD_IMAGE, binary("kbeast-query")),
            (CRASHING_IMAGE, crashing),
        ],
        Some(Duration::from_secs(1)),
    )
    .await;
    let client = env.client.clone();
    let _operator = start_operator(&env.kubeconfig, GOOD_IMAGE);
    let projects = env
        .create_ready_project(
            NAMESPACE,
            json!({
                "apiVersion": "kbeast.io/v1alpha1", "kind": "KnowledgeProject",
                "metadata": {"name": "docs"},
                "spec": {"replicas": 2, "storage": {"volume": {"size": "1Gi", "accessMode": "ReadWriteMany"}},
                         "rollout": {"progressDeadlineSeconds": 90}},
            }),
        )
        .await;

    // Keys, one document, and a client that searches without pause through the Service.
    let keys = api_keys(&client, NAMESPACE, "docs").await;
    let url = env.service_url(NAMESPACE, "docs", 8080).await;
    let writer =
        kbeast_client::Client::new(url.clone(), Some(keys["write-key"].clone())).expect("client");
    writer
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
    let reader = kbeast_client::Client::new(url, Some(keys["read-key"].clone())).expect("client");
    let querying = QueryLoop::start(reader, "aardvark");

    // 1. A good update: every new pod passes its smoke check; status ends on one revision.
    let first = status_of(&projects.get("docs").await.expect("project"));
    projects
        .patch(
            "docs",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"search": {"defaultMode": "keyword"}}})),
        )
        .await
        .expect("spec changed");
    wait_for(
        "the good update rolled out",
        Duration::from_secs(180),
        || async {
            projects.get("docs").await.is_ok_and(|p| {
                let s = status_of(&p);
                rolled_out_for_generation(&p)
                    && s.update_revision != first.update_revision
                    && s.current_revision == s.update_revision
                    && s.last_good_revision == s.update_revision
            })
        },
    )
    .await;
    let good = status_of(&projects.get("docs").await.expect("project"));
    let good_revision = good.update_revision.clone().expect("revision");
    assert_eq!(
        querying.failed(),
        0,
        "no query failed during the good update"
    );

    // 2. A crash-looping revision: halted and rolled back, old pods never removed.
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let good_pods = ListParams::default().labels(&format!("kbeast.io/revision={good_revision}"));
    let names = |list: Vec<Pod>| -> Vec<String> {
        let mut names: Vec<String> = list
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.name)
            .collect();
        names.sort();
        names
    };
    let serving = names(pods.list(&good_pods).await.expect("pods").items);
    assert_eq!(serving.len(), 2);
    let started = Instant::now();
    projects
        .patch(
            "docs",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"image": CRASHING_IMAGE}})),
        )
        .await
        .expect("spec changed");
    let deadline = Instant::now() + Duration::from_secs(90 + 60);
    loop {
        let now_serving = names(pods.list(&good_pods).await.expect("pods").items);
        assert_eq!(now_serving, serving, "the good pods were never removed");
        let project = projects.get("docs").await.expect("project");
        if current_condition(&project, "Degraded")
            .is_some_and(|(s, r, _)| s == "True" && r == "RolloutFailed")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no rollback within the deadline plus a margin"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("rolled back after {:.1} s", started.elapsed().as_secs_f64());
    let project = projects.get("docs").await.expect("project");
    let (_, _, message) = current_condition(&project, "Degraded").expect("Degraded");
    eprintln!("Degraded: {message}");
    assert!(
        message.contains("crash-looping") && message.contains("exit code 2"),
        "names the crash and the exit code: {message}"
    );
    let status = status_of(&project);
    assert_eq!(
        status.last_good_revision.as_deref(),
        Some(good_revision.as_str())
    );
    assert!(status.failed_revision.is_some());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    wait_for(
        "the Deployment is back on the good template",
        Duration::from_secs(60),
        || async {
            deployments.get("docs").await.is_ok_and(|d| {
                d.metadata
                    .annotations
                    .unwrap_or_default()
                    .get("kbeast.io/revision")
                    == Some(&good_revision)
                    && d.status
                        .is_some_and(|s| s.updated_replicas == Some(2) && s.replicas == Some(2))
            })
        },
    )
    .await;
    assert_eq!(
        querying.failed(),
        0,
        "no query failed during the bad rollout"
    );

    // 3. Fix-forward: dropping the bad image is a new generation and becomes Ready again.
    projects
        .patch(
            "docs",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"image": null}})),
        )
        .await
        .expect("spec fixed");
    wait_for("Ready after the fix", Duration::from_secs(120), || async {
        projects
            .get("docs")
            .await
            .is_ok_and(|p| rolled_out_for_generation(&p) && status_of(&p).failed_revision.is_none())
    })
    .await;
    let (succeeded, failed) = querying.finish().await;
    assert_eq!(failed, 0, "no query failed at all");
    assert!(succeeded > 20, "the client kept querying");
}
