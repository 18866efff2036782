//! The pod runner (local kubelet) with real processes: `kbeast-query` of this build for HTTP
//! serving and probes, `/bin/sh` (image `busybox`) for exits, signals and files.
//!
//! Needs root (network and mount namespaces), as CI runs. `kbeast-query` is found next to
//! the test executable (`scripts/build-binaries.sh` builds it before `cargo test`) or at
//! `$KBEAST_QUERY_BIN`; a missing binary fails the tests that need it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, PersistentVolumeClaim, Pod, Secret, Service,
};
use kbeast_localcluster::{ControllerSet, KubeletOptions, LocalCluster, Options};
use kube::api::{Api, DeleteParams, LogParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(30);

fn query_binary() -> PathBuf {
    kbeast_localcluster::kubelet::find_query_binary().unwrap_or_else(|| {
        panic!(
            "kbeast-query not found next to {:?} (or its parent); build it first (scripts/build-binaries.sh or `cargo build -p kbeast-query`) or set KBEAST_QUERY_BIN",
            std::env::current_exe().unwrap()
        )
    })
}

async fn cluster(with_query: bool) -> LocalCluster {
    let mut kubelet = KubeletOptions {
        backoff_base: Duration::from_millis(300),
        backoff_max: Duration::from_secs(5),
        volume_sync: Duration::from_millis(200),
        ..KubeletOptions::default()
    };
    if with_query {
        kubelet
            .images
            .insert("ghcr.io/kbeast/kbeast".into(), query_binary());
    }
    LocalCluster::start(Options {
        controllers: ControllerSet::all().with_kubelet(),
        controller_tick: Duration::from_millis(50),
        kubelet,
        ..Options::default()
    })
    .await
    .expect("cluster with the pod runner starts (needs root)")
}

/// Polls `check` until it yields a value or the deadline passes.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

fn json_pod(name: &str, spec: Value) -> Pod {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}}, "spec": spec}))
    .unwrap()
}

fn condition(pod: &Pod, type_: &str) -> Option<(String, Option<String>)> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn is_ready(pod: &Pod) -> bool {
    condition(pod, "Ready").is_some_and(|(s, _)| s == "True")
}

fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.pod_ip.clone()
}

fn sh_container(script: &str) -> Value {
    json!({"name": "sh", "image": "busybox:1.36", "command": ["sh", "-c", script]})
}

fn query_container(extra: Value) -> Value {
    let mut c = json!({
        "name": "query", "image": "ghcr.io/kbeast/kbeast:0.1.0",
        "command": ["kbeast-query"], "args": ["serve"],
        "env": [{"name": "KBEAST_DATA", "value": "/var/lib/kbeast/data"}, {"name": "KBEAST_LOG", "value": "warn"}],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1},
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/kbeast/data"}]
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        c[k] = v.clone();
    }
    c
}

