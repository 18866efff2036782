//! The chart as users install it, on the real control plane: `helm install` (and, separately,
//! `kubectl apply -k config/install`) creates the CRD, the RBAC and the operator Deployment; the
//! operator runs as a pod (the node agent runs this build's `kbeast-operator` for the chart's
//! image) under its own ServiceAccount, with the in-cluster configuration, and the samples
//! become Ready with query pods of the chart's query image.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kbeast_api::KnowledgeProject;
use kbeast_e2e::control_plane::ControlPlane;
use kbeast_e2e::{create_namespace, repo_root, rolled_out_for_generation, wait_for};
use kbeast_testkit::tool;
use kube::Client;
use kube::api::{Api, PostParams};

const CONVERGE: Duration = Duration::from_secs(240);

fn run(program: &Path, args: &[&str], kubeconfig: &Path) -> String {
    let output = Command::new(program)
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{} {args:?}: {stdout}{}",
        program.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Waits until the operator's Deployment is available: its pod passed its readiness probe.
async fn wait_for_operator(client: &Client) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "kbeast-system");
    wait_for("the operator Deployment available", CONVERGE, || async {
        deployments
            .get("kbeast")
            .await
            .ok()
            .and_then(|d| d.status)
            .and_then(|s| s.available_replicas)
            .unwrap_or(0)
            >= 1
    })
    .await;
}

/// Creates a sample (edited for this machine) in `namespace` and waits for Ready.
async fn sample_becomes_ready(
    client: &Client,
    namespace: &str,
    sample: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> KnowledgeProject {
    create_namespace(client, namespace).await;
    let text =
        std::fs::read_to_string(repo_root().join("config/samples").join(sample)).expect("sample");
    let mut value: serde_json::Value = serde_yaml::from_str(&text).expect("sample parses");
    kbeast_e2e::with_test_embedder(&mut value);
    edit(&mut value);
    let project: KnowledgeProject = serde_json::from_value(value).expect("valid project");
    let name = project.metadata.name.clone().expect("name");
    let projects: Api<KnowledgeProject> = Api::namespaced(client.clone(), namespace);
    projects
        .create(&PostParams::default(), &project)
        .await
        .expect("project created");
    wait_for(&format!("{namespace}/{name} Ready"), CONVERGE, || async {
        projects
            .get(&name)
            .await
            .is_ok_and(|p| rolled_out_for_generation(&p))
    })
    .await;
    projects.get(&name).await.expect("project")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_runs_the_operator_in_cluster_and_the_samples_become_ready() {
    if std::env::var_os("KBEAST_E2E_KUBECONFIG").is_some() {
        eprintln!("skipped on a real cluster: the chart's image is this build on the test node");
        return;
    }
    let plane = ControlPlane::start(&[], None).await;
    let stdout = run(
        &tool("helm"),
        &[
            "install",
            "kbeast",
            &repo_root().join("charts/kbeast").to_string_lossy(),
            "--namespace",
            "kbeast-system",
            "--create-namespace",
        ],
        &plane.admin_kubeconfig,
    );
    assert!(stdout.contains("STATUS: deployed"), "{stdout}");
    wait_for_operator(&plane.client).await;

    sample_becomes_ready(&plane.client, "tenants", "minimal.yaml", |_| {}).await;
    // The autoscaled sample asks for an NFS class; here the node agent's class serves it.
    let project = sample_becomes_ready(&plane.client, "support", "autoscaled.yaml", |p| {
        p["spec"]["storage"]["volume"]["storageClassName"] = "local-path".into();
    })
    .await;
    let deployment: Deployment = Api::namespaced(plane.client.clone(), "support")
        .get("support")
        .await
        .expect("query Deployment");
    let image = deployment
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod")
        .containers[0]
        .image
        .clone();
    assert_eq!(
        image.as_deref(),
        Some("ghcr.io/kbeast/kbeast:0.1.0"),
        "the chart's query image"
    );
    // The real HPA scales to its minimum (no metrics server here), and the operator leaves
    // replicas to it.
    let projects: Api<KnowledgeProject> = Api::namespaced(plane.client.clone(), "support");
    wait_for("2/2 pods, the HPA's minimum", CONVERGE, || async {
        projects.get("support").await.is_ok_and(|p| {
            rolled_out_for_generation(&p)
                && p.status.and_then(|s| s.replica_summary).as_deref() == Some("2/2")
        })
    })
    .await;
    drop(project);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_k_config_install_runs_the_operator_in_cluster() {
    if std::env::var_os("KBEAST_E2E_KUBECONFIG").is_some() {
        eprintln!("skipped on a real cluster: the manifests' image is this build on the test node");
        return;
    }
    let plane = ControlPlane::start(&[], None).await;
    let install = repo_root().join("config/install");
    let stdout = run(
        &tool("kubectl"),
        &["apply", "--server-side", "-k", &install.to_string_lossy()],
        &plane.admin_kubeconfig,
    );
    for object in [
        "namespace/kbeast-system",
        "customresourcedefinition.apiextensions.k8s.io/knowledgeprojects.kbeast.io",
        "clusterrole.rbac.authorization.k8s.io/kbeast",
        "deployment.apps/kbeast",
    ] {
        assert!(stdout.contains(object), "{object} applied:\n{stdout}");
    }
    wait_for_operator(&plane.client).await;
    sample_becomes_ready(&plane.client, "tenants", "minimal.yaml", |_| {}).await;
}
