//! The emulator driven by a real `kube::Client` and kube-runtime watchers, the way the
//! operator will use it.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kbeast_localcluster::{Fault, FaultAction, LocalCluster, Options, RequestFilter};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind, PartialObjectMeta};
use kube::runtime::watcher::{self, Event};
use serde_json::json;

async fn cluster() -> LocalCluster {
    LocalCluster::start(Options {
        bookmark_interval: Duration::from_millis(300),
        ..Options::default()
    })
    .await
    .expect("cluster starts")
}

fn configmap(name: &str, labels: serde_json::Value, data: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": data}))
        .expect("configmap")
}

fn status_code(err: kube::Error) -> u16 {
    match err {
        kube::Error::Api(status) => status.code,
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn crud_with_selectors_and_conflicts() {
    let c = cluster().await;
    let client = c.client().unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    let created = api
        .create(
            &PostParams::default(),
            &configmap("a", json!({"app": "x"}), json!({"k": "v"})),
        )
        .await
        .unwrap();
    api.create(
        &PostParams::default(),
        &configmap("b", json!({"app": "y"}), json!({})),
    )
    .await
    .unwrap();
    let rv = created.metadata.resource_version.clone().unwrap();
    assert!(
        rv.parse::<u64>().is_ok(),
        "resourceVersion is a decimal string"
    );
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());

    let selected = api
        .list(&ListParams::default().labels("app=x"))
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 1);
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .unwrap();
    assert_eq!(by_name.items[0].metadata.name.as_deref(), Some("b"));

    let dup = api
        .create(
            &PostParams::default(),
            &configmap("a", json!({}), json!({})),
        )
        .await;
    assert_eq!(status_code(dup.unwrap_err()), 409);

    let mut updated = created.clone();
    updated.data = Some([("k".to_string(), "v2".to_string())].into());
    let after = api
        .replace("a", &PostParams::default(), &updated)
        .await
        .unwrap();
    assert!(
        after
            .metadata
            .resource_version
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > rv.parse::<u64>().unwrap()
    );
    let stale = api.replace("a", &PostParams::default(), &updated).await;
    assert_eq!(
        status_code(stale.unwrap_err()),
        409,
        "stale resourceVersion conflicts"
    );

    api.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(status_code(api.get("a").await.unwrap_err()), 404);
}

#[tokio::test]
async fn server_side_apply_conflicts_and_force() {
    let c = cluster().await;
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().unwrap());
    let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"shared": "a", "onlyA": "1"}});
    api.patch(
        "ssa",
        &PatchParams::apply("manager-a"),
        &Patch::Apply(&first),
    )
    .await
    .unwrap();

    let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"shared": "b"}});
    let err = api
        .patch(
            "ssa",
            &PatchParams::apply("manager-b"),
            &Patch::Apply(&second),
        )
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert!(
                s.message.contains("conflict with \"manager-a\""),
                "{}",
                s.message
            );
        }
        other => panic!("unexpected {other}"),
    }
    let forced = api
        .patch(
            "ssa",
            &PatchParams::apply("manager-b").force(),
            &Patch::Apply(&second),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["shared"], "b");

    // manager-a stops applying onlyA: it was the sole owner, so the field disappears.
    let shrunk =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {}});
    let after = api
        .patch(
            "ssa",
            &PatchParams::apply("manager-a"),
            &Patch::Apply(&shrunk),
        )
        .await
        .unwrap();
    let data = after.data.unwrap();
    assert!(!data.contains_key("onlyA"));
    assert_eq!(data["shared"], "b");

    // Re-applying the same configuration is a no-op: the resourceVersion stays.
    let again = api
        .patch(
            "ssa",
            &PatchParams::apply("manager-a"),
            &Patch::Apply(&shrunk),
        )
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        after.metadata.resource_version
    );
}

