//! The emulated workload controllers: Deployment → ReplicaSet → Pods with the rolling update
//! arithmetic of kube-controller-manager, checked against `deployment-rollout.json`.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Endpoints, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kbeast_localcluster::{ControllerSet, LocalCluster, Options};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

async fn cluster(controllers: ControllerSet) -> LocalCluster {
    LocalCluster::start(Options {
        controllers,
        controller_tick: Duration::from_millis(50),
        ..Options::default()
    })
    .await
    .expect("cluster starts")
}

fn deployment(
    name: &str,
    replicas: i32,
    max_surge: Value,
    max_unavailable: Value,
    image: &str,
) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": max_surge, "maxUnavailable": max_unavailable}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 8080}]}]}}
        }
    }))
    .unwrap()
}

/// A cluster whose resync tick is an hour: time-based state (minReadySeconds, progress
/// deadlines) must be rechecked by the controllers themselves, as in kube-controller-manager.
async fn cluster_without_resync() -> LocalCluster {
    LocalCluster::start(Options {
        controllers: ControllerSet::all(),
        controller_tick: Duration::from_secs(3600),
        ..Options::default()
    })
    .await
    .expect("cluster starts")
}

/// Polls `check` until it returns `Some`, failing after `timeout`.
async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// ReplicaSets of a deployment as (revision, spec.replicas), oldest revision first.
async fn replica_sets(api: &Api<ReplicaSet>, app: &str) -> Vec<(i64, i32)> {
    let mut out: Vec<(i64, i32)> = api
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .iter()
        .map(|rs| {
            let rev = rs
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("deployment.kubernetes.io/revision"))
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            (rev, rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0))
        })
        .collect();
    out.sort();
    out
}

fn condition(d: &Deployment, type_: &str) -> Option<(String, String)> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