#[tokio::test]
async fn deployment_of_kbeast_query_serves_at_pod_ips_and_through_a_service() {
    let c = cluster(true).await;
    let client = c.client().unwrap();
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let services: Api<Service> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "query"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "query"}},
            "template": {"metadata": {"labels": {"app": "query"}}, "spec": {
                "containers": [query_container(json!({}))],
                "volumes": [{"name": "data", "emptyDir": {}}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let svc: Service = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "query"},
        "spec": {"selector": {"app": "query"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    wait_for("2 ready replicas through readiness probes", || async {
        let d = deployments.get("query").await.ok()?;
        (d.status?.ready_replicas? == 2).then_some(())
    })
    .await;
    let list = pods.list(&Default::default()).await.unwrap();
    assert_eq!(list.items.len(), 2);
    for pod in &list.items {
        let ip: std::net::Ipv4Addr = pod_ip(pod).unwrap().parse().unwrap();
        assert!(!ip.is_loopback(), "pods get their own IP: {ip}");
        let (code, _) = http_get(SocketAddr::from((ip, 8080)), "/healthz")
            .await
            .unwrap();
        assert_eq!(code, 200, "kbeast-query answers at its pod IP {ip}");
        let status = &pod
            .status
            .as_ref()
            .unwrap()
            .container_statuses
            .as_ref()
            .unwrap()[0];
        assert!(status.ready && status.started == Some(true));
        assert!(status.state.as_ref().unwrap().running.is_some());
    }
    let addr = c.port_forward("default", "svc/query", 80).await.unwrap();
    for _ in 0..4 {
        let (code, _) = http_get(addr, "/healthz").await.unwrap();
        assert_eq!(code, 200, "through the Service port-forward");
    }
    let name = list.items[0].metadata.name.clone().unwrap();
    let addr = c
        .port_forward("default", &format!("pod/{name}"), 8080)
        .await
        .unwrap();
    assert_eq!(http_get(addr, "/readyz").await.unwrap().0, 200);
}

#[tokio::test]
async fn env_value_from_and_args_expansion_reach_the_process() {
    let c = cluster(false).await;
    let client = c.client().unwrap();
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s"}, "stringData": {"token": "s3cret", "other": "o"}}))
            .unwrap(),
        )
        .await
        .unwrap();
    config_maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cm"}, "data": {"mode": "fast", "LEVEL": "3"}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let script = "echo \"arg=$(GREETING) who=$WHO secret=$TOKEN cm=$MODE level=$CFG_LEVEL ip=$POD_IP name=$POD_NAME ns=$POD_NS host=$(hostname)\"; exec sleep 600";
    let pod = json_pod(
        "env",
        json!({"containers": [{
        "name": "sh", "image": "busybox", "command": ["sh", "-c", script],
        "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CFG_"}],
        "env": [
            {"name": "GREETING", "value": "hello"},
            {"name": "WHO", "value": "$(GREETING)-$(UNDEFINED)-$$(GREETING)"},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "mode"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
        ]}]}),
    );
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let line = wait_for("the container's output", || async {
        let log = c.pod_log("default", "env", "sh").ok()?;
        log.lines().next().map(String::from)
    })
    .await;
    let ip = pod_ip(&pods.get("env").await.unwrap()).unwrap();
    assert_eq!(
        line,
        format!(
            "arg=hello who=hello-$(UNDEFINED)-$(GREETING) secret=s3cret cm=fast level=3 ip={ip} name=env ns=default host=env"
        )
    );
}

#[tokio::test]
async fn missing_secret_is_create_container_config_error_until_it_exists() {
    let c = cluster(false).await;
    let client = c.client().unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let pod = json_pod(
        "late",
        json!({"containers": [{
        "name": "sh", "image": "busybox", "command": ["sh", "-c", "exec sleep 600"],
        "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "later", "key": "t"}}}]}]}),
    );
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let message = wait_for("CreateContainerConfigError", || async {
        let p = pods.get("late").await.ok()?;
        let w = p.status?.container_statuses?[0].state.clone()?.waiting?;
        (w.reason.as_deref() == Some("CreateContainerConfigError")).then_some(w.message?)
    })
    .await;
    assert_eq!(message, "secret \"later\" not found");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "later"}, "stringData": {"t": "x"}}))
            .unwrap(),
        )
        .await
        .unwrap();
    wait_for("the pod to become ready once the secret exists", || async {
        is_ready(&pods.get("late").await.ok()?).then_some(())
    })
    .await;
}

