use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kbeast_api::KnowledgeProject;
use kbeast_api::query_contract::{HTTP_PORT, HTTP_PORT_NAME};

use super::with_desired_hash;
use crate::facts::{child_meta, names, selector_labels};

/// ClusterIP Service in front of the query pods, port `http`.
pub fn desired_service(project: &KnowledgeProject) -> Service {
    with_desired_hash(Service {
        metadata: child_meta(project, names::workload(project)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(selector_labels(project)),
            ports: Some(vec![ServicePort {
                name: Some(HTTP_PORT_NAME.to_string()),
                port: HTTP_PORT,
                target_port: Some(IntOrString::String(HTTP_PORT_NAME.to_string())),
                protocol: Some("TCP".to_string()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}