async fn stable_replica_sets(api: &Api<ReplicaSet>, app: &str, want: Vec<(i64, i32)>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = replica_sets(api, app).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replica sets: want {want:?}, have {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn rollout_max_surge_1_max_unavailable_0_matches_golden() {
    // Recorded without scheduler and kubelet: pods stay Pending.
    let c = cluster(ControllerSet {
        scheduler: false,
        ..ControllerSet::all()
    })
    .await;
    let client = c.client().unwrap();
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let replicasets: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/k8s-golden/deployment-rollout.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let step = |name: &str| {
        golden["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()
            .clone()
    };

    let body: Deployment =
        serde_json::from_value(step("create-deployment")["request"]["body"].clone()).unwrap();
    deployments
        .create(&PostParams::default(), &body)
        .await
        .unwrap();
    stable_replica_sets(&replicasets, "web", vec![(1, 2)]).await;
    eventually(Duration::from_secs(5), "two pending pods", || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap();
        (list.items.len() == 2).then_some(())
    })
    .await;
    let pod = &pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items[0];
    let recorded_pod = &step("list-pods")["response"]["body"]["items"][0];
    assert_eq!(
        serde_json::to_value(pod.status.as_ref().unwrap()).unwrap(),
        recorded_pod["status"],
        "Pending pod status"
    );
    assert!(
        pod.metadata
            .labels
            .as_ref()
            .unwrap()
            .contains_key("pod-template-hash")
    );
    assert_eq!(
        pod.spec.as_ref().unwrap().service_account_name.as_deref(),
        Some("default")
    );

    // Template update: the new ReplicaSet surges by one, the old one stays (nothing is available).
    let patch = step("update-template")["request"]["body"].clone();
    deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    stable_replica_sets(&replicasets, "web", vec![(1, 2), (2, 1)]).await;
    let recorded = step("get-deployment-after-update")["response"]["body"]["status"].clone();
    let d = eventually(
        Duration::from_secs(5),
        "deployment status after update",
        || async {
            let d = deployments.get("web").await.unwrap();
            let s = serde_json::to_value(d.status.as_ref()?).ok()?;
            (s["replicas"] == recorded["replicas"]
                && s["updatedReplicas"] == recorded["updatedReplicas"])
                .then_some(d)
        },
    )
    .await;
    let status = serde_json::to_value(d.status.as_ref().unwrap()).unwrap();
    for key in [
        "observedGeneration",
        "replicas",
        "updatedReplicas",
        "unavailableReplicas",
        "terminatingReplicas",
        "readyReplicas",
        "availableReplicas",
    ] {
        assert_eq!(status[key], recorded[key], "status.{key}");
    }
    let reasons = |s: &Value| -> Vec<(Value, Value, Value)> {
        s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["type"].clone(), c["status"].clone(), c["reason"].clone()))
            .collect()
    };
    assert_eq!(
        reasons(&status),
        reasons(&recorded),
        "conditions in recorded order"
    );
    assert_eq!(
        d.metadata.annotations.unwrap()["deployment.kubernetes.io/revision"],
        "2"
    );
    let rs_list = replicasets.list(&ListParams::default()).await.unwrap();
    for rs in &rs_list.items {
        let a = rs.metadata.annotations.as_ref().unwrap();
        assert_eq!(a["deployment.kubernetes.io/desired-replicas"], "2");
        assert_eq!(a["deployment.kubernetes.io/max-replicas"], "3");
        assert_eq!(
            rs.metadata.owner_references.as_ref().unwrap()[0].kind,
            "Deployment"
        );
    }

    // Pods become ready (as a kubelet would report): the rollout completes one pod at a time.
    let mut max_total = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    let d = loop {
        c.set_pods_ready("default", "app=web", true);
        let total = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items
            .len();
        max_total = max_total.max(total);
        let d = deployments.get("web").await.unwrap();
        if condition(&d, "Progressing") == Some(("True".into(), "NewReplicaSetAvailable".into())) {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "rollout did not complete: {:?}",
            d.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        max_total <= 3,
        "never more than replicas + maxSurge pods ({max_total})"
    );
    assert_eq!(
        condition(&d, "Available"),
        Some(("True".into(), "MinimumReplicasAvailable".into()))
    );
    let s = d.status.unwrap();
    assert_eq!(
        (
            s.replicas,
            s.updated_replicas,
            s.ready_replicas,
            s.available_replicas
        ),
        (Some(2), Some(2), Some(2), Some(2))
    );
    stable_replica_sets(&replicasets, "web", vec![(1, 0), (2, 2)]).await;
}

#[tokio::test]
async fn rollout_25_percent_surge_and_unavailable() {
    let c = cluster(ControllerSet::all()).await;
    let client = c.client().unwrap();
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let replicasets: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    deployments
        .create(
            &PostParams::default(),
            &deployment("pct", 4, json!("25%"), json!("25%"), "app:1"),
        )
        .await
        .unwrap();
    stable_replica_sets(&replicasets, "pct", vec![(1, 4)]).await;
    eventually(Duration::from_secs(5), "4 ready", || async {
        c.set_pods_ready("default", "app=pct", true);
        let d = deployments.get("pct").await.unwrap();
        (d.status?.available_replicas == Some(4)).then_some(())
    })
    .await;
    // 4 replicas, 25%/25%: surge 1 (rounded up), unavailable 1 (rounded down). The new
    // ReplicaSet starts at 1 and the old one drops to 3 (keeping 3 available); then the
    // new one grows to 2 (5 pods = replicas + surge). Without ready new pods it stops there.
    deployments
        .patch("pct", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}})))
        .await
        .unwrap();
    stable_replica_sets(&replicasets, "pct", vec![(1, 3), (2, 2)]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        replica_sets(&replicasets, "pct").await,
        vec![(1, 3), (2, 2)],
        "stable while new pods are unavailable"
    );
    // The new pod becomes ready: new 2... until the rollout completes at new 4, old 0.
    eventually(Duration::from_secs(10), "rollout complete", || async {
        c.set_pods_ready("default", "app=pct", true);
        (replica_sets(&replicasets, "pct").await == vec![(1, 0), (2, 4)]).then_some(())
    })
    .await;
}

