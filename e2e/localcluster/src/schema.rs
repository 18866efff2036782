//! Navigation of OpenAPI v3 schemas: the recorded built-in documents and CRD `openAPIV3Schema`s.
//!
//! Merge, apply and managed-fields code asks a schema node how a map or list behaves
//! (granular or atomic, list-map keys, sets), the same facts structured-merge-diff reads.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value};

/// The recorded OpenAPI v3 documents, served at `/openapi/v3/...` and used as schemas.
pub const OPENAPI_DOCUMENTS: &[(&str, &str)] = &[
    ("api/v1", include_str!("../data/openapi/api__v1.json")),
    (
        "apis/apps/v1",
        include_str!("../data/openapi/apis__apps__v1.json"),
    ),
    (
        "apis/autoscaling/v2",
        include_str!("../data/openapi/apis__autoscaling__v2.json"),
    ),
    (
        "apis/policy/v1",
        include_str!("../data/openapi/apis__policy__v1.json"),
    ),
    (
        "apis/networking.k8s.io/v1",
        include_str!("../data/openapi/apis__networking.k8s.io__v1.json"),
    ),
    (
        "apis/coordination.k8s.io/v1",
        include_str!("../data/openapi/apis__coordination.k8s.io__v1.json"),
    ),
];

/// Schema of the parts of a CustomResourceDefinition whose list types matter for merging.
const CRD_SCHEMA: &str = r##"{"type":"object","properties":{
 "metadata":{"$ref":"#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
 "status":{"type":"object","properties":{"conditions":{"type":"array","x-kubernetes-list-type":"map",
   "x-kubernetes-list-map-keys":["type"],"items":{"type":"object"}}}}}}"##;

/// All built-in schemas, indexed by group/version/kind.
pub struct BuiltinSchemas {
    definitions: Map<String, Value>,
    by_gvk: HashMap<(String, String, String), Value>,
}

impl BuiltinSchemas {
    pub fn get() -> &'static BuiltinSchemas {
        static SCHEMAS: OnceLock<BuiltinSchemas> = OnceLock::new();
        SCHEMAS.get_or_init(|| {
            let mut definitions = Map::new();
            let mut by_gvk = HashMap::new();
            for (_, text) in OPENAPI_DOCUMENTS {
                let doc: Value = serde_json::from_str(text).expect("recorded OpenAPI is JSON");
                let Some(schemas) = doc["components"]["schemas"].as_object() else {
                    continue;
                };
                for (name, schema) in schemas {
                    if let Some(gvks) = schema["x-kubernetes-group-version-kind"].as_array() {
                        for gvk in gvks {
                            let key = (
                                gvk["group"].as_str().unwrap_or("").to_string(),
                                gvk["version"].as_str().unwrap_or("").to_string(),
                                gvk["kind"].as_str().unwrap_or("").to_string(),
                            );
                            by_gvk
                                .entry(key)
                                .or_insert_with(|| serde_json::json!({"$ref": format!("#/components/schemas/{name}")}));
                        }
                    }
                    definitions.insert(name.clone(), schema.clone());
                }
            }
            let crd: Value = serde_json::from_str(CRD_SCHEMA).expect("CRD schema is JSON");
            by_gvk.insert(
                (
                    "apiextensions.k8s.io".into(),
                    "v1".into(),
                    "CustomResourceDefinition".into(),
                ),
                crd,
            );
            BuiltinSchemas { definitions, by_gvk }
        })
    }

    pub fn root(&'static self, group: &str, version: &str, kind: &str) -> Option<Schema<'static>> {
        self.by_gvk
            .get(&(group.to_string(), version.to_string(), kind.to_string()))
            .map(|node| Schema::new(node, &self.definitions))
    }

    pub fn definitions(&'static self) -> &'static Map<String, Value> {
        &self.definitions
    }
}

/// How a list merges and how its items are addressed in managed fields.
#[derive(Debug, Clone, PartialEq)]
pub enum ListType {
    Atomic,
    Set,
    Map(Vec<String>),
}

/// A schema node plus the definitions its `$ref`s point into. `node == None` means
/// "no schema" (unknown or preserved fields): maps are granular, lists atomic.
#[derive(Clone, Copy)]
pub struct Schema<'a> {
    node: Option<&'a Value>,
    definitions: &'a Map<String, Value>,
}

fn empty_definitions() -> &'static Map<String, Value> {
    static EMPTY: OnceLock<Map<String, Value>> = OnceLock::new();
    EMPTY.get_or_init(Map::new)
}

