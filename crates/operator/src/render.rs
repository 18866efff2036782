//! `kbeast-operator render` and `kbeast-operator crd`: manifests printed offline.

use kbeast_api::KnowledgeProject;
use kube::CustomResourceExt;

use crate::build::{
    ApiKeySet, ObservedFacts, desired_api_keys_secret, desired_children, secrets_hash,
};
use crate::settings::OperatorSettings;
use crate::validate::{describe, spec_problems};

/// The CRD as YAML, exactly as checked in under `crds/`.
///
/// Keys are sorted explicitly: the schema is made of `serde_json` maps, whose order depends on
/// whether a build enables `preserve_order`, and the output must be the same in every build.
pub fn crd_yaml() -> String {
    let crd = serde_json::to_value(KnowledgeProject::crd()).expect("the CRD serialises to JSON");
    serde_yaml::to_string(&sorted_keys(crd)).expect("the CRD serialises to YAML")
}

fn sorted_keys(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key, sorted_keys(value)))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted_keys).collect())
        }
        other => other,
    }
}

/// Why a project cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("not a KnowledgeProject: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error("invalid spec: {0}")]
    Invalid(String),
}

/// Every child the operator would create for the project in `yaml`, as a multi-document YAML
/// stream in apply order. A generated API-keys Secret holds `keys`.
pub fn render_children(
    yaml: &str,
    settings: &OperatorSettings,
    keys: &ApiKeySet,
) -> Result<String, RenderError> {
    let mut project: KnowledgeProject = serde_yaml::from_str(yaml)?;
    project
        .metadata
        .namespace
        .get_or_insert_with(|| "default".to_string());
    let mut problems = spec_problems(&project);
    let namespace = project.metadata.namespace.clone().unwrap_or_default();
    problems.extend(settings.policy.problems(&project, &namespace));
    if !problems.is_empty() {
        return Err(RenderError::Invalid(describe(&problems)));
    }
    let secret = project
        .spec
        .auth
        .is_none()
        .then(|| desired_api_keys_secret(&project, keys));
    // Referenced Secrets are not read by `render`; the generated one is mounted, not hashed.
    let facts = ObservedFacts {
        secrets_hash: secrets_hash([]),
    };
    let children = desired_children(&project, settings, &facts);
    let mut out = String::new();
    for child in children.in_apply_order(secret) {
        out.push_str("---\n");
        out.push_str(&child.to_yaml());
    }
    Ok(out)
}