#[tokio::test]
async fn progress_deadline_exceeded_and_pause() {
    let c = cluster_without_resync().await;
    let client = c.client().unwrap();
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let replicasets: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let mut d = deployment("slow", 2, json!(1), json!(0), "app:1");
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(1);
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let d = eventually(
        Duration::from_secs(5),
        "ProgressDeadlineExceeded",
        || async {
            let d = deployments.get("slow").await.unwrap();
            (condition(&d, "Progressing")
                == Some(("False".into(), "ProgressDeadlineExceeded".into())))
            .then_some(d)
        },
    )
    .await;
    let message = d
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap()
        .message
        .unwrap();
    assert!(message.ends_with("has timed out progressing."), "{message}");

    deployments
        .patch(
            "slow",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "DeploymentPaused", || async {
        let d = deployments.get("slow").await.unwrap();
        (condition(&d, "Progressing") == Some(("Unknown".into(), "DeploymentPaused".into())))
            .then_some(())
    })
    .await;
    deployments
        .patch("slow", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}})))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        replica_sets(&replicasets, "slow").await,
        vec![(1, 2)],
        "no new ReplicaSet while paused"
    );
}

#[tokio::test]
async fn scheduler_endpoints_and_pdb_follow_ready_pods() {
    let c = cluster(ControllerSet::all()).await;
    let client = c.client().unwrap();
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let endpoints: Api<Endpoints> = Api::default_namespaced(client.clone());
    let pdbs: Api<PodDisruptionBudget> = Api::default_namespaced(client.clone());
    deployments
        .create(
            &PostParams::default(),
            &deployment("svc", 2, json!(1), json!(0), "app:1"),
        )
        .await
        .unwrap();
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::default_namespaced(client.clone());
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "svc"}, "spec": {"selector": {"app": "svc"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})).unwrap(),
        )
        .await
        .unwrap();
    pdbs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "svc"}, "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "svc"}}}})).unwrap(),
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(5), "pods bound to the node", || async {
        let list = pods
            .list(&ListParams::default().labels("app=svc"))
            .await
            .unwrap();
        (list.items.len() == 2
            && list.items.iter().all(|p| {
                p.spec.as_ref().unwrap().node_name.as_deref() == Some("localcluster-node")
            }))
        .then_some(())
    })
    .await;
    assert_eq!(c.set_pods_ready("default", "app=svc", true), 2);
    let ep = eventually(Duration::from_secs(5), "ready endpoints", || async {
        let ep = endpoints.get("svc").await.ok()?;
        let subsets = ep.subsets.clone()?;
        (subsets[0].addresses.as_ref().map(Vec::len) == Some(2)).then_some(ep)
    })
    .await;
    assert_eq!(ep.subsets.unwrap()[0].ports.as_ref().unwrap()[0].port, 8080);
    let pdb = eventually(Duration::from_secs(5), "pdb status", || async {
        let pdb = pdbs.get("svc").await.ok()?;
        (pdb.status.as_ref()?.current_healthy == 2).then_some(pdb)
    })
    .await;
    let s = pdb.status.unwrap();
    assert_eq!(
        (s.expected_pods, s.desired_healthy, s.disruptions_allowed),
        (2, 1, 1)
    );

    c.set_pods_ready("default", "app=svc", false);
    eventually(Duration::from_secs(5), "endpoints not ready", || async {
        let ep = endpoints.get("svc").await.ok()?;
        (ep.subsets?[0].not_ready_addresses.as_ref().map(Vec::len) == Some(2)).then_some(())
    })
    .await;
}