impl<'a> Schema<'a> {
    pub fn new(node: &'a Value, definitions: &'a Map<String, Value>) -> Self {
        Schema {
            node: Some(node),
            definitions,
        }
        .resolved()
    }
    pub fn none() -> Schema<'static> {
        Schema {
            node: None,
            definitions: empty_definitions(),
        }
    }
    /// A CRD schema: self-contained, except `metadata` which uses the built-in ObjectMeta.
    pub fn crd(node: &'a Value) -> Schema<'a> {
        Schema::new(node, BuiltinSchemas::get().definitions())
    }
    pub fn node(&self) -> Option<&'a Value> {
        self.node
    }
    fn with(&self, node: Option<&'a Value>) -> Self {
        Schema {
            node,
            definitions: self.definitions,
        }
        .resolved()
    }
    /// Follows `$ref` and the `allOf: [{$ref}]` wrapper the Kubernetes OpenAPI v3 uses.
    fn resolved(self) -> Self {
        let mut current = self;
        for _ in 0..8 {
            let Some(node) = current.node else {
                return current;
            };
            let reference = node["$ref"]
                .as_str()
                .or_else(|| node["allOf"][0]["$ref"].as_str());
            match reference.and_then(|r| r.strip_prefix("#/components/schemas/")) {
                Some(name) => {
                    current = Schema {
                        node: current.definitions.get(name),
                        definitions: current.definitions,
                    }
                }
                None => return current,
            }
        }
        current
    }
    pub fn field(&self, name: &str) -> Schema<'a> {
        let Some(node) = self.node else { return *self };
        if name == "metadata"
            && node["properties"]["metadata"]["properties"].is_null()
            && let Some(meta) = self
                .definitions
                .get("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
        {
            return self.with(Some(meta));
        }
        if let Some(prop) = node["properties"].get(name) {
            return self.with(Some(prop));
        }
        if node["additionalProperties"].is_object() {
            return self.with(node.get("additionalProperties"));
        }
        Schema::none_with(self.definitions)
    }
    fn none_with(definitions: &'a Map<String, Value>) -> Self {
        Schema {
            node: None,
            definitions,
        }
    }
    pub fn items(&self) -> Schema<'a> {
        match self.node {
            Some(node) => self.with(node.get("items")),
            None => *self,
        }
    }
    pub fn has_property(&self, name: &str) -> bool {
        self.node
            .is_some_and(|n| n["properties"].get(name).is_some())
    }
    /// Whether unknown fields are kept here (no schema, preserve-unknown, or a free-form map).
    pub fn allows_unknown(&self) -> bool {
        match self.node {
            None => true,
            Some(n) => {
                n["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true)
                    || n.get("additionalProperties")
                        .is_some_and(|a| a != &Value::Bool(false))
                    || (n.get("properties").is_none() && n.get("type").is_none())
            }
        }
    }
    pub fn is_atomic_map(&self) -> bool {
        self.node
            .is_some_and(|n| n["x-kubernetes-map-type"] == "atomic")
    }
    pub fn list_type(&self) -> ListType {
        let Some(node) = self.node else {
            return ListType::Atomic;
        };
        match node["x-kubernetes-list-type"].as_str() {
            Some("map") => ListType::Map(
                node["x-kubernetes-list-map-keys"]
                    .as_array()
                    .map(|keys| {
                        keys.iter()
                            .filter_map(|k| k.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            Some("set") => ListType::Set,
            Some(_) => ListType::Atomic,
            None => {
                let merge = node["x-kubernetes-patch-strategy"]
                    .as_str()
                    .is_some_and(|s| s.split(',').any(|p| p == "merge"));
                match node["x-kubernetes-patch-merge-key"].as_str() {
                    Some(key) if merge => ListType::Map(vec![key.to_string()]),
                    None if merge => ListType::Set,
                    _ => ListType::Atomic,
                }
            }
        }
    }
    /// Strategic merge patch: how this list merges (`None` = replace).
    pub fn patch_merge_key(&self) -> Option<&'a str> {
        let node = self.node?;
        let merge = node["x-kubernetes-patch-strategy"]
            .as_str()
            .is_some_and(|s| s.split(',').any(|p| p == "merge"));
        if !merge {
            return None;
        }
        Some(node["x-kubernetes-patch-merge-key"].as_str().unwrap_or(""))
    }
}

/// Shared, owned CRD schema (one per served version).
pub type CrdSchema = Arc<Value>;
