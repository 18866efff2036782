//! The chart as users install it: `helm template | kubectl apply --server-side` into the local
//! control plane, then the operator started with exactly the chart's arguments reconciles a
//! sample project.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kbeast_api::KnowledgeProject;
use kbeast_e2e::{
    create_namespace, ready_for_generation, repo_root, start_operator_with, wait_for,
};
use kbeast_localcluster::{LocalCluster, Options};
use kbeast_testkit::tool;
use kube::api::{Api, PostParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_installs_and_its_operator_reconciles_a_sample() {
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    let cluster = LocalCluster::start(Options {
        kubeconfig_path: Some(kubeconfig.clone()),
        ..Options::default()
    })
    .await
    .expect("local cluster starts");
    let client = cluster.client().expect("client");
    create_namespace(&client, "kbeast-system").await;

    let rendered = Command::new(tool("helm"))
        .args(["template", "kbeast"])
        .arg(repo_root().join("charts/kbeast"))
        .args(["--namespace", "kbeast-system"])
        .output()
        .expect("helm runs");
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let mut apply = Command::new(tool("kubectl"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        // The emulator serves no OpenAPI documents for kubectl's client-side validation.
        .args(["apply", "--server-side", "--validate=false", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    apply
        .stdin
        .take()
        .expect("stdin")
        .write_all(&rendered.stdout)
        .expect("manifests written");
    let applied = apply.wait_with_output().expect("kubectl finishes");
    let stdout = String::from_utf8_lossy(&applied.stdout);
    assert!(
        applied.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/knowledgeprojects.kbeast.io",
        "clusterrole.rbac.authorization.k8s.io/kbeast",
        "deployment.apps/kbeast",
    ] {
        assert!(stdout.contains(object), "{object} applied:\n{stdout}");
    }

    // Run the operator exactly as the chart's Deployment would, with the pod's namespace
    // filled in and the metrics port moved off 8080.
    let deployment: Deployment = Api::namespaced(client.clone(), "kbeast-system")
        .get("kbeast")
        .await
        .expect("operator Deployment");
    let container = &deployment
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod")
        .containers[0];
    assert_eq!(
        container.command.as_deref(),
        Some(&["kbeast-operator".to_string()][..])
    );
    let args: Vec<String> = container
        .args
        .clone()
        .expect("args")
        .into_iter()
        .map(|arg| arg.replace("$(POD_NAMESPACE)", "kbeast-system"))
        .map(|arg| {
            if arg.starts_with("--listen=") {
                "--listen=127.0.0.1:0".to_string()
            } else {
                arg
            }
        })
        .collect();
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let _operator = start_operator_with(&kubeconfig, &arg_refs);

    create_namespace(&client, "tenants").await;
    let projects: Api<KnowledgeProject> = Api::namespaced(client.clone(), "tenants");
    let sample: KnowledgeProject = serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join("config/samples/autoscaled.yaml"))
            .expect("sample"),
    )
    .expect("sample parses");
    projects
        .create(&PostParams::default(), &sample)
        .await
        .expect("project created");
    wait_for(
        "the sample to become Ready",
        Duration::from_secs(120),
        || async {
            cluster.set_pods_ready("tenants", "app.kubernetes.io/instance=support", true);
            projects
                .get("support")
                .await
                .is_ok_and(|p| ready_for_generation(&p))
        },
    )
    .await;
    let deployment: Deployment = Api::namespaced(client.clone(), "tenants")
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
}