#[tokio::test]
async fn apply_omitting_replicas_resets_deployment_to_default() {
    let c = cluster().await;
    let api: Api<Deployment> = Api::default_namespaced(c.client().unwrap());
    let mut manifest = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}});
    let created = api
        .patch("web", &PatchParams::apply("op"), &Patch::Apply(&manifest))
        .await
        .unwrap();
    assert_eq!(created.spec.as_ref().unwrap().replicas, Some(3));
    manifest["spec"].as_object_mut().unwrap().remove("replicas");
    let after = api
        .patch("web", &PatchParams::apply("op"), &Patch::Apply(&manifest))
        .await
        .unwrap();
    assert_eq!(after.spec.unwrap().replicas, Some(1));
    assert_eq!(after.metadata.generation, Some(2));
}

async fn next_event<S, K>(stream: &mut S) -> Event<K>
where
    S: futures::Stream<Item = Result<Event<K>, watcher::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("event within 5 s")
        .expect("stream continues")
        .expect("no watcher error")
}

async fn drain_initial<S, K>(stream: &mut S)
where
    S: futures::Stream<Item = Result<Event<K>, watcher::Error>> + Unpin,
{
    while !matches!(next_event(stream).await, Event::InitDone) {}
}

/// Polls the stream for a while (so its watch runs), expecting no changes.
async fn idle<S, K: std::fmt::Debug>(stream: &mut S, for_how_long: Duration)
where
    S: futures::Stream<Item = Result<Event<K>, watcher::Error>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + for_how_long;
    while let Ok(item) = tokio::time::timeout_at(deadline, stream.next()).await {
        match item {
            Some(Ok(Event::Apply(k))) | Some(Ok(Event::Delete(k))) => {
                panic!("unexpected change {k:?}")
            }
            Some(Err(e)) => panic!("watcher error {e}"),
            None => panic!("stream ended"),
            _ => {}
        }
    }
}

/// Drains the initial listing, then returns the next non-init event.
async fn next_change<S, K>(stream: &mut S) -> Event<K>
where
    S: futures::Stream<Item = Result<Event<K>, watcher::Error>> + Unpin,
{
    loop {
        match next_event(stream).await {
            Event::Init | Event::InitApply(_) | Event::InitDone => continue,
            other => return other,
        }
    }
}

async fn watcher_sees_changes(config: watcher::Config) {
    let c = cluster().await;
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().unwrap());
    let mut stream = watcher::watcher(api.clone(), config.labels("app=w")).boxed();
    // Let the initial listing finish before the writes.
    drain_initial(&mut stream).await;
    api.create(
        &PostParams::default(),
        &configmap("w", json!({"app": "w"}), json!({"k": "1"})),
    )
    .await
    .unwrap();
    match next_change(&mut stream).await {
        Event::Apply(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("w")),
        other => panic!("expected Apply, got {other:?}"),
    }
    // Leaving the selector is a delete for this watcher.
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .unwrap();
    match next_change(&mut stream).await {
        Event::Delete(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("w")),
        other => panic!("expected Delete, got {other:?}"),
    }
}

#[tokio::test]
async fn kube_runtime_watcher_default_config() {
    watcher_sees_changes(watcher::Config::default()).await;
}

#[tokio::test]
async fn kube_runtime_watcher_any_semantic() {
    watcher_sees_changes(watcher::Config::default().any_semantic()).await;
}

#[tokio::test]
async fn kube_runtime_watcher_streaming_list() {
    watcher_sees_changes(watcher::Config::default().streaming_lists()).await;
}

#[tokio::test]
async fn metadata_watcher_and_partial_object_meta() {
    let c = cluster().await;
    let client = c.client().unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(client);
    api.create(
        &PostParams::default(),
        &configmap("m", json!({"app": "m"}), json!({"big": "payload"})),
    )
    .await
    .unwrap();
    let metas = api
        .list_metadata(&ListParams::default().labels("app=m"))
        .await
        .unwrap();
    assert_eq!(metas.items.len(), 1);
    let meta: PartialObjectMeta<ConfigMap> = api.get_metadata("m").await.unwrap();
    assert_eq!(meta.metadata.name.as_deref(), Some("m"));

    let metadata_api: Api<PartialObjectMeta<ConfigMap>> =
        Api::default_namespaced(c.client().unwrap());
    let mut stream = watcher::watcher(metadata_api, watcher::Config::default()).boxed();
    let mut seen_initial = false;
    loop {
        match next_event(&mut stream).await {
            Event::InitApply(m) if m.metadata.name.as_deref() == Some("m") => seen_initial = true,
            Event::InitDone => break,
            _ => {}
        }
    }
    assert!(seen_initial);
    api.delete("m", &DeleteParams::default()).await.unwrap();
    match next_change(&mut stream).await {
        Event::Delete(m) => assert_eq!(m.metadata.name.as_deref(), Some("m")),
        other => panic!("expected Delete, got {other:?}"),
    }
}