#[tokio::test]
async fn secret_volume_is_at_its_mount_path_and_follows_secret_changes() {
    let c = cluster(false).await;
    let client = c.client().unwrap();
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let out = tempfile::tempdir().unwrap();
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "keys"}, "stringData": {"api-keys.json": "v1"}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let mount = "/etc/kbeast-pod-runner-test/keys";
    let script = format!(
        "while true; do cat {mount}/api-keys.json > /out/seen.tmp && mv /out/seen.tmp /out/seen; touch {mount}/x 2>/dev/null && echo writable > /out/rw; sleep 0.1; done"
    );
    let pod = json_pod(
        "vol",
        json!({
        "containers": [{"name": "sh", "image": "busybox", "command": ["sh", "-c", script],
            "volumeMounts": [{"name": "keys", "mountPath": mount, "readOnly": true}, {"name": "out", "mountPath": "/out"}]}],
        "volumes": [{"name": "keys", "secret": {"secretName": "keys"}},
            {"name": "out", "hostPath": {"path": out.path().to_str().unwrap()}}]}),
    );
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let seen = out.path().join("seen");
    wait_for("the secret's content at its mountPath", || async {
        (std::fs::read_to_string(&seen).ok()? == "v1").then_some(())
    })
    .await;
    assert!(
        !std::path::Path::new(mount).join("api-keys.json").exists(),
        "the mount is private to the pod's mount namespace"
    );
    assert!(
        !out.path().join("rw").exists(),
        "readOnly mounts are read-only"
    );
    secrets
        .patch(
            "keys",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"api-keys.json": "v2"}})),
        )
        .await
        .unwrap();
    wait_for("the rotated secret in the running pod", || async {
        (std::fs::read_to_string(&seen).ok()? == "v2").then_some(())
    })
    .await;
}

#[tokio::test]
async fn readiness_gate_holds_ready_until_its_condition_is_true() {
    let c = cluster(false).await;
    let client = c.client().unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let services: Api<Service> = Api::default_namespaced(client.clone());
    let endpoints: Api<Endpoints> = Api::default_namespaced(client.clone());
    let svc: Service = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "gated"},
        "spec": {"selector": {"app": "gated"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
    )
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    let mut pod = json_pod(
        "gated",
        json!({"containers": [sh_container("exec sleep 600")]}),
    );
    pod.spec.as_mut().unwrap().readiness_gates = Some(vec![
        serde_json::from_value(json!({"conditionType": "kbeast.io/smoke-passed"})).unwrap(),
    ]);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let p = wait_for("containers ready", || async {
        let p = pods.get("gated").await.ok()?;
        (condition(&p, "ContainersReady")?.0 == "True").then_some(p)
    })
    .await;
    assert_eq!(
        condition(&p, "Ready").unwrap(),
        (
            "False".to_string(),
            Some("ReadinessGatesNotReady".to_string())
        )
    );
    // The endpoints controller runs after the pod's change, as in a real cluster.
    let subset = wait_for("the pod listed in the Endpoints", || async {
        let ep = endpoints.get("gated").await.ok()?;
        ep.subsets?.into_iter().next()
    })
    .await;
    assert!(subset.addresses.is_none(), "not ready: not in addresses");
    assert_eq!(subset.not_ready_addresses.as_ref().unwrap().len(), 1);
    pods.patch_status(
        "gated",
        &PatchParams::default(),
        &Patch::Strategic(json!({"status": {"conditions": [{"type": "kbeast.io/smoke-passed", "status": "True", "reason": "SmokeTestPassed"}]}})),
    )
    .await
    .unwrap();
    let ip = wait_for("the pod ready and in the Endpoints", || async {
        let p = pods.get("gated").await.ok()?;
        if !is_ready(&p) {
            return None;
        }
        let ep = endpoints.get("gated").await.ok()?;
        let addresses = ep.subsets?.first()?.addresses.clone()?;
        Some((addresses[0].ip.clone(), pod_ip(&p)?))
    })
    .await;
    assert_eq!(ip.0, ip.1);
    let p = pods.get("gated").await.unwrap();
    assert_eq!(
        condition(&p, "kbeast.io/smoke-passed").unwrap(),
        ("True".to_string(), Some("SmokeTestPassed".to_string())),
        "the runner keeps conditions it does not own"
    );
}

