//! Helpers for the install tests: where the repository and the pinned tools are, and how to
//! run helm.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The chart's folder.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/kbeast")
}

pub use kbeast_testkit::tool;

/// Output of a command, or a panic with its stderr.
pub fn run(command: &mut Command) -> String {
    let output = command.output().expect("the tool starts");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// `helm template` of the chart with extra arguments.
pub fn helm_template(args: &[&str]) -> Result<String, String> {
    let output = Command::new(tool("helm"))
        .args(["template", "kbeast"])
        .arg(chart_dir())
        .args(["--namespace", "kbeast-system"])
        .args(args)
        .output()
        .expect("helm starts");
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).expect("UTF-8 output"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// The documents of a multi-document YAML stream.
pub fn documents(yaml: &str) -> Vec<serde_yaml::Value> {
    yaml.split("\n---")
        .filter_map(|doc| serde_yaml::from_str::<serde_yaml::Value>(doc).ok())
        .filter(|doc| doc.get("kind").is_some())
        .collect()
}

pub use kbeast_testkit::golden::check_or_update;