#[tokio::test]
async fn library_writes_a_kubeconfig_clients_can_use() {
    let c = cluster().await;
    let path = c.kubeconfig_path().to_path_buf();
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&path).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    assert_eq!(
        client.apiserver_version().await.unwrap().git_version,
        "v1.36.2"
    );
    drop(c);
    assert!(
        !path.exists(),
        "the temporary kubeconfig is removed with the cluster"
    );
}

#[tokio::test]
async fn request_log_counts_per_verb_and_client() {
    let c = cluster().await;
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().unwrap());
    let start = c.elapsed_ms();
    api.list(&ListParams::default()).await.unwrap();
    api.patch(
        "counted",
        &PatchParams::apply("counter"),
        &Patch::Apply(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "counted"}}),
        ),
    )
    .await
    .unwrap();
    let writes_by_counter = c.count_requests(&RequestFilter {
        client: Some("counter".into()),
        writes_only: true,
        ..Default::default()
    });
    assert_eq!(writes_by_counter, 1);
    let lists = c.count_requests(&RequestFilter {
        verb: Some("list".into()),
        resource: Some("configmaps".into()),
        since_ms: Some(start),
        ..Default::default()
    });
    assert_eq!(lists, 1);
    let nobody = c.count_requests(&RequestFilter {
        client: Some("some-other-controller".into()),
        writes_only: true,
        ..Default::default()
    });
    assert_eq!(nobody, 0);

    let summary: serde_json::Value =
        reqwest_like_get(&format!("{}/_localcluster/requests", c.url())).await;
    assert_eq!(summary["byClient"]["counter"]["patch"], 1);
}

async fn reqwest_like_get(url: &str) -> serde_json::Value {
    use http_body_util::{BodyExt, Empty};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<hyper::body::Bytes>>();
    let response = client.get(url.parse().unwrap()).await.unwrap();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn injected_faults_are_seen_by_clients() {
    let c = cluster().await;
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().unwrap());

    // kube's client retries 429 by itself: the list succeeds, the log shows the 429 first.
    c.inject_fault(
        Fault::new(FaultAction::TooManyRequests {
            retry_after_seconds: 1,
        })
        .verb("list")
        .times(1),
    );
    api.list(&ListParams::default())
        .await
        .expect("retried after 429");
    let statuses: Vec<u16> = c
        .requests()
        .iter()
        .filter(|r| r.verb == "list")
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![429, 200]);

    c.inject_fault(
        Fault::new(FaultAction::InternalError)
            .verb("create")
            .resource("configmaps")
            .times(1),
    );
    let err = api
        .create(
            &PostParams::default(),
            &configmap("f", json!({}), json!({})),
        )
        .await;
    assert_eq!(status_code(err.unwrap_err()), 500);

    c.inject_fault(Fault::new(FaultAction::Conflict).verb("create").times(1));
    let err = api
        .create(
            &PostParams::default(),
            &configmap("f", json!({}), json!({})),
        )
        .await;
    assert_eq!(status_code(err.unwrap_err()), 409);

    c.inject_fault(
        Fault::new(FaultAction::Latency(Duration::from_millis(300)))
            .verb("get")
            .times(1),
    );
    api.create(
        &PostParams::default(),
        &configmap("f", json!({}), json!({})),
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    api.get("f").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn watcher_recovers_when_watch_streams_are_closed() {
    let c = cluster().await;
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().unwrap());
    c.inject_fault(
        Fault::new(FaultAction::CloseWatchAfter(Duration::from_millis(200))).verb("watch"),
    );
    let mut stream = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    drain_initial(&mut stream).await;
    idle(&mut stream, Duration::from_millis(700)).await;
    api.create(
        &PostParams::default(),
        &configmap("late", json!({}), json!({})),
    )
    .await
    .unwrap();
    let name = loop {
        match next_event(&mut stream).await {
            Event::Apply(cm) | Event::InitApply(cm)
                if cm.metadata.name.as_deref() == Some("late") =>
            {
                break cm.metadata.name;
            }
            _ => {}
        }
    };
    assert_eq!(name.as_deref(), Some("late"));
    let watches = c.count_requests(&RequestFilter {
        verb: Some("watch".into()),
        ..Default::default()
    });
    assert!(
        watches >= 2,
        "the watcher re-established its watch ({watches} watches)"
    );
}

