//! Shared steps of the end-to-end tests in `tests/`: they start the real `kbeast-operator`
//! against the local control plane (`kbeast-localcluster`), or a real cluster.

pub mod children;
pub mod harness;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kbeast_api::KnowledgeProject;
use kube::Client;
use kube::api::{Api, PostParams};

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

pub async fn install_crd(client: &Client) {
    let crd: CustomResourceDefinition = serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join("crds/kbeast.io_knowledgeprojects.yaml"))
            .expect("crds/"),
    )
    .expect("CRD parses");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    match api.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => panic!("CRD not created: {error}"),
    }
    wait_for("CRD established", Duration::from_secs(10), || async {
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

pub async fn create_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("valid");
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

pub fn ready_for_generation(project: &KnowledgeProject) -> bool {
    let Some(status) = &project.status else {
        return false;
    };
    let generation = project.metadata.generation;
    status.observed_generation == generation
        && status.conditions.iter().any(|c| {
            c.type_ == "Ready" && c.status == "True" && c.observed_generation == generation
        })
}
