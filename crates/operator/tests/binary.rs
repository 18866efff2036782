//! The `kbeast-operator` binary as a user runs it.

use std::process::Command;

fn operator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kbeast-operator"))
}

fn sample(name: &str) -> String {
    format!("{}/../../config/samples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn crd_prints_the_checked_in_crd() {
    let output = operator().arg("crd").output().expect("runs");
    assert!(output.status.success());
    let checked_in = std::fs::read(format!(
        "{}/../../crds/kbeast.io_knowledgeprojects.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("crds/ is checked in");
    assert_eq!(output.stdout, checked_in);
}

#[test]
fn render_prints_every_child_of_a_sample() {
    for (file, kinds) in [
        (
            "minimal.yaml",
            vec![
                "ServiceAccount",
                "NetworkPolicy",
                "ConfigMap",
                "Secret",
                "PersistentVolumeClaim",
                "Service",
                "Deployment",
                "PodDisruptionBudget",
            ],
        ),
        (
            "autoscaled.yaml",
            vec![
                "ServiceAccount",
                "NetworkPolicy",
                "ConfigMap",
                "Secret",
                "PersistentVolumeClaim",
                "Service",
                "Deployment",
                "PodDisruptionBudget",
                "HorizontalPodAutoscaler",
            ],
        ),
        (
            "object-store.yaml",
            vec![
                "ServiceAccount",
                "NetworkPolicy",
                "ConfigMap",
                "Secret",
                "Service",
                "Deployment",
                "PodDisruptionBudget",
            ],
        ),
    ] {
        let output = operator()
            .args([
                "render",
                "-f",
                &sample(file),
                "--query-image",
                "registry.local/kbeast:test",
            ])
            .output()
            .expect("runs");
        assert!(
            output.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).expect("UTF-8");
        let rendered: Vec<String> = text
            .split("---\n")
            .filter(|doc| !doc.trim().is_empty())
            .map(|doc| {
                let value: serde_yaml::Value =
                    serde_yaml::from_str(doc).expect("each document is YAML");
                value["kind"].as_str().expect("kind").to_string()
            })
            .collect();
        assert_eq!(rendered, kinds, "{file}");
        assert!(
            text.contains("image: registry.local/kbeast:test"),
            "{file}: --query-image is used"
        );
    }
}

#[test]
fn render_of_a_bad_file_fails_naming_the_problem() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: kbeast.io/v1alpha1\nkind: KnowledgeProject\nmetadata: {name: x}\nspec:\n  storage: {ephemeral: {}}\n  resources: {requests: {cpu: lots}}\n",
    )
    .expect("writable");
    let output = operator()
        .args(["render", "-f"])
        .arg(&path)
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("spec.resources.requests.cpu"), "{stderr}");

    let output = operator()
        .args(["render", "-f", "/no/such/file.yaml"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/no/such/file.yaml"));
}

#[test]
fn run_without_a_reachable_api_server_exits_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    // Port 9 (discard) on loopback: nothing listens there.
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\nusers: [{name: u, user: {}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
    )
    .expect("writable");
    let output = operator()
        .args(["run", "--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the Kubernetes API server did not answer"),
        "{stderr}"
    );
}