#[tokio::test]
async fn crd_is_served_with_defaults_and_cel_validation() {
    let c = cluster().await;
    let client = c.client().unwrap();
    let golden = std::fs::read_to_string(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/k8s-golden/crd.json"),
    )
    .expect("golden crd.json");
    let golden: serde_json::Value = serde_json::from_str(&golden).unwrap();
    let body = golden["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "create-crd")
        .unwrap()["request"]["body"]
        .clone();
    let crd: CustomResourceDefinition = serde_json::from_value(body).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let established = crds.get("widgets.golden.example.com").await.unwrap();
    let conditions = established.status.unwrap().conditions.unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );

    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("golden.example.com", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let w: DynamicObject = serde_json::from_value(
        json!({"apiVersion": "golden.example.com/v1", "kind": "Widget",
        "metadata": {"name": "w"}, "spec": {"size": "small", "region": "eu", "unknown": 1}}),
    )
    .unwrap();
    let created = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(
        created.data["spec"]["replicas"], 1,
        "schema default applied"
    );
    assert!(
        created.data["spec"].get("unknown").is_none(),
        "unknown field pruned"
    );

    let immutable = widgets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"region": "us"}})),
        )
        .await;
    assert_eq!(
        status_code(immutable.unwrap_err()),
        422,
        "transition rule self == oldSelf"
    );

    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    assert!(discovery.groups().any(|g| g.name() == "golden.example.com"));
    let aggregated = kube::Discovery::new(client).run_aggregated().await.unwrap();
    let (resource, caps) = aggregated
        .groups()
        .find(|g| g.name() == "golden.example.com")
        .expect("CRD group in aggregated discovery")
        .recommended_kind("Widget")
        .expect("Widget kind");
    assert_eq!(resource.plural, "widgets");
    assert!(caps.supports_operation(kube::discovery::verbs::WATCH));
    assert!(aggregated.groups().any(|g| g.name() == "apps"));
}

#[tokio::test]
async fn finalizers_and_owner_reference_gc() {
    let c = cluster().await;
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().unwrap());
    let owner = api
        .create(
            &PostParams::default(),
            &configmap("owner", json!({}), json!({})),
        )
        .await
        .unwrap();
    let mut dep = configmap("dep", json!({}), json!({}));
    dep.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "owner".into(),
            uid: owner.metadata.uid.clone().unwrap(),
            ..Default::default()
        },
    ]);
    dep.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &dep).await.unwrap();

    api.delete("owner", &DeleteParams::foreground())
        .await
        .unwrap();
    let waiting = api.get("owner").await.unwrap();
    assert!(
        waiting.metadata.deletion_timestamp.is_some(),
        "foreground owner waits for its dependent"
    );
    let terminating = api.get("dep").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());

    api.patch(
        "dep",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(status_code(api.get("dep").await.unwrap_err()), 404);
    assert_eq!(status_code(api.get("owner").await.unwrap_err()), 404);
}

#[tokio::test]
async fn binary_writes_kubeconfig_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kbeast-localcluster"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !kubeconfig.exists() {
        assert!(std::time::Instant::now() < deadline, "kubeconfig written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, "v1.36.2");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"default".to_string()));

    let pid = child.id().unwrap() as i32;
    // SAFETY-free: signal the child we started, by its pid.
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}

