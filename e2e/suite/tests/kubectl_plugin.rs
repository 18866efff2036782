//! `kubectl kbeast` with real query pods on the real control plane, run as a ServiceAccount
//! bound only to `config/rbac/kubectl-kbeast-user.yaml`: status, ingest, query, rollout
//! retry/undo/pause/resume and the two-step key rotation, all through the API server (the
//! service proxy for the query API), and once through `kubectl` itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kbeast_api::KnowledgeProject;
use kbeast_e2e::harness::{PodCluster, api_keys};
use kbeast_e2e::{
    binary, kubectl_apply, repo_root, rolled_out_for_generation, start_operator, wait_for,
};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const IMAGE: &str = "ghcr.io/kbeast/kbeast:e2e";
const NAMESPACE: &str = "e2e-kubectl-plugin";

struct Plugin {
    kubeconfig: PathBuf,
}

impl Plugin {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(binary("kubectl-kbeast"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["-n", NAMESPACE])
            .args(args)
            .output()
            .expect("kubectl-kbeast runs")
    }

    /// Stdout of a command that must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "kubectl kbeast {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8")
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&args)).expect("JSON output")
    }

    /// Stderr of a command that must fail.
    fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            !output.status.success(),
            "kubectl kbeast {args:?} succeeded"
        );
        String::from_utf8(output.stderr).expect("UTF-8")
    }
}

async fn wait_rolled_out(projects: &Api<KnowledgeProject>, what: &str) {
    wait_for(what, Duration::from_secs(180), || async {
        projects
            .get("docs")
            .await
            .is_ok_and(|p| rolled_out_for_generation(&p))
    })
    .await;
}

/// A ServiceAccount in the namespace bound to the plugin's ClusterRole, and its kubeconfig.
async fn plugin_user(env: &PodCluster) -> PathBuf {
    let role = std::fs::read_to_string(repo_root().join("config/rbac/kubectl-kbeast-user.yaml"))
        .expect("the plugin's ClusterRole");
    kubectl_apply(&env.plane.admin_kubeconfig, &role);
    let accounts: Api<ServiceAccount> = Api::namespaced(env.client.clone(), NAMESPACE);
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "cli"}})).expect("valid");
    accounts
        .create(&PostParams::default(), &account)
        .await
        .expect("ServiceAccount");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "cli"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kbeast-kubectl-plugin"},
        "subjects": [{"kind": "ServiceAccount", "name": "cli", "namespace": NAMESPACE}],
    }))
    .expect("valid");
    Api::<RoleBinding>::namespaced(env.client.clone(), NAMESPACE)
        .create(&PostParams::default(), &binding)
        .await
        .expect("RoleBinding");
    env.plane.service_account_kubeconfig(NAMESPACE, "cli").await
}

