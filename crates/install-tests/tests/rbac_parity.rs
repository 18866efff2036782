//! The chart's RBAC grants exactly what the operator uses: every API call the operator makes in
//! its scripted scenarios (create, update, autoscaling on and off, invalid spec, suspend, every
//! clean-up path, leader election, Events) plus the lists and watches of its controllers.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kbeast_install_tests::{documents, helm_template};
use kbeast_operator::controller::WATCHED_RESOURCES;
use kbeast_operator::leader::{LeaderElector, LeaseTiming};
use kbeast_operator::metrics::Metrics;
use kbeast_operator::reconcile::{Context, reconcile};
use kbeast_operator::settings::OperatorSettings;
use kbeast_testkit::{FakeApi, RecordedRequest};
use serde_json::{Value, json};

/// (API group, resource or resource/subresource, verb).
type Permission = (String, String, String);

const PROJECT: &str = "/apis/kbeast.io/v1alpha1/namespaces/tenants/knowledgeprojects/docs";
const UID: &str = "11111111-2222-4333-8444-555555555555";

fn context(api: &FakeApi) -> Arc<Context> {
    let client = api.client();
    Arc::new(Context::new(
        client,
        OperatorSettings::default(),
        Arc::new(Metrics::new()),
        None,
    ))
}

fn project(spec: Value, extra_metadata: Value) -> Value {
    let mut metadata = json!({"name": "docs", "namespace": "tenants", "uid": UID, "generation": 1});
    for (key, value) in extra_metadata.as_object().expect("object") {
        metadata[key] = value.clone();
    }
    json!({"apiVersion": "kbeast.io/v1alpha1", "kind": "KnowledgeProject", "metadata": metadata, "spec": spec})
}

async fn reconcile_stored(api: &FakeApi, ctx: &Arc<Context>) {
    let Some(stored) = api.get(PROJECT) else {
        return;
    };
    let project = serde_json::from_value(stored).expect("stored project parses");
    // Errors are part of some scenarios (a pending purge); the calls are what matter here.
    let _ = reconcile(Arc::new(project), ctx.clone()).await;
}