#[tokio::test]
async fn crashing_container_backs_off_with_growing_restart_count() {
    let c = cluster(false).await;
    let pods: Api<Pod> = Api::default_namespaced(c.client().unwrap());
    pods.create(
        &PostParams::default(),
        &json_pod(
            "crash",
            json!({"containers": [sh_container("echo started; exit 3")]}),
        ),
    )
    .await
    .unwrap();
    let saw_backoff = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let status = wait_for("three restarts", || {
        let pods = pods.clone();
        let saw = saw_backoff.clone();
        async move {
            let p = pods.get("crash").await.ok()?;
            let s = p.status?.container_statuses?.remove(0);
            if s.state
                .as_ref()?
                .waiting
                .as_ref()
                .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
            {
                saw.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            // Between restarts: a running container without a readiness probe is ready for the
            // moment it runs, as in Kubernetes.
            let waiting = s.state.as_ref().is_some_and(|st| st.waiting.is_some());
            (s.restart_count >= 3 && waiting).then_some(s)
        }
    })
    .await;
    assert!(
        saw_backoff.load(std::sync::atomic::Ordering::SeqCst),
        "CrashLoopBackOff is reported while backing off"
    );
    let last = status.last_state.unwrap().terminated.unwrap();
    assert_eq!(last.exit_code, 3);
    assert_eq!(last.reason.as_deref(), Some("Error"));
    assert!(!status.ready);
    let log = c.pod_log("default", "crash", "sh").unwrap();
    assert!(
        log.matches("started").count() >= 4,
        "every restart ran: {log:?}"
    );
    // The same through the API (`kubectl logs`).
    let api_log = pods.logs("crash", &LogParams::default()).await.unwrap();
    assert!(api_log.starts_with("started\n"), "{api_log:?}");
    let tail = pods
        .logs(
            "crash",
            &LogParams {
                tail_lines: Some(1),
                container: Some("sh".into()),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(tail, "started\n");
    let err = pods
        .logs(
            "crash",
            &LogParams {
                container: Some("nope".into()),
                ..LogParams::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("container nope is not valid for pod crash"),
        "{err}"
    );
}

#[tokio::test]
async fn failing_liveness_and_startup_probes_restart_the_container() {
    let c = cluster(true).await;
    let pods: Api<Pod> = Api::default_namespaced(c.client().unwrap());
    let probe = |path: &str| json!({"httpGet": {"path": path, "port": 8080}, "periodSeconds": 1, "failureThreshold": 2});
    for (name, extra) in [
        ("live", json!({"livenessProbe": probe("/no-such-path")})),
        ("startup", json!({"startupProbe": probe("/no-such-path")})),
        // The control: the same server with passing probes is never restarted.
        (
            "steady",
            json!({"livenessProbe": probe("/healthz"), "startupProbe": probe("/healthz")}),
        ),
    ] {
        let pod = json_pod(
            name,
            json!({"terminationGracePeriodSeconds": 2, "containers": [query_container(extra)],
                "volumes": [{"name": "data", "emptyDir": {}}]}),
        );
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    let status = |name: &'static str| {
        let pods = pods.clone();
        async move { pods.get(name).await.ok()?.status?.container_statuses?.pop() }
    };
    wait_for(
        "restarts after liveness and startup probe failures",
        || async {
            let live = status("live").await?;
            let startup = status("startup").await?;
            let steady = status("steady").await?;
            (live.restart_count >= 1 && startup.restart_count >= 1 && steady.ready).then_some(())
        },
    )
    .await;
    let startup = status("startup").await.unwrap();
    assert!(
        !startup.ready && startup.started != Some(true),
        "never started: {startup:?}"
    );
    let steady = status("steady").await.unwrap();
    assert_eq!(steady.restart_count, 0);
    assert!(steady.ready && steady.started == Some(true), "{steady:?}");
}

#[tokio::test]
async fn deletion_sends_sigterm_then_sigkill_after_the_grace_period() {
    let c = cluster(false).await;
    let pods: Api<Pod> = Api::default_namespaced(c.client().unwrap());
    let out = tempfile::tempdir().unwrap();
    let volumes = json!([{"name": "out", "hostPath": {"path": out.path().to_str().unwrap()}}]);
    let mount = json!([{"name": "out", "mountPath": "/out"}]);
    let graceful = json!({"terminationGracePeriodSeconds": 30, "volumes": volumes, "containers": [{
        "name": "sh", "image": "busybox", "volumeMounts": mount,
        "command": ["sh", "-c", "trap 'echo term > /out/graceful; exit 0' TERM; echo up > /out/up-graceful; while true; do sleep 0.1; done"]}]});
    let stubborn = json!({"terminationGracePeriodSeconds": 1, "volumes": volumes, "containers": [{
        "name": "sh", "image": "busybox", "volumeMounts": mount,
        "command": ["sh", "-c", "trap '' TERM; echo up > /out/up-stubborn; while true; do sleep 0.1; done"]}]});
    pods.create(&PostParams::default(), &json_pod("graceful", graceful))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &json_pod("stubborn", stubborn))
        .await
        .unwrap();
    for name in ["graceful", "stubborn"] {
        let marker = out.path().join(format!("up-{name}"));
        wait_for("the process to run", || async {
            marker.exists().then_some(())
        })
        .await;
    }
    for (name, min, max) in [("graceful", 0.0, 5.0), ("stubborn", 1.0, 6.0)] {
        let start = Instant::now();
        let response = pods.delete(name, &DeleteParams::default()).await.unwrap();
        let p = response
            .left()
            .expect("kept (the Pod, not a Status) while it stops");
        assert!(p.metadata.deletion_timestamp.is_some());
        wait_for("the pod to be removed", || async {
            pods.get_opt(name).await.ok()?.is_none().then_some(())
        })
        .await;
        let took = start.elapsed().as_secs_f64();
        assert!(
            (min..max).contains(&took),
            "{name}: removed after {took:.1}s"
        );
    }
    assert_eq!(
        std::fs::read_to_string(out.path().join("graceful")).unwrap(),
        "term\n"
    );
}

#[tokio::test]
async fn pvc_data_survives_pod_replacement() {
    let c = cluster(false).await;
    let client = c.client().unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pvcs.create(&PostParams::default(), &serde_json::from_value(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})).unwrap())
        .await
        .unwrap();
    let spec = |script: &str| {
        json!({"restartPolicy": "Never",
        "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}],
        "containers": [{"name": "sh", "image": "busybox", "command": ["sh", "-c", script],
            "volumeMounts": [{"name": "d", "mountPath": "/var/lib/kbeast/data"}]}]})
    };
    pods.create(
        &PostParams::default(),
        &json_pod("writer", spec("echo kept > /var/lib/kbeast/data/f")),
    )
    .await
    .unwrap();
    let phase = |name: &'static str| {
        let pods = pods.clone();
        async move {
            pods.get(name)
                .await
                .ok()?
                .status?
                .phase
                .filter(|p| p == "Succeeded" || p == "Failed")
        }
    };
    assert_eq!(
        wait_for("the writer to finish", || phase("writer")).await,
        "Succeeded"
    );
    pods.delete("writer", &DeleteParams::default())
        .await
        .unwrap();
    pods.create(
        &PostParams::default(),
        &json_pod("reader", spec("cat /var/lib/kbeast/data/f")),
    )
    .await
    .unwrap();
    assert_eq!(
        wait_for("the reader to finish", || phase("reader")).await,
        "Succeeded"
    );
    assert_eq!(c.pod_log("default", "reader", "sh").unwrap(), "kept\n");
}

