use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kbeast_api::query_contract::HTTP_PORT_NAME;
use kbeast_api::{EmbeddingProvider, KnowledgeProject};

use super::with_desired_hash;
use crate::facts::{Endpoint, child_meta, names, parse_endpoint, selector_labels};
use crate::settings::OperatorSettings;

/// Label every namespace carries with its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Isolates the query pods.
///
/// Ingress: pods of the project's namespace (all, or `access.allowedPodSelector`), pods of
/// `access.allowedNamespaces`, and the operator's namespace (smoke checks), on port `http` only.
/// Egress: DNS, plus the embedder and object-store endpoints. A NetworkPolicy cannot name hosts,
/// so a host name opens its port to any address; an IP literal opens that address only.
pub fn desired_network_policy(
    project: &KnowledgeProject,
    settings: &OperatorSettings,
) -> NetworkPolicy {
    let access = project.spec.access.clone().unwrap_or_default();
    let same_namespace_pods = NetworkPolicyPeer {
        pod_selector: Some(access.allowed_pod_selector.unwrap_or_default()),
        ..NetworkPolicyPeer::default()
    };
    let mut namespaces: BTreeSet<String> = access.allowed_namespaces.into_iter().collect();
    namespaces.insert(settings.operator_namespace.clone());
    let other_namespaces = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: NAMESPACE_NAME_LABEL.to_string(),
                operator: "In".to_string(),
                values: Some(namespaces.into_iter().collect()),
            }]),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let ingress = NetworkPolicyIngressRule {
        from: Some(vec![same_namespace_pods, other_namespaces]),
        ports: Some(vec![NetworkPolicyPort {
            port: Some(IntOrString::String(HTTP_PORT_NAME.to_string())),
            protocol: Some("TCP".to_string()),
            ..NetworkPolicyPort::default()
        }]),
    };

    let mut egress = vec![NetworkPolicyEgressRule {
        to: None,
        ports: Some(vec![port_rule(53, "UDP"), port_rule(53, "TCP")]),
    }];
    for endpoint in external_endpoints(project) {
        egress.push(egress_rule(&endpoint));
    }

    with_desired_hash(NetworkPolicy {
        metadata: child_meta(project, names::workload(project)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(project)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_string(), "Egress".to_string()]),
            ingress: Some(vec![ingress]),
            egress: Some(egress),
        }),
    })
}

/// Endpoints the pods call: the embedder, and the object store (AWS S3 on 443 without an endpoint).
fn external_endpoints(project: &KnowledgeProject) -> Vec<Endpoint> {
    let spec = &project.spec;
    let mut endpoints = Vec::new();
    if spec.embedding.provider == EmbeddingProvider::Openai {
        endpoints.extend(spec.embedding.endpoint.as_deref().and_then(parse_endpoint));
    }
    if let Some(store) = &spec.storage.object_store {
        match store.endpoint.as_deref() {
            Some(url) => endpoints.extend(parse_endpoint(url)),
            None => endpoints.push(Endpoint {
                host: String::new(),
                port: 443,
            }),
        }
    }
    endpoints
}

fn egress_rule(endpoint: &Endpoint) -> NetworkPolicyEgressRule {
    let to = endpoint.host.parse::<IpAddr>().ok().map(|ip| {
        let cidr = match ip {
            IpAddr::V4(_) => format!("{ip}/32"),
            IpAddr::V6(_) => format!("{ip}/128"),
        };
        vec![NetworkPolicyPeer {
            ip_block: Some(IPBlock { cidr, except: None }),
            ..NetworkPolicyPeer::default()
        }]
    });
    NetworkPolicyEgressRule {
        to,
        ports: Some(vec![port_rule(endpoint.port, "TCP")]),
    }
}

fn port_rule(port: i32, protocol: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some(protocol.to_string()),
        ..NetworkPolicyPort::default()
    }
}