/// Runs every scenario and returns the requests the operator made.
async fn operator_requests() -> Vec<RecordedRequest> {
    let mut requests = Vec::new();
    let specs = [
        json!({"storage": {"volume": {"size": "1Gi"}}}),
        json!({"autoscaling": {"enabled": true, "maxReplicas": 4}, "storage": {"ephemeral": {}}}),
        json!({"replicas": 3, "storage": {"ephemeral": {}}}),
        json!({"storage": {"ephemeral": {}}, "disruption": {"maxUnavailable": 0}}),
        json!({"storage": {"ephemeral": {}}, "suspend": true}),
        json!({"storage": {"ephemeral": {}}, "auth": {"apiKeysSecretRef": {"name": "keys"}}}),
    ];
    // A new project (finalizer added), then every spec in turn on one project, so that
    // autoscaling is switched on and off.
    let api = FakeApi::new();
    let ctx = context(&api);
    api.insert(PROJECT, project(specs[0].clone(), json!({})));
    // A query pod whose containers are ready: the health gate smoke-checks it (nothing listens
    // at that address, so the check fails) and writes its readiness-gate condition.
    api.insert(
        "/api/v1/namespaces/tenants/pods/docs-abc-1",
        json!({"metadata": {"name": "docs-abc-1", "namespace": "tenants",
            "labels": {"app.kubernetes.io/name": "kbeast-query", "app.kubernetes.io/instance": "docs", "kbeast.io/project": "docs"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "docs-abc",
                "uid": "rs", "controller": true}]},
            "status": {"podIP": "127.0.0.9", "conditions": [{"type": "ContainersReady", "status": "True"}]}}),
    );
    reconcile_stored(&api, &ctx).await;
    for spec in &specs {
        let mut stored = api.get(PROJECT).expect("stored");
        stored["spec"] = spec.clone();
        api.insert(PROJECT, stored);
        reconcile_stored(&api, &ctx).await;
        reconcile_stored(&api, &ctx).await;
    }
    requests.extend(api.requests());

    // Every clean-up path.
    let deleting =
        json!({"finalizers": ["kbeast.io/cleanup"], "deletionTimestamp": "2026-11-22T10:00:00Z"});
    for storage in [
        json!({"volume": {"size": "1Gi"}}),
        json!({"volume": {"size": "1Gi"}, "deletionPolicy": "Delete"}),
        json!({"objectStore": {"uri": "s3://bucket/docs"}, "deletionPolicy": "Delete"}),
    ] {
        let api = FakeApi::new();
        let ctx = context(&api);
        api.insert(
            PROJECT,
            project(json!({"storage": storage}), deleting.clone()),
        );
        api.insert(
            "/api/v1/namespaces/tenants/persistentvolumeclaims/docs-data",
            json!({"metadata": {"name": "docs-data", "ownerReferences": [
                {"apiVersion": "kbeast.io/v1alpha1", "kind": "KnowledgeProject", "name": "docs", "uid": UID, "controller": true}]}}),
        );
        reconcile_stored(&api, &ctx).await;
        if let Some(mut job) = api.get("/apis/batch/v1/namespaces/tenants/jobs/docs-purge") {
            job["status"] = json!({"conditions": [{"type": "Failed", "status": "True"}]});
            api.insert(
                "/apis/batch/v1/namespaces/tenants/jobs/docs-purge",
                job.clone(),
            );
            reconcile_stored(&api, &ctx).await;
            reconcile_stored(&api, &ctx).await;
            job["status"] = json!({"conditions": [{"type": "Complete", "status": "True"}]});
            api.insert("/apis/batch/v1/namespaces/tenants/jobs/docs-purge", job);
            reconcile_stored(&api, &ctx).await;
        }
        requests.extend(api.requests());
    }

    // Leader election: create, renew, take over, release.
    let api = FakeApi::new();
    let timing = LeaseTiming {
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_millis(10),
    };
    let elector = LeaderElector::new(
        api.client(),
        "kbeast-system",
        "kbeast-operator-leader",
        "a",
        timing,
    );
    elector.acquire().await;
    elector.try_acquire_or_renew().await.expect("renews");
    elector.release().await;
    requests.extend(api.requests());
    requests
}

/// The permissions a request needs, as the API server authorizes it: the verb follows the method
/// and path, and a server-side apply to a resource (not a subresource) is authorized as `patch`
/// and, when the object does not exist yet, as `create` too.
fn permissions(request: &RecordedRequest) -> Vec<Permission> {
    let parts: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts.first() {
        Some(&"api") => (String::new(), &parts[2..]),
        _ => (parts[1].to_string(), &parts[3..]),
    };
    let rest = match rest {
        ["namespaces", _, rest @ ..] => rest,
        rest => rest,
    };
    let (resource, subresource) = match rest {
        [resource] | [resource, _] => (resource.to_string(), None),
        [resource, _, subresource] => (resource.to_string(), Some(*subresource)),
        other => panic!("unexpected path {other:?}"),
    };
    let collection = rest.len() == 1;
    let verbs: &[&str] = match (request.method.as_str(), collection) {
        ("GET", true)
            if request
                .query
                .get("watch")
                .is_some_and(|w| w == "true" || w == "1") =>
        {
            &["watch"]
        }
        ("GET", true) => &["list"],
        ("GET", false) => &["get"],
        ("POST", _) => &["create"],
        ("PUT", _) => &["update"],
        ("PATCH", _) if is_apply(request) && subresource.is_none() => &["patch", "create"],
        ("PATCH", _) => &["patch"],
        ("DELETE", true) => &["deletecollection"],
        ("DELETE", false) => &["delete"],
        (other, _) => panic!("unexpected method {other}"),
    };
    let resource = match subresource {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource,
    };
    verbs
        .iter()
        .map(|verb| (group.clone(), resource.clone(), verb.to_string()))
        .collect()
}

fn is_apply(request: &RecordedRequest) -> bool {
    request
        .content_type
        .as_deref()
        .is_some_and(|t| t.starts_with("application/apply-patch"))
}

