//! Computes the project's status from what a reconcile did and the live Deployment. Pure.
//!
//! The Ready/Progressing/Degraded triple is a table over [`Health`]: [`assess`] classifies the
//! situation, [`health_conditions`] says what each class reports.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kbeast_api::conditions::{self, reason};
use kbeast_api::query_contract::HTTP_PORT;
use kbeast_api::{KnowledgeProject, KnowledgeProjectStatus};
use kube::ResourceExt;

use crate::apply::Change;
use crate::facts::names;
use crate::rollout::{Decision, Phase, RolloutState};
use crate::settings::OperatorSettings;
use crate::validate::Blocked;

/// What the reconcile did or found, as far as status is concerned.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Children match the spec (applied now or earlier).
    Converged,
    /// `spec.suspend` is set; children were left alone.
    Suspended,
    /// Nothing was applied; the reason names the field or object.
    Blocked(Blocked),
}

/// The result of one reconcile, which the status is computed from.
#[derive(Clone, Debug)]
pub struct Reconciled {
    pub outcome: Outcome,
    /// The live Deployment after apply (as observed when nothing was applied).
    pub deployment: Option<Deployment>,
    /// The pod-template revision the spec asks for; None when nothing could be built.
    pub revision: Option<String>,
    /// Every child written or deleted, in order.
    pub changes: Vec<Change>,
    /// The rollout gate's verdict; None when the gate did not run (blocked or suspended).
    pub decision: Option<Decision>,
}

impl Reconciled {
    /// A reconcile that stopped before building anything.
    pub fn blocked(blocked: Blocked, deployment: Option<Deployment>) -> Self {
        Self {
            outcome: Outcome::Blocked(blocked),
            deployment,
            revision: None,
            changes: Vec::new(),
            decision: None,
        }
    }

    /// A rollout is under way: smoke checks and its deadline need re-checking soon.
    pub fn rolling(&self) -> bool {
        matches!(
            self.decision.as_ref().map(|d| &d.phase),
            Some(Phase::Progressing(_))
        )
    }
}

/// How the project is doing, one variant per row of the condition table.
#[derive(Clone, Debug, PartialEq)]
pub enum Health {
    /// Nothing is applied until the cause is fixed.
    Blocked(Blocked),
    /// The Deployment does not exist yet.
    AwaitingDeployment { suspended: bool },
    /// The desired revision is fully rolled out (and, when gated, passed its smoke checks).
    Available { revision: String, counts: String },
    /// The desired revision failed its gate; the message says what was done about it.
    /// `available` pods (the good revision's, after a rollback) may still serve.
    RolloutFailed { message: String, available: i32 },
    /// Suspended before the rollout finished.
    Suspended { counts: String, available: i32 },
    /// `spec.rollout.paused` holds the rollout.
    Paused { counts: String, available: i32 },
    /// The rollout is complete but no pod serves.
    NoPodAvailable { counts: String },
    /// A new revision is rolling out while `available` pods (of either revision) serve.
    RollingOut {
        revision: String,
        detail: String,
        available: i32,
    },
}

/// One condition's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionValue {
    pub is_true: bool,
    pub reason: &'static str,
    pub message: String,
}

/// The Ready, Progressing and Degraded conditions of one [`Health`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthConditions {
    pub ready: ConditionValue,
    pub progressing: ConditionValue,
    pub degraded: ConditionValue,
}

fn yes(reason: &'static str, message: impl Into<String>) -> ConditionValue {
    ConditionValue {
        is_true: true,
        reason,
        message: message.into(),
    }
}

fn no(reason: &'static str, message: impl Into<String>) -> ConditionValue {
    ConditionValue {
        is_true: false,
        reason,
        message: message.into(),
    }
}

fn not_degraded() -> ConditionValue {
    no(reason::AS_EXPECTED, "")
}

/// Ready means available to serve: true while `available` pods serve, whatever the rollout is
/// doing (Progressing and Degraded say that); otherwise false with `reason`.
fn ready_if_serving(available: i32, reason: &'static str, message: &str) -> ConditionValue {
    if available > 0 {
        yes(
            reason::AVAILABLE,
            format!("{available} pod(s) available to serve; {message}"),
        )
    } else {
        no(reason, message)
    }
}

