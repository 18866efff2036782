//! Every CEL rule of the CRD, evaluated client-side with kube's `cel` support: each rule
//! rejects what it should, with its message, and accepts what it should.

use kbeast_api::KnowledgeProject;
use serde_json::{Value, json};

fn project(name: &str, spec: Value) -> KnowledgeProject {
    serde_json::from_value(json!({
        "apiVersion": "kbeast.io/v1alpha1",
        "kind": "KnowledgeProject",
        "metadata": {"name": name, "namespace": "tenants"},
        "spec": spec,
    }))
    .expect("test project parses")
}

fn volume(size: &str, access_mode: &str) -> Value {
    json!({"volume": {"size": size, "accessMode": access_mode}})
}

/// The messages of the rules a project violates on creation.
fn create_errors(project: &KnowledgeProject) -> Vec<String> {
    match project.validate_cel() {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_iter().map(|e| e.to_string()).collect(),
    }
}

fn update_errors(new: &KnowledgeProject, old: &KnowledgeProject) -> Vec<String> {
    match new.validate_cel_update(old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn creation_rules_reject_with_their_message() {
    let cases: Vec<(&str, &str, Value, Option<&str>)> = vec![
        (
            "minimal volume project",
            "docs",
            json!({"storage": volume("1Gi", "ReadWriteOnce")}),
            None,
        ),
        (
            "two storage kinds",
            "docs",
            json!({"storage": {"volume": {"size": "1Gi", "accessMode": "ReadWriteOnce"}, "ephemeral": {}}}),
            Some("exactly one of spec.storage.volume"),
        ),
        (
            "no storage kind",
            "docs",
            json!({"storage": {}}),
            Some("exactly one of spec.storage.volume"),
        ),
        (
            "minReplicas above maxReplicas",
            "docs",
            json!({"storage": {"ephemeral": {}}, "autoscaling": {"enabled": true, "minReplicas": 5, "maxReplicas": 2}}),
            Some("minReplicas must be less than or equal to spec.autoscaling.maxReplicas"),
        ),
        (
            "min equal to max is fine",
            "docs",
            json!({"storage": volume("1Gi", "ReadWriteMany"), "autoscaling": {"enabled": true, "minReplicas": 2, "maxReplicas": 2}}),
            None,
        ),
        (
            "replicas together with autoscaling",
            "docs",
            json!({"storage": volume("1Gi", "ReadWriteMany"), "replicas": 2, "autoscaling": {"enabled": true, "maxReplicas": 4}}),
            Some("spec.replicas must not be set while spec.autoscaling.enabled is true"),
        ),
        (
            "replicas with autoscaling disabled is fine",
            "docs",
            json!({"storage": volume("1Gi", "ReadWriteMany"), "replicas": 2, "autoscaling": {"enabled": false, "maxReplicas": 4}}),
            None,
        ),
        (
            "ephemeral storage with two replicas",
            "docs",
            json!({"storage": {"ephemeral": {}}, "replicas": 2}),
            Some(
                "storage.ephemeral gives each pod its own empty data directory, so it supports at most 1 replica",
            ),
        ),
        (
            "ephemeral storage with autoscaling past one",
            "docs",
            json!({"storage": {"ephemeral": {}}, "autoscaling": {"enabled": true, "maxReplicas": 3}}),
            Some(
                "storage.ephemeral gives each pod its own empty data directory, so it supports at most 1 replica",
            ),
        ),
        (
            "ephemeral storage with one replica",
            "docs",
            json!({"storage": {"ephemeral": {}}, "replicas": 1}),
            None,
        ),
        (
            "ReadWriteOnce volume with two replicas",
            "docs",
            json!({"storage": volume("1Gi", "ReadWriteOnce"), "replicas": 2}),
            Some("accessMode ReadWriteOnce supports at most 1 replica"),
        ),
        (
            "ReadWriteOnce volume with autoscaling past one",
            "docs",
            json!({"storage": volume("1Gi", "ReadWriteOnce"), "autoscaling": {"enabled": true, "maxReplicas": 3}}),
            Some("accessMode ReadWriteOnce supports at most 1 replica"),
        ),
        (
            "ReadWriteMany volume scales out",
            "docs",
            json!({"storage": volume("1Gi", "ReadWriteMany"), "replicas": 3}),
            None,
        ),
        (
            "chunk overlap of half the chunk size",
            "docs",
            json!({"storage": {"ephemeral": {}}, "search": {"chunkSize": 100, "chunkOverlap": 50}}),
            Some("spec.search.chunkOverlap must be less than half of spec.search.chunkSize"),
        ),
        (
            "chunk overlap just under half",
            "docs",
            json!({"storage": {"ephemeral": {}}, "search": {"chunkSize": 100, "chunkOverlap": 49}}),
            None,
        ),
        (
            "builtin provider with another dimension",
            "docs",
            json!({"storage": {"ephemeral": {}}, "embedding": {"provider": "builtin", "dimension": 768}}),
            Some("spec.embedding.dimension must be 384 when spec.embedding.provider is builtin"),
        ),
        (
            "builtin provider at its dimension",
            "docs",
            json!({"storage": {"ephemeral": {}}, "embedding": {"provider": "builtin"}}),
            None,
        ),
        (
            "hash provider at another dimension",
            "docs",
            json!({"storage": {"ephemeral": {}}, "embedding": {"provider": "hash", "dimension": 64}}),
            None,
        ),
        (
            "openai provider without endpoint",
            "docs",
            json!({"storage": {"ephemeral": {}}, "embedding": {"provider": "openai", "model": "m", "dimension": 8}}),
            Some("spec.embedding.endpoint and spec.embedding.model are required"),
        ),
        (
            "volume size that is not a quantity",
            "docs",
            json!({"storage": volume("lots", "ReadWriteOnce")}),
            Some("spec.storage.volume.size must be a quantity"),
        ),
        (
            "name that cannot name a Service",
            "Docs.v2",
            json!({"storage": {"ephemeral": {}}}),
            Some("metadata.name must be a DNS label of at most 40 characters"),
        ),
        (
            "name too long for child objects",
            "a-very-long-project-name-that-is-over-forty-chars",
            json!({"storage": {"ephemeral": {}}}),
            Some("metadata.name must be a DNS label of at most 40 characters"),
        ),
    ];
    for (case, name, spec, expected) in cases {
        let errors = create_errors(&project(name, spec));
        match expected {
            None => assert!(errors.is_empty(), "{case}: unexpected rejection {errors:?}"),
            Some(message) => assert!(
                errors.iter().any(|e| e.contains(message)),
                "{case}: expected {message:?}, got {errors:?}"
            ),
        }
    }
}

#[test]
fn transition_rules_guard_storage() {
    let old = project(
        "docs",
        json!({"storage": {"volume": {"size": "10Gi", "accessMode": "ReadWriteMany", "storageClassName": "fast"}}}),
    );
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        (
            "growing the volume",
            json!({"storage": {"volume": {"size": "20Gi", "accessMode": "ReadWriteMany", "storageClassName": "fast"}}}),
            None,
        ),
        (
            "shrinking the volume",
            json!({"storage": {"volume": {"size": "5Gi", "accessMode": "ReadWriteMany", "storageClassName": "fast"}}}),
            Some("spec.storage.volume.size can only grow"),
        ),
        (
            "changing the storage class",
            json!({"storage": {"volume": {"size": "10Gi", "accessMode": "ReadWriteMany", "storageClassName": "slow"}}}),
            Some("storageClassName is immutable"),
        ),
        (
            "dropping the storage class",
            json!({"storage": {"volume": {"size": "10Gi", "accessMode": "ReadWriteMany"}}}),
            Some("storageClassName is immutable"),
        ),
        (
            "changing the access mode",
            json!({"storage": {"volume": {"size": "10Gi", "accessMode": "ReadWriteOnce", "storageClassName": "fast"}}}),
            Some("accessMode is immutable"),
        ),
        (
            "switching to object storage",
            json!({"storage": {"objectStore": {"uri": "s3://bucket/docs"}}}),
            Some("the storage kind (volume, objectStore or ephemeral) is immutable"),
        ),
        (
            "changing the deletion policy",
            json!({"storage": {"volume": {"size": "10Gi", "accessMode": "ReadWriteMany", "storageClassName": "fast"}, "deletionPolicy": "Delete"}}),
            None,
        ),
    ];
    for (case, spec, expected) in cases {
        let errors = update_errors(&project("docs", spec), &old);
        match expected {
            None => assert!(errors.is_empty(), "{case}: unexpected rejection {errors:?}"),
            Some(message) => assert!(
                errors.iter().any(|e| e.contains(message)),
                "{case}: expected {message:?}, got {errors:?}"
            ),
        }
    }
}

#[test]
fn the_object_store_uri_is_immutable() {
    let store = |uri: &str, region: &str| {
        project(
            "docs",
            json!({"storage": {"objectStore": {"uri": uri, "region": region}}}),
        )
    };
    let old = store("s3://tenants/team-a/docs/", "eu-west-1");
    let errors = update_errors(&store("s3://payroll/", "eu-west-1"), &old);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.storage.objectStore.uri is immutable")),
        "{errors:?}"
    );
    assert!(update_errors(&store("s3://tenants/team-a/docs/", "us-east-1"), &old).is_empty());
}

#[test]
fn every_sample_passes_every_rule() {
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/samples");
    let mut count = 0;
    for entry in std::fs::read_dir(&samples).expect("samples folder exists") {
        let path = entry.expect("readable entry").path();
        let text = std::fs::read_to_string(&path).expect("readable sample");
        let project: KnowledgeProject =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            create_errors(&project),
            Vec::<String>::new(),
            "{}",
            path.display()
        );
        count += 1;
    }
    assert!(count >= 3, "the samples are there");
}
