//! Computes the project's status from the outcome of a reconcile and the live Deployment. Pure.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kbeast_api::conditions::{self, reason};
use kbeast_api::labels::REVISION_ANNOTATION;
use kbeast_api::query_contract::HTTP_PORT;
use kbeast_api::{KnowledgeProject, KnowledgeProjectStatus};
use kube::ResourceExt;

use crate::build::names;
use crate::rollout::{Decision, Phase};
use crate::settings::OperatorSettings;

/// What the reconcile did or found, as far as status is concerned.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Children match the spec (applied now or earlier).
    Converged,
    /// `spec.suspend` is set; children were left alone.
    Suspended,
    /// The spec failed semantic validation; the message names the fields.
    InvalidSpec(String),
    /// A child's name is taken by an object this project does not own.
    Conflict(String),
    /// A referenced Secret, or a key in it, is missing.
    SecretMissing(String),
}

/// How far the Deployment has rolled out its newest template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutState {
    pub desired: i32,
    pub replicas: i32,
    pub ready: i32,
    pub updated: i32,
    pub available: i32,
    /// The Deployment controller has seen the newest spec.
    pub observed: bool,
    /// The pod-template revision recorded by the operator (`kbeast.io/revision`).
    pub revision: Option<String>,
}

impl RolloutState {
    pub fn of(deployment: &Deployment) -> Self {
        let status = deployment.status.clone().unwrap_or_default();
        let desired = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1);
        Self {
            desired,
            replicas: status.replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            available: status.available_replicas.unwrap_or(0),
            observed: status.observed_generation.unwrap_or(0)
                >= deployment.metadata.generation.unwrap_or(0),
            revision: deployment.annotations().get(REVISION_ANNOTATION).cloned(),
        }
    }

    /// Every pod runs the newest template, and all of them are available.
    pub fn complete(&self) -> bool {
        self.observed
            && self.updated == self.desired
            && self.replicas == self.desired
            && self.available >= self.desired
    }
}

