//! Shared steps of the end-to-end tests in `tests/`: they start the real `kbeast-operator`
//! against the local control plane (`kbeast-localcluster`), or a real cluster.

pub mod children;
pub mod control_plane;
pub mod harness;
pub mod hollow;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kbeast_api::KnowledgeProject;
use kube::Client;
use kube::api::{Api, PostParams};

/// Makes a project on the `builtin` embedding provider (named, or the default) use `hash`.
/// `builtin` runs all-MiniLM-L6-v2, whose weights the query image carries but the local pod
/// runner's query processes do not; the end-to-end tests check the operator, not the model.
pub fn with_test_embedder(project: &mut serde_json::Value) {
    let spec = &mut project["spec"];
    let provider = spec["embedding"]["provider"].as_str().unwrap_or("builtin");
    if provider == "builtin" {
        spec["embedding"]["provider"] = "hash".into();
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A binary built by `scripts/build-binaries.sh`, next to this test's target folder.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let path = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-binaries.sh",
        path.display()
    );
    path
}

/// A running operator process; dropping it kills it.
pub struct Operator(pub Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn start_operator(kubeconfig: &std::path::Path, query_image: &str) -> Operator {
    start_operator_with(
        kubeconfig,
        &[
            "run",
            "--listen=127.0.0.1:0",
            "--operator-namespace=kbeast-system",
            &format!("--query-image={query_image}"),
        ],
    )
}

/// Starts `kbeast-operator` with exactly these arguments, plus `--kubeconfig`. Its JSON log
/// goes to a file in `$KBEAST_E2E_OPERATOR_LOGS` when that is set, else nowhere.
pub fn start_operator_with(kubeconfig: &std::path::Path, args: &[&str]) -> Operator {
    Operator(
        Command::new(binary("kbeast-operator"))
            .args(args)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .stdout(operator_log())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("kbeast-operator starts"),
    )
}

fn operator_log() -> Stdio {
    static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let Some(dir) = std::env::var_os("KBEAST_E2E_OPERATOR_LOGS") else {
        return Stdio::null();
    };
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = PathBuf::from(dir).join(format!(
        "{}-{}-operator-{n}.log",
        std::env::current_exe()
            .ok()
            .and_then(|e| e.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_default(),
        std::process::id()
    ));
    match std::fs::File::create(&path) {
        Ok(file) => {
            eprintln!("operator log: {}", path.display());
            file.into()
        }
        Err(error) => panic!("KBEAST_E2E_OPERATOR_LOGS: {}: {error}", path.display()),
    }
}

/// Waits until the KnowledgeProject CRD is established.
pub async fn wait_for_crd(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    wait_for("CRD established", Duration::from_secs(30), || async {
        api.get("knowledgeprojects.kbeast.io")
            .await
            .ok()
            .and_then(|crd| crd.status)
            .is_some_and(|s| {
                s.conditions
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            })
    })
    .await;
}

/// The documents of rendered manifests that install the CRD and the operator's RBAC (not the
/// operator's Deployment, which the tests replace with a local process).
pub fn rbac_documents(rendered: &str) -> String {
    let kinds = [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ];
    rendered
        .split("\n---")
        .filter(|doc| {
            doc.lines()
                .any(|l| kinds.iter().any(|k| l == format!("kind: {k}")))
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// `kubectl apply --server-side --force-conflicts -f -` with `kubeconfig` (as an installer, it
/// takes over fields someone else changed); returns kubectl's output.
pub fn kubectl_apply(kubeconfig: &std::path::Path, manifests: &str) -> String {
    use std::io::Write;
    let mut apply = Command::new(kbeast_testkit::tool("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["apply", "--server-side", "--force-conflicts", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    apply
        .stdin
        .take()
        .expect("stdin")
        .write_all(manifests.as_bytes())
        .expect("manifests written");
    let applied = apply.wait_with_output().expect("kubectl finishes");
    let stdout = String::from_utf8_lossy(&applied.stdout).into_owned();
    assert!(
        applied.status.success(),
        "kubectl apply failed: {stdout}{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    stdout
}

/// Writes `<dir>/<namespace>-<name>.kubeconfig`: the cluster of `admin_kubeconfig`, as
/// ServiceAccount `namespace/name` with a token from the TokenRequest API.
pub async fn service_account_kubeconfig(
    client: &Client,
    admin_kubeconfig: &std::path::Path,
    dir: &std::path::Path,
    namespace: &str,
    name: &str,
) -> PathBuf {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(24 * 3600),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let token = loop {
        // The ServiceAccount may not exist yet right after the chart was applied.
        match accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
        {
            Ok(issued) => break issued.status.map(|s| s.token),
            Err(error) if Instant::now() > deadline => {
                panic!("a token for ServiceAccount {namespace}/{name}: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let mut config =
        kube::config::Kubeconfig::read_from(admin_kubeconfig).expect("admin kubeconfig");
    for named in &mut config.auth_infos {
        if let Some(auth) = named.auth_info.as_mut() {
            *auth = kube::config::AuthInfo {
                token: token.clone().map(Into::into),
                ..Default::default()
            };
        }
    }
    let path = dir.join(format!("{namespace}-{name}.kubeconfig"));
    std::fs::write(
        &path,
        serde_yaml::to_string(&config).expect("kubeconfig YAML"),
    )
    .expect("kubeconfig written");
    path
}

/// Creates namespace `name` with the `restricted` Pod Security Standard enforced, so every
/// query, purge and operator pod of a test must pass it.
pub async fn create_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace = serde_json::from_value(serde_json::json!({"metadata": {
        "name": name,
        "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
    }}))
    .expect("valid");
    match api.create(&PostParams::default(), &namespace).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => panic!("namespace {name} not created: {error}"),
    }
}

pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether the project's current generation is fully rolled out: `Ready=True` (pods serve) and
/// `Progressing=False` with reason `RolloutComplete`, both for the current generation. Ready
/// alone means "available to serve", which also holds while an update rolls out.
pub fn rolled_out_for_generation(project: &KnowledgeProject) -> bool {
    let Some(status) = &project.status else {
        return false;
    };
    let generation = project.metadata.generation;
    let current = |type_: &str, value: &str| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == value && c.observed_generation == generation)
    };
    status.observed_generation == generation
        && current("Ready", "True").is_some()
        && current("Progressing", "False").is_some_and(|c| c.reason == "RolloutComplete")
}

/// `helm template kbeast charts/kbeast --namespace kbeast-system` with extra arguments.
pub fn helm_template(values: &[&str]) -> String {
    let rendered = Command::new(kbeast_testkit::tool("helm"))
        .args(["template", "kbeast"])
        .arg(repo_root().join("charts/kbeast"))
        .args(["--namespace", "kbeast-system"])
        .args(values)
        .output()
        .expect("helm runs");
    assert!(
        rendered.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    String::from_utf8(rendered.stdout).expect("UTF-8 manifests")
}
