//! What the platform team lets tenants ask for (chart values `policy.*`, operator flags): which
//! buckets and prefixes a project may store in, which images its pods may run, which pod
//! annotations and tolerations it may set. A project outside the policy is blocked with
//! `InvalidSpec` naming the field; nothing is applied.

use kbeast_api::KnowledgeProject;

use crate::spec_problem::SpecProblem;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantPolicy {
    /// Buckets `spec.storage.objectStore.uri` may name; empty: any.
    pub allowed_buckets: Vec<String>,
    /// Prefix the object-store path must start with, with `{namespace}` and `{name}` filled in;
    /// `None`: any prefix.
    pub object_store_prefix: Option<String>,
    /// Prefixes `spec.image` must start with (e.g. `ghcr.io/kbeast/`); empty: any image.
    pub allowed_images: Vec<String>,
    /// Prefixes of pod annotation keys tenants may not set.
    pub denied_pod_annotations: Vec<String>,
    /// Keys tolerations may name; empty: any.
    pub allowed_toleration_keys: Vec<String>,
}

/// The default object-store prefix: a project's data lives under its own namespace and name.
pub const DEFAULT_OBJECT_STORE_PREFIX: &str = "{namespace}/{name}/";

/// Annotations that loosen a pod's confinement, denied by default.
pub const DEFAULT_DENIED_POD_ANNOTATIONS: [&str; 2] = [
    "container.apparmor.security.beta.kubernetes.io/",
    "seccomp.security.alpha.kubernetes.io/",
];

impl Default for TenantPolicy {
    fn default() -> Self {
        Self {
            allowed_buckets: Vec::new(),
            object_store_prefix: Some(DEFAULT_OBJECT_STORE_PREFIX.to_string()),
            allowed_images: Vec::new(),
            denied_pod_annotations: DEFAULT_DENIED_POD_ANNOTATIONS
                .iter()
                .map(ToString::to_string)
                .collect(),
            allowed_toleration_keys: Vec::new(),
        }
    }
}

impl TenantPolicy {
    /// Every way `project` (in `namespace`) steps outside the policy.
    pub fn problems(&self, project: &KnowledgeProject, namespace: &str) -> Vec<SpecProblem> {
        let spec = &project.spec;
        let name = project.metadata.name.as_deref().unwrap_or_default();
        let mut problems = Vec::new();
        let mut problem = |field: &str, message: String| {
            problems.push(SpecProblem {
                field: field.to_string(),
                message,
            })
        };
        if let Some(store) = &spec.storage.object_store {
            let (bucket, path) = split_s3_uri(&store.uri);
            if !self.allowed_buckets.is_empty() && !self.allowed_buckets.iter().any(|b| b == bucket)
            {
                problem(
                    "spec.storage.objectStore.uri",
                    format!(
                        "bucket {bucket:?} is not allowed by the operator's policy (allowed: {})",
                        self.allowed_buckets.join(", ")
                    ),
                );
            }
            if let Some(template) = &self.object_store_prefix {
                let required = template
                    .replace("{namespace}", namespace)
                    .replace("{name}", name);
                if !under_prefix(path, &required) {
                    problem(
                        "spec.storage.objectStore.uri",
                        format!(
                            "the path must start with {required:?} (the operator's policy: each project stores under its own prefix), e.g. s3://{bucket}/{required}"
                        ),
                    );
                }
            }
        }
        if let Some(image) = &spec.image
            && !self.allowed_images.is_empty()
            && !self
                .allowed_images
                .iter()
                .any(|p| image.starts_with(p.as_str()))
        {
            problem(
                "spec.image",
                format!(
                    "{image:?} is not allowed by the operator's policy (allowed prefixes: {})",
                    self.allowed_images.join(", ")
                ),
            );
        }
        for key in spec.pod_annotations.iter().flatten().map(|(k, _)| k) {
            if let Some(denied) = self
                .denied_pod_annotations
                .iter()
                .find(|p| key.starts_with(p.as_str()))
            {
                problem(
                    &format!("spec.podAnnotations[{key:?}]"),
                    format!(
                        "annotations starting with {denied:?} are denied by the operator's policy"
                    ),
                );
            }
        }
        if !self.allowed_toleration_keys.is_empty() {
            for (i, toleration) in spec.tolerations.iter().flatten().enumerate() {
                let key = toleration.key.as_deref().unwrap_or_default();
                if !self.allowed_toleration_keys.iter().any(|k| k == key) {
                    problem(
                        &format!("spec.tolerations[{i}].key"),
                        format!(
                            "{key:?} is not allowed by the operator's policy (allowed: {})",
                            self.allowed_toleration_keys.join(", ")
                        ),
                    );
                }
            }
        }
        problems
    }
}

