//! Health gating through the whole reconcile, against a scripted in-memory API: smoke checks of
//! real `kbeast-query` processes written to the pods' readiness gate, the rollback of a
//! crash-looping revision, no retry loop, fix-forward, and the durable record.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use kbeast_api::KnowledgeProject;
use kbeast_operator::metrics::Metrics;
use kbeast_operator::reconcile::{Context, reconcile};
use kbeast_operator::settings::OperatorSettings;
use kbeast_testkit::FakeApi;
use serde_json::{Value, json};

const NS: &str = "tenants";
const PROJECT_PATH: &str = "/apis/kbeast.io/v1alpha1/namespaces/tenants/knowledgeprojects/docs";
const DEPLOYMENT_PATH: &str = "/apis/apps/v1/namespaces/tenants/deployments/docs";
const RECORD_PATH: &str = "/api/v1/namespaces/tenants/configmaps/docs-rollout";
const KEYS_PATH: &str = "/api/v1/namespaces/tenants/secrets/docs-api-keys";

struct Harness {
    api: FakeApi,
    ctx: Arc<Context>,
    metrics: Arc<Metrics>,
}

impl Harness {
    fn new(spec: Value) -> Self {
        let api = FakeApi::new();
        api.insert(
            PROJECT_PATH,
            json!({
                "apiVersion": "kbeast.io/v1alpha1", "kind": "KnowledgeProject",
                "metadata": {"name": "docs", "namespace": NS, "generation": 1,
                    "uid": "11111111-2222-4333-8444-555555555555", "finalizers": ["kbeast.io/cleanup"]},
                "spec": spec,
            }),
        );
        let metrics = Arc::new(Metrics::new());
        let ctx = Arc::new(Context::new(
            api.client(),
            OperatorSettings::default(),
            metrics.clone(),
            None,
        ));
        Self { api, ctx, metrics }
    }

    async fn reconcile(&self) {
        let project: KnowledgeProject =
            serde_json::from_value(self.api.get(PROJECT_PATH).expect("stored")).expect("parses");
        reconcile(Arc::new(project), self.ctx.clone())
            .await
            .expect("reconcile succeeds");
    }

    fn change_spec(&self, change: impl FnOnce(&mut Value)) {
        let mut project = self.api.get(PROJECT_PATH).expect("stored");
        change(&mut project["spec"]);
        let generation = project["metadata"]["generation"].as_i64().unwrap_or(1);
        project["metadata"]["generation"] = json!(generation + 1);
        self.api.insert(PROJECT_PATH, project);
    }

    fn revision(&self) -> String {
        let deployment = self.api.get(DEPLOYMENT_PATH).expect("deployment applied");
        deployment["metadata"]["annotations"]["kbeast.io/revision"]
            .as_str()
            .expect("revision annotation")
            .to_string()
    }