#[tokio::test]
async fn data_dir_keeps_state_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let options = || Options {
        data_dir: Some(dir.path().to_path_buf()),
        ..Options::default()
    };
    let first = LocalCluster::start(options()).await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(first.client().unwrap());
    let created = api
        .create(
            &PostParams::default(),
            &configmap("kept", json!({"app": "p"}), json!({"k": "v"})),
        )
        .await
        .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(first.client().unwrap());
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/k8s-golden/crd.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let body = golden["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "create-crd")
        .unwrap()["request"]["body"]
        .clone();
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(body).unwrap(),
    )
    .await
    .unwrap();
    first.stop().await.unwrap();

    let second = LocalCluster::start(options()).await.unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(second.client().unwrap());
    let kept = api.get("kept").await.unwrap();
    assert_eq!(kept.metadata.uid, created.metadata.uid);
    assert_eq!(kept.data.unwrap()["k"], "v");
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("golden.example.com", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(second.client().unwrap(), "default", &ar);
    widgets
        .list(&ListParams::default())
        .await
        .expect("CRD still served after restart");
    // New writes continue the resourceVersion sequence.
    let next = api
        .create(
            &PostParams::default(),
            &configmap("new", json!({}), json!({})),
        )
        .await
        .unwrap();
    let rv = |cm: &ConfigMap| {
        cm.metadata
            .resource_version
            .clone()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(rv(&next) > rv(&created));
    second.stop().await.unwrap();
}

#[tokio::test]
async fn deleting_a_crd_stops_serving_it() {
    let c = cluster().await;
    let client = c.client().unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/k8s-golden/crd.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let body = golden["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "create-crd")
        .unwrap()["request"]["body"]
        .clone();
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(body).unwrap(),
    )
    .await
    .unwrap();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("golden.example.com", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let w: DynamicObject = serde_json::from_value(
        json!({"apiVersion": "golden.example.com/v1", "kind": "Widget",
        "metadata": {"name": "w"}, "spec": {"size": "small", "region": "eu"}}),
    )
    .unwrap();
    widgets.create(&PostParams::default(), &w).await.unwrap();
    crds.delete("widgets.golden.example.com", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        status_code(widgets.list(&ListParams::default()).await.unwrap_err()),
        404
    );
}

#[tokio::test]
async fn kube_runtime_event_recorder_publishes_series() {
    use kube::runtime::events::{Event as RecorderEvent, EventType, Recorder, Reporter};
    let c = cluster().await;
    let client = c.client().unwrap();
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let cm = api
        .create(
            &PostParams::default(),
            &configmap("evented", json!({}), json!({})),
        )
        .await
        .unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "kbeast-operator".into(),
            instance: Some("test".into()),
        },
    );
    let event = RecorderEvent {
        type_: EventType::Normal,
        reason: "Reconciled".into(),
        note: Some("all children applied".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    let reference = kube::Resource::object_ref(&cm, &());
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::default_namespaced(client);
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        list.items.len(),
        1,
        "the second publish patches the same event"
    );
    assert_eq!(list.items[0].series.as_ref().map(|s| s.count), Some(2));
    assert_eq!(
        list.items[0].reporting_controller.as_deref(),
        Some("kbeast-operator")
    );
}

#[tokio::test]
async fn apply_does_not_own_fields_the_subresource_resets() {
    let c = cluster().await;
    let api: Api<Deployment> = Api::default_namespaced(c.client().unwrap());
    let manifest = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "d"}},
            "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "c:1"}]}}},
        "status": {"observedGeneration": 42}});
    let created = api
        .patch("d", &PatchParams::apply("op"), &Patch::Apply(&manifest))
        .await
        .unwrap();
    assert_ne!(
        created.status.as_ref().and_then(|s| s.observed_generation),
        Some(42),
        "status ignored on the main resource"
    );
    let op = created
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .find(|m| m.manager.as_deref() == Some("op"))
        .unwrap();
    assert!(
        op.fields_v1.unwrap().0.get("f:status").is_none(),
        "no ownership of status through the main resource"
    );

    let status = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 9}, "status": {"observedGeneration": 7}});
    let after = api
        .patch_status(
            "d",
            &PatchParams::apply("status-writer").force(),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    assert_eq!(
        after.spec.unwrap().replicas,
        Some(0),
        "spec ignored on /status"
    );
    let writer = after
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .find(|m| m.manager.as_deref() == Some("status-writer"))
        .unwrap();
    assert_eq!(writer.subresource.as_deref(), Some("status"));
    assert!(writer.fields_v1.unwrap().0.get("f:spec").is_none());
}