/// `s3://bucket/some/path` → (`bucket`, `some/path`).
fn split_s3_uri(uri: &str) -> (&str, &str) {
    let rest = uri.strip_prefix("s3://").unwrap_or(uri);
    rest.split_once('/').unwrap_or((rest, ""))
}

/// `path` is `prefix` itself (without its trailing slash) or below it.
fn under_prefix(path: &str, prefix: &str) -> bool {
    let path = path.trim_start_matches('/');
    path.starts_with(prefix) || path == prefix.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn project(spec: Value) -> KnowledgeProject {
        serde_json::from_value(json!({
            "apiVersion": "kbeast.io/v1alpha1", "kind": "KnowledgeProject",
            "metadata": {"name": "docs", "namespace": "team-a"},
            "spec": spec,
        }))
        .expect("valid project")
    }

    fn fields(policy: &TenantPolicy, spec: Value) -> Vec<String> {
        policy
            .problems(&project(spec), "team-a")
            .into_iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect()
    }

    fn store(uri: &str) -> Value {
        json!({"storage": {"objectStore": {"uri": uri}}})
    }

    #[test]
    fn by_default_each_project_stores_under_its_own_namespace_and_name() {
        let policy = TenantPolicy::default();
        for uri in [
            "s3://shared/team-a/docs",
            "s3://shared/team-a/docs/",
            "s3://shared/team-a/docs/v2",
        ] {
            assert!(fields(&policy, store(uri)).is_empty(), "{uri}");
        }
        for uri in [
            "s3://shared/team-b/docs/",
            "s3://shared/team-a/docs-other/",
            "s3://shared",
        ] {
            let problems = fields(&policy, store(uri));
            assert_eq!(problems.len(), 1, "{uri}: {problems:?}");
            assert!(
                problems[0].starts_with(
                    "spec.storage.objectStore.uri: the path must start with \"team-a/docs/\""
                ),
                "{problems:?}"
            );
        }
        let open = TenantPolicy {
            object_store_prefix: None,
            ..TenantPolicy::default()
        };
        assert!(fields(&open, store("s3://shared/anything")).is_empty());
    }

    #[test]
    fn buckets_images_annotations_and_tolerations_outside_the_policy_are_named() {
        let policy = TenantPolicy {
            allowed_buckets: vec!["tenants".into()],
            object_store_prefix: None,
            allowed_images: vec!["ghcr.io/kbeast/".into()],
            allowed_toleration_keys: vec!["dedicated".into()],
            ..TenantPolicy::default()
        };
        let problems = fields(
            &policy,
            json!({
                "storage": {"objectStore": {"uri": "s3://payroll/x"}},
                "image": "evil.example/miner:1",
                "podAnnotations": {
                    "container.apparmor.security.beta.kubernetes.io/query": "unconfined",
                    "team": "a",
                },
                "tolerations": [{"key": "dedicated", "operator": "Exists"}, {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}],
            }),
        );
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems[0].starts_with("spec.storage.objectStore.uri: bucket \"payroll\""));
        assert!(problems[1].starts_with("spec.image: \"evil.example/miner:1\""));
        assert!(problems[2].starts_with(
            "spec.podAnnotations[\"container.apparmor.security.beta.kubernetes.io/query\"]"
        ));
        assert!(problems[3].starts_with("spec.tolerations[1].key"));
        assert!(
            fields(
                &policy,
                json!({"storage": {"objectStore": {"uri": "s3://tenants/x"}}, "image": "ghcr.io/kbeast/kbeast:1"})
            )
            .is_empty()
        );
    }
}
