//! The Helm chart: lint, render over the values matrix, validate the rendered built-in kinds
//! against Kubernetes 1.29–1.35, snapshots, the values schema, and parity with `crds/` and
//! `config/install/`. Regenerate snapshots with `KBEAST_UPDATE_GOLDEN=1`.

use std::process::Command;

use kbeast_install_tests::{
    chart_dir, check_or_update, documents, helm_template, repo_root, run, tool,
};

const VALUES_MATRIX: [&str; 4] = [
    "default-values.yaml",
    "watch-namespaces-values.yaml",
    "monitoring-values.yaml",
    "minimal-values.yaml",
];

fn values(file: &str) -> String {
    chart_dir().join("ci").join(file).display().to_string()
}

#[test]
fn lint_is_clean_for_every_values_file() {
    for file in VALUES_MATRIX {
        run(Command::new(tool("helm"))
            .args(["lint", "--strict"])
            .arg(chart_dir())
            .args(["--values", &values(file)]));
    }
}

#[test]
fn rendered_output_matches_the_snapshots() {
    for file in VALUES_MATRIX {
        let rendered = helm_template(&["--values", &values(file)]).expect("renders");
        check_or_update(
            &chart_dir()
                .join("tests/golden")
                .join(file.replace("-values", "")),
            &rendered,
            "review the change, then regenerate with KBEAST_UPDATE_GOLDEN=1",
        );
    }
}

#[test]
fn built_in_kinds_validate_strictly_on_kubernetes_1_29_to_1_35() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut files = Vec::new();
    for file in VALUES_MATRIX {
        let rendered = helm_template(&["--values", &values(file)]).expect("renders");
        for (index, document) in documents(&rendered).into_iter().enumerate() {
            let api_version = document["apiVersion"].as_str().unwrap_or("");
            // Prometheus Operator kinds are not part of Kubernetes; their schemas are not there.
            if api_version.starts_with("monitoring.coreos.com/") {
                continue;
            }
            let path = dir.path().join(format!("{file}-{index}.yaml"));
            std::fs::write(&path, serde_yaml::to_string(&document).expect("YAML"))
                .expect("writable");
            files.push(path);
        }
    }
    assert!(
        files.len() >= 20,
        "rendered {} built-in objects",
        files.len()
    );
    for minor in 29..=35 {
        let output = Command::new(tool("kubernetes-validate"))
            .args(["--strict", "--quiet", "-k", &format!("1.{minor}.0")])
            .args(&files)
            .output()
            .expect("kubernetes-validate starts");
        assert!(
            output.status.success(),
            "Kubernetes 1.{minor}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn the_schema_rejects_bad_values_naming_them() {
    let cases = [
        ("replicaCount=0", "/replicaCount"),
        ("replicaCount=two", "/replicaCount"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("watchNamespaces[0]=Not_A_Namespace", "/watchNamespaces/0"),
        ("concurrency=0", "/concurrency"),
        ("metrics.port=70000", "/metrics/port"),
        (
            "metrics.serviceMonitor.interval=soon",
            "/metrics/serviceMonitor/interval",
        ),
        ("crds.install=maybe", "/crds/install"),
        ("unknownValue=1", "unknownValue"),
        ("leaderElection.enabled=false", "/replicaCount"),
    ];
    for (set, field) in cases {
        let error = helm_template(&["--set", set]).expect_err(set);
        assert!(
            error.contains(field),
            "--set {set}: expected {field:?} in:\n{error}"
        );
    }
}

#[test]
fn the_chart_crd_is_byte_identical_to_crds() {
    let chart = std::fs::read(chart_dir().join("files/crds/kbeast.io_knowledgeprojects.yaml"))
        .expect("chart CRD");
    let checked_in =
        std::fs::read(repo_root().join("crds/kbeast.io_knowledgeprojects.yaml")).expect("crds/");
    assert!(
        chart == checked_in,
        "copy crds/kbeast.io_knowledgeprojects.yaml to charts/kbeast/files/crds/"
    );
    let rendered = helm_template(&[]).expect("renders");
    let text = String::from_utf8(checked_in).expect("UTF-8");
    assert!(
        rendered.contains(text.trim_end()),
        "the rendered chart carries the CRD unchanged"
    );
    let without = helm_template(&["--set", "crds.install=false"]).expect("renders");
    assert!(!without.contains("kind: CustomResourceDefinition"));
}

#[test]
fn plain_manifests_match_the_default_render() {
    let rendered = helm_template(&[]).expect("renders");
    check_or_update(
        &repo_root().join("config/install/kbeast.yaml"),
        &rendered,
        "run scripts/render-install-manifests.sh",
    );
    let kustomized = run(Command::new(tool("kubectl"))
        .arg("kustomize")
        .arg(repo_root().join("config/install")));
    let kinds: Vec<String> = documents(&kustomized)
        .iter()
        .map(|d| d["kind"].as_str().unwrap_or("").to_string())
        .collect();
    for kind in [
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "Deployment",
        "ServiceAccount",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "kustomize output has a {kind}: {kinds:?}"
        );
    }
}

#[test]
fn the_operator_runs_locked_down_with_leader_election() {
    let rendered = helm_template(&[]).expect("renders");
    let deployment = documents(&rendered)
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(args.contains(&"--leader-election=true"), "{args:?}");
    assert!(
        args.contains(&"--query-image=ghcr.io/kbeast/kbeast:0.1.0"),
        "{args:?}"
    );
}

#[test]
fn every_value_is_documented_in_the_chart_readme() {
    let values: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(chart_dir().join("values.yaml")).expect("values.yaml"),
    )
    .expect("values.yaml parses");
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).expect("chart README");
    let mut missing = Vec::new();
    let mut stack = vec![(String::new(), values)];
    while let Some((prefix, value)) = stack.pop() {
        match value {
            serde_yaml::Value::Mapping(map) if !map.is_empty() => {
                for (key, child) in map {
                    let key = key.as_str().unwrap_or_default();
                    let path = if prefix.is_empty() {
                        key.to_string()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    stack.push((path, child));
                }
            }
            _ => {
                if !readme.contains(&format!("`{prefix}`")) {
                    missing.push(prefix);
                }
            }
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "values not in charts/kbeast/README.md: {missing:?}"
    );
}
