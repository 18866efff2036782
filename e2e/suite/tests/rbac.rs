//! The operator under the chart's RBAC on a real API server: with a ClusterRole that lacks
//! `create`, a project cannot converge and its status says which verb on which kind was
//! refused; with the chart's ClusterRole applied again, the same project becomes Ready.

use std::time::Duration;

use k8s_openapi::api::rbac::v1::ClusterRole;
use kbeast_e2e::control_plane::OPERATOR_ACCOUNT;
use kbeast_e2e::harness::Env;
use kbeast_e2e::{helm_template, kubectl_apply, rbac_documents};
use kube::api::{Api, PostParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_create_is_reported_and_the_charts_role_converges() {
    let env = Env::start().await;
    if env.control_plane().is_none() {
        eprintln!("skipped: this test edits the chart's ClusterRole on the test control plane");
        return;
    }
    let roles: Api<ClusterRole> = Api::all(env.client.clone());
    let mut role = roles
        .get(OPERATOR_ACCOUNT)
        .await
        .expect("the chart's ClusterRole");
    for rule in role.rules.iter_mut().flatten() {
        rule.verbs.retain(|verb| verb != "create");
    }
    role.metadata.managed_fields = None;
    roles
        .replace(OPERATOR_ACCOUNT, &PostParams::default(), &role)
        .await
        .expect("ClusterRole without create");

    let (_operator, _) = env.operator(&[]);
    let namespace = "e2e-rbac";
    env.create_project(namespace, "minimal.yaml", |_| {}).await;
    let projects = env.projects(namespace);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let message = loop {
        let project = projects.get("docs").await.expect("project");
        let conditions = project.status.map(|s| s.conditions).unwrap_or_default();
        let refused = conditions.iter().find(|c| {
            c.type_ == "Ready"
                && c.status == "False"
                && c.message.contains("cannot create resource")
        });
        if let Some(c) = refused {
            break format!("{}={} {}: {}", c.type_, c.status, c.reason, c.message);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no Ready=False condition naming the refused verb and kind: {conditions:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let kind_named = [
        "serviceaccounts",
        "configmaps",
        "networkpolicies",
        "secrets",
    ]
    .iter()
    .any(|kind| message.contains(&format!("cannot create resource \"{kind}\"")));
    assert!(
        message.contains("forbidden") && kind_named,
        "the message names the verb and the kind: {message}"
    );

    // The chart's RBAC as shipped: the same project converges.
    kubectl_apply(&env.kubeconfig, &rbac_documents(&helm_template(&[])));
    env.wait_ready(namespace, "docs", Duration::from_secs(180))
        .await;
}
