//! The finalizer's clean-up against a scripted in-memory API: data is kept or deleted as
//! `deletionPolicy` says, and the finalizer stays until that is done.

use std::sync::Arc;

use kbeast_api::KnowledgeProject;
use kbeast_operator::metrics::Metrics;
use kbeast_operator::reconcile::{Context, reconcile};
use kbeast_operator::settings::OperatorSettings;
use kbeast_testkit::FakeApi;
use serde_json::{Value, json};

const PROJECT_PATH: &str = "/apis/kbeast.io/v1alpha1/namespaces/tenants/knowledgeprojects/docs";
const PVC_PATH: &str = "/api/v1/namespaces/tenants/persistentvolumeclaims/docs-data";
const JOB_PATH: &str = "/apis/batch/v1/namespaces/tenants/jobs/docs-purge";
const UID: &str = "11111111-2222-4333-8444-555555555555";

fn deleting_project(storage: Value) -> Value {
    json!({
        "apiVersion": "kbeast.io/v1alpha1",
        "kind": "KnowledgeProject",
        "metadata": {"name": "docs", "namespace": "tenants", "uid": UID, "generation": 2,
            "finalizers": ["kbeast.io/cleanup"], "deletionTimestamp": "2026-11-22T10:00:00Z"},
        "spec": {"storage": storage},
    })
}

fn owned_pvc() -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "docs-data", "namespace": "tenants",
            "ownerReferences": [{"apiVersion": "kbeast.io/v1alpha1", "kind": "KnowledgeProject",
                "name": "docs", "uid": UID, "controller": true}]}})
}

fn context(api: &FakeApi) -> Arc<Context> {
    let client = api.client();
    Arc::new(Context::new(
        client,
        OperatorSettings::default(),
        Arc::new(Metrics::new()),
        None,
    ))
}

fn stored_project(api: &FakeApi) -> Option<KnowledgeProject> {
    api.get(PROJECT_PATH)
        .map(|v| serde_json::from_value(v).expect("stored project parses"))
}

fn event_reasons(api: &FakeApi) -> Vec<String> {
    api.requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.contains("/events"))
        .filter_map(|r| {
            r.body
                .and_then(|b| b["reason"].as_str().map(str::to_string))
        })
        .collect()
}

#[tokio::test]
async fn retain_keeps_the_pvc_by_dropping_our_owner_reference() {
    let api = FakeApi::new();
    api.insert(
        PROJECT_PATH,
        deleting_project(json!({"volume": {"size": "1Gi"}})),
    );
    api.insert(PVC_PATH, owned_pvc());
    let ctx = context(&api);
    reconcile(Arc::new(stored_project(&api).expect("stored")), ctx)
        .await
        .expect("clean-up succeeds");
    let pvc = api.get(PVC_PATH).expect("the PVC is kept");
    assert_eq!(
        pvc["metadata"]["ownerReferences"],
        json!([]),
        "garbage collection will not take it"
    );
    assert!(
        stored_project(&api).is_none(),
        "finalizer removed, project gone"
    );
    assert_eq!(event_reasons(&api), vec!["DataRetained"]);
}

#[tokio::test]
async fn delete_removes_the_pvc() {
    let api = FakeApi::new();
    api.insert(
        PROJECT_PATH,
        deleting_project(json!({"volume": {"size": "1Gi"}, "deletionPolicy": "Delete"})),
    );
    api.insert(PVC_PATH, owned_pvc());
    reconcile(
        Arc::new(stored_project(&api).expect("stored")),
        context(&api),
    )
    .await
    .expect("clean-up succeeds");
    assert!(api.get(PVC_PATH).is_none(), "PVC deleted");
    assert!(stored_project(&api).is_none());
    assert_eq!(event_reasons(&api), vec!["DataDeleted"]);
}