/// The tick is an hour: after the first pass, only the changes wake the controllers, and each
/// pass looks only at what they can affect (owners of changed pods, Services and PDBs whose
/// selectors match them). Every step of the chain must still follow.
#[tokio::test]
async fn changes_alone_drive_the_controllers_between_ticks() {
    let c = LocalCluster::start(Options {
        controllers: ControllerSet::all(),
        controller_tick: Duration::from_secs(3600),
        ..Options::default()
    })
    .await
    .expect("cluster starts");
    let client = c.client().unwrap();
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let endpoints: Api<Endpoints> = Api::default_namespaced(client.clone());
    let pdbs: Api<PodDisruptionBudget> = Api::default_namespaced(client.clone());
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::default_namespaced(client.clone());
    deployments
        .create(
            &PostParams::default(),
            &deployment("web", 2, json!(1), json!(0), "app:1"),
        )
        .await
        .unwrap();
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})).unwrap(),
        )
        .await
        .unwrap();
    pdbs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}})).unwrap(),
    )
    .await
    .unwrap();
    let bound = || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap();
        list.items
            .iter()
            .filter(|p| p.spec.as_ref().unwrap().node_name.is_some())
            .count()
    };
    eventually(Duration::from_secs(5), "2 pods bound", || async {
        (bound().await == 2).then_some(())
    })
    .await;
    assert_eq!(c.set_pods_ready("default", "app=web", true), 2);
    let addresses = || async {
        let ep = endpoints.get("web").await.ok()?;
        Some(ep.subsets?[0].addresses.as_ref().map_or(0, Vec::len))
    };
    eventually(Duration::from_secs(5), "2 ready endpoints", || async {
        (addresses().await == Some(2)).then_some(())
    })
    .await;
    eventually(Duration::from_secs(5), "pdb: 2 healthy", || async {
        let s = pdbs.get("web").await.ok()?.status?;
        (s.current_healthy == 2 && s.disruptions_allowed == 1).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(5),
        "deployment: 2 available",
        || async {
            let s = deployments.get("web").await.ok()?.status?;
            (s.available_replicas == Some(2) && s.ready_replicas == Some(2)).then_some(())
        },
    )
    .await;

    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    eventually(
        Duration::from_secs(5),
        "1 endpoint after scaling down",
        || async { (addresses().await == Some(1) && bound().await == 1).then_some(()) },
    )
    .await;
    eventually(Duration::from_secs(5), "deployment: 1 replica", || async {
        let s = deployments.get("web").await.ok()?.status?;
        (s.replicas == Some(1) && s.available_replicas == Some(1)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn recreate_strategy_and_min_ready_seconds() {
    let c = cluster_without_resync().await;
    let client = c.client().unwrap();
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let replicasets: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let mut d = deployment("rec", 2, json!(1), json!(0), "app:1");
    let spec = d.spec.as_mut().unwrap();
    spec.strategy = Some(serde_json::from_value(json!({"type": "Recreate"})).unwrap());
    // Condition times have second precision (as in Kubernetes), so 2 s is safely "not yet"
    // 300 ms after the pods became ready.
    spec.min_ready_seconds = Some(2);
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    stable_replica_sets(&replicasets, "rec", vec![(1, 2)]).await;
    c.set_pods_ready("default", "app=rec", true);
    // Ready is not yet available: minReadySeconds has to pass first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = deployments.get("rec").await.unwrap().status.unwrap();
    assert_eq!(
        (status.ready_replicas, status.available_replicas),
        (Some(2), None)
    );
    eventually(
        Duration::from_secs(5),
        "available after minReadySeconds",
        || async {
            let s = deployments.get("rec").await.unwrap().status?;
            (s.available_replicas == Some(2)).then_some(())
        },
    )
    .await;

    // Recreate: the old ReplicaSet goes to zero before the new one is scaled up.
    deployments
        .patch("rec", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}})))
        .await
        .unwrap();
    let mut saw_both_up = false;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let sets = replica_sets(&replicasets, "rec").await;
        saw_both_up |= sets.len() == 2 && sets.iter().all(|(_, r)| *r > 0);
        if sets == vec![(1, 0), (2, 2)] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "recreate did not finish: {sets:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!saw_both_up, "old and new pods never run side by side");
}