fn write_documents(dir: &Path) {
    std::fs::create_dir(dir.join("guides")).unwrap();
    std::fs::write(
        dir.join("guides/aardvark.md"),
        "# Aardvarks\nThe aardvark digs burrows at night and eats termites.",
    )
    .unwrap();
    std::fs::write(
        dir.join("notes.txt"),
        "Penguins huddle together in the cold.",
    )
    .unwrap();
    std::fs::write(
        dir.join("faq.jsonl"),
        "{\"id\": \"faq-1\", \"text\": \"How do I rotate keys? Use the keys command.\"}\n\
         {\"id\": \"faq-2\", \"text\": \"Rollouts are gated by smoke checks.\", \"metadata\": {\"topic\": \"ops\"}}\n",
    )
    .unwrap();
    std::fs::write(dir.join("logo.png"), [0u8, 1, 2]).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_runs_status_ingest_query_rollout_and_keys_under_its_own_rbac() {
    if std::env::var_os("KBEAST_E2E_KUBECONFIG").is_some() {
        eprintln!("skipped on a real cluster: the harness runs its own pods");
        return;
    }
    let env = PodCluster::start(&[(IMAGE, binary("kbeast-query"))], None).await;
    let _operator = start_operator(&env.kubeconfig, IMAGE);
    let projects = env
        .create_ready_project(
            NAMESPACE,
            json!({
                "apiVersion": "kbeast.io/v1alpha1", "kind": "KnowledgeProject",
                "metadata": {"name": "docs"},
                "spec": {"replicas": 1, "storage": {"ephemeral": {}}},
            }),
        )
        .await;
    let plugin = Plugin {
        kubeconfig: plugin_user(&env).await,
    };

    // Status: conditions for the generation, the pod and its smoke check, an empty table.
    let status = plugin.json(&["status", "docs"]);
    let ready = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .expect("Ready condition");
    assert_eq!(ready["status"], "True", "{status}");
    assert_eq!(ready["observedGeneration"], status["generation"]);
    assert_eq!(status["pods"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(status["pods"][0]["smoke"], "passed", "{status}");
    assert_eq!(status["data"]["documents"], 0, "{status}");

    // Ingest a directory through the service proxy with the write key.
    let dir = tempfile::tempdir().unwrap();
    write_documents(dir.path());
    let summary = plugin.json(&["ingest", "docs", dir.path().to_str().unwrap()]);
    assert_eq!(summary["documents"], 4, "{summary}");
    assert_eq!(summary["skippedFiles"], json!(["logo.png"]));
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"id\": \"x\"}\n").unwrap();
    let error = plugin.fails(&["ingest", "docs", bad.to_str().unwrap()]);
    assert!(error.contains("bad.jsonl:1"), "{error}");

    // Query with the read key.
    let found = plugin.json(&["query", "docs", "aardvark termites", "--mode", "keyword"]);
    assert_eq!(found["hits"][0]["doc_id"], "guides/aardvark.md", "{found}");
    let table = plugin.ok(&["query", "docs", "aardvark termites", "--mode", "keyword"]);
    eprintln!("$ kubectl kbeast query docs \"aardvark termites\" --mode keyword\n{table}");
    assert!(table.contains("guides/aardvark.md"), "{table}");
    let screen = plugin.ok(&["status", "docs"]);
    eprintln!("$ kubectl kbeast status docs\n{screen}");
    assert!(screen.contains("4 documents"), "{screen}");
    assert!(screen.contains("passed"), "{screen}");

    // Rollout: nothing failed, nothing to undo yet.
    let error = plugin.fails(&["rollout", "docs", "retry"]);
    assert!(error.contains("nothing to retry"), "{error}");
    let error = plugin.fails(&["rollout", "docs", "undo"]);
    assert!(error.contains("no earlier revision"), "{error}");
    // A change rolls out; undo puts the previous spec back, which rolls out again.
    let before = projects.get("docs").await.unwrap().spec;
    projects
        .patch(
            "docs",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"search": {"chunkSize": 700}}})),
        )
        .await
        .unwrap();
    wait_rolled_out(&projects, "the chunk-size change rolled out").await;
    eprintln!(
        "$ kubectl kbeast rollout docs undo\n{}",
        plugin.ok(&["rollout", "docs", "undo"])
    );
    let after = projects.get("docs").await.unwrap();
    assert_eq!(after.spec.search.chunk_size, before.search.chunk_size);
    assert_eq!(
        serde_json::to_value(&after.spec).unwrap(),
        serde_json::to_value(&before).unwrap()
    );
    wait_rolled_out(&projects, "the undo rolled out").await;
    plugin.ok(&["rollout", "docs", "pause"]);
    assert!(projects.get("docs").await.unwrap().spec.rollout.paused);
    plugin.ok(&["rollout", "docs", "resume"]);
    assert!(!projects.get("docs").await.unwrap().spec.rollout.paused);

    // Keys: rotate adds a new read key beside the old one; retire drops the old one.
    let old = api_keys(&env.client, NAMESPACE, "docs").await["read-key"].clone();
    eprintln!(
        "$ kubectl kbeast keys docs rotate --scope read\n{}",
        plugin.ok(&["keys", "docs", "rotate", "--scope", "read"])
    );
    let new = api_keys(&env.client, NAMESPACE, "docs").await["read-key"].clone();
    assert_ne!(new, old);
    let query_with =
        |key: &str| plugin.run(&["query", "docs", "penguins", "--key", key, "-o", "json"]);
    wait_for(
        "the pods accept the new read key",
        Duration::from_secs(90),
        || async { query_with(&new).status.success() },
    )
    .await;
    assert!(query_with(&old).status.success(), "the old key still works");
    let error = plugin.fails(&["keys", "docs", "rotate"]);
    assert!(error.contains("retire"), "{error}");
    eprintln!(
        "$ kubectl kbeast keys docs retire\n{}",
        plugin.ok(&["keys", "docs", "retire"])
    );
    wait_for(
        "the pods reject the old read key",
        Duration::from_secs(90),
        || async {
            let output = query_with(&old);
            !output.status.success() && String::from_utf8_lossy(&output.stderr).contains("401")
        },
    )
    .await;
    assert!(query_with(&new).status.success());

    // The same binary as a kubectl plugin: kubectl finds `kubectl-kbeast` on the PATH.
    let plugin_dir = binary("kubectl-kbeast").parent().unwrap().to_path_buf();
    let path = std::env::join_paths(
        std::iter::once(plugin_dir)
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let output = Command::new(kbeast_testkit::tool("kubectl"))
        .args(["kbeast", "--kubeconfig"])
        .arg(&plugin.kubeconfig)
        .args(["-n", NAMESPACE, "status", "docs"])
        .env("PATH", path)
        .output()
        .expect("kubectl runs");
    let screen = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{screen}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        screen.contains("Project:     e2e-kubectl-plugin/docs"),
        "{screen}"
    );
}
