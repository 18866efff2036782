//! The README's zero-cluster tour: `scripts/sandbox.sh --check` starts the real control plane,
//! a node agent, the operator under the chart's RBAC and a sample project, ingests the sample corpus, and runs the search command it
//! prints, which must find the rollouts page for a question about rollbacks.

use std::process::Command;

use kbeast_e2e::harness::free_port;
use kbeast_e2e::repo_root;

#[test]
fn the_sandbox_starts_ingests_and_answers_its_printed_search() {
    if std::env::var_os("KBEAST_E2E_KUBECONFIG").is_some() {
        eprintln!("skipped on a real cluster: the sandbox starts its own control plane");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let target_dir = kbeast_e2e::binary("kbeast-operator")
        .parent()
        .and_then(|debug| debug.parent())
        .expect("target dir")
        .to_path_buf();
    let output = Command::new("bash")
        .arg(repo_root().join("scripts/sandbox.sh"))
        .args(["--check", "--port", &free_port().to_string()])
        // The test build has the binaries already; the tools come from the test script.
        .env("KBEAST_SANDBOX_SKIP_BUILD", "1")
        .env("KBEAST_SANDBOX_DIR", dir.path())
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "sandbox failed ({}):\n{stdout}\n{stderr}\nnode agent log:\n{}\noperator log:\n{}",
        output.status,
        std::fs::read_to_string(dir.path().join("node-agent.log")).unwrap_or_default(),
        std::fs::read_to_string(dir.path().join("operator.log"))
            .unwrap_or_default()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        stdout.contains("condition met"),
        "kubectl wait succeeded:\n{stdout}"
    );
    assert!(
        stdout.contains("/v1/search"),
        "prints the search command:\n{stdout}"
    );
}