#[tokio::test]
async fn jobs_with_real_processes_complete_or_fail() {
    let c = cluster(false).await;
    let jobs: Api<Job> = Api::default_namespaced(c.client().unwrap());
    let job = |name: &str, script: &str| -> Job {
        serde_json::from_value(
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
                "containers": [sh_container(script)]}}}}),
        )
        .unwrap()
    };
    jobs.create(&PostParams::default(), &job("ok", "exit 0"))
        .await
        .unwrap();
    jobs.create(&PostParams::default(), &job("bad", "exit 1"))
        .await
        .unwrap();
    for (name, want) in [("ok", "Complete"), ("bad", "Failed")] {
        let jobs = jobs.clone();
        wait_for(&format!("job {name} {want}"), move || {
            let jobs = jobs.clone();
            async move {
                let j = jobs.get(name).await.ok()?;
                j.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == want && c.status == "True")
                    .then_some(())
            }
        })
        .await;
    }
}

#[tokio::test]
async fn stopping_the_cluster_kills_pod_processes() {
    let c = cluster(false).await;
    let pods: Api<Pod> = Api::default_namespaced(c.client().unwrap());
    let out = tempfile::tempdir().unwrap();
    let pod = json_pod(
        "pid",
        json!({"volumes": [{"name": "out", "hostPath": {"path": out.path().to_str().unwrap()}}],
        "containers": [{"name": "sh", "image": "busybox", "command": ["sh", "-c", "echo $$$$ > /out/pid.tmp; mv /out/pid.tmp /out/pid; exec sleep 600"],
            "volumeMounts": [{"name": "out", "mountPath": "/out"}]}]}),
    );
    pods.create(&PostParams::default(), &pod).await.unwrap();
    // `$$$$` is `$$` after the kubelet's `$(VAR)` escaping.
    let pid_file = out.path().join("pid");
    let pid: i32 = wait_for("the pid", || async {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    })
    .await;
    let alive = |pid: i32| {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
    };
    assert!(alive(pid));
    c.stop().await.unwrap();
    wait_for("the pod process to be gone", || async {
        (!alive(pid)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn rolling_update_with_real_pods_keeps_replicas_ready() {
    let c = cluster(false).await;
    let client = c.client().unwrap();
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    // Ready a moment after start, through an exec probe in the pod's own /tmp.
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "roll"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "roll"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": {"app": "roll"}}, "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "sh", "image": "busybox",
                    "command": ["sh", "-c", "sleep 0.5; touch /tmp/ready; exec sleep 600"],
                    "env": [{"name": "VERSION", "value": "1"}],
                    "readinessProbe": {"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1},
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}],
                "volumes": [{"name": "tmp", "emptyDir": {}}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let ready_pods = || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&Default::default()).await.unwrap();
            list.items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
                .count()
        }
    };
    wait_for("2 ready pods", || async {
        (ready_pods().await == 2).then_some(())
    })
    .await;
    deployments
        .patch(
            "roll",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {
            "containers": [{"name": "sh", "env": [{"name": "VERSION", "value": "2"}]}]}}}})),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let ready = ready_pods().await;
        assert!(
            ready >= 2,
            "maxUnavailable 0 keeps 2 pods ready, saw {ready}"
        );
        let d = deployments.get("roll").await.unwrap();
        let s = d.status.unwrap();
        if s.observed_generation == d.metadata.generation
            && s.updated_replicas == Some(2)
            && s.ready_replicas == Some(2)
            && s.replicas == Some(2)
        {
            break;
        }
        assert!(Instant::now() < deadline, "rollout did not finish: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_new_cluster_removes_the_pod_network_of_a_dead_one() {
    // A cluster process (API port 1) was killed and left its bridge and a pod namespace.
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let ip = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let _ = std::process::Command::new("ip")
        .args(["link", "delete", "kblc1"])
        .output();
    let _ = std::process::Command::new("ip")
        .args(["netns", "delete", "kblc1-1"])
        .output();
    ip(&["link", "add", "kblc1", "type", "bridge"]);
    ip(&["netns", "add", "kblc1-1"]);
    std::fs::create_dir_all("/run/kbeast-localcluster").unwrap();
    std::fs::write(
        "/run/kbeast-localcluster/kblc1.pid",
        format!("{dead_pid}\n"),
    )
    .unwrap();
    let _c = cluster(false).await;
    assert!(!ip(&["-o", "link", "show", "type", "bridge"]).contains("kblc1:"));
    assert!(
        !ip(&["netns", "list"])
            .lines()
            .any(|l| l.starts_with("kblc1-1"))
    );
    assert!(!std::path::Path::new("/run/kbeast-localcluster/kblc1.pid").exists());
}