    /// What the Deployment controller reports once every pod of the live template is available.
    fn finish_deployment(&self) {
        let mut deployment = self.api.get(DEPLOYMENT_PATH).expect("deployment applied");
        let replicas = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
        deployment["metadata"]["generation"] = json!(1);
        deployment["status"] = json!({"observedGeneration": 1, "replicas": replicas,
            "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas});
        self.api.insert(DEPLOYMENT_PATH, deployment);
    }

    /// The Deployment controller has started the new revision: one old pod still serves.
    fn start_rolling(&self) {
        let mut deployment = self.api.get(DEPLOYMENT_PATH).expect("deployment applied");
        deployment["status"] = json!({"observedGeneration": 1, "replicas": 2,
            "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1});
        self.api.insert(DEPLOYMENT_PATH, deployment);
    }

    fn insert_pod(&self, name: &str, revision: &str, status: Value) {
        self.api.insert(
            &format!("/api/v1/namespaces/{NS}/pods/{name}"),
            json!({"metadata": {"name": name, "namespace": NS, "labels": {
                    "app.kubernetes.io/name": "kbeast-query", "app.kubernetes.io/instance": "docs",
                    "kbeast.io/project": "docs", "kbeast.io/revision": revision},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "name": format!("docs-{revision}"), "uid": "rs-uid", "controller": true}]},
                "status": status}),
        );
    }

    fn pod_gate(&self, name: &str) -> Value {
        let pod = self
            .api
            .get(&format!("/api/v1/namespaces/{NS}/pods/{name}"))
            .expect("pod stored");
        pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "kbeast.io/smoke-passed")
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn condition(&self, type_: &str) -> Value {
        let project = self.api.get(PROJECT_PATH).expect("stored");
        project["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == type_)
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn status(&self, field: &str) -> Value {
        self.api.get(PROJECT_PATH).expect("stored")["status"][field].clone()
    }

    fn record(&self) -> Value {
        let config_map = self.api.get(RECORD_PATH).expect("rollout record stored");
        serde_json::from_str(config_map["data"]["record.json"].as_str().expect("record"))
            .expect("record is JSON")
    }

    fn keys_file(&self) -> String {
        let secret = self.api.get(KEYS_PATH).expect("keys Secret generated");
        let encoded = secret["data"]["api-keys.json"].as_str().expect("keys file");
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .expect("base64"),
        )
        .expect("UTF-8")
    }

    fn rollouts(&self, result: &str) -> u64 {
        self.metrics.rollouts.with_label_values(&[result]).get()
    }

    fn smoke_failures(&self, reason: &str) -> u64 {
        self.metrics
            .smoke_check_failures
            .with_label_values(&[reason])
            .get()
    }
}

fn running(ip: &str) -> Value {
    json!({"podIP": ip, "conditions": [{"type": "ContainersReady", "status": "True"}],
        "containerStatuses": [{"name": "query", "image": "q", "imageID": "", "ready": true, "restartCount": 0}]})
}

fn crash_looping() -> Value {
    json!({"podIP": "127.0.0.9", "conditions": [{"type": "ContainersReady", "status": "False"}],
        "containerStatuses": [{"name": "query", "image": "q", "imageID": "", "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 2, "message": "error: unexpected argument '--bogus'"}}}]})
}

/// A real query server on `<ip>:8080`, the pod port, on a loopback address of its own.
struct QueryPod {
    child: Child,
    _data: tempfile::TempDir,
}

impl Drop for QueryPod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn query_binary() -> PathBuf {
    kbeast_testkit::workspace_binary("kbeast-query")
}

/// A loopback address no other test process uses.
fn private_loopback_ip(slot: u8) -> String {
    format!(
        "127.{}.{}.{slot}",
        100 + std::process::id() % 100,
        (std::process::id() / 100) % 250
    )
}

fn start_query_pod(ip: &str, keys_file: &str, extra: &[&str]) -> QueryPod {
    let data = tempfile::tempdir().expect("temp dir");
    let keys = data.path().join("api-keys.json");
    std::fs::write(&keys, keys_file).expect("keys file written");
    let child = Command::new(query_binary())
        .args(["serve", "--listen", &format!("{ip}:8080"), "--api-keys"])
        .arg(&keys)
        .arg("--data")
        .arg(data.path().join("data"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kbeast-query starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect((ip, 8080)).is_err() {
        assert!(
            Instant::now() < deadline,
            "kbeast-query did not listen on {ip}:8080"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    QueryPod { child, _data: data }
}

/// Waits until a real server reports ready, as a kubelet's readiness probe would.
async fn wait_ready(ip: &str) {
    let client = kbeast_client::Client::new(format!("http://{ip}:8080"), None).expect("client");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if client
            .ready()
            .await
            .is_ok_and(|(code, _)| code.is_success())
        {
            return;
        }
        assert!(Instant::now() < deadline, "{ip} never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_healthy_pod_passes_its_smoke_check_and_a_wrong_model_fails_it() {
    // The pods below run kbeast-query's default embedder, hash, which needs no model files.
    let harness =
        Harness::new(json!({"storage": {"ephemeral": {}}, "embedding": {"provider": "hash"}}));
    harness.reconcile().await;
    let revision = harness.revision();
    let keys = harness.keys_file();

    let good_ip = private_loopback_ip(1);
    let _good = start_query_pod(&good_ip, &keys, &[]);
    wait_ready(&good_ip).await;
    let wrong_ip = private_loopback_ip(2);
    let _wrong = start_query_pod(&wrong_ip, &keys, &["--embedding-dim", "128"]);
    wait_ready(&wrong_ip).await;
    harness.insert_pod("docs-a", &revision, running(&good_ip));
    harness.insert_pod("docs-b", &revision, running(&wrong_ip));
    harness.insert_pod(
        "docs-c",
        &revision,
        json!({"podIP": "127.0.0.9",
        "conditions": [{"type": "ContainersReady", "status": "False"}]}),
    );
    harness.reconcile().await;

    let passed = harness.pod_gate("docs-a");
    assert_eq!(passed["status"], "True", "{passed}");
    assert_eq!(passed["reason"], "SmokeCheckPassed");
    assert!(passed["lastTransitionTime"].is_string());
    let failed = harness.pod_gate("docs-b");
    assert_eq!(failed["status"], "False", "{failed}");
    assert_eq!(failed["reason"], "SmokeCheckFailed");
    assert!(
        failed["message"]
            .as_str()
            .unwrap_or("")
            .contains("dimension 128"),
        "the message says what is wrong: {failed}"
    );
    assert_eq!(
        harness.pod_gate("docs-c"),
        Value::Null,
        "containers not ready: not checked yet"
    );
    assert_eq!(harness.smoke_failures("model_mismatch"), 1);
    let pod = harness
        .api
        .get(&format!("/api/v1/namespaces/{NS}/pods/docs-a"))
        .expect("pod");
    assert_eq!(
        pod["status"]["conditions"][0]["type"], "ContainersReady",
        "the kubelet's conditions are kept (strategic merge by type)"
    );

    // A repeated failure with the same message writes nothing; a passed gate is not re-checked.
    harness.api.clear_requests();
    harness.reconcile().await;
    let pod_writes: Vec<String> = harness
        .api
        .requests()
        .iter()
        .filter(|r| r.is_write() && r.path.contains("/pods/"))
        .map(|r| r.line())
        .collect();
    assert!(pod_writes.is_empty(), "{pod_writes:?}");
    assert_eq!(harness.smoke_failures("model_mismatch"), 2);
}

#[tokio::test]
async fn a_crash_looping_revision_is_rolled_back_once_and_a_fix_rolls_forward() {
    let harness = Harness::new(json!({"replicas": 2, "storage": {"ephemeral": {}}}));
    harness.reconcile().await;
    let good = harness.revision();
    harness.finish_deployment();
    harness.reconcile().await;
    assert_eq!(harness.condition("Ready")["status"], "True");
    assert_eq!(harness.record()["lastGoodRevision"], good.as_str());
    assert!(
        harness.record()["lastGoodTemplate"].is_object(),
        "the good template is stored"
    );
    assert_eq!(harness.rollouts("succeeded"), 1);

    // A new revision whose pod crash-loops.
    harness.change_spec(|spec| spec["search"] = json!({"defaultMode": "vector"}));
    harness.reconcile().await;
    let bad = harness.revision();
    assert_ne!(bad, good);
    assert_eq!(harness.condition("Progressing")["status"], "True");
    assert_eq!(
        harness.condition("Ready")["status"],
        "True",
        "Ready means available to serve: the good revision still does"
    );
    assert_eq!(harness.status("updateRevision"), bad.as_str());
    harness.start_rolling();
    harness.insert_pod("docs-old-1", &good, running("127.0.0.9"));
    harness.insert_pod("docs-new-1", &bad, crash_looping());
    harness.reconcile().await;

    assert_eq!(
        harness.revision(),
        good,
        "the last good template is applied again"
    );
    let deployment = harness.api.get(DEPLOYMENT_PATH).expect("deployment");
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"]["kbeast.io/revision"],
        good.as_str(),
        "the Deployment returns to the good ReplicaSet's template"
    );
    let degraded = harness.condition("Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "RolloutFailed");
    let message = degraded["message"].as_str().unwrap_or("");
    assert!(
        message.contains("docs-new-1") && message.contains("--bogus") && message.contains(&good),
        "names the pod, its error and the rollback: {message}"
    );
    // The good revision serves: Ready (available to serve) stays True; Degraded says why.
    assert_eq!(harness.condition("Ready")["reason"], "Available");
    assert_eq!(harness.condition("Ready")["status"], "True");
    assert_eq!(harness.condition("Progressing")["status"], "False");
    assert_eq!(harness.condition("Progressing")["reason"], "RolloutFailed");
    assert_eq!(harness.status("failedRevision"), bad.as_str());
    assert_eq!(harness.record()["failedRevision"], bad.as_str());
    assert_eq!(harness.rollouts("rolled_back"), 1);
    let warned = harness.api.requests().iter().any(|r| {
        r.path.contains("/events")
            && r.body
                .as_ref()
                .is_some_and(|b| b["reason"] == "RolloutFailed" && b["type"] == "Warning")
    });
    assert!(warned, "a Warning Event says so");

    // The failed revision is not retried: the next reconciles write nothing.
    harness.finish_deployment();
    harness.reconcile().await;
    harness.api.clear_requests();
    harness.reconcile().await;
    let writes: Vec<String> = harness
        .api
        .requests()
        .iter()
        .filter(|r| r.is_write() && !r.path.contains("/events"))
        .map(|r| r.line())
        .collect();
    assert!(writes.is_empty(), "no retry loop: {writes:?}");
    assert_eq!(harness.revision(), good);
    assert_eq!(
        harness.status("currentRevision"),
        good.as_str(),
        "the good revision serves"
    );
    assert_eq!(harness.rollouts("rolled_back"), 1, "counted once");

    // Fix-forward: a corrected spec starts a new attempt at once.
    harness.change_spec(|spec| spec["search"] = json!({"defaultMode": "keyword"}));
    harness.reconcile().await;
    let fixed = harness.revision();
    assert!(fixed != good && fixed != bad);
    assert_eq!(harness.condition("Progressing")["status"], "True");
    assert_eq!(harness.status("failedRevision"), Value::Null);
    harness.finish_deployment();
    harness.reconcile().await;
    assert_eq!(harness.condition("Ready")["status"], "True");
    assert_eq!(harness.status("lastGoodRevision"), fixed.as_str());
    assert_eq!(harness.status("currentRevision"), fixed.as_str());
}

#[tokio::test]
async fn a_restarted_operator_resumes_from_the_durable_record() {
    let harness = Harness::new(json!({"storage": {"ephemeral": {}}}));
    harness.reconcile().await;
    let good = harness.revision();
    harness.finish_deployment();
    harness.reconcile().await;
    harness.change_spec(|spec| {
        spec["rollout"] = json!({"progressDeadlineSeconds": 10});
        spec["search"] = json!({"defaultMode": "keyword"});
    });
    harness.reconcile().await;
    let bad = harness.revision();
    assert_eq!(harness.record()["updateRevision"], bad.as_str());
    let started = harness.record()["startedAt"]
        .as_str()
        .expect("started")
        .to_string();

    // Another operator process, with nothing in memory, after the deadline has passed.
    let mut record = harness.record();
    record["startedAt"] = json!("2020-01-01T00:00:00Z");
    let mut config_map = harness.api.get(RECORD_PATH).expect("record");
    config_map["data"]["record.json"] = json!(record.to_string());
    harness.api.insert(RECORD_PATH, config_map);
    let restarted = Harness {
        api: harness.api.clone(),
        ctx: Arc::new(Context::new(
            harness.api.client(),
            OperatorSettings::default(),
            harness.metrics.clone(),
            None,
        )),
        metrics: harness.metrics.clone(),
    };
    harness.start_rolling();
    restarted.reconcile().await;
    assert_ne!(started, "2020-01-01T00:00:00Z");
    assert_eq!(restarted.condition("Degraded")["reason"], "RolloutFailed");
    assert!(
        restarted.condition("Degraded")["message"]
            .as_str()
            .unwrap_or("")
            .contains("progressDeadlineSeconds"),
        "the deadline counted from the stored start"
    );
    assert_eq!(
        restarted.revision(),
        good,
        "rolled back from the stored template"
    );
}
