//! Checks of a project's children as they are live in the cluster: ownership, labels, and the
//! rules of the PodDisruptionBudget, the Service and the NetworkPolicy.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kbeast_api::KnowledgeProject;
use kube::api::Api;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

/// Asserts the controller owner reference and the labels every child carries.
fn assert_owned_and_labelled<K>(child: &K, project: &KnowledgeProject)
where
    K: Resource,
    K::DynamicType: Default,
{
    let what = format!("{} {}", K::kind(&Default::default()), child.name_any());
    let owners = child.owner_references();
    assert_eq!(owners.len(), 1, "{what}: one owner");
    let owner = &owners[0];
    assert_eq!(
        (
            owner.kind.as_str(),
            owner.name.as_str(),
            Some(owner.uid.as_str())
        ),
        (
            "KnowledgeProject",
            project.name_any().as_str(),
            project.uid().as_deref()
        ),
        "{what}: owned by the project"
    );
    assert_eq!(owner.controller, Some(true), "{what}: controller reference");
    let name = project.name_any();
    for (key, value) in [
        ("app.kubernetes.io/name", "kbeast-query"),
        ("app.kubernetes.io/instance", name.as_str()),
        ("app.kubernetes.io/component", "knowledge-base"),
        ("app.kubernetes.io/part-of", "kbeast"),
        ("app.kubernetes.io/managed-by", "kbeast-operator"),
        ("kbeast.io/project", name.as_str()),
    ] {
        assert_eq!(
            child.labels().get(key).map(String::as_str),
            Some(value),
            "{what}: label {key}"
        );
    }
}

async fn get<K>(client: &Client, namespace: &str, name: &str) -> K
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("{} {namespace}/{name}: {e}", K::kind(&Default::default())))
}

/// Checks every child of a converged project that stores its data on a volume and uses the
/// built-in embedder. `allowed_namespaces` is `spec.access.allowedNamespaces`.
pub async fn assert_children(
    client: &Client,
    project: &KnowledgeProject,
    allowed_namespaces: &[&str],
) {
    let namespace = project.namespace().expect("namespaced");
    let name = project.name_any();
    let ns = namespace.as_str();

    let deployment: Deployment = get(client, ns, &name).await;
    assert_owned_and_labelled(&deployment, project);
    let selector = deployment
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .expect("Deployment selector");
    assert_eq!(
        serde_json::to_value(&selector).expect("JSON"),
        json!({"app.kubernetes.io/instance": name, "app.kubernetes.io/name": "kbeast-query"})
    );
    assert_owned_and_labelled(&get::<ServiceAccount>(client, ns, &name).await, project);
    assert_owned_and_labelled(
        &get::<ConfigMap>(client, ns, &format!("{name}-config")).await,
        project,
    );
    assert_owned_and_labelled(
        &get::<Secret>(client, ns, &format!("{name}-api-keys")).await,
        project,
    );
    assert_owned_and_labelled(
        &get::<PersistentVolumeClaim>(client, ns, &format!("{name}-data")).await,
        project,
    );

    let service: Service = get(client, ns, &name).await;
    assert_owned_and_labelled(&service, project);
    let spec = service.spec.expect("Service spec");
    assert_eq!(
        spec.selector.as_ref(),
        Some(&selector),
        "Service selects the pods"
    );
    let ports = spec.ports.expect("ports");
    assert_eq!(
        (ports[0].name.as_deref(), ports[0].port),
        (Some("http"), 8080)
    );

    // The budget never blocks a drain: one pod may go, and unhealthy pods always may.
    let pdb: PodDisruptionBudget = get(client, ns, &name).await;
    assert_owned_and_labelled(&pdb, project);
    let spec = pdb.spec.expect("PDB spec");
    assert_eq!(
        spec.max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    assert_eq!(spec.min_available, None);
    assert_eq!(
        spec.unhealthy_pod_eviction_policy.as_deref(),
        Some("AlwaysAllow")
    );
    assert_eq!(
        spec.selector.and_then(|s| s.match_labels),
        Some(selector.clone())
    );

    let policy: NetworkPolicy = get(client, ns, &name).await;
    assert_owned_and_labelled(&policy, project);
    assert_network_policy(&policy, &selector, allowed_namespaces);
}

/// The query pods' NetworkPolicy: ingress on `http` from the project's namespace and from the
/// allowed and operator namespaces only; egress to DNS only (built-in embedder, volume).
pub fn assert_network_policy(
    policy: &NetworkPolicy,
    pod_labels: &std::collections::BTreeMap<String, String>,
    allowed_namespaces: &[&str],
) {
    let mut namespaces: Vec<&str> = allowed_namespaces.to_vec();
    namespaces.push("kbeast-system");
    namespaces.sort();
    let spec =
        serde_json::to_value(policy.spec.as_ref().expect("NetworkPolicy spec")).expect("JSON");
    let expected = json!({
        "podSelector": {"matchLabels": pod_labels},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{
            "from": [
                {"podSelector": {}},
                {"namespaceSelector": {"matchExpressions": [{
                    "key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}]}}
            ],
            "ports": [{"port": "http", "protocol": "TCP"}]
        }],
        "egress": [{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]
    });
    assert_eq!(
        spec,
        expected,
        "NetworkPolicy {}:\n{}",
        policy.name_any(),
        serde_json::to_string_pretty(&spec).unwrap_or_default()
    );
}
