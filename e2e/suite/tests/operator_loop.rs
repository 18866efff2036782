//! The real operator binary against the local control plane: a project converges, its
//! children are correct (owner, labels, PDB, Service and NetworkPolicy rules), and a converged
//! project costs no writes.
//!
//! With `KBEAST_E2E_KUBECONFIG` set, the same test runs against that cluster instead, with
//! `KBEAST_E2E_IMAGE` as the query image; checks that need the emulator's request log are
//! skipped there, with a message.

use std::time::Duration;

use kbeast_e2e::children::assert_children;
use kbeast_e2e::harness::Env;
use kbeast_localcluster::RequestFilter;
use kube::ResourceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_converges_and_then_costs_no_writes() {
    let env = Env::start().await;
    let namespace = "e2e-converge";
    let (_operator, _) = env.operator(&[]);
    env.create_project(namespace, "minimal.yaml", |_| {}).await;
    // Locally no pod runner runs here: `wait_ready` plays the kubelet and marks pods ready.
    env.wait_ready(namespace, "docs", Duration::from_secs(120))
        .await;
    let projects = env.projects(namespace);
    let client = env.client.clone();

    let project = projects.get("docs").await.expect("project");
    // Every child: owned by the project, labelled, and the PDB, Service and NetworkPolicy rules.
    assert_children(&client, &project, &[]).await;
    assert_eq!(project.finalizers(), ["kbeast.io/cleanup"]);
    let status = project.status.expect("status");
    assert_eq!(status.replica_summary.as_deref(), Some("1/1"));
    assert_eq!(status.api_keys_secret.as_deref(), Some("docs-api-keys"));

    let Some(cluster) = env.request_log_or_skip("the steady-state check") else {
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