/// The condition table: what each kind of health reports as Ready, Progressing and Degraded.
pub fn health_conditions(health: &Health) -> HealthConditions {
    let (ready, progressing, degraded) = match health {
        Health::Blocked(blocked) => {
            let (why, message) = (blocked.reason(), blocked.message());
            (no(why, message), no(why, message), yes(why, message))
        }
        Health::AwaitingDeployment { suspended } => {
            let message = "waiting for the query Deployment to be created";
            let progressing = if *suspended {
                no(reason::SUSPENDED, message)
            } else {
                yes(reason::ROLLING_OUT, message)
            };
            (
                no(reason::PODS_NOT_READY, message),
                progressing,
                not_degraded(),
            )
        }
        Health::Available { revision, counts } => (
            yes(
                reason::AVAILABLE,
                format!("revision {revision} is fully rolled out: {counts}"),
            ),
            no(reason::ROLLOUT_COMPLETE, counts),
            not_degraded(),
        ),
        Health::RolloutFailed { message, available } => (
            ready_if_serving(*available, reason::ROLLOUT_FAILED, message),
            no(reason::ROLLOUT_FAILED, message),
            yes(reason::ROLLOUT_FAILED, message),
        ),
        Health::Suspended { counts, available } => {
            let message = format!("suspended before the spec was fully rolled out: {counts}");
            (
                ready_if_serving(*available, reason::SUSPENDED, &message),
                no(reason::SUSPENDED, message),
                not_degraded(),
            )
        }
        Health::Paused { counts, available } => {
            let message = format!("spec.rollout.paused is true: {counts}");
            (
                ready_if_serving(*available, reason::PAUSED, &message),
                no(reason::PAUSED, message),
                not_degraded(),
            )
        }
        Health::NoPodAvailable { counts } => {
            let message = format!("no query pod is available: {counts}");
            (
                no(reason::PODS_NOT_READY, &message),
                no(reason::ROLLOUT_COMPLETE, &message),
                yes(reason::PODS_NOT_READY, message),
            )
        }
        Health::RollingOut {
            revision,
            detail,
            available,
        } => (
            ready_if_serving(
                *available,
                reason::ROLLING_OUT,
                &format!("rolling out revision {revision}: {detail}"),
            ),
            yes(reason::ROLLING_OUT, detail),
            not_degraded(),
        ),
    };
    HealthConditions {
        ready,
        progressing,
        degraded,
    }
}

/// Classifies the situation after a reconcile. `rollout` is the live Deployment's progress.
pub fn assess(
    project: &KnowledgeProject,
    reconciled: &Reconciled,
    rollout: Option<&RolloutState>,
) -> Health {
    let suspended = reconciled.outcome == Outcome::Suspended;
    let phase = reconciled.decision.as_ref().map(|d| &d.phase);
    let applied_revision = reconciled.revision.as_deref();
    if let Outcome::Blocked(blocked) = &reconciled.outcome {
        return Health::Blocked(blocked.clone());
    }
    let Some(rollout) = rollout else {
        return Health::AwaitingDeployment { suspended };
    };
    // Ready needs the gate's verdict when it ran: the revision rolled out and passed its smoke
    // checks, with at least one pod serving.
    let up_to_date = match phase {
        Some(Phase::Complete) => {
            rollout.revision.as_deref() == applied_revision
                && (rollout.available > 0 || rollout.desired == 0)
        }
        Some(_) => false,
        None => {
            rollout.complete()
                && applied_revision.is_some()
                && rollout.revision.as_deref() == applied_revision
        }
    };
    let counts = format!(
        "{} of {} pods updated, {} ready, {} available",
        rollout.updated, rollout.desired, rollout.ready, rollout.available
    );
    let revision = applied_revision.unwrap_or("").to_string();
    if up_to_date {
        Health::Available { revision, counts }
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
        Health::RolloutFailed {
            message: format!("{message}; {action}. Fix the spec to roll forward."),
            available: rollout.available,
        }
    } else if suspended {
        Health::Suspended {
            counts,
            available: rollout.available,
        }
    } else if project.spec.rollout.paused {
        Health::Paused {
            counts,
            available: rollout.available,
        }
    } else if matches!(phase, Some(Phase::Complete)) {
        Health::NoPodAvailable { counts }
    } else {
        let detail = match phase {
            Some(Phase::Progressing(detail)) => detail.clone(),
            _ => counts,
        };
        Health::RollingOut {
            revision,
            detail,
            available: rollout.available,
        }
    }
}