#[tokio::test]
async fn object_store_delete_keeps_the_finalizer_until_the_purge_job_succeeds() {
    let api = FakeApi::new();
    api.insert(
        PROJECT_PATH,
        deleting_project(json!({"objectStore": {"uri": "s3://bucket/docs",
            "credentialsSecretRef": {"name": "docs-s3"}}, "deletionPolicy": "Delete"})),
    );
    let ctx = context(&api);
    let project = || Arc::new(stored_project(&api).expect("still there"));

    let error = reconcile(project(), ctx.clone())
        .await
        .expect_err("purge pending");
    assert_eq!(error.metric_label(), "cleanup_pending");
    let job = api.get(JOB_PATH).expect("purge Job created");
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["args"],
        json!(["purge", "--data", "s3://bucket/docs"])
    );
    assert_eq!(container["envFrom"][1]["secretRef"]["name"], "docs-s3");
    assert!(
        container["resources"]["limits"]["memory"].is_string(),
        "{container}"
    );
    // Not owned by the project: a foreground deletion would garbage-collect it (and the
    // project's ServiceAccount) before it ran.
    assert!(job["metadata"]["ownerReferences"].is_null(), "{job}");
    assert_eq!(
        job["metadata"]["annotations"]["kbeast.io/purge-for-uid"],
        UID
    );
    let pod = &job["spec"]["template"];
    assert_eq!(
        pod["metadata"]["labels"]["app.kubernetes.io/component"],
        "purge"
    );
    assert!(
        pod["spec"]["serviceAccountName"].is_null(),
        "the default account"
    );
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);

    let error = reconcile(project(), ctx.clone())
        .await
        .expect_err("still running");
    assert_eq!(error.metric_label(), "cleanup_pending");

    let mut failed = job.clone();
    failed["status"] = json!({"conditions": [{"type": "Failed", "status": "True"}]});
    api.insert(JOB_PATH, failed);
    reconcile(project(), ctx.clone())
        .await
        .expect_err("a failed purge keeps the finalizer");
    assert!(event_reasons(&api).contains(&"PurgeFailed".to_string()));

    let mut complete = job;
    complete["status"] = json!({"conditions": [{"type": "Complete", "status": "True"}]});
    api.insert(JOB_PATH, complete);
    reconcile(project(), ctx).await.expect("purge finished");
    assert!(
        stored_project(&api).is_none(),
        "finalizer removed once the data is gone"
    );
}

#[tokio::test]
async fn a_new_project_gets_the_finalizer_before_anything_else() {
    let api = FakeApi::new();
    api.insert(
        PROJECT_PATH,
        json!({"apiVersion": "kbeast.io/v1alpha1", "kind": "KnowledgeProject",
            "metadata": {"name": "docs", "namespace": "tenants", "uid": UID, "generation": 1},
            "spec": {"storage": {"ephemeral": {}}}}),
    );
    reconcile(
        Arc::new(stored_project(&api).expect("stored")),
        context(&api),
    )
    .await
    .expect("finalizer added");
    let writes: Vec<_> = api.child_writes().iter().map(|r| r.line()).collect();
    assert_eq!(writes, vec![format!("PATCH {PROJECT_PATH}")]);
    assert_eq!(
        stored_project(&api).expect("stored").metadata.finalizers,
        Some(vec!["kbeast.io/cleanup".to_string()])
    );
}

#[tokio::test]
async fn delete_leaves_a_pvc_the_project_does_not_own() {
    let api = FakeApi::new();
    api.insert(
        PROJECT_PATH,
        deleting_project(json!({"volume": {"size": "1Gi"}, "deletionPolicy": "Delete"})),
    );
    let mut foreign = owned_pvc();
    foreign["metadata"]["ownerReferences"] = json!([]);
    api.insert(PVC_PATH, foreign);
    reconcile(
        Arc::new(stored_project(&api).expect("stored")),
        context(&api),
    )
    .await
    .expect("clean-up finishes");
    assert!(api.get(PVC_PATH).is_some(), "a claim we do not own is kept");
    assert_eq!(event_reasons(&api), vec!["DataNotOwned"]);
}

#[tokio::test]
async fn a_finished_job_with_the_purge_name_that_is_not_ours_purges_nothing() {
    let api = FakeApi::new();
    api.insert(
        PROJECT_PATH,
        deleting_project(json!({"objectStore": {"uri": "s3://bucket/docs"},
            "deletionPolicy": "Delete"})),
    );
    // Left by an earlier project of the same name, or made by hand.
    api.insert(
        JOB_PATH,
        json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "docs-purge", "namespace": "tenants",
                "annotations": {"kbeast.io/purge-for-uid": "00000000-0000-4000-8000-000000000000"}},
            "status": {"conditions": [{"type": "Complete", "status": "True"}]}}),
    );
    let error = reconcile(
        Arc::new(stored_project(&api).expect("stored")),
        context(&api),
    )
    .await
    .expect_err("the data is not purged");
    assert_eq!(error.metric_label(), "cleanup_pending");
    assert!(stored_project(&api).is_some(), "the finalizer stays");
    assert_eq!(event_reasons(&api), vec!["PurgeBlocked"]);
}
