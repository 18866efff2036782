//! The durable rollout record the operator keeps in the ConfigMap `<project>-rollout` (key
//! `record.json`): what gating must remember across operator restarts, and what `kubectl kbeast
//! rollout undo` restores.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

/// Key of the record in the ConfigMap's data.
pub const RECORD_KEY: &str = "record.json";

/// Name of the ConfigMap holding the record of project `project`.
pub fn config_map_name(project: &str) -> String {
    format!("{project}-rollout")
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRecord {
    /// Revision of the current (or last) attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_generation: Option<i64>,
    /// When the running attempt started; `None` when none runs (or while paused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good_revision: Option<String>,
    /// The pod template of `lastGoodRevision`, exactly as applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good_template: Option<PodTemplateSpec>,
    /// The project spec that last rolled out completely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good_spec: Option<serde_json::Value>,
    /// The good revision before `lastGoodRevision`, and its spec: what `rollout undo` restores
    /// once the current spec has rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_good_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_good_spec: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
}
