//! The operator under stress: API faults and cut watches, the autoscaling hand-over watched
//! event by event, and 200 projects at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use kbeast_api::KnowledgeProject;
use kbeast_e2e::harness::{Env, metric_sum};
use kbeast_e2e::{rolled_out_for_generation, wait_for};
use kbeast_localcluster::{Fault, FaultAction};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

const CONVERGE: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_converge_through_api_faults_without_duplicate_children() {
    let env = Env::start().await;
    if env.control_plane().is_none() {
        eprintln!("skipped on a real cluster: faults go through the test's proxy");
        return;
    }
    // The operator talks to the real API server through a proxy that fails one write in ten
    // (500, or 429 for creates) and cuts every watch after 3 s.
    let proxy = env.fault_proxy().await;
    for (verb, action) in [
        ("patch", FaultAction::InternalError),
        (
            "create",
            FaultAction::TooManyRequests {
                retry_after_seconds: 1,
            },
        ),
        ("delete", FaultAction::InternalError),
        ("update", FaultAction::InternalError),
    ] {
        proxy.inject_fault(Fault::new(action).verb(verb).every(10));
    }
    proxy.inject_fault(
        Fault::new(FaultAction::CloseWatchAfter(Duration::from_secs(3))).verb("watch"),
    );
    let (_operator, port) = env.operator_through(&proxy, &[]);
    let namespaces: Vec<String> = (0..5).map(|i| format!("e2e-faults-{i}")).collect();
    for namespace in &namespaces {
        env.create_project(namespace, "minimal.yaml", |p| {
            p["spec"]["storage"] = json!({"ephemeral": {}});
        })
        .await;
    }
    for namespace in &namespaces {
        env.wait_ready(namespace, "docs", CONVERGE).await;
    }
    assert!(proxy.injected() > 0, "faults were injected");
    let errors = metric_sum(port, "kbeast_reconcile_errors_total").unwrap_or(0.0);
    assert!(errors > 0.0, "the operator's error metrics show the faults");
    for namespace in &namespaces {
        let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), namespace);
        let secrets: Api<k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(env.client.clone(), namespace);
        let list = deployments
            .list(&ListParams::default())
            .await
            .expect("list");
        assert_eq!(list.items.len(), 1, "{namespace}: one Deployment");
        let keys = secrets
            .list(&ListParams::default().labels("kbeast.io/project=docs"))
            .await
            .expect("list");
        assert_eq!(keys.items.len(), 1, "{namespace}: one generated key Secret");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_autoscaling_on_and_off_never_drops_a_running_pod() {
    let env = Env::start().await;
    let (_operator, _) = env.operator(&[]);
    let namespace = "e2e-autoscaling";
    env.create_project(namespace, "minimal.yaml", |p| {
        p["spec"]["storage"] = json!({"volume": {"size": "1Gi", "accessMode": "ReadWriteMany"}});
        p["spec"]["replicas"] = json!(2);
    })
    .await;
    env.wait_ready(namespace, "docs", CONVERGE).await;

    // Count live pods on every watch event.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), namespace);
    let lowest = Arc::new(Mutex::new(usize::MAX));
    let watch_lowest = lowest.clone();
    let watch = tokio::spawn(async move {
        let mut live: BTreeMap<String, bool> = BTreeMap::new();
        let mut initialised = false;
        let mut events = watcher(pods, watcher::Config::default()).boxed();
        while let Some(Ok(event)) = events.next().await {
            match event {
                watcher::Event::Init => live.clear(),
                watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                    let running = pod.metadata.deletion_timestamp.is_none();
                    live.insert(pod.metadata.name.clone().unwrap_or_default(), running);
                }
                watcher::Event::Delete(pod) => {
                    live.remove(&pod.metadata.name.clone().unwrap_or_default());
                }
                watcher::Event::InitDone => initialised = true,
            }
            if initialised {
                let count = live.values().filter(|running| **running).count();
                let mut lowest = watch_lowest.lock().expect("lock");
                *lowest = (*lowest).min(count);
            }
        }
    });

    let projects = env.projects(namespace);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(env.client.clone(), namespace);
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), namespace);
    projects
        .patch(
            "docs",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": null,
                "autoscaling": {"enabled": true, "minReplicas": 2, "maxReplicas": 4}}})),
        )
        .await
        .expect("autoscaling on");
    wait_for("the HPA exists", CONVERGE, || async {
        hpas.get_opt("docs").await.is_ok_and(|h| h.is_some())
    })
    .await;
    env.wait_ready(namespace, "docs", CONVERGE).await;
    let hpa = hpas.get("docs").await.expect("HPA");
    let project = projects.get("docs").await.expect("project");
    assert_eq!(
        hpa.owner_references().first().map(|o| o.uid.as_str()),
        project.metadata.uid.as_deref(),
        "the HPA is the project's"
    );
    let rules = hpa.spec.expect("HPA spec");
    assert_eq!(
        (
            rules.scale_target_ref.kind.as_str(),
            rules.scale_target_ref.name.as_str(),
            rules.min_replicas,
            rules.max_replicas
        ),
        ("Deployment", "docs", Some(2), 4),
        "the HPA scales the Deployment within the spec's bounds"
    );
    let deployment = deployments.get("docs").await.expect("Deployment");
    let ours_own_replicas = deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some("kbeast-operator"))
        .any(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0["f:spec"].get("f:replicas").is_some())
        });
    assert!(
        !ours_own_replicas,
        "the operator no longer owns spec.replicas"
    );
    assert_eq!(
        deployment.spec.and_then(|s| s.replicas),
        Some(2),
        "the count was kept"
    );

    projects
        .patch(
            "docs",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 2, "autoscaling": null}})),
        )
        .await
        .expect("autoscaling off");
    wait_for("the HPA is deleted", CONVERGE, || async {
        hpas.get_opt("docs").await.is_ok_and(|h| h.is_none())
    })
    .await;
    env.wait_ready(namespace, "docs", CONVERGE).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    watch.abort();
    let lowest = *lowest.lock().expect("lock");
    assert!(
        lowest >= 2,
        "running pods dropped to {lowest} during the switch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_projects_created_at_once_all_become_ready() {
    let projects_wanted: usize = std::env::var("KBEAST_E2E_SCALE_PROJECTS")
        .map(|v| v.parse().expect("KBEAST_E2E_SCALE_PROJECTS is a number"))
        .unwrap_or(200);
    #[allow(non_snake_case)]
    let PROJECTS = projects_wanted;
    // Hundreds of query processes would not fit this machine: a hollow node reports the pods
    // running, and one real kbeast-query answers the smoke checks of them all.
    let env = Env::start_hollow().await;
    let (operator, metrics_port) = env.operator(&[]);
    let namespace = "e2e-scale";
    kbeast_e2e::create_namespace(&env.client, namespace).await;
    let projects: Api<KnowledgeProject> = env.projects(namespace);
    let start_mark = env.mark("the requests until Ready");
    let started = Instant::now();
    for i in 0..PROJECTS {
        let project: KnowledgeProject = serde_json::from_value(json!({
            "apiVersion": "kbeast.io/v1alpha1", "kind": "KnowledgeProject",
            "metadata": {"name": format!("p{i:03}")},
            "spec": {"storage": {"ephemeral": {}}, "embedding": {"provider": "hash"}},
        }))
        .expect("valid project");
        projects
            .create(&PostParams::default(), &project)
            .await
            .expect("project created");
    }
    let created = started.elapsed();
    let _backend = kbeast_e2e::hollow::HollowQueryBackend::start(&env.client, namespace).await;
    eprintln!(
        "scale: {PROJECTS} projects created in {:.1} s",
        created.as_secs_f64()
    );
    // 600 s unless the benchmark asks for more (bench/operator-scale.sh does for large counts).
    let deadline_seconds: u64 = std::env::var("KBEAST_E2E_SCALE_DEADLINE_SECONDS")
        .map(|v| {
            v.parse()
                .expect("KBEAST_E2E_SCALE_DEADLINE_SECONDS is a number")
        })
        .unwrap_or(600);
    let deadline = Instant::now() + Duration::from_secs(deadline_seconds);
    // Watched, like `kubectl wait`: listing every project twice a second would load the
    // control plane under test.
    let (seen, writer) = kube::runtime::reflector::store::<KnowledgeProject>();
    let reflect = tokio::spawn(
        watcher(projects.clone(), watcher::Config::default())
            .reflect(writer)
            .for_each(|_| async {}),
    );
    seen.wait_until_ready().await.expect("project watch starts");
    loop {
        let all = seen.state();
        let waiting: Vec<String> = all
            .iter()
            .filter(|p| !rolled_out_for_generation(p))
            .map(|p| {
                let ready = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                    .map(|c| format!("{}: {}", c.reason, c.message))
                    .unwrap_or_default();
                format!("{} ({ready})", p.name_any())
            })
            .collect();
        if all.len() == PROJECTS && waiting.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {PROJECTS} projects not Ready after {deadline_seconds} s, e.g. {:?}",
            waiting.len() + PROJECTS.saturating_sub(all.len()),
            waiting.iter().take(3).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    reflect.abort();
    let took = started.elapsed();
    // What the API server served until then, per client, verb and resource.
    let requests_until_ready = start_mark.map(|mark| env.requests_since_by_client(mark));
    if let Some(counts) = &requests_until_ready {
        let total: usize = counts.values().sum();
        eprintln!("scale: {total} requests until Ready: {counts:?}");
    }
    let rss_kib = std::fs::read_to_string(format!("/proc/{}/status", operator.0.id()))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        });
    eprintln!(
        "scale: {PROJECTS} projects Ready in {:.1} s; operator RSS {} MiB",
        took.as_secs_f64(),
        rss_kib.map_or("unknown".to_string(), |k| format!(
            "{:.1}",
            k as f64 / 1024.0
        ))
    );
    let reconciles = metric_sum(metrics_port, "kbeast_reconciliations_total").unwrap_or(0.0);
    let busy = metric_sum(metrics_port, "kbeast_reconcile_duration_seconds_sum").unwrap_or(0.0);
    eprintln!(
        "scale: {reconciles} reconciles, {busy:.1} s spent reconciling ({:.0} ms each)",
        1000.0 * busy / reconciles.max(1.0)
    );

    // Steady state: once everything is Ready, the operator writes nothing.
    let steady_seconds: u64 = std::env::var("KBEAST_E2E_SCALE_STEADY_SECONDS")
        .map(|v| {
            v.parse()
                .expect("KBEAST_E2E_SCALE_STEADY_SECONDS is a number")
        })
        .unwrap_or(10);
    // Let the last status writes and rollout records land first.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let steady_writes = match env.mark("the steady-state write count") {
        Some(mark) => {
            tokio::time::sleep(Duration::from_secs(steady_seconds)).await;
            let writes = env.operator_writes_since(mark);
            assert!(
                writes.is_empty(),
                "{} operator writes in {steady_seconds} s of steady state, e.g. {:?}",
                writes.len(),
                writes.iter().take(5).collect::<Vec<_>>()
            );
            Some(writes.len())
        }
        None => None,
    };
    if let Some(path) = std::env::var_os("KBEAST_E2E_SCALE_REPORT") {
        let report = json!({
            "projects": PROJECTS,
            "create_seconds": created.as_secs_f64(),
            "ready_seconds": took.as_secs_f64(),
            "deadline_seconds": deadline_seconds,
            "operator_rss_mib": rss_kib.map(|k| k as f64 / 1024.0),
            "reconciles": reconciles,
            "reconcile_seconds": busy,
            "steady_state_seconds": steady_seconds,
            "steady_state_operator_writes": steady_writes,
            "requests_until_ready": requests_until_ready,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report).expect("JSON"))
            .expect("report written");
    }
}