fn needed_permissions(requests: &[RecordedRequest]) -> BTreeSet<Permission> {
    let mut needed: BTreeSet<Permission> = requests.iter().flat_map(permissions).collect();
    for (group, resource) in WATCHED_RESOURCES {
        for verb in ["list", "watch"] {
            needed.insert((group.to_string(), resource.to_string(), verb.to_string()));
        }
    }
    // Setting blockOwnerDeletion on an owner reference needs `update` on the owner's
    // finalizers subresource (OwnerReferencesPermissionEnforcement).
    let blocks_owner_deletion = requests.iter().any(|r| {
        r.body.as_ref().is_some_and(|b| {
            b["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| {
                    refs.iter()
                        .any(|o| o["blockOwnerDeletion"] == true && o["kind"] == "KnowledgeProject")
                })
        })
    });
    if blocks_owner_deletion {
        needed.insert((
            "kbeast.io".into(),
            "knowledgeprojects/finalizers".into(),
            "update".into(),
        ));
    }
    needed
}

fn granted_permissions(rendered: &str, role_kinds: &[&str]) -> BTreeSet<Permission> {
    let mut granted = BTreeSet::new();
    for document in documents(rendered) {
        let kind = document["kind"].as_str().unwrap_or("");
        if !role_kinds.contains(&kind) {
            continue;
        }
        for rule in document["rules"].as_sequence().into_iter().flatten() {
            let list = |key: &str| -> Vec<String> {
                rule[key]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            };
            for group in list("apiGroups") {
                for resource in list("resources") {
                    for verb in list("verbs") {
                        granted.insert((group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    granted
}

#[tokio::test]
async fn the_chart_grants_exactly_what_the_operator_uses() {
    let requests = operator_requests().await;
    let needed = needed_permissions(&requests);
    for (values, kinds) in [
        (vec![], vec!["ClusterRole", "Role"]),
        (vec!["--set", "watchNamespaces={tenants}"], vec!["Role"]),
    ] {
        let rendered = helm_template(&values).expect("renders");
        let granted = granted_permissions(&rendered, &kinds);
        let missing: Vec<_> = needed.difference(&granted).collect();
        let unused: Vec<_> = granted.difference(&needed).collect();
        assert!(
            missing.is_empty() && unused.is_empty(),
            "{values:?}\nmissing from the chart: {missing:#?}\ngranted but never used: {unused:#?}"
        );
    }
    assert!(
        needed.len() > 30,
        "the scenarios exercised the operator: {needed:?}"
    );
}

#[test]
fn an_apply_that_may_create_needs_create_and_a_status_apply_does_not() {
    let request = |method: &str, path: &str, content_type: Option<&str>, query: &[(&str, &str)]| {
        RecordedRequest {
            method: method.to_string(),
            path: path.to_string(),
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            content_type: content_type.map(str::to_string),
            body: None,
        }
    };
    let verbs = |r: &RecordedRequest| -> Vec<String> {
        permissions(r)
            .into_iter()
            .map(|(_, _, verb)| verb)
            .collect()
    };
    let apply = Some("application/apply-patch+yaml");
    let cm = "/api/v1/namespaces/t/configmaps/docs";
    assert_eq!(
        verbs(&request("PATCH", cm, apply, &[])),
        ["patch", "create"]
    );
    assert_eq!(
        verbs(&request(
            "PATCH",
            cm,
            Some("application/merge-patch+json"),
            &[]
        )),
        ["patch"]
    );
    let status = "/apis/kbeast.io/v1alpha1/namespaces/t/knowledgeprojects/docs/status";
    assert_eq!(
        permissions(&request("PATCH", status, apply, &[])),
        [(
            "kbeast.io".to_string(),
            "knowledgeprojects/status".to_string(),
            "patch".to_string()
        )]
    );
    let pods = "/api/v1/namespaces/t/pods";
    assert_eq!(verbs(&request("GET", pods, None, &[])), ["list"]);
    assert_eq!(
        verbs(&request("GET", pods, None, &[("watch", "true")])),
        ["watch"]
    );
    assert_eq!(
        verbs(&request("DELETE", pods, None, &[])),
        ["deletecollection"]
    );
    assert_eq!(
        verbs(&request("DELETE", "/api/v1/namespaces/t/pods/p", None, &[])),
        ["delete"]
    );
}
