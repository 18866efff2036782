use k8s_openapi::api::core::v1::ServiceAccount;
use kbeast_api::KnowledgeProject;

use super::with_desired_hash;
use crate::facts::{child_meta, names};

/// The query pods' identity. They never call the Kubernetes API, so no token is mounted.
pub fn desired_service_account(project: &KnowledgeProject) -> ServiceAccount {
    with_desired_hash(ServiceAccount {
        metadata: child_meta(project, names::workload(project)),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    })
}
