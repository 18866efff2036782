//! `KnowledgeProject`: one tenant's knowledge base.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of one tenant's knowledge base.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kbeast.io",
    version = "v1alpha1",
    kind = "KnowledgeProject",
    plural = "knowledgeprojects",
    singular = "knowledgeproject",
    shortname = "kp",
    category = "kbeast",
    namespaced,
    status = "KnowledgeProjectStatus",
    derive = "PartialEq",
    cel,
    annotation("helm.sh/resource-policy", "keep"),
    doc = "A tenant's knowledge base: query pods, storage, API keys and network isolation, reconciled by kbeast-operator.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "string",
        description = "Ready and desired query pods",
        json_path = ".status.replicaSummary"
    ),
    printcolumn(
        name = "Mode",
        type_ = "string",
        description = "Default search mode",
        json_path = ".spec.search.defaultMode"
    ),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 40")
        .message("metadata.name must be a DNS label of at most 40 characters (child objects and pod names are derived from it)")
)]
#[x_kube(
    validation = Rule::new("!(has(self.replicas) && has(self.autoscaling) && self.autoscaling.enabled)")
        .message("spec.replicas must not be set while spec.autoscaling.enabled is true: the HorizontalPodAutoscaler owns the replica count"),
    validation = Rule::new("!has(self.storage.volume) || !has(self.storage.volume.accessMode) || self.storage.volume.accessMode != 'ReadWriteOnce' || ((!has(self.replicas) || self.replicas <= 1) && (!has(self.autoscaling) || !self.autoscaling.enabled || self.autoscaling.maxReplicas <= 1))")
        .message("a storage.volume with accessMode ReadWriteOnce supports at most 1 replica (spec.replicas and spec.autoscaling.maxReplicas); use ReadWriteMany or objectStore to scale out"),
    validation = Rule::new("!has(self.storage.ephemeral) || ((!has(self.replicas) || self.replicas <= 1) && (!has(self.autoscaling) || !self.autoscaling.enabled || self.autoscaling.maxReplicas <= 1))")
        .message("storage.ephemeral gives each pod its own empty data directory, so it supports at most 1 replica (spec.replicas and spec.autoscaling.maxReplicas); use storage.volume with accessMode ReadWriteMany, or storage.objectStore, to scale out")
)]
#[serde(rename_all = "camelCase")]
pub struct KnowledgeProjectSpec {
    /// Stop changing child objects. Status is still reported.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,

    /// Query image; defaults to the operator's `--query-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,

    /// Fixed number of query pods (default 1). Leave unset when autoscaling is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,

    /// HorizontalPodAutoscaler settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// Resources of the query container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,

    /// Extra annotations on query pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<BTreeMap<String, String>>,

    /// Where the knowledge base keeps its data. Exactly one kind; the kind cannot change.
    pub storage: StorageSpec,

    #[serde(default)]
    pub embedding: EmbeddingSpec,

    #[serde(default)]
    pub search: SearchSpec,

    /// API keys. When absent, the operator generates a Secret `<name>-api-keys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,

    /// Who may reach the query pods; rendered as a NetworkPolicy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessSpec>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaSpec>,

    #[serde(default)]
    pub rollout: RolloutSpec,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption: Option<DisruptionSpec>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    cel,
    validation = Rule::new("!self.enabled || !has(self.minReplicas) || self.minReplicas <= self.maxReplicas")
        .message("spec.autoscaling.minReplicas must be less than or equal to spec.autoscaling.maxReplicas")
)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    #[serde(default)]
    pub enabled: bool,
    /// Lower bound (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_replicas: Option<i32>,
    /// Upper bound.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Average CPU utilisation to aim for, in percent of requests (default 80 when no target is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    #[serde(rename = "targetCPUUtilizationPercentage")]
    pub target_cpu_utilization_percentage: Option<i32>,
    /// Average memory utilisation to aim for, in percent of requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_memory_utilization_percentage: Option<i32>,
}