/// The status the project should have after `reconciled`.
pub fn desired_status(
    project: &KnowledgeProject,
    settings: &OperatorSettings,
    reconciled: &Reconciled,
    now: &Time,
) -> KnowledgeProjectStatus {
    let previous = project.status.clone().unwrap_or_default();
    let generation = project.metadata.generation;
    let rollout = reconciled.deployment.as_ref().map(RolloutState::of);
    let decision = reconciled.decision.as_ref();
    let phase = decision.map(|d| &d.phase);

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
        update_revision: reconciled
            .revision
            .clone()
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

    let suspended = reconciled.outcome == Outcome::Suspended;
    let health = health_conditions(&assess(project, reconciled, rollout.as_ref()));
    let rows = [
        (
            conditions::SUSPENDED,
            if suspended {
                yes(
                    reason::SUSPENDED,
                    "spec.suspend is true: child objects are not changed",
                )
            } else {
                no(reason::NOT_SUSPENDED, "reconciling normally")
            },
        ),
        (conditions::READY, health.ready),
        (conditions::PROGRESSING, health.progressing),
        (conditions::DEGRADED, health.degraded),
    ];
    for (type_, value) in rows {
        set_condition(
            &mut status.conditions,
            type_,
            value.is_true,
            value.reason,
            value.message,
            generation,
            now,
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
    use kbeast_api::labels::REVISION_ANNOTATION;
    use serde_json::json;

    /// The status after a reconcile with these results.
    fn status_after(
        project: &KnowledgeProject,
        settings: &OperatorSettings,
        outcome: &Outcome,
        deployment: Option<&Deployment>,
        revision: Option<&str>,
        decision: Option<&Decision>,
        now: &Time,
    ) -> KnowledgeProjectStatus {
        let reconciled = Reconciled {
            outcome: outcome.clone(),
            deployment: deployment.cloned(),
            revision: revision.map(str::to_string),
            changes: Vec::new(),
            decision: decision.cloned(),
        };
        desired_status(project, settings, &reconciled, now)
    }

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
    fn ready_while_pods_serve_and_progressing_until_the_revision_is_rolled_out() {
        let settings = OperatorSettings::default();
        // (case, live Deployment, applied revision, Ready, its reason, Progressing)
        let cases = [
            (
                "old pods still serving",
                deployment(3, 1, 2, "r2"),
                "r2",
                true,
                reason::AVAILABLE,
                true,
            ),
            (
                "complete",
                deployment(2, 2, 2, "r2"),
                "r2",
                true,
                reason::AVAILABLE,
                false,
            ),
            (
                "live template is an older revision",
                deployment(2, 2, 2, "r1"),
                "r2",
                true,
                reason::AVAILABLE,
                true,
            ),
            (
                "rolling out with no pod serving",
                deployment(2, 0, 0, "r2"),
                "r2",
                false,
                reason::ROLLING_OUT,
                true,
            ),
        ];
        for (case, live, applied, ready, why, progressing) in cases {
            let status = status_after(
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
                progressing,
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
        let rolling = status_after(
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
        let done = status_after(
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
        // A new project: nothing serves yet, so Ready starts False.
        let live = deployment(3, 1, 0, "r2");
        let first = status_after(
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
        let same = status_after(
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
        let done = status_after(
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
                Outcome::Blocked(Blocked::InvalidSpec("spec.x: bad".into())),
                reason::INVALID_SPEC,
            ),
            (
                Outcome::Blocked(Blocked::Conflict("Service \"docs\"".into())),
                reason::CONFLICT,
            ),
            (
                Outcome::Blocked(Blocked::SecretMissing("Secret \"k\"".into())),
                reason::SECRET_NOT_FOUND,
            ),
        ] {
            let status = status_after(
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

    #[test]
    fn the_table_is_ready_while_pods_serve_and_progressing_only_while_rolling_out() {
        let counts = || "2 of 2 pods updated, 2 ready, 2 available".to_string();
        let mut rows = vec![
            Health::Blocked(Blocked::WriteForbidden(
                "apply ConfigMap/docs-rollout: …".into(),
            )),
            Health::AwaitingDeployment { suspended: false },
            Health::AwaitingDeployment { suspended: true },
            Health::Available {
                revision: "r1".into(),
                counts: counts(),
            },
            Health::NoPodAvailable { counts: counts() },
        ];
        // Every state of an unfinished or failed rollout, with and without serving pods.
        for available in [0, 2] {
            rows.extend([
                Health::RolloutFailed {
                    message: "crash loop".into(),
                    available,
                },
                Health::Suspended {
                    counts: counts(),
                    available,
                },
                Health::Paused {
                    counts: counts(),
                    available,
                },
                Health::RollingOut {
                    revision: "r2".into(),
                    detail: counts(),
                    available,
                },
            ]);
        }
        for health in rows {
            let c = health_conditions(&health);
            let serving = match &health {
                Health::Available { .. } => true,
                Health::RolloutFailed { available, .. }
                | Health::Suspended { available, .. }
                | Health::Paused { available, .. }
                | Health::RollingOut { available, .. } => *available > 0,
                _ => false,
            };
            assert_eq!(c.ready.is_true, serving, "{health:?}");
            if serving {
                assert_eq!(c.ready.reason, reason::AVAILABLE, "{health:?}");
            }
            assert_eq!(
                c.progressing.is_true,
                matches!(
                    health,
                    Health::RollingOut { .. } | Health::AwaitingDeployment { suspended: false }
                ),
                "{health:?}"
            );
            assert_eq!(
                c.degraded.is_true,
                matches!(
                    health,
                    Health::Blocked(_)
                        | Health::RolloutFailed { .. }
                        | Health::NoPodAvailable { .. }
                ),
                "{health:?}"
            );
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
                ("True", reason::AVAILABLE),
                ("False", reason::AS_EXPECTED),
            ),
            (
                "progressing with no pod serving yet",
                decision(Phase::Progressing("waiting".into()), "r1", None),
                deployment(2, 2, 0, "r2"),
                ("False", reason::ROLLING_OUT),
                ("False", reason::AS_EXPECTED),
            ),
            (
                "failed and rolled back: the good revision serves",
                decision(failed, "r1", Some("r2")),
                deployment(2, 2, 2, "r1"),
                ("True", reason::AVAILABLE),
                ("True", reason::ROLLOUT_FAILED),
            ),
        ];
        for (case, decision, live, ready, degraded) in cases {
            let status = status_after(
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
        let rolled_back = status_after(
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