#[tokio::test]
async fn hpa_is_served_as_autoscaling_v1_and_v2() {
    use k8s_openapi::api::autoscaling::{v1, v2};
    let c = cluster().await;
    let client = c.client().unwrap();
    let v1_api: Api<v1::HorizontalPodAutoscaler> = Api::default_namespaced(client.clone());
    let v2_api: Api<v2::HorizontalPodAutoscaler> = Api::default_namespaced(client);
    let hpa: v1::HorizontalPodAutoscaler = serde_json::from_value(json!({"metadata": {"name": "h"}, "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"}, "maxReplicas": 4, "targetCPUUtilizationPercentage": 70}}))
    .unwrap();
    let created = v1_api.create(&PostParams::default(), &hpa).await.unwrap();
    assert_eq!(
        created.spec.as_ref().unwrap().min_replicas,
        Some(1),
        "v2 defaults apply"
    );
    let as_v2 = v2_api.get("h").await.unwrap();
    let metric = &as_v2.spec.unwrap().metrics.unwrap()[0];
    assert_eq!(
        metric.resource.as_ref().unwrap().target.average_utilization,
        Some(70)
    );
    let patched = v1_api
        .patch(
            "h",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"targetCPUUtilizationPercentage": 50}})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.spec.unwrap().target_cpu_utilization_percentage,
        Some(50)
    );
    assert_eq!(
        v1_api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

#[tokio::test]
async fn deleting_a_namespace_removes_its_contents() {
    use k8s_openapi::api::core::v1::Namespace;
    let c = cluster().await;
    let client = c.client().unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "tenant"}})).unwrap(),
        )
        .await
        .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "tenant");
    assert!(
        api.get("kube-root-ca.crt").await.is_ok(),
        "namespace is populated like the controller manager does"
    );
    api.create(
        &PostParams::default(),
        &configmap("inside", json!({}), json!({})),
    )
    .await
    .unwrap();
    namespaces
        .delete("tenant", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(status_code(api.get("inside").await.unwrap_err()), 404);
    assert_eq!(
        status_code(namespaces.get("tenant").await.unwrap_err()),
        404
    );
    let err = api
        .create(
            &PostParams::default(),
            &configmap("late", json!({}), json!({})),
        )
        .await;
    assert_eq!(
        status_code(err.unwrap_err()),
        404,
        "no creates in a deleted namespace"
    );
}

/// Patches are computed outside the store's lock and committed only onto the version they were
/// computed from: concurrent patches of one object from many clients all land, none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_of_one_object_are_never_lost() {
    let c = cluster().await;
    let api: Api<ConfigMap> = Api::default_namespaced(c.client().unwrap());
    api.create(
        &PostParams::default(),
        &configmap("shared", json!({}), json!({})),
    )
    .await
    .unwrap();
    let writers: Vec<_> = (0..40)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                let (params, patch) = match i % 3 {
                    0 => (
                        PatchParams::default(),
                        Patch::Merge(json!({"data": {format!("merge-{i}"): "x"}})),
                    ),
                    1 => (
                        PatchParams::default(),
                        Patch::Strategic(json!({"data": {format!("strategic-{i}"): "x"}})),
                    ),
                    _ => (
                        PatchParams::apply(&format!("manager-{i}")),
                        Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": "shared"}, "data": {format!("apply-{i}"): "x"}})),
                    ),
                };
                api.patch("shared", &params, &patch).await.unwrap();
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let stored = api.get("shared").await.unwrap();
    let data = stored.data.unwrap_or_default();
    assert_eq!(data.len(), 40, "every patch landed: {:?}", data.keys());
    let appliers = stored
        .metadata
        .managed_fields
        .unwrap_or_default()
        .iter()
        .filter(|e| e.operation.as_deref() == Some("Apply"))
        .count();
    assert_eq!(appliers, 13, "one managedFields entry per applier");
}