/// Exactly one of `volume`, `objectStore` or `ephemeral`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    cel,
    validation = Rule::new("[has(self.volume), has(self.objectStore), has(self.ephemeral)].filter(x, x).size() == 1")
        .message("exactly one of spec.storage.volume, spec.storage.objectStore or spec.storage.ephemeral must be set"),
    validation = Rule::new("has(self.volume) == has(oldSelf.volume) && has(self.objectStore) == has(oldSelf.objectStore) && has(self.ephemeral) == has(oldSelf.ephemeral)")
        .message("the storage kind (volume, objectStore or ephemeral) is immutable; create a new project to move data")
)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// A PersistentVolumeClaim `<name>-data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeStorage>,
    /// An S3-compatible bucket prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_store: Option<ObjectStoreStorage>,
    /// An emptyDir: data dies with the pod. For demos only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<EphemeralStorage>,
    /// What happens to the data when the project is deleted (default Retain).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    cel,
    validation = Rule::new("quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0")
        .message("spec.storage.volume.size can only grow"),
    validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)")
        .message("spec.storage.volume.storageClassName is immutable"),
    validation = Rule::new("self.accessMode == oldSelf.accessMode")
        .message("spec.storage.volume.accessMode is immutable")
)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStorage {
    /// Requested size, e.g. `10Gi`.
    #[x_kube(validation = Rule::new("isQuantity(self)").message("spec.storage.volume.size must be a quantity such as 10Gi"))]
    pub size: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    #[serde(default)]
    pub access_mode: VolumeAccessMode,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VolumeAccessMode {
    /// One node. Limits the project to one replica; surge pods are co-scheduled on that node.
    #[default]
    ReadWriteOnce,
    /// Many nodes; needed to scale out on a volume.
    ReadWriteMany,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    cel,
    validation = Rule::new("self.uri == oldSelf.uri")
        .message("spec.storage.objectStore.uri is immutable: the data stays where it was written; create a new project to move it")
)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStoreStorage {
    /// Bucket and prefix, `s3://bucket/prefix`. Immutable. The operator's policy may limit the
    /// buckets and require the prefix `<namespace>/<name>/`.
    #[schemars(regex(pattern = r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$"))]
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// S3-compatible endpoint, e.g. `https://minio.storage.svc:9000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s/]+(/.*)?$"))]
    pub endpoint: Option<String>,
    /// Secret with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and optionally `AWS_SESSION_TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EphemeralStorage {
    /// Largest size of the data directory (the emptyDir's `sizeLimit`: the kubelet evicts a
    /// pod above it), a quantity such as `2Gi`. Default 1Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<String>,
}

impl EphemeralStorage {
    /// `sizeLimit` when the spec names none.
    pub const DEFAULT_SIZE_LIMIT: &'static str = "1Gi";

    pub fn size_limit(&self) -> &str {
        self.size_limit
            .as_deref()
            .unwrap_or(Self::DEFAULT_SIZE_LIMIT)
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Keep the PVC or bucket data when the project is deleted.
    #[default]
    Retain,
    /// Delete the PVC, or purge the bucket prefix with a Job.
    Delete,
}

/// A Secret in the project's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SecretReference {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// One key of a Secret in the project's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SecretKeyReference {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1))]
    pub key: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    cel,
    validation = Rule::new("self.provider != 'openai' || (has(self.endpoint) && has(self.model))")
        .message("spec.embedding.endpoint and spec.embedding.model are required when spec.embedding.provider is openai"),
    validation = Rule::new("self.provider != 'builtin' || self.dimension == 384")
        .message("spec.embedding.dimension must be 384 when spec.embedding.provider is builtin (all-MiniLM-L6-v2)")
)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddingSpec {
    #[serde(default)]
    pub provider: EmbeddingProvider,
    /// Model id of the openai provider. The builtin provider ignores it and reports
    /// `minilm-l6-v2`; the hash provider ignores it and reports `hash-v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Vector dimension (default 384; the builtin provider has exactly 384).
    #[serde(default = "default_dimension")]
    #[schemars(range(min = 8, max = 8192))]
    pub dimension: i32,
    /// Base URL of an OpenAI-compatible embeddings API, up to the version (e.g.
    /// `http://tei.ml.svc:8080/v1`); requests go to `<endpoint>/embeddings`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s/]+(/.*)?$"))]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyReference>,
}

impl Default for EmbeddingSpec {
    fn default() -> Self {
        Self {
            provider: EmbeddingProvider::default(),
            model: None,
            dimension: default_dimension(),
            endpoint: None,
            api_key_secret_ref: None,
        }
    }
}

fn default_dimension() -> i32 {
    384
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingProvider {
    /// all-MiniLM-L6-v2 (384 dimensions) run in the query pod; no network.
    #[default]
    Builtin,
    /// Feature hashing of words: no model, no semantics. For tests and tiny demos.
    Hash,
    /// An OpenAI-compatible embeddings endpoint (OpenAI, TEI, Ollama, vLLM).
    Openai,
}

impl EmbeddingProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Builtin => "builtin",
            Self::Hash => "hash",
            Self::Openai => "openai",
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    cel,
    validation = Rule::new("self.chunkOverlap * 2 < self.chunkSize")
        .message("spec.search.chunkOverlap must be less than half of spec.search.chunkSize")
)]
#[serde(rename_all = "camelCase")]
pub struct SearchSpec {
    #[serde(default)]
    pub default_mode: SearchMode,
    /// Chunk size in characters (default 800).
    #[serde(default = "default_chunk_size")]
    #[schemars(range(min = 64, max = 16384))]
    pub chunk_size: i32,
    /// Characters shared by consecutive chunks (default 100); less than half of `chunkSize`.
    #[serde(default = "default_chunk_overlap")]
    #[schemars(range(min = 0, max = 16384))]
    pub chunk_overlap: i32,
}

