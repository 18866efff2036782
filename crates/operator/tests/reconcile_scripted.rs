//! The reconcile pipeline against a scripted in-memory API: what it writes, in which order, and
//! what it reports, including the error paths.

use std::sync::Arc;

use kbeast_api::KnowledgeProject;
use kbeast_operator::metrics::Metrics;
use kbeast_operator::reconcile::{Context, error_policy, reconcile};
use kbeast_operator::settings::OperatorSettings;
use kbeast_testkit::{Failure, FakeApi, RecordedRequest};
use serde_json::{Value, json};

const NS: &str = "tenants";
const PROJECT_PATH: &str = "/apis/kbeast.io/v1alpha1/namespaces/tenants/knowledgeprojects/docs";

fn deployment_path() -> String {
    format!("/apis/apps/v1/namespaces/{NS}/deployments/docs")
}
fn hpa_path() -> String {
    format!("/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/docs")
}

/// A stored project named `docs` with the given spec, already carrying our finalizer.
fn project_with_spec(spec: Value) -> Value {
    json!({
        "apiVersion": "kbeast.io/v1alpha1",
        "kind": "KnowledgeProject",
        "metadata": {
            "name": "docs",
            "namespace": NS,
            "uid": "11111111-2222-4333-8444-555555555555",
            "generation": 1,
            "finalizers": ["kbeast.io/cleanup"],
        },
        "spec": spec,
    })
}

fn minimal_spec() -> Value {
    json!({"storage": {"volume": {"size": "1Gi"}}})
}

struct Harness {
    api: FakeApi,
    ctx: Arc<Context>,
}

impl Harness {
    fn new(project: Value) -> Self {
        let api = FakeApi::new();
        api.insert(PROJECT_PATH, project);
        let client = api.client();
        let ctx = Arc::new(Context::new(
            client,
            OperatorSettings::default(),
            Arc::new(Metrics::new()),
            None,
        ));
        Self { api, ctx }
    }

    fn project(&self) -> KnowledgeProject {
        serde_json::from_value(self.api.get(PROJECT_PATH).expect("project stored"))
            .expect("stored project parses")
    }

    async fn reconcile(
        &self,
    ) -> Result<kube::runtime::controller::Action, kbeast_operator::error::Error> {
        reconcile(Arc::new(self.project()), self.ctx.clone()).await
    }

    fn status_condition(&self, type_: &str) -> Value {
        let project = self.api.get(PROJECT_PATH).expect("project stored");
        project["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == type_)
            .cloned()
            .unwrap_or(Value::Null)
    }
}

fn lines(requests: &[RecordedRequest]) -> Vec<String> {
    requests.iter().map(RecordedRequest::line).collect()
}

#[tokio::test]
async fn first_reconcile_creates_every_child_in_a_fixed_order() {
    let harness = Harness::new(project_with_spec(minimal_spec()));
    harness.reconcile().await.expect("reconcile succeeds");
    let writes = lines(&harness.api.child_writes());
    assert_eq!(
        writes,
        vec![
            // The rollout record first: the attempt is durable before the Deployment changes.
            "PATCH /api/v1/namespaces/tenants/configmaps/docs-rollout",
            "PATCH /api/v1/namespaces/tenants/serviceaccounts/docs",
            "PATCH /apis/networking.k8s.io/v1/namespaces/tenants/networkpolicies/docs",
            "PATCH /api/v1/namespaces/tenants/configmaps/docs-config",
            "POST /api/v1/namespaces/tenants/secrets",
            "PATCH /api/v1/namespaces/tenants/persistentvolumeclaims/docs-data",
            "PATCH /api/v1/namespaces/tenants/services/docs",
            "PATCH /apis/apps/v1/namespaces/tenants/deployments/docs",
            "PATCH /apis/policy/v1/namespaces/tenants/poddisruptionbudgets/docs",
            "PATCH /apis/kbeast.io/v1alpha1/namespaces/tenants/knowledgeprojects/docs/status",
        ]
    );
    for request in harness
        .api
        .child_writes()
        .iter()
        .filter(|r| r.method == "PATCH")
    {
        assert!(
            request.is_apply(),
            "{} is a server-side apply",
            request.path
        );
        assert_eq!(request.field_manager(), Some("kbeast-operator"));
        assert_eq!(request.query.get("force").map(String::as_str), Some("true"));
    }
    let secret = harness
        .api
        .get("/api/v1/namespaces/tenants/secrets/docs-api-keys")
        .expect("API-keys Secret created");
    for key in ["api-keys.json", "read-key", "write-key", "admin-key"] {
        assert!(secret["data"][key].is_string(), "Secret has {key}");
    }
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        "11111111-2222-4333-8444-555555555555"
    );
}