/// The status the project should have.
///
/// `deployment` is the live Deployment after apply; `applied_revision` is the revision the
/// spec asks for (None when nothing could be built); `decision` is the health gate's verdict
/// (None when the gate did not run: blocked or suspended).
pub fn desired_status(
    project: &KnowledgeProject,
    settings: &OperatorSettings,
    outcome: &Outcome,
    deployment: Option<&Deployment>,
    applied_revision: Option<&str>,
    decision: Option<&Decision>,
    now: &Time,
) -> KnowledgeProjectStatus {
    let previous = project.status.clone().unwrap_or_default();
    let generation = project.metadata.generation;
    let rollout = deployment.map(RolloutState::of);
    let phase = decision.map(|d| &d.phase);
    // Ready needs the gate's verdict when it ran: the revision rolled out and passed its smoke
    // checks, with at least one pod serving.
    let up_to_date = match phase {
        Some(Phase::Complete) => rollout.as_ref().is_some_and(|r| {
            r.revision.as_deref() == applied_revision && (r.available > 0 || r.desired == 0)
        }),
        Some(_) => false,
        None => rollout.as_ref().is_some_and(|r| {
            r.complete() && applied_revision.is_some() && r.revision.as_deref() == applied_revision
        }),
    };

    let mut status = KnowledgeProjectStatus {
        observed_generation: generation,
        conditions: previous.conditions.clone(),
        replicas: rollout.as_ref().map_or(0, |r| r.replicas),
        ready_replicas: rollout.as_ref().map_or(0, |r| r.ready),
        updated_replicas: rollout.as_ref().map_or(0, |r| r.updated),
        replica_summary: rollout
            .as_ref()
            .map(|r| format!("{}/{}", r.ready, r.desired)),
        endpoint: Some(format!(
            "http://{}.{}.svc.{}:{}",
            names::workload(project),
            project.namespace().unwrap_or_default(),
            settings.cluster_domain,
            HTTP_PORT
        )),
        api_keys_secret: Some(names::api_keys_secret(project)),
        current_revision: previous.current_revision.clone(),
        update_revision: applied_revision
            .map(str::to_string)
            .or(previous.update_revision.clone()),
        last_good_revision: decision.map_or(previous.last_good_revision.clone(), |d| {
            d.record.last_good_revision.clone()
        }),
        failed_revision: match phase {
            Some(Phase::Failed { .. }) => decision.and_then(|d| d.record.failed_revision.clone()),
            Some(_) => None,
            None => previous.failed_revision.clone(),
        },
    };
    // The revision serving traffic: the live template once no older pods remain.
    if let Some(live) = rollout.as_ref().filter(|r| r.complete()) {
        status.current_revision = live.revision.clone();
    }

    let mut set = |type_: &str, is_true: bool, reason: &str, message: String| {
        set_condition(
            &mut status.conditions,
            type_,
            is_true,
            reason,
            message,
            generation,
            now,
        );
    };
    let suspended = *outcome == Outcome::Suspended;
    set(
        conditions::SUSPENDED,
        suspended,
        if suspended {
            reason::SUSPENDED
        } else {
            reason::NOT_SUSPENDED
        },
        if suspended {
            "spec.suspend is true: child objects are not changed".to_string()
        } else {
            "reconciling normally".to_string()
        },
    );

    let blocked = |reason: &'static str, message: &str| (reason, message.to_string());
    let blocker = match outcome {
        Outcome::InvalidSpec(message) => Some(blocked(reason::INVALID_SPEC, message)),
        Outcome::Conflict(message) => Some(blocked(reason::CONFLICT, message)),
        Outcome::SecretMissing(message) => Some(blocked(reason::SECRET_NOT_FOUND, message)),
        Outcome::Converged | Outcome::Suspended => None,
    };
    if let Some((why, message)) = blocker {
        set(conditions::READY, false, why, message.clone());
        set(conditions::PROGRESSING, false, why, message.clone());
        set(conditions::DEGRADED, true, why, message);
        return status;
    }

    let Some(rollout) = rollout else {
        let message = "waiting for the query Deployment to be created".to_string();
        set(
            conditions::READY,
            false,
            reason::PODS_NOT_READY,
            message.clone(),
        );
        set(
            conditions::PROGRESSING,
            !suspended,
            if suspended {
                reason::SUSPENDED
            } else {
                reason::ROLLING_OUT
            },
            message,
        );
        set(
            conditions::DEGRADED,
            false,
            reason::AS_EXPECTED,
            String::new(),
        );
        return status;
    };

    let counts = format!(
        "{} of {} pods updated, {} ready, {} available",
        rollout.updated, rollout.desired, rollout.ready, rollout.available
    );
    if up_to_date {
        set(
            conditions::READY,
            true,
            reason::AVAILABLE,
            format!(
                "revision {} is fully rolled out: {counts}",
                applied_revision.unwrap_or("")
            ),
        );
        set(
            conditions::PROGRESSING,
            false,
            reason::ROLLOUT_COMPLETE,
            counts,
        );
        set(
            conditions::DEGRADED,
            false,
            reason::AS_EXPECTED,
            String::new(),
        );
    } else if let Some(Phase::Failed {
        message,
        rolled_back_to,
    }) = phase
    {
        // `counts` describe the Deployment as it is now: the good revision after a rollback.
        let action = match rolled_back_to {
            Some(good) => format!("rolled back to revision {good}, which serves ({counts})"),
            None => format!("halted ({counts})"),
        };
        let message = format!("{message}; {action}. Fix the spec to roll forward.");
        set(
            conditions::READY,
            false,
            reason::ROLLOUT_FAILED,
            message.clone(),
        );
        set(
            conditions::PROGRESSING,
            false,
            reason::ROLLOUT_FAILED,
            message.clone(),
        );
        set(conditions::DEGRADED, true, reason::ROLLOUT_FAILED, message);
    } else if suspended {
        let message = format!("suspended before the spec was fully rolled out: {counts}");
        set(conditions::READY, false, reason::SUSPENDED, message.clone());
        set(conditions::PROGRESSING, false, reason::SUSPENDED, message);
        set(
            conditions::DEGRADED,
            false,
            reason::AS_EXPECTED,
            String::new(),
        );
    } else if project.spec.rollout.paused {
        let message = format!("spec.rollout.paused is true: {counts}");
        set(conditions::READY, false, reason::PAUSED, message.clone());
        set(conditions::PROGRESSING, false, reason::PAUSED, message);
        set(
            conditions::DEGRADED,
            false,
            reason::AS_EXPECTED,
            String::new(),
        );
    } else if matches!(phase, Some(Phase::Complete)) {
        let message = format!("no query pod is available: {counts}");
        set(
            conditions::READY,
            false,
            reason::PODS_NOT_READY,
            message.clone(),
        );
        set(
            conditions::PROGRESSING,
            false,
            reason::ROLLOUT_COMPLETE,
            message.clone(),
        );
        set(conditions::DEGRADED, true, reason::PODS_NOT_READY, message);
    } else {
        let detail = match phase {
            Some(Phase::Progressing(detail)) => detail.clone(),
            _ => counts,
        };
        set(
            conditions::READY,
            false,
            reason::ROLLING_OUT,
            format!(
                "rolling out revision {}: {detail}",
                applied_revision.unwrap_or("")
            ),
        );
        set(conditions::PROGRESSING, true, reason::ROLLING_OUT, detail);
        set(
            conditions::DEGRADED,
            false,
            reason::AS_EXPECTED,
            String::new(),
        );
    }
    status
}

