//! The kbeast KnowledgeProject CRD served by the emulator: installation, schema defaults,
//! and its CEL rules (root, field and transition rules), as the operator's e2e tests need.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kbeast_api::KnowledgeProject;
use kbeast_localcluster::{ControllerSet, LocalCluster, Options};
use kube::CustomResourceExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

fn status_code(err: kube::Error) -> (u16, String) {
    match err {
        kube::Error::Api(s) => (s.code, s.message),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn knowledge_project_crd_validates_like_a_cluster() {
    let c = LocalCluster::start(Options {
        controllers: ControllerSet::none(),
        ..Options::default()
    })
    .await
    .unwrap();
    let client = c.client().unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &KnowledgeProject::crd())
        .await
        .unwrap();

    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kbeast.io", "v1alpha1", "KnowledgeProject"),
        "knowledgeprojects",
    );
    let projects: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
    let project = |name: &str, spec: serde_json::Value| -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "kbeast.io/v1alpha1", "kind": "KnowledgeProject", "metadata": {"name": name}, "spec": spec}))
            .unwrap()
    };
    let created = projects
        .create(
            &PostParams::default(),
            &project("docs", json!({"storage": {"volume": {"size": "1Gi"}}})),
        )
        .await
        .unwrap();
    assert!(created.data["spec"]["storage"]["volume"]["size"] == "1Gi");

    // Root rule on metadata.name (DNS label of at most 40 characters).
    let long = "a".repeat(41);
    let (code, message) = status_code(
        projects
            .create(
                &PostParams::default(),
                &project(&long, json!({"storage": {"volume": {"size": "1Gi"}}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422, "{message}");
    assert!(
        message.contains("metadata.name must be a DNS label"),
        "{message}"
    );

    // Field rule: the size must be a quantity.
    let (code, message) = status_code(
        projects
            .create(
                &PostParams::default(),
                &project("bad-size", json!({"storage": {"volume": {"size": "lots"}}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422, "{message}");
    assert!(message.contains("must be a quantity"), "{message}");

    // Transition rule: the volume can only grow.
    let (code, message) = status_code(
        projects
            .patch(
                "docs",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"storage": {"volume": {"size": "512Mi"}}}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422, "{message}");
    assert!(message.contains("can only grow"), "{message}");
    projects
        .patch(
            "docs",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"storage": {"volume": {"size": "2Gi"}}}})),
        )
        .await
        .expect("growing is allowed");
}
