//! A project's life with the real operator binary: invalid specs, suspend and resume,
//! deletion with each deletion policy, leader election with fail-over, and a restart that
//! converges without writes. Each test has its own namespace (and, locally, its own cluster).

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Service};
use kbeast_e2e::harness::{Env, metric_value};
use kbeast_e2e::wait_for;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

const CONVERGE: Duration = Duration::from_secs(120);

fn condition(project: &kbeast_api::KnowledgeProject, type_: &str) -> Option<(String, String)> {
    project.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == type_ && c.observed_generation == project.metadata.generation)
            .map(|c| (c.status.clone(), c.reason.clone()))
    })
}

async fn merge_spec(env: &Env, namespace: &str, name: &str, spec: serde_json::Value) {
    env.projects(namespace)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": spec})),
        )
        .await
        .expect("spec patched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_refused_by_the_api_or_reported_without_touching_children() {
    let env = Env::start().await;
    let (_operator, _) = env.operator(&[]);
    let namespace = "e2e-invalid";
    env.create_project(namespace, "minimal.yaml", |_| {}).await;
    env.wait_ready(namespace, "docs", CONVERGE).await;

    // The CRD's CEL rule rejects it at the API, with the rule's message.
    let error = env
        .projects(namespace)
        .patch(
            "docs",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 2, "autoscaling": {"enabled": true, "maxReplicas": 3}}})),
        )
        .await
        .expect_err("the API server refuses it");
    let kube::Error::Api(status) = error else {
        panic!("expected an API error, got {error}");
    };
    assert_eq!(status.code, 422);
    assert!(
        status
            .message
            .contains("spec.replicas must not be set while spec.autoscaling.enabled is true"),
        "{}",
        status.message
    );

    // Semantically invalid (the operator's check): reported, and no child changes.
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), namespace);
    let before = deployments.get("docs").await.expect("Deployment");
    merge_spec(
        &env,
        namespace,
        "docs",
        json!({"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}}),
    )
    .await;
    let projects = env.projects(namespace);
    wait_for("Ready=False InvalidSpec", CONVERGE, || async {
        projects
            .get("docs")
            .await
            .is_ok_and(|p| condition(&p, "Ready") == Some(("False".into(), "InvalidSpec".into())))
    })
    .await;
    let project = projects.get("docs").await.expect("project");
    let degraded = project
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Degraded"))
        .expect("Degraded");
    assert!(
        degraded.message.contains("spec.resources"),
        "names the field: {}",
        degraded.message
    );
    let after = deployments.get("docs").await.expect("Deployment");
    assert_eq!(
        after.spec, before.spec,
        "an invalid spec is never half applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_freezes_children_while_status_reports_and_resume_converges() {
    let env = Env::start().await;
    let (_operator, _) = env.operator(&[]);
    let namespace = "e2e-suspend";
    env.create_project(namespace, "minimal.yaml", |p| {
        p["spec"]["storage"] = json!({"volume": {"size": "1Gi", "accessMode": "ReadWriteMany"}});
    })
    .await;
    env.wait_ready(namespace, "docs", CONVERGE).await;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), namespace);

    merge_spec(
        &env,
        namespace,
        "docs",
        json!({"suspend": true, "replicas": 2}),
    )
    .await;
    let projects = env.projects(namespace);
    wait_for("Suspended=True", CONVERGE, || async {
        projects
            .get("docs")
            .await
            .is_ok_and(|p| condition(&p, "Suspended").is_some_and(|(s, _)| s == "True"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let replicas = deployments
        .get("docs")
        .await
        .expect("Deployment")
        .spec
        .and_then(|s| s.replicas);
    assert_eq!(replicas, Some(1), "no child changes while suspended");

    merge_spec(&env, namespace, "docs", json!({"suspend": false})).await;
    wait_for("replicas 2 after resume", CONVERGE, || async {
        deployments
            .get("docs")
            .await
            .is_ok_and(|d| d.spec.and_then(|s| s.replicas) == Some(2))
    })
    .await;
    env.wait_ready(namespace, "docs", CONVERGE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_runs_the_finalizer_and_keeps_or_deletes_the_volume() {
    let env = Env::start().await;
    let (_operator, _) = env.operator(&[]);
    for (namespace, policy, kept) in [
        ("e2e-delete-retain", "Retain", true),
        ("e2e-delete-delete", "Delete", false),
    ] {
        env.create_project(namespace, "minimal.yaml", |p| {
            p["spec"]["storage"]["deletionPolicy"] = json!(policy);
        })
        .await;
        env.wait_ready(namespace, "docs", CONVERGE).await;
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), namespace);
        assert!(pvcs.get_opt("docs-data").await.expect("get").is_some());

        env.projects(namespace)
            .delete("docs", &DeleteParams::default())
            .await
            .expect("deleted");
        let projects = env.projects(namespace);
        wait_for("the project is gone", CONVERGE, || async {
            projects.get_opt("docs").await.is_ok_and(|p| p.is_none())
        })
        .await;
        let services: Api<Service> = Api::namespaced(env.client.clone(), namespace);
        wait_for("children garbage-collected", CONVERGE, || async {
            services.get_opt("docs").await.is_ok_and(|s| s.is_none())
        })
        .await;
        let pvc = pvcs.get_opt("docs-data").await.expect("get");
        if kept {
            let pvc = pvc.expect("Retain keeps the PVC");
            assert!(
                pvc.owner_references().is_empty(),
                "and releases it from the project"
            );
        } else {
            assert!(
                pvc.is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
                "Delete removes the PVC"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_reconciles_and_a_successor_takes_over_within_the_lease() {
    let env = Env::start().await;
    let (first, first_port) = env.operator(&["--identity=replica-a"]);
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "kbeast-system");
    let holder = || async {
        leases
            .get_opt("kbeast-operator-leader")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
    };
    wait_for("replica-a leads", CONVERGE, || async {
        holder().await.as_deref() == Some("replica-a")
    })
    .await;
    let (_second, second_port) = env.operator(&["--identity=replica-b"]);
    let namespace = "e2e-leader";
    env.create_project(namespace, "minimal.yaml", |p| {
        p["spec"]["storage"] = json!({"volume": {"size": "1Gi", "accessMode": "ReadWriteMany"}});
    })
    .await;
    env.wait_ready(namespace, "docs", CONVERGE).await;
    wait_for("both replicas report metrics", CONVERGE, || async {
        metric_value(first_port, "kbeast_leader").is_some()
            && metric_value(second_port, "kbeast_leader").is_some()
    })
    .await;
    assert_eq!(metric_value(first_port, "kbeast_leader"), Some(1.0));
    assert_eq!(metric_value(second_port, "kbeast_leader"), Some(0.0));
    assert_eq!(
        metric_value(second_port, "kbeast_managed_projects"),
        Some(0.0),
        "the follower reconciles nothing"
    );

    // Kill the leader without letting it release the Lease: the follower waits out the lease.
    let killed_at = Instant::now();
    drop(first);
    wait_for("replica-b leads", Duration::from_secs(60), || async {
        holder().await.as_deref() == Some("replica-b")
    })
    .await;
    let took = killed_at.elapsed();
    assert!(
        took <= Duration::from_secs(15 + 5),
        "take-over within the lease duration (15 s) plus a retry: took {took:?}"
    );
    merge_spec(&env, namespace, "docs", json!({"replicas": 2})).await;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), namespace);
    wait_for("the new leader reconciles", CONVERGE, || async {
        deployments
            .get("docs")
            .await
            .is_ok_and(|d| d.spec.and_then(|s| s.replicas) == Some(2))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_operator_converges_with_zero_writes() {
    let env = Env::start().await;
    let namespace = "e2e-restart";
    let (operator, _) = env.operator(&[]);
    env.create_project(namespace, "minimal.yaml", |_| {}).await;
    env.wait_ready(namespace, "docs", CONVERGE).await;
    // Let the gate settle (pods of the emulator without a runner fail their smoke check once).
    tokio::time::sleep(Duration::from_secs(5)).await;
    drop(operator);

    let Some(since) = env.mark("counting writes after a restart") else {
        return;
    };
    let (_operator, port) = env.operator(&[]);
    wait_for("the restarted operator reconciled", CONVERGE, || async {
        metric_value(port, "kbeast_reconciliations_total{result=\"success\"}").unwrap_or(0.0) >= 1.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let writes = env.operator_writes_since(since);
    assert!(writes.is_empty(), "writes after a restart: {writes:#?}");
    let project = env.projects(namespace).get("docs").await.expect("project");
    assert!(kbeast_e2e::rolled_out_for_generation(&project));
}
