//! The chart as users install it, on the real control plane: `helm install` (and, separately,
//! `kubectl apply -k config/install`) creates the CRD, the RBAC and the operator Deployment; the
//! operator runs as a pod (the node agent runs this build's `kbeast-operator` for the chart's
//! image) under its own ServiceAccount, with the in-cluster configuration, and the samples
//! become Ready with query pods of the chart's query image: the object-store sample too, on a
//! moto S3 server and an OpenAI-compatible embeddings API on this host.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kbeast_api::KnowledgeProject;
use kbeast_client::{DocumentInput, IngestRequest, SearchMode, SearchRequest};
use kbeast_e2e::control_plane::ControlPlane;
use kbeast_e2e::harness::api_keys;
use kbeast_e2e::{create_namespace, repo_root, rolled_out_for_generation, wait_for};
use kbeast_testkit::embeddings_api::EmbeddingsApi;
use kbeast_testkit::{Moto, tool};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

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

    object_store_sample_becomes_ready_serves_and_purges_on_delete(&plane).await;
}

/// The object-store sample against a moto S3 server and an OpenAI-compatible embeddings API on
/// this host (reached by the pods at the node's address): three pods share the prefix, a
/// document written through the Service is stored under it, and deleting the project (policy
/// Delete) runs the purge Job, which empties the prefix.
async fn object_store_sample_becomes_ready_serves_and_purges_on_delete(plane: &ControlPlane) {
    let Some(moto) = Moto::start("0.0.0.0") else {
        return;
    };
    moto.create_bucket("kbeast-tenants");
    let embedder_key = "sk-e2e-0123456789abcdef";
    let embeddings = EmbeddingsApi::start("0.0.0.0:0", embedder_key).await;
    let node = plane.agent.node_address();
    let namespace = "research";
    create_namespace(&plane.client, namespace).await;
    let secrets: Api<Secret> = Api::namespaced(plane.client.clone(), namespace);
    for (name, data) in [
        (
            "research-s3",
            json!({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}),
        ),
        ("research-embedder", json!({"api-key": embedder_key})),
    ] {
        let secret: Secret =
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
                .expect("secret");
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .expect("secret created");
    }
    let moto_endpoint = format!("http://{node}:{}", moto.port);
    let embeddings_endpoint = format!("http://{node}:{}/v1", embeddings.address.port());
    sample_becomes_ready(&plane.client, namespace, "object-store.yaml", |p| {
        p["spec"]["storage"]["objectStore"]["endpoint"] = moto_endpoint.into();
        // The default policy: the project's own prefix, <namespace>/<name>/.
        p["spec"]["storage"]["objectStore"]["uri"] =
            "s3://kbeast-tenants/research/research/".into();
        p["spec"]["embedding"]["endpoint"] = embeddings_endpoint.into();
    })
    .await;
    assert!(
        embeddings.requests() > 0,
        "the smoke checks embedded their query through the configured API"
    );

    let keys = api_keys(&plane.client, namespace, "research").await;
    let url = plane.service_url(namespace, "research", 8080).await;
    let writer =
        kbeast_client::Client::new(url.clone(), Some(keys["write-key"].clone())).expect("client");
    writer
        .ingest(&IngestRequest {
            documents: vec![DocumentInput {
                id: Some("q3".into()),
                text: "The quarterly report shows revenue up by a tenth.".into(),
                source: None,
                metadata: None,
            }],
        })
        .await
        .expect("ingested through the Service");
    let reader = kbeast_client::Client::new(url, Some(keys["read-key"].clone())).expect("client");
    // Any of the three pods answers from the shared prefix, each seeing the commit within its
    // refresh interval (1 s, `--refresh-interval-ms`).
    let search = || async {
        reader
            .search(&SearchRequest::new(
                "quarterly revenue",
                SearchMode::Hybrid,
                3,
            ))
            .await
            .expect("search")
            .hits
    };
    wait_for("the document is found", Duration::from_secs(30), || async {
        search().await.first().is_some_and(|h| h.doc_id == "q3")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..6 {
        let hits = search().await;
        assert_eq!(hits.first().map(|h| h.doc_id.as_str()), Some("q3"));
    }
    assert!(
        !moto.keys("kbeast-tenants", "research/").is_empty(),
        "the table is stored under the project's prefix"
    );

    let projects: Api<KnowledgeProject> = Api::namespaced(plane.client.clone(), namespace);
    projects
        .delete("research", &Default::default())
        .await
        .expect("project deleted");
    wait_for(
        "the project is gone, its prefix purged",
        CONVERGE,
        || async {
            projects
                .get_opt("research")
                .await
                .is_ok_and(|p| p.is_none())
        },
    )
    .await;
    assert_eq!(
        moto.keys("kbeast-tenants", "research/"),
        Vec::<String>::new(),
        "the purge Job emptied the prefix"
    );
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