#[tokio::test]
async fn a_converged_project_sends_no_write_requests() {
    let harness = Harness::new(project_with_spec(minimal_spec()));
    harness.reconcile().await.expect("first reconcile succeeds");
    // The Deployment controller reports the rollout as done.
    let mut deployment = harness
        .api
        .get(&deployment_path())
        .expect("Deployment applied");
    let generation = 1;
    deployment["metadata"]["generation"] = json!(generation);
    deployment["status"] = json!({"observedGeneration": generation, "replicas": 1, "readyReplicas": 1,
        "updatedReplicas": 1, "availableReplicas": 1});
    harness.api.insert(&deployment_path(), deployment);
    harness
        .reconcile()
        .await
        .expect("second reconcile succeeds");
    assert_eq!(harness.status_condition("Ready")["status"], "True");

    harness.api.clear_requests();
    harness
        .reconcile()
        .await
        .expect("steady-state reconcile succeeds");
    let writes: Vec<_> = harness
        .api
        .requests()
        .into_iter()
        .filter(RecordedRequest::is_write)
        .collect();
    assert!(
        writes.is_empty(),
        "steady state wrote: {:?}",
        lines(&writes)
    );
}

#[tokio::test]
async fn a_changed_spec_reapplies_only_what_changed() {
    let harness = Harness::new(project_with_spec(minimal_spec()));
    harness.reconcile().await.expect("first reconcile succeeds");
    let mut project = harness.api.get(PROJECT_PATH).expect("stored");
    project["spec"]["search"] =
        json!({"defaultMode": "keyword", "chunkSize": 400, "chunkOverlap": 50});
    project["metadata"]["generation"] = json!(2);
    harness.api.insert(PROJECT_PATH, project);
    harness.api.clear_requests();
    harness.reconcile().await.expect("reconcile succeeds");
    assert_eq!(
        lines(&harness.api.child_writes()),
        vec![
            "PATCH /api/v1/namespaces/tenants/configmaps/docs-rollout",
            "PATCH /api/v1/namespaces/tenants/configmaps/docs-config",
            "PATCH /apis/apps/v1/namespaces/tenants/deployments/docs",
            "PATCH /apis/kbeast.io/v1alpha1/namespaces/tenants/knowledgeprojects/docs/status",
        ],
        "the config changed, and its hash rolls the pods"
    );
    assert_eq!(harness.status_condition("Ready")["observedGeneration"], 2);
}

#[tokio::test]
async fn an_invalid_spec_touches_no_child_and_names_the_field() {
    let mut spec = minimal_spec();
    spec["disruption"] = json!({"maxUnavailable": 0});
    let harness = Harness::new(project_with_spec(spec));
    harness
        .reconcile()
        .await
        .expect("an invalid spec is reported, not retried");
    assert_eq!(
        lines(&harness.api.child_writes()),
        vec!["PATCH /apis/kbeast.io/v1alpha1/namespaces/tenants/knowledgeprojects/docs/status"]
    );
    let ready = harness.status_condition("Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert_eq!(ready["observedGeneration"], 1);
    assert!(
        ready["message"]
            .as_str()
            .unwrap_or("")
            .contains("spec.disruption.maxUnavailable")
    );
    let events: Vec<_> = harness
        .api
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.contains("/events"))
        .collect();
    assert_eq!(events.len(), 1, "one Warning event");
    assert_eq!(
        events[0].body.as_ref().expect("event body")["type"],
        "Warning"
    );
}

#[tokio::test]
async fn a_missing_referenced_secret_degrades_and_names_it() {
    let mut spec = minimal_spec();
    spec["auth"] = json!({"apiKeysSecretRef": {"name": "tenant-keys"}});
    let harness = Harness::new(project_with_spec(spec));
    harness.reconcile().await.expect("reported, not retried");
    let degraded = harness.status_condition("Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "SecretNotFound");
    assert!(
        degraded["message"]
            .as_str()
            .unwrap_or("")
            .contains("tenant-keys")
    );
    assert_eq!(
        harness.api.child_writes().len(),
        1,
        "only the status is written"
    );
}

#[tokio::test]
async fn an_object_we_do_not_own_is_not_adopted() {
    let harness = Harness::new(project_with_spec(minimal_spec()));
    harness.api.insert(
        "/api/v1/namespaces/tenants/services/docs",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "docs", "namespace": NS}}),
    );
    harness.reconcile().await.expect("reported, not retried");
    let ready = harness.status_condition("Ready");
    assert_eq!(ready["reason"], "Conflict");
    assert!(
        ready["message"]
            .as_str()
            .unwrap_or("")
            .contains("Service \"docs\"")
    );
    assert_eq!(
        harness.api.child_writes().len(),
        1,
        "only the status is written"
    );
}

