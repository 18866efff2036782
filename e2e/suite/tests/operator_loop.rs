//! The real operator binary against the local control plane: a project converges, its
//! children are correct, and a converged project costs no writes.
//!
//! With `KBEAST_E2E_KUBECONFIG` set, the same test runs against that cluster instead, with
//! `KBEAST_E2E_IMAGE` as the query image; checks that need the emulator's request log are
//! skipped there, with a message.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kbeast_api::KnowledgeProject;
use kbeast_e2e::{
    create_namespace, install_crd, ready_for_generation, repo_root, start_operator, wait_for,
};
use kbeast_localcluster::{LocalCluster, Options, RequestFilter};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

/// Where the test runs: the local control plane, or the cluster of `KBEAST_E2E_KUBECONFIG`.
enum Target {
    Local(LocalCluster),
    Real,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_converges_and_then_costs_no_writes() {
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
    let client = Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig"),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("kubeconfig loads"),
    )
    .expect("client");
    install_crd(&client).await;
    create_namespace(&client, "kbeast-system").await;
    let namespace = "e2e-converge";
    create_namespace(&client, namespace).await;
    let _operator = start_operator(&kubeconfig, &query_image);

    let projects: Api<KnowledgeProject> = Api::namespaced(client.clone(), namespace);
    let sample: KnowledgeProject = serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join("config/samples/minimal.yaml")).expect("sample"),
    )
    .expect("sample parses");
    projects
        .create(&PostParams::default(), &sample)
        .await
        .expect("project created");

    wait_for(
        "Ready=True for the current generation",
        Duration::from_secs(120),
        || async {
            // The emulator runs no processes: play the kubelet and mark the query pods ready.
            if let Target::Local(cluster) = &target {
                cluster.set_pods_ready(namespace, "app.kubernetes.io/instance=docs", true);
            }
            projects
                .get("docs")
                .await
                .is_ok_and(|p| ready_for_generation(&p))
        },
    )
    .await;

    let project = projects.get("docs").await.expect("project");
    let deployment: Deployment = Api::namespaced(client.clone(), namespace)
        .get("docs")
        .await
        .expect("Deployment");
    let owner = &deployment.owner_references()[0];
    assert_eq!(Some(owner.uid.as_str()), project.metadata.uid.as_deref());
    assert_eq!(project.finalizers(), ["kbeast.io/cleanup"]);
    let status = project.status.expect("status");
    assert_eq!(status.replica_summary.as_deref(), Some("1/1"));
    assert_eq!(status.api_keys_secret.as_deref(), Some("docs-api-keys"));

    let Target::Local(cluster) = &target else {
        eprintln!(
            "skipped on a real cluster: the steady-state check needs the emulator's request log"
        );
        return;
    };
    // Steady state: no writes for 30 s (Lease renewals aside: leader election is a heartbeat).
    let since = cluster.elapsed_ms();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let writes: Vec<_> = cluster
        .requests()
        .into_iter()
        .filter(|r| r.at_ms >= since && r.is_write() && r.resource != "leases")
        .collect();
    assert!(writes.is_empty(), "writes in steady state: {writes:#?}");
    let reads = cluster.count_requests(&RequestFilter {
        since_ms: Some(since),
        ..RequestFilter::default()
    });
    assert!(reads > 0, "the operator still watches and re-checks");
}
