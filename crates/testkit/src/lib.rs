//! Test support shared by kbeast's crates: a scripted in-memory Kubernetes API behind a real
//! `kube::Client`, the recorded real-server exchanges in `shared/k8s-golden/`, a moto S3 server
//! and an OpenAI-compatible embeddings API.

pub mod embeddings_api;
pub mod fake_api;
pub mod golden;
pub mod moto;

/// Where `scripts/install-test-tools.sh` installs the pinned test tools.
pub fn tool_dir() -> std::path::PathBuf {
    std::env::var_os("KBEAST_TOOLS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/kbeast/tools")
        })
}

/// A pinned tool (helm, kubectl, kubernetes-validate) installed by `scripts/install-test-tools.sh`.
pub fn tool(name: &str) -> std::path::PathBuf {
    let path = tool_dir().join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-tools.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A binary of this workspace (`kbeast-query`, `kbeast-operator`), from the target folder of
/// the running test: `scripts/build-binaries.sh` (run by `scripts/test.sh`) builds it there.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-binaries.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

pub use fake_api::{Failure, FakeApi, RecordedRequest};
pub use moto::Moto;
