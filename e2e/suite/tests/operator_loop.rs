//! The real operator binary, as the chart's ServiceAccount, against the real control plane: a
//! project converges with real query pods, its children are correct (owner, labels, PDB,
//! Service and NetworkPolicy rules), and a converged project costs no writes (counted in the
//! API server's audit log).
//!
//! With `KBEAST_E2E_KUBECONFIG` set, the same test runs against that cluster instead, with
//! `KBEAST_E2E_IMAGE` as the query image; the write count is skipped there, with a message.

use std::time::Duration;

use kbeast_e2e::children::assert_children;
use kbeast_e2e::harness::Env;
use kube::ResourceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_converges_and_then_costs_no_writes() {
    let env = Env::start().await;
    let namespace = "e2e-converge";
    let (_operator, _) = env.operator(&[]);
    env.create_project(namespace, "minimal.yaml", |_| {}).await;
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

    let Some(since) = env.mark("the steady-state check") else {
        return;
    };
    // Steady state: no writes for 30 s (Lease renewals aside: leader election is a heartbeat).
    tokio::time::sleep(Duration::from_secs(30)).await;
    let writes = env.operator_writes_since(since);
    assert!(writes.is_empty(), "writes in steady state: {writes:#?}");
    assert!(
        env.operator_requests_since(since) > 0,
        "the operator still watches and re-checks"
    );
}