/// Sets one condition, keeping `lastTransitionTime` unless its status flips.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    is_true: bool,
    reason: &str,
    message: String,
    observed_generation: Option<i64>,
    now: &Time,
) {
    let status = if is_true { "True" } else { "False" }.to_string();
    let last_transition_time = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    let condition = Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        observed_generation,
        last_transition_time,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
}

/// The condition of a type, if present.
pub fn condition<'a>(status: &'a KnowledgeProjectStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use serde_json::json;

    fn project(generation: i64) -> KnowledgeProject {
        serde_json::from_value(json!({
            "apiVersion": "kbeast.io/v1alpha1",
            "kind": "KnowledgeProject",
            "metadata": {"name": "docs", "namespace": "tenants", "generation": generation},
            "spec": {"storage": {"ephemeral": {}}},
        }))
        .expect("parses")
    }

    fn deployment(replicas: i32, updated: i32, available: i32, revision: &str) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(3),
                annotations: Some([(REVISION_ANNOTATION.to_string(), revision.to_string())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(2),
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(3),
                replicas: Some(replicas),
                updated_replicas: Some(updated),
                ready_replicas: Some(available),
                available_replicas: Some(available),
                ..DeploymentStatus::default()
            }),
        }
    }

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(1_700_000_000 + seconds).expect("valid time"))
    }

    fn get<'a>(status: &'a KnowledgeProjectStatus, type_: &str) -> &'a Condition {
        condition(status, type_).expect("condition present")
    }

    #[test]
    fn ready_only_once_the_applied_revision_is_fully_rolled_out() {
        let settings = OperatorSettings::default();
        let cases = [
            (
                "old pods still running",
                deployment(3, 1, 2, "r2"),
                "r2",
                false,
                reason::ROLLING_OUT,
            ),
            (
                "complete",
                deployment(2, 2, 2, "r2"),
                "r2",
                true,
                reason::AVAILABLE,
            ),
            (
                "live template is an older revision",
                deployment(2, 2, 2, "r1"),
                "r2",
                false,
                reason::ROLLING_OUT,
            ),
        ];
        for (case, live, applied, ready, why) in cases {
            let status = desired_status(
                &project(7),
                &settings,
                &Outcome::Converged,
                Some(&live),
                Some(applied),
                None,
                &at(0),
            );
            let condition = get(&status, conditions::READY);
            assert_eq!(condition.status == "True", ready, "{case}");
            assert_eq!(condition.reason, why, "{case}");
            assert_eq!(
                get(&status, conditions::PROGRESSING).status == "True",
                !ready,
                "{case}"
            );
            for c in &status.conditions {
                assert_eq!(
                    c.observed_generation,
                    Some(7),
                    "{case}: {} carries observedGeneration",
                    c.type_
                );
            }
            assert_eq!(status.observed_generation, Some(7));
        }
    }

    #[test]
    fn revisions_advance_when_the_rollout_completes() {
        let settings = OperatorSettings::default();
        let rolling = desired_status(
            &project(1),
            &settings,
            &Outcome::Converged,
            Some(&deployment(3, 1, 2, "r2")),
            Some("r2"),
            None,
            &at(0),
        );
        assert_eq!(rolling.update_revision.as_deref(), Some("r2"));
        assert_eq!(rolling.current_revision, None);
        let mut p = project(1);
        p.status = Some(rolling);
        let done = desired_status(
            &p,
            &settings,
            &Outcome::Converged,
            Some(&deployment(2, 2, 2, "r2")),
            Some("r2"),
            Some(&decision(Phase::Complete, "r2", None)),
            &at(5),
        );
        assert_eq!(done.current_revision.as_deref(), Some("r2"));
        assert_eq!(done.last_good_revision.as_deref(), Some("r2"));
        assert_eq!(done.replica_summary.as_deref(), Some("2/2"));
        assert_eq!(
            done.endpoint.as_deref(),
            Some("http://docs.tenants.svc.cluster.local:8080")
        );
    }

    #[test]
    fn transition_time_changes_only_when_the_status_flips() {
        let settings = OperatorSettings::default();
        let live = deployment(3, 1, 2, "r2");
        let first = desired_status(
            &project(1),
            &settings,
            &Outcome::Converged,
            Some(&live),
            Some("r2"),
            None,
            &at(0),
        );
        let mut p = project(1);
        p.status = Some(first.clone());
        let same = desired_status(
            &p,
            &settings,
            &Outcome::Converged,
            Some(&live),
            Some("r2"),
            None,
            &at(60),
        );
        assert_eq!(
            same, first,
            "an unchanged situation yields an identical status, so no write"
        );
        let done = desired_status(
            &p,
            &settings,
            &Outcome::Converged,
            Some(&deployment(2, 2, 2, "r2")),
            Some("r2"),
            None,
            &at(120),
        );
        assert_eq!(get(&done, conditions::READY).last_transition_time, at(120));
        assert_eq!(
            get(&done, conditions::DEGRADED).last_transition_time,
            at(0),
            "Degraded stayed False"
        );
    }

    #[test]
    fn blocked_reconciles_report_their_reason_everywhere() {
        let settings = OperatorSettings::default();
        for (outcome, why) in [
            (
                Outcome::InvalidSpec("spec.x: bad".into()),
                reason::INVALID_SPEC,
            ),
            (
                Outcome::Conflict("Service \"docs\"".into()),
                reason::CONFLICT,
            ),
            (
                Outcome::SecretMissing("Secret \"k\"".into()),
                reason::SECRET_NOT_FOUND,
            ),
        ] {
            let status = desired_status(
                &project(2),
                &settings,
                &outcome,
                Some(&deployment(2, 2, 2, "r1")),
                None,
                None,
                &at(0),
            );
            assert_eq!(get(&status, conditions::READY).status, "False");
            assert_eq!(get(&status, conditions::READY).reason, why);
            assert_eq!(get(&status, conditions::DEGRADED).status, "True");
            assert_eq!(get(&status, conditions::DEGRADED).reason, why);
        }
    }

    fn decision(phase: Phase, last_good: &str, failed: Option<&str>) -> Decision {
        Decision {
            template: crate::rollout::TemplateChoice::Desired,
            record: crate::rollout::RolloutRecord {
                last_good_revision: Some(last_good.into()),
                failed_revision: failed.map(str::to_string),
                ..Default::default()
            },
            phase,
            finished: None,
        }
    }

    #[test]
    fn the_gates_verdict_decides_ready() {
        let settings = OperatorSettings::default();
        let failed = Phase::Failed {
            message: "revision r2: pod docs-x is crash-looping".into(),
            rolled_back_to: Some("r1".into()),
        };
        let cases = [
            (
                "complete and serving",
                decision(Phase::Complete, "r2", None),
                deployment(2, 2, 2, "r2"),
                ("True", reason::AVAILABLE),
                ("False", reason::AS_EXPECTED),
            ),
            (
                "complete, but every pod is gone",
                decision(Phase::Complete, "r2", None),
                deployment(2, 2, 0, "r2"),
                ("False", reason::PODS_NOT_READY),
                ("True", reason::PODS_NOT_READY),
            ),
            (
                "progressing, though the Deployment looks complete",
                decision(Phase::Progressing("waiting".into()), "r1", None),
                deployment(2, 2, 2, "r2"),
                ("False", reason::ROLLING_OUT),
                ("False", reason::AS_EXPECTED),
            ),
            (
                "failed and rolled back",
                decision(failed, "r1", Some("r2")),
                deployment(2, 2, 2, "r1"),
                ("False", reason::ROLLOUT_FAILED),
                ("True", reason::ROLLOUT_FAILED),
            ),
        ];
        for (case, decision, live, ready, degraded) in cases {
            let status = desired_status(
                &project(3),
                &settings,
                &Outcome::Converged,
                Some(&live),
                Some("r2"),
                Some(&decision),
                &at(0),
            );
            let r = get(&status, conditions::READY);
            assert_eq!(
                (r.status.as_str(), r.reason.as_str()),
                ready,
                "{case}: Ready"
            );
            let d = get(&status, conditions::DEGRADED);
            assert_eq!(
                (d.status.as_str(), d.reason.as_str()),
                degraded,
                "{case}: Degraded"
            );
            assert_eq!(
                status.last_good_revision, decision.record.last_good_revision,
                "{case}"
            );
            assert_eq!(status.update_revision.as_deref(), Some("r2"), "{case}");
        }
        let rolled_back = desired_status(
            &project(3),
            &settings,
            &Outcome::Converged,
            Some(&deployment(2, 2, 2, "r1")),
            Some("r2"),
            Some(&decision(
                Phase::Failed {
                    message: "pod docs-x is crash-looping".into(),
                    rolled_back_to: Some("r1".into()),
                },
                "r1",
                Some("r2"),
            )),
            &at(0),
        );
        assert_eq!(
            rolled_back.current_revision.as_deref(),
            Some("r1"),
            "the good revision serves"
        );
        assert_eq!(rolled_back.failed_revision.as_deref(), Some("r2"));
        let message = &get(&rolled_back, conditions::DEGRADED).message;
        assert!(
            message.contains("docs-x")
                && message.contains("rolled back to revision r1, which serves (2 of 2 pods")
                && message.ends_with("Fix the spec to roll forward."),
            "{message}"
        );
        assert_eq!(
            get(&rolled_back, conditions::PROGRESSING).status,
            "False",
            "a failed rollout is not progressing"
        );
    }
}