#[tokio::test]
async fn a_suspended_project_changes_no_child_but_reports_status() {
    let mut spec = minimal_spec();
    spec["suspend"] = json!(true);
    let harness = Harness::new(project_with_spec(spec));
    harness.reconcile().await.expect("succeeds");
    assert_eq!(
        harness.api.child_writes().len(),
        1,
        "only the status is written"
    );
    assert_eq!(harness.status_condition("Suspended")["status"], "True");
    assert_eq!(harness.status_condition("Ready")["status"], "False");

    // Nothing random leaks into the status while suspended: the next reconcile writes nothing.
    harness.api.clear_requests();
    harness.reconcile().await.expect("succeeds");
    let writes: Vec<_> = harness
        .api
        .requests()
        .into_iter()
        .filter(RecordedRequest::is_write)
        .collect();
    assert!(writes.is_empty(), "{:?}", lines(&writes));
}

fn server_error() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "Internal error occurred: etcdserver: request timed out",
        "reason": "InternalError", "details": {"causes": [{"message": "etcdserver: request timed out"}]}, "code": 500})
}

#[tokio::test]
async fn api_errors_fail_the_reconcile_and_back_off_exponentially() {
    let cases: Vec<(&str, u16, Value, &str)> = vec![
        (
            "server error on the Deployment apply",
            500,
            server_error(),
            "server_error",
        ),
        (
            "conflict on the Deployment apply",
            409,
            kbeast_testkit::golden::step("ssa-configmap", "apply-b-conflict")["response"]["body"]
                .clone(),
            "conflict",
        ),
        (
            "throttled",
            429,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "TooManyRequests",
                "message": "too many requests", "code": 429}),
            "throttled",
        ),
    ];
    for (case, status, body, label) in cases {
        let harness = Harness::new(project_with_spec(minimal_spec()));
        harness.api.fail(Failure {
            matches: Box::new(|r| r.method == "PATCH" && r.path.ends_with("/deployments/docs")),
            status,
            body,
            remaining: None,
        });
        let error = harness.reconcile().await.expect_err(case);
        assert_eq!(error.metric_label(), label, "{case}");
        let writes = lines(&harness.api.child_writes());
        assert!(
            !writes
                .iter()
                .any(|w| w.contains("poddisruptionbudgets") || w.ends_with("/status")),
            "{case}: nothing after the failed step is written: {writes:?}"
        );
        let project = Arc::new(harness.project());
        let delays: Vec<_> = (0..4)
            .map(|_| {
                format!(
                    "{:?}",
                    error_policy(project.clone(), &error, harness.ctx.clone())
                )
            })
            .collect();
        assert_eq!(
            delays,
            ["2s", "4s", "8s", "16s"].map(|d| format!("Action {{ requeue_after: Some({d}) }}")),
            "{case}"
        );
    }
}

#[tokio::test]
async fn a_project_deleted_meanwhile_is_a_not_found_error() {
    let harness = Harness::new(project_with_spec(minimal_spec()));
    harness.api.fail(Failure {
        matches: Box::new(|r| r.path.ends_with("/status")),
        status: 404,
        body: kbeast_testkit::golden::step("errors", "object-not-found")["response"]["body"]
            .clone(),
        remaining: None,
    });
    let error = harness.reconcile().await.expect_err("status patch fails");
    assert_eq!(error.metric_label(), "not_found");
}

#[tokio::test]
async fn a_forbidden_write_is_reported_with_the_object_and_the_servers_message() {
    let harness = Harness::new(project_with_spec(minimal_spec()));
    let forbidden =
        kbeast_testkit::golden::step("errors", "forbidden-create-as-sa")["response"]["body"]
            .clone();
    let server_message = forbidden["message"].as_str().expect("message").to_string();
    harness.api.fail(Failure {
        matches: Box::new(|r| r.method == "PATCH" && r.path.ends_with("/configmaps/docs-rollout")),
        status: 403,
        body: forbidden,
        remaining: None,
    });
    let error = harness
        .reconcile()
        .await
        .expect_err("the write is forbidden");
    assert_eq!(error.metric_label(), "forbidden");
    let writes = lines(&harness.api.child_writes());
    assert!(
        !writes.iter().any(|w| w.contains("deployments")),
        "nothing is applied after the forbidden write: {writes:?}"
    );
    for type_ in ["Ready", "Degraded"] {
        let condition = harness.status_condition(type_);
        assert_eq!(condition["reason"], "Forbidden", "{type_}: {condition}");
        let message = condition["message"].as_str().unwrap_or_default();
        assert_eq!(
            message,
            format!("apply ConfigMap/docs-rollout: {server_message}"),
            "{type_}"
        );
    }
    assert_eq!(harness.status_condition("Ready")["status"], "False");
    assert_eq!(harness.status_condition("Degraded")["status"], "True");
}

