//! `kubectl kbeast rollout`: pause, resume, retry and undo through the project's spec, so the
//! operator stays the only writer of the Deployment.

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::ConfigMap;
use kbeast_api::KnowledgeProject;
use kbeast_api::rollout_record::{RECORD_KEY, RolloutRecord, config_map_name};
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::cli::RolloutAction;
use crate::target::Target;

/// Pod annotation a retry bumps: a new pod template, so a new revision of the same spec.
pub const RETRY_ANNOTATION: &str = "kbeast.io/retried-at";

pub async fn run(target: &Target, name: &str, action: RolloutAction) -> Result<()> {
    let project = target.project(name).await?;
    let api = target.api::<KnowledgeProject>();
    let params = PatchParams::default();
    match action {
        RolloutAction::Pause | RolloutAction::Resume => {
            let paused = action == RolloutAction::Pause;
            if project.spec.rollout.paused == paused {
                println!(
                    "{name}: already {}",
                    if paused { "paused" } else { "resumed" }
                );
                return Ok(());
            }
            let patch = json!({"spec": {"rollout": {"paused": paused}}});
            api.patch(name, &params, &Patch::Merge(&patch)).await?;
            if paused {
                println!(
                    "{name}: paused; the rollout holds where it is (resume: kubectl kbeast rollout {name} resume)"
                );
            } else {
                println!("{name}: resumed");
            }
        }
        RolloutAction::Retry => {
            let failed = project
                .status
                .as_ref()
                .and_then(|s| s.failed_revision.clone());
            let Some(failed) = failed else {
                bail!(
                    "nothing to retry: {name} has no failed revision (status.failedRevision is empty)"
                );
            };
            let now = jiff::Timestamp::now().to_string();
            let patch = json!({"spec": {"podAnnotations": {RETRY_ANNOTATION: now}}});
            api.patch(name, &params, &Patch::Merge(&patch)).await?;
            println!(
                "{name}: retrying the spec of failed revision {failed} as a new revision ({RETRY_ANNOTATION}={now})"
            );
        }
        RolloutAction::Undo => {
            let record = rollout_record(target, name).await?;
            let current = serde_json::to_value(&project.spec)?;
            let paused = project.spec.rollout.paused;
            let (good, revision) = undo_target(&record, &current, paused).ok_or_else(|| {
                anyhow!(
                    "nothing to undo: {name} has no earlier revision that rolled out completely"
                )
            })?;
            // Replaced whole (PUT with the resourceVersion read), so a concurrent change fails
            // with a conflict instead of being overwritten.
            let mut restored = project.clone();
            restored.spec = serde_json::from_value(good)
                .context("the last good spec in the rollout record does not fit the current API")?;
            api.replace(name, &PostParams::default(), &restored)
                .await
                .context("replacing the spec (if the project changed meanwhile, run undo again)")?;
            println!(
                "{name}: spec put back to the one of revision {revision}; it rolls out with health gating"
            );
        }
    }
    Ok(())
}

/// The spec `undo` restores, and its revision: the last good spec while the current one has
/// not rolled out (in progress or failed), else the good one before it. Undo keeps whether
/// the rollout is paused.
pub fn undo_target(
    record: &RolloutRecord,
    current: &Value,
    paused: bool,
) -> Option<(Value, String)> {
    let held = |spec: &Value| {
        let mut spec = spec.clone();
        spec["rollout"]["paused"] = Value::Bool(paused);
        spec
    };
    let last = record.last_good_spec.as_ref().map(held)?;
    if last != held(current) {
        return Some((last, record.last_good_revision.clone().unwrap_or_default()));
    }
    let previous = record.previous_good_spec.as_ref().map(held)?;
    Some((
        previous,
        record.previous_good_revision.clone().unwrap_or_default(),
    ))
}

async fn rollout_record(target: &Target, name: &str) -> Result<RolloutRecord> {
    let config_map = target
        .api::<ConfigMap>()
        .get_opt(&config_map_name(name))
        .await?;
    let Some(text) = config_map.and_then(|c| c.data.and_then(|mut d| d.remove(RECORD_KEY))) else {
        return Ok(RolloutRecord::default());
    };
    serde_json::from_str(&text).with_context(|| {
        format!(
            "the rollout record in ConfigMap {} is unreadable",
            config_map_name(name)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(chunk: i64, paused: bool) -> Value {
        json!({"search": {"chunkSize": chunk}, "rollout": {"paused": paused}})
    }

    #[test]
    fn undo_goes_to_the_last_good_spec_then_to_the_one_before() {
        let record = RolloutRecord {
            last_good_revision: Some("r2".into()),
            last_good_spec: Some(spec(700, false)),
            previous_good_revision: Some("r1".into()),
            previous_good_spec: Some(spec(500, false)),
            ..RolloutRecord::default()
        };
        // A newer spec is rolling out or failed: back to the last good one.
        assert_eq!(
            undo_target(&record, &spec(900, false), false),
            Some((spec(700, false), "r2".into()))
        );
        // The current spec rolled out: back to the one before, keeping the pause (also when
        // the current spec omits `paused`).
        assert_eq!(
            undo_target(&record, &spec(700, true), true),
            Some((spec(500, true), "r1".into()))
        );
        let omitted = json!({"search": {"chunkSize": 700}, "rollout": {}});
        assert_eq!(
            undo_target(&record, &omitted, false),
            Some((spec(500, false), "r1".into()))
        );
        let first = RolloutRecord {
            previous_good_spec: None,
            ..record
        };
        assert_eq!(undo_target(&first, &spec(700, false), false), None);
        assert_eq!(
            undo_target(&RolloutRecord::default(), &spec(1, false), false),
            None
        );
    }
}
