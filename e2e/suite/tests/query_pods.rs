//! The real operator (as the chart's ServiceAccount) and real query pods on the real control
//! plane: two tenants' projects (from `config/samples/minimal.yaml`, each in its own namespace)
//! become Ready through the node agent's probes with real `kbeast-query` processes; documents are ingested and searched
//! (vector, keyword, hybrid) through the Services with the generated API keys, and the
//! tenants stay apart (each NetworkPolicy admits only its own namespace and the operator's, the
//! other tenant's key gets 401, its documents never show up).
//!
//! With `KBEAST_E2E_KUBECONFIG` set, the projects run on that cluster (image
//! `KBEAST_E2E_IMAGE`); the data-plane part needs a route to the pods and is skipped there,
//! with a message.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kbeast_api::KnowledgeProject;
use kbeast_client::{DocumentInput, IngestRequest, SearchMode, SearchRequest};
use kbeast_e2e::children::assert_network_policy;
use kbeast_e2e::harness::{Env, api_keys};
use kbeast_e2e::{create_namespace, repo_root, rolled_out_for_generation, wait_for};
use kube::api::{Api, PostParams};

struct Tenant {
    namespace: &'static str,
    /// A word only this tenant's documents contain.
    marker: &'static str,
}

const TENANTS: [Tenant; 2] = [
    Tenant {
        namespace: "e2e-tenant-a",
        marker: "aardvark",
    },
    Tenant {
        namespace: "e2e-tenant-b",
        marker: "bumblebee",
    },
];

/// The namespace enforces the `restricted` Pod Security Standard: a pod that asks for root is
/// refused (so the query pods this test runs there pass it).
async fn assert_restricted(client: &kube::Client, namespace: &str) {
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "wants-root"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {"runAsUser": 0}}]},
    }))
    .expect("valid pod");
    let refused = Api::namespaced(client.clone(), namespace)
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &pod,
        )
        .await
        .expect_err("a root pod is refused");
    assert!(
        refused
            .to_string()
            .contains("violates PodSecurity \"restricted"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_serve_documents_with_real_query_pods_and_keep_tenants_apart() {
    let env = Env::start().await;
    let client = env.client.clone();
    let mut sample: serde_json::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join("config/samples/minimal.yaml")).expect("sample"),
    )
    .expect("sample parses");
    kbeast_e2e::with_test_embedder(&mut sample);
    let sample: KnowledgeProject = serde_json::from_value(sample).expect("valid project");
    for tenant in &TENANTS {
        create_namespace(&client, tenant.namespace).await;
        assert_restricted(&client, tenant.namespace).await;
        Api::<KnowledgeProject>::namespaced(client.clone(), tenant.namespace)
            .create(&PostParams::default(), &sample)
            .await
            .expect("project created");
    }
    let (_operator, _) = env.operator(&[]);
    for tenant in &TENANTS {
        let projects: Api<KnowledgeProject> = Api::namespaced(client.clone(), tenant.namespace);
        // No `set_pods_ready`: the pods are Ready because kbeast-query answers its probes.
        wait_for(
            &format!("{} Ready with real pods", tenant.namespace),
            Duration::from_secs(120),
            || async {
                projects
                    .get("docs")
                    .await
                    .is_ok_and(|p| rolled_out_for_generation(&p))
            },
        )
        .await;
    }
    // Isolation as rendered: each tenant's NetworkPolicy admits its own namespace and the
    // operator's, never the other tenant's.
    for tenant in &TENANTS {
        let policy: NetworkPolicy = Api::namespaced(client.clone(), tenant.namespace)
            .get("docs")
            .await
            .expect("NetworkPolicy");
        let labels = BTreeMap::from([
            ("app.kubernetes.io/instance".to_string(), "docs".to_string()),
            (
                "app.kubernetes.io/name".to_string(),
                "kbeast-query".to_string(),
            ),
        ]);
        assert_network_policy(&policy, &labels, &[]);
    }

    let mut services = Vec::new();
    for tenant in &TENANTS {
        let Some(url) = env.service_url(tenant.namespace, "docs", 8080).await else {
            eprintln!("skipped on a real cluster: ingest and search need a route to the Service");
            return;
        };
        let keys = api_keys(&client, tenant.namespace, "docs").await;
        services.push((url, keys));
    }

    for (tenant, (url, keys)) in TENANTS.iter().zip(&services) {
        let writer = kbeast_client::Client::new(url, Some(keys["write-key"].clone())).unwrap();
        let documents = [
            format!(
                "The {} tenant keeps its notes about rivers and mountains here.",
                tenant.marker
            ),
            format!(
                "Quarterly report of the {} team: revenue grew in every region.",
                tenant.marker
            ),
            "A shared phrase about kubernetes operators and vector search.".to_string(),
        ];
        let ingested = writer
            .ingest(&IngestRequest {
                documents: documents
                    .iter()
                    .map(|text| DocumentInput {
                        text: text.clone(),
                        source: Some(format!("{}/notes", tenant.namespace)),
                        ..DocumentInput::default()
                    })
                    .collect(),
            })
            .await
            .expect("ingest through the Service");
        assert_eq!(ingested.documents.len(), 3);
    }

    for (i, (tenant, (url, keys))) in TENANTS.iter().zip(&services).enumerate() {
        let reader = kbeast_client::Client::new(url, Some(keys["read-key"].clone())).unwrap();
        let other = &TENANTS[1 - i];
        for mode in [SearchMode::Vector, SearchMode::Keyword, SearchMode::Hybrid] {
            let query = format!("{} quarterly report revenue", tenant.marker);
            let response = reader
                .search(&SearchRequest::new(query, mode, 10))
                .await
                .unwrap_or_else(|e| panic!("{} {mode:?} search: {e}", tenant.namespace));
            assert!(!response.degraded, "{mode:?} served as asked");
            let top = response
                .hits
                .first()
                .unwrap_or_else(|| panic!("{} {mode:?}: no hits", tenant.namespace));
            assert!(
                top.text.contains("Quarterly report") && top.text.contains(tenant.marker),
                "{} {mode:?}: best hit is the report, got {:?}",
                tenant.namespace,
                top.text
            );
            for hit in &response.hits {
                assert!(
                    !hit.text.contains(other.marker),
                    "{}: {}'s document leaked: {:?}",
                    tenant.namespace,
                    other.namespace,
                    hit.text
                );
                assert_eq!(
                    hit.source.as_deref(),
                    Some(&*format!("{}/notes", tenant.namespace))
                );
            }
            // The other tenant's unique word finds nothing of theirs here.
            let response = reader
                .search(&SearchRequest::new(other.marker, mode, 10))
                .await
                .unwrap();
            assert!(
                response.hits.iter().all(|h| !h.text.contains(other.marker)),
                "{mode:?}: {} documents visible in {}",
                other.namespace,
                tenant.namespace
            );
        }
        // The other tenant's keys are not valid here.
        let (_, other_keys) = &services[1 - i];
        for key in ["read-key", "write-key", "admin-key"] {
            let intruder = kbeast_client::Client::new(url, Some(other_keys[key].clone())).unwrap();
            let error = intruder
                .search(&SearchRequest::new(tenant.marker, SearchMode::Keyword, 5))
                .await
                .expect_err("another tenant's key is rejected");
            assert_eq!(
                error.status().map(|s| s.as_u16()),
                Some(401),
                "{key} of {} against {}: {error}",
                other.namespace,
                tenant.namespace
            );
        }
    }
}