/// The body a real API server (v1.36) answers a Service create with once its ClusterIP range is
/// exhausted.
fn service_range_full() -> serde_json::Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "Internal error occurred: failed to allocate a serviceIP: range is full",
        "reason": "InternalError",
        "details": {"causes": [{"message": "failed to allocate a serviceIP: range is full"}]},
        "code": 500
    })
}

#[tokio::test]
async fn a_persistent_server_error_on_a_write_is_reported_with_the_object_and_the_message() {
    let harness = Harness::new(project_with_spec(minimal_spec()));
    harness.api.fail(Failure {
        matches: Box::new(|r| r.method == "PATCH" && r.path.ends_with("/services/docs")),
        status: 500,
        body: service_range_full(),
        remaining: None,
    });
    // A passing server error is retried without a word; one that persists is reported.
    for attempt in 1..=4 {
        let error = harness
            .reconcile()
            .await
            .expect_err("the Service cannot be created");
        let reported = !harness.status_condition("Ready").is_null();
        assert_eq!(reported, attempt == 4, "attempt {attempt}");
        error_policy(Arc::new(harness.project()), &error, harness.ctx.clone());
    }
    for type_ in ["Ready", "Degraded"] {
        let condition = harness.status_condition(type_);
        assert_eq!(condition["reason"], "ApplyFailed", "{type_}: {condition}");
        assert_eq!(
            condition["message"],
            "apply Service/docs: Internal error occurred: failed to allocate a serviceIP: range is full",
            "{type_}"
        );
    }
    assert_eq!(harness.status_condition("Ready")["status"], "False");
}

#[tokio::test]
async fn a_write_refused_by_admission_is_reported_at_once() {
    let harness = Harness::new(project_with_spec(minimal_spec()));
    let message = "admission webhook \"policy.example.com\" denied the request: services of type ClusterIP need a team label";
    harness.api.fail(Failure {
        matches: Box::new(|r| r.method == "PATCH" && r.path.ends_with("/services/docs")),
        status: 400,
        body: json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": "BadRequest", "code": 400}),
        remaining: None,
    });
    harness
        .reconcile()
        .await
        .expect_err("the Service is refused");
    let condition = harness.status_condition("Ready");
    assert_eq!(condition["reason"], "ApplyFailed", "{condition}");
    assert_eq!(
        condition["message"],
        format!("apply Service/docs: {message}")
    );
}

#[tokio::test]
async fn a_conflicting_write_is_retried_without_a_status_change() {
    let harness = Harness::new(project_with_spec(minimal_spec()));
    harness.api.fail(Failure {
        matches: Box::new(|r| r.method == "PATCH" && r.path.ends_with("/services/docs")),
        status: 409,
        body:
            kbeast_testkit::golden::step("errors", "precondition-failed-delete")["response"]["body"]
                .clone(),
        remaining: None,
    });
    harness.reconcile().await.expect_err("the write conflicts");
    let project = harness.api.get(PROJECT_PATH).expect("project stored");
    assert!(
        project["status"]["conditions"].is_null(),
        "no status is written for a conflict, which the retry resolves: {}",
        project["status"]
    );
}