impl Default for SearchSpec {
    fn default() -> Self {
        Self {
            default_mode: SearchMode::default(),
            chunk_size: default_chunk_size(),
            chunk_overlap: default_chunk_overlap(),
        }
    }
}

fn default_chunk_size() -> i32 {
    800
}

fn default_chunk_overlap() -> i32 {
    100
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    Vector,
    Keyword,
    #[default]
    Hybrid,
}

impl SearchMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vector => "vector",
            Self::Keyword => "keyword",
            Self::Hybrid => "hybrid",
        }
    }
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Secret holding `api-keys.json` (a list of `{id, secret, scopes}`); the operator never writes it.
    pub api_keys_secret_ref: SecretReference,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AccessSpec {
    /// Namespaces whose pods may call the query API. The project's own namespace and the
    /// operator's are always allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub allowed_namespaces: Vec<String>,
    /// When set, only these pods of the project's namespace may call the query API
    /// (instead of every pod of the namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_pod_selector: Option<LabelSelector>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct QuotaSpec {
    /// Most documents the knowledge base accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_documents: Option<i64>,
    /// Most bytes of document text it accepts, as a quantity (e.g. `5Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<String>,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Extra pods during an update (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
    /// Pods that may be unavailable during an update (default 0: old pods serve until new ones are Ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// Seconds an update may take before it counts as failed (default 600).
    #[serde(default = "default_progress_deadline")]
    #[schemars(range(min = 10))]
    pub progress_deadline_seconds: i32,
    /// Return to the last good revision when an update fails (default true).
    #[serde(default = "default_true")]
    pub auto_rollback: bool,
    /// Query used to smoke-check new pods; a built-in probe query when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoke_query: Option<String>,
    /// Hold the Deployment at its current state.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        Self {
            max_surge: None,
            max_unavailable: None,
            progress_deadline_seconds: default_progress_deadline(),
            auto_rollback: true,
            smoke_query: None,
            paused: false,
        }
    }
}

fn default_progress_deadline() -> i32 {
    600
}

fn default_true() -> bool {
    true
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DisruptionSpec {
    /// Pods a voluntary disruption (a node drain) may take down at once (default 1; never 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

/// Observed state, written only by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KnowledgeProjectStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing, Degraded and Suspended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Query pods that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Query pods that are Ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Query pods on the newest revision.
    #[serde(default)]
    pub updated_replicas: i32,
    /// "ready/desired", for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_summary: Option<String>,
    /// In-cluster URL of the query API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Name of the Secret holding the API keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys_secret: Option<String>,
    /// Pod-template revision that serves traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    /// Pod-template revision being rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,
    /// Newest revision that was fully rolled out and healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good_revision: Option<String>,
    /// Revision whose rollout failed for the current generation; it is not retried until the
    /// spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_revision: Option<String>,
}

impl KnowledgeProjectSpec {
    /// Whether the HorizontalPodAutoscaler owns the replica count.
    pub fn autoscaling_enabled(&self) -> bool {
        self.autoscaling.as_ref().is_some_and(|a| a.enabled)
    }
}
