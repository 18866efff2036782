//! What a real API server stores for an object contains every field that was sent: the
//! defaulting and canonicalisation recorded in k8s-golden never make a sent object look out
//! of sync, so a converged project sends no writes.

use kbeast_operator::sync_check::is_subset;
use kbeast_testkit::golden;

#[test]
fn every_created_object_is_in_sync_with_what_the_server_stored() {
    let mut checked = 0;
    for scenario in [
        "hpa-pdb-netpol",
        "configmap-crud",
        "pod-status",
        "generation",
    ] {
        for (step, sent, stored) in golden::created_objects(scenario) {
            assert!(
                is_subset(&sent, &stored),
                "{scenario}/{step}: sent {sent:#} stored {stored:#}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "checked {checked} objects");
}

#[test]
fn a_server_side_applied_deployment_is_in_sync_with_the_stored_one() {
    let step = golden::step("ssa-deployment", "apply-op-create");
    let sent: serde_json::Value = match &step["request"]["body"] {
        body if body.is_object() => body.clone(),
        _ => serde_yaml::from_str(
            step["request"]["bodyText"]
                .as_str()
                .expect("apply body text"),
        )
        .expect("apply body is YAML"),
    };
    let stored = &step["response"]["body"];
    assert!(is_subset(&sent, stored));

    let mut drifted = stored.clone();
    drifted["spec"]["template"]["spec"]["containers"][0]["image"] = "someone/else:latest".into();
    assert!(!is_subset(&sent, &drifted), "a changed image is drift");
}