#[tokio::test]
async fn services_get_cluster_ips_pvcs_bind_and_secrets_fold_string_data() {
    let c = cluster(ControllerSet::all()).await;
    let client = c.client().unwrap();
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::default_namespaced(client.clone());
    let svc = services
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "ip"}, "spec": {"ports": [{"port": 80}]}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let ip = svc.spec.unwrap().cluster_ip.unwrap();
    assert!(ip.starts_with("10.96."), "{ip}");

    let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::default_namespaced(client.clone());
    pvcs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})).unwrap(),
    )
    .await
    .unwrap();
    let bound = eventually(Duration::from_secs(5), "PVC bound", || async {
        let pvc = pvcs.get("data").await.ok()?;
        (pvc.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(pvc)
    })
    .await;
    assert_eq!(bound.status.unwrap().capacity.unwrap()["storage"].0, "1Gi");

    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::default_namespaced(client);
    let secret = secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "keys"}, "stringData": {"token": "s3cret"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    assert!(secret.string_data.is_none());
    assert_eq!(secret.data.unwrap()["token"].0, b"s3cret");
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
}

#[tokio::test]
async fn jobs_complete_or_fail_as_their_pods_finish() {
    use k8s_openapi::api::batch::v1::Job;
    let c = cluster(ControllerSet::all()).await;
    let client = c.client().unwrap();
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let job = |name: &str, backoff: i32| -> Job {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"backoffLimit": backoff, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "purge", "image": "purge:1"}]}}}}))
        .unwrap()
    };
    let created = jobs
        .create(&PostParams::default(), &job("purge", 1))
        .await
        .unwrap();
    let labels = created
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    assert_eq!(labels["job-name"], "purge");
    eventually(Duration::from_secs(5), "job pod", || async {
        (pods
            .list(&ListParams::default().labels("job-name=purge"))
            .await
            .ok()?
            .items
            .len()
            == 1)
            .then_some(())
    })
    .await;
    assert_eq!(c.finish_pods("default", "job-name=purge", true), 1);
    let done = eventually(Duration::from_secs(5), "Complete", || async {
        let j = jobs.get("purge").await.ok()?;
        let complete = j
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True");
        complete.then_some(j)
    })
    .await;
    assert_eq!(done.status.unwrap().succeeded, Some(1));

    jobs.create(&PostParams::default(), &job("doomed", 1))
        .await
        .unwrap();
    // backoffLimit 1: the second failed pod fails the Job.
    eventually(Duration::from_secs(5), "Failed", || async {
        c.finish_pods("default", "job-name=doomed", false);
        let j = jobs.get("doomed").await.ok()?;
        let failed = j
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Failed" && c.status == "True");
        failed.then_some(())
    })
    .await;
    let failed_pods = pods
        .list(&ListParams::default().labels("job-name=doomed"))
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(failed_pods, 2, "one retry, then the Job gave up");
}

#[tokio::test]
async fn hpa_status_reports_missing_metrics_like_the_recording() {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    let c = cluster(ControllerSet::all()).await;
    let client = c.client().unwrap();
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    deployments
        .create(
            &PostParams::default(),
            &deployment("web", 1, json!(1), json!(0), "app:1"),
        )
        .await
        .unwrap();
    let hpas: Api<HorizontalPodAutoscaler> = Api::default_namespaced(client);
    hpas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "maxReplicas": 5}})).unwrap(),
    )
    .await
    .unwrap();
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/k8s-golden/hpa-pdb-netpol.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let recorded = golden["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "get-hpa-after-controller")
        .unwrap()["response"]["body"]["status"]
        .clone();
    let status = eventually(Duration::from_secs(5), "HPA status", || async {
        let h = hpas.get("web").await.ok()?;
        let s = serde_json::to_value(h.status?).ok()?;
        (s["currentReplicas"] == 1).then_some(s)
    })
    .await;
    let shape = |s: &Value| -> Vec<(Value, Value, Value, Value)> {
        s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["type"].clone(),
                    c["status"].clone(),
                    c["reason"].clone(),
                    c["message"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(shape(&status), shape(&recorded));
    for key in ["currentReplicas", "desiredReplicas", "currentMetrics"] {
        assert_eq!(status[key], recorded[key], "status.{key}");
    }
}