#[tokio::test]
async fn enabling_autoscaling_hands_replicas_over_before_dropping_them() {
    let harness = Harness::new(project_with_spec(json!({
        "replicas": 3,
        "storage": {"ephemeral": {}},
    })));
    harness.reconcile().await.expect("first reconcile succeeds");
    let deployment = harness.api.get(&deployment_path()).expect("applied");
    assert_eq!(deployment["spec"]["replicas"], 3);

    let mut project = harness.api.get(PROJECT_PATH).expect("stored");
    project["spec"] = json!({
        "autoscaling": {"enabled": true, "minReplicas": 2, "maxReplicas": 6},
        "storage": {"ephemeral": {}},
    });
    project["metadata"]["generation"] = json!(2);
    harness.api.insert(PROJECT_PATH, project);
    harness.api.clear_requests();
    harness.reconcile().await.expect("reconcile succeeds");

    let writes = harness.api.child_writes();
    let deployment_writes: Vec<_> = writes
        .iter()
        .filter(|r| r.path == deployment_path())
        .collect();
    assert_eq!(
        deployment_writes.len(),
        2,
        "handover, then our apply: {:?}",
        lines(&writes)
    );
    let handover = deployment_writes[0];
    assert_eq!(
        handover.field_manager(),
        Some("kbeast-operator-replicas-handover")
    );
    assert_eq!(
        handover.body.as_ref().expect("body")["spec"],
        json!({"replicas": 3})
    );
    let ours = deployment_writes[1];
    assert_eq!(ours.field_manager(), Some("kbeast-operator"));
    assert!(
        ours.body.as_ref().expect("body")["spec"]
            .get("replicas")
            .is_none(),
        "replicas omitted"
    );
    let hpa_index = writes
        .iter()
        .position(|r| r.path == hpa_path())
        .expect("HPA applied");
    let ours_index = writes
        .iter()
        .position(|r| std::ptr::eq(r, ours))
        .expect("present");
    assert!(hpa_index > ours_index, "the HPA comes after the Deployment");

    // Once handed over, the next reconcile neither hands over again nor touches the Deployment.
    harness.api.clear_requests();
    harness.reconcile().await.expect("reconcile succeeds");
    assert!(
        !harness
            .api
            .child_writes()
            .iter()
            .any(|r| r.path == deployment_path()),
        "{:?}",
        lines(&harness.api.child_writes())
    );
}

#[tokio::test]
async fn a_new_autoscaled_deployment_starts_at_the_hpas_minimum() {
    let harness = Harness::new(project_with_spec(json!({
        "autoscaling": {"enabled": true, "minReplicas": 2, "maxReplicas": 6},
        "storage": {"ephemeral": {}},
    })));
    harness.reconcile().await.expect("first reconcile succeeds");
    let writes = harness.api.child_writes();
    let deployment_writes: Vec<_> = writes
        .iter()
        .filter(|r| r.path == deployment_path())
        .collect();
    assert_eq!(deployment_writes.len(), 2, "{:?}", lines(&writes));
    assert_eq!(
        deployment_writes[0].field_manager(),
        Some("kbeast-operator")
    );
    assert!(
        deployment_writes[0].body.as_ref().expect("body")["spec"]
            .get("replicas")
            .is_none(),
        "our apply leaves replicas to the HPA"
    );
    assert_eq!(
        deployment_writes[1].field_manager(),
        Some("kbeast-operator-replicas-handover")
    );
    assert_eq!(
        deployment_writes[1].body.as_ref().expect("body")["spec"],
        json!({"replicas": 2}),
        "the HPA's minimum, not the API default of 1"
    );

    // Converged: nothing more to write.
    harness.api.clear_requests();
    harness.reconcile().await.expect("reconcile succeeds");
    assert!(
        !harness
            .api
            .child_writes()
            .iter()
            .any(|r| r.path == deployment_path()),
        "{:?}",
        lines(&harness.api.child_writes())
    );
}

#[tokio::test]
async fn disabling_autoscaling_deletes_the_hpa_before_restoring_replicas() {
    let harness = Harness::new(project_with_spec(json!({
        "autoscaling": {"enabled": true, "minReplicas": 2, "maxReplicas": 6},
        "storage": {"ephemeral": {}},
    })));
    harness.reconcile().await.expect("first reconcile succeeds");
    assert!(harness.api.get(&hpa_path()).is_some(), "HPA created");

    let mut project = harness.api.get(PROJECT_PATH).expect("stored");
    project["spec"] = json!({"replicas": 4, "storage": {"ephemeral": {}}});
    project["metadata"]["generation"] = json!(2);
    harness.api.insert(PROJECT_PATH, project);
    harness.api.clear_requests();
    harness.reconcile().await.expect("reconcile succeeds");
    let writes = lines(&harness.api.child_writes());
    let delete = writes
        .iter()
        .position(|w| *w == format!("DELETE {}", hpa_path()))
        .expect("HPA deleted");
    let apply = writes
        .iter()
        .position(|w| *w == format!("PATCH {}", deployment_path()))
        .expect("Deployment applied");
    assert!(delete < apply, "{writes:?}");
    assert_eq!(
        harness.api.get(&deployment_path()).expect("stored")["spec"]["replicas"],
        4
    );
    assert!(harness.api.get(&hpa_path()).is_none());
}
