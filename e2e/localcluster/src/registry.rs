//! The resource types the emulator serves: built-ins from the recorded discovery documents,
//! custom resources from established CRDs.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::schema::{BuiltinSchemas, Schema};
use crate::store::ResourceKey;

const RESOURCE_LISTS: &str = include_str!("../data/discovery/resource-lists.json");

/// Paths of a CRD's scale subresource.
#[derive(Debug, Clone)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub resource: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    /// The `APIResourceList` entry served by discovery.
    pub discovery: Value,
    pub subresources: Vec<Value>,
    pub has_status: bool,
    pub has_scale: bool,
    /// For custom resources: the version's `openAPIV3Schema` and scale paths.
    pub crd_schema: Option<Arc<Value>>,
    /// The schema's CEL rules, compiled once per CRD version as the API server does.
    pub crd_rules: Option<Arc<kube::core::cel::CompiledSchema>>,
    pub crd_scale: Option<ScalePaths>,
    /// `additionalPrinterColumns` of the CRD version, for Table output.
    pub crd_printer_columns: Option<Value>,
}

impl ResourceType {
    pub fn key(&self) -> ResourceKey {
        ResourceKey::new(&self.group, &self.resource)
    }
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    pub fn is_custom(&self) -> bool {
        self.crd_schema.is_some()
    }
    pub fn schema(&self) -> Schema<'_> {
        match &self.crd_schema {
            Some(s) => Schema::crd(s),
            None => BuiltinSchemas::get()
                .root(&self.group, &self.version, &self.kind)
                .unwrap_or_else(Schema::none),
        }
    }
    /// Whether writes bump `metadata.generation` (types with a spec, and custom resources).
    pub fn tracks_generation(&self) -> bool {
        self.is_custom()
            || matches!(
                self.kind.as_str(),
                "Deployment"
                    | "ReplicaSet"
                    | "StatefulSet"
                    | "DaemonSet"
                    | "Job"
                    | "PodDisruptionBudget"
                    | "NetworkPolicy"
                    | "CustomResourceDefinition"
                    | "Pod"
            )
    }
}

#[derive(Clone, Default)]
pub struct Registry {
    types: Vec<Arc<ResourceType>>,
}

impl Registry {
    pub fn builtin() -> Registry {
        let lists: Vec<Value> =
            serde_json::from_str(RESOURCE_LISTS).expect("recorded discovery is JSON");
        let mut types = Vec::new();
        for list in &lists {
            let gv = list["groupVersion"].as_str().unwrap_or("");
            let (group, version) = gv.split_once('/').unwrap_or(("", gv));
            let resources = list["resources"].as_array().cloned().unwrap_or_default();
            for entry in resources
                .iter()
                .filter(|r| !r["name"].as_str().unwrap_or("").contains('/'))
            {
                let name = entry["name"].as_str().unwrap_or("");
                let subresources: Vec<Value> = resources
                    .iter()
                    .filter(|r| {
                        r["name"]
                            .as_str()
                            .and_then(|n| n.split_once('/'))
                            .is_some_and(|(p, _)| p == name)
                    })
                    .cloned()
                    .collect();
                let has = |s: &str| {
                    subresources
                        .iter()
                        .any(|r| r["name"] == format!("{name}/{s}"))
                };
                let kind = entry["kind"].as_str().unwrap_or("").to_string();
                types.push(Arc::new(ResourceType {
                    group: group.to_string(),
                    version: version.to_string(),
                    resource: name.to_string(),
                    list_kind: format!("{kind}List"),
                    kind,
                    namespaced: entry["namespaced"].as_bool().unwrap_or(false),
                    discovery: entry.clone(),
                    has_status: has("status"),
                    has_scale: has("scale"),
                    subresources,
                    crd_schema: None,
                    crd_rules: None,
                    crd_scale: None,
                    crd_printer_columns: None,
                }));
            }
        }
        Registry { types }
    }

    pub fn types(&self) -> &[Arc<ResourceType>] {
        &self.types
    }

    pub fn find(&self, group: &str, version: &str, resource: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.resource == resource)
            .cloned()
    }

    pub fn find_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.api_version() == api_version && t.kind == kind)
            .cloned()
    }

    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.types
            .iter()
            .any(|t| t.group == group && t.version == version)
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.types.iter().any(|t| t.group == group)
    }

    /// Replaces the custom resource types served for one CRD (by its name).
    pub fn set_crd_types(&mut self, crd_name: &str, new_types: Vec<ResourceType>) {
        self.types
            .retain(|t| !(t.is_custom() && format!("{}.{}", t.resource, t.group) == crd_name));
        self.types.extend(new_types.into_iter().map(Arc::new));
    }
}

/// The resource types an established CRD serves (one per served version).
pub fn crd_resource_types(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or("");
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or("");
    let kind = names["kind"].as_str().unwrap_or("");
    let namespaced = spec["scope"] == "Namespaced";
    let mut out = Vec::new();
    for version in spec["versions"].as_array().into_iter().flatten() {
        if version["served"] != Value::Bool(true) {
            continue;
        }
        let subs = &version["subresources"];
        let has_status = subs.get("status").is_some();
        let scale = subs.get("scale").map(|s| ScalePaths {
            spec_replicas: s["specReplicasPath"].as_str().unwrap_or("").to_string(),
            status_replicas: s["statusReplicasPath"].as_str().unwrap_or("").to_string(),
            label_selector: s["labelSelectorPath"].as_str().map(String::from),
        });
        let verbs = json!([
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "create",
            "update",
            "watch"
        ]);
        let version_name = version["name"].as_str().unwrap_or("");
        let mut discovery = json!({
            "name": plural,
            "singularName": names["singular"].as_str().unwrap_or(&kind.to_lowercase()),
            "namespaced": namespaced,
            "kind": kind,
            "verbs": verbs,
            "storageVersionHash": storage_version_hash(group, version_name, kind),
        });
        if let Some(short) = names.get("shortNames") {
            discovery["shortNames"] = short.clone();
        }
        if let Some(categories) = names.get("categories") {
            discovery["categories"] = categories.clone();
        }
        let mut subresources = Vec::new();
        if has_status {
            subresources.push(json!({"name": format!("{plural}/status"), "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": ["get", "patch", "update"]}));
        }
        if scale.is_some() {
            subresources.push(json!({"name": format!("{plural}/scale"), "singularName": "", "namespaced": namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
        let schema = &version["schema"]["openAPIV3Schema"];
        out.push(ResourceType {
            group: group.to_string(),
            version: version["name"].as_str().unwrap_or("").to_string(),
            resource: plural.to_string(),
            kind: kind.to_string(),
            list_kind: names["listKind"]
                .as_str()
                .map(String::from)
                .unwrap_or(format!("{kind}List")),
            namespaced,
            discovery,
            subresources,
            has_status,
            has_scale: scale.is_some(),
            crd_schema: Some(Arc::new(schema.clone())),
            crd_rules: Some(Arc::new(kube::core::cel::compile_schema(schema))),
            crd_scale: scale,
            crd_printer_columns: version.get("additionalPrinterColumns").cloned(),
        });
    }
    out
}

/// Kubernetes' storage version hash: base64 of the first 8 bytes of sha256("group/version/kind").
pub fn storage_version_hash(group: &str, version: &str, kind: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{group}/{version}/{kind}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(&digest[..8])
}

#[cfg(test)]
mod tests {
    #[test]
    fn storage_version_hash_matches_the_recorded_widget_hash() {
        assert_eq!(
            super::storage_version_hash("golden.example.com", "v1", "Widget"),
            "FtbgEmiKtnw="
        );
    }
}
