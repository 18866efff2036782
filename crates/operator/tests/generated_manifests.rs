//! The checked-in CRD and the rendered children of every sample match what the code generates.
//! Regenerate with `KBEAST_UPDATE_GOLDEN=1 cargo test -p kbeast-operator --test generated_manifests`.

use std::path::{Path, PathBuf};

use kbeast_operator::build::ApiKeySet;
use kbeast_operator::render::{crd_yaml, render_children};
use kbeast_operator::settings::OperatorSettings;
use kbeast_testkit::golden::check_or_update;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn checked_in_crd_matches_the_generated_one() {
    check_or_update(
        &repo_root().join("crds/kbeast.io_knowledgeprojects.yaml"),
        &crd_yaml(),
        "run `cargo run -p kbeast-operator -- crd > crds/kbeast.io_knowledgeprojects.yaml`",
    );
}

#[test]
fn rendered_samples_match_their_snapshots() {
    let keys = ApiKeySet {
        read: "kb_r_test-read".into(),
        write: "kb_w_test-write".into(),
        admin: "kb_a_test-admin".into(),
    };
    let samples = repo_root().join("config/samples");
    let mut rendered = 0;
    for entry in std::fs::read_dir(&samples).expect("samples exist") {
        let path = entry.expect("readable entry").path();
        let yaml = std::fs::read_to_string(&path).expect("readable sample");
        let manifests = render_children(&yaml, &OperatorSettings::default(), &keys)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        check_or_update(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/golden")
                .join(format!("render-{name}")),
            &manifests,
            "review the change, then regenerate with KBEAST_UPDATE_GOLDEN=1",
        );
        rendered += 1;
    }
    assert!(rendered >= 3);
}

#[test]
fn render_rejects_an_invalid_spec_naming_the_field() {
    let yaml = "apiVersion: kbeast.io/v1alpha1\nkind: KnowledgeProject\nmetadata: {name: bad}\nspec:\n  storage: {ephemeral: {}}\n  disruption: {maxUnavailable: 0}\n";
    let error = render_children(yaml, &OperatorSettings::default(), &ApiKeySet::generate())
        .expect_err("maxUnavailable 0 is invalid");
    assert!(
        error.to_string().contains("spec.disruption.maxUnavailable"),
        "{error}"
    );
}
