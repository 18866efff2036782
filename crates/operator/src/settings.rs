//! Settings the operator applies to every project, from its command line.

use crate::policy::TenantPolicy;

/// What every project's children inherit from the operator's installation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorSettings {
    /// Query image used when a project sets no `spec.image`.
    pub query_image: String,
    /// Namespace the operator runs in; always allowed through NetworkPolicies (smoke checks).
    pub operator_namespace: String,
    /// DNS suffix of Services, for `status.endpoint`.
    pub cluster_domain: String,
    /// What tenants may ask for.
    pub policy: TenantPolicy,
}

impl Default for OperatorSettings {
    fn default() -> Self {
        Self {
            query_image: "ghcr.io/kbeast/kbeast:0.1.0".to_string(),
            operator_namespace: "kbeast-system".to_string(),
            cluster_domain: "cluster.local".to_string(),
            policy: TenantPolicy::default(),
        }
    }
}
