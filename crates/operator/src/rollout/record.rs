//! Reading and writing the durable rollout record ([`RolloutRecord`]) in its ConfigMap
//! `<project>-rollout`, owned by the project, so a rollback never depends on memory.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kbeast_api::KnowledgeProject;
pub use kbeast_api::rollout_record::{RECORD_KEY, RolloutRecord};

use crate::facts::{child_meta, names};

/// Reads the record from its ConfigMap. A missing or unreadable record starts empty: the
/// worst case is a rollout without a rollback target, never a wrong rollback.
pub fn record_from(config_map: Option<&ConfigMap>) -> Result<RolloutRecord, String> {
    let Some(text) = config_map
        .and_then(|c| c.data.as_ref())
        .and_then(|d| d.get(RECORD_KEY))
    else {
        return Ok(RolloutRecord::default());
    };
    serde_json::from_str(text).map_err(|e| format!("{RECORD_KEY}: {e}"))
}

/// The ConfigMap holding `record`.
pub fn desired_record_config_map(project: &KnowledgeProject, record: &RolloutRecord) -> ConfigMap {
    let text = serde_json::to_string_pretty(record).expect("the rollout record serialises");
    ConfigMap {
        metadata: child_meta(project, names::rollout_record(project)),
        data: Some(BTreeMap::from([(RECORD_KEY.to_string(), text)])),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::facts::test_support::sample;

    #[test]
    fn the_record_survives_a_round_trip_through_its_config_map() {
        let project = sample("minimal.yaml");
        let record = RolloutRecord {
            update_revision: Some("r2".into()),
            update_generation: Some(4),
            started_at: Some(Time(
                jiff::Timestamp::from_second(1_700_000_000).expect("valid"),
            )),
            last_good_revision: Some("r1".into()),
            last_good_template: Some(PodTemplateSpec::default()),
            last_good_spec: Some(serde_json::json!({"replicas": 2})),
            previous_good_revision: Some("r0".into()),
            previous_good_spec: Some(serde_json::json!({"replicas": 1})),
            failed_revision: None,
            failed_generation: None,
            failure_message: None,
        };
        let config_map = desired_record_config_map(&project, &record);
        assert_eq!(
            config_map.metadata.name.as_deref(),
            Some("docs-rollout"),
            "named after the project"
        );
        assert!(
            config_map.metadata.owner_references.is_some(),
            "owned, so it goes with the project"
        );
        assert_eq!(record_from(Some(&config_map)), Ok(record));
        assert_eq!(record_from(None), Ok(RolloutRecord::default()));
    }

    #[test]
    fn an_unreadable_record_is_reported_with_its_key() {
        let config_map = ConfigMap {
            data: Some(BTreeMap::from([(RECORD_KEY.to_string(), "{".to_string())])),
            ..ConfigMap::default()
        };
        let error = record_from(Some(&config_map)).expect_err("not JSON");
        assert!(error.starts_with("record.json:"), "{error}");
    }
}
