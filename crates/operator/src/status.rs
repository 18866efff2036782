//! Computes the project's status from the outcome of a reconcile and the live Deployment. Pure.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kbeast_api::conditions::{self, reason};
use kbeast_api::labels::REVISION_ANNOTATION;
use kbeast_api::query_contract::HTTP_PORT;
use kbeast_api::{KnowledgeProject, KnowledgeProjectStatus};
use kube::ResourceExt;

use crate::build::names;
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
    /// The Deployment controller reports ProgressDeadlineExceeded.
    pub deadline_exceeded: bool,
    /// Message of the Deployment's Progressing condition.
    pub progress_message: Option<String>,
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
        let progressing = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Progressing");
        Self {
            desired,
            replicas: status.replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            available: status.available_replicas.unwrap_or(0),
            observed: status.observed_generation.unwrap_or(0)
                >= deployment.metadata.generation.unwrap_or(0),
            deadline_exceeded: progressing
                .is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded")),
            progress_message: progressing.and_then(|c| c.message.clone()),
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
/// operator wants live (None when nothing could be built).
pub fn desired_status(
    project: &KnowledgeProject,
    settings: &OperatorSettings,
    outcome: &Outcome,
    deployment: Option<&Deployment>,
    applied_revision: Option<&str>,
    now: &Time,
) -> KnowledgeProjectStatus {
    let previous = project.status.clone().unwrap_or_default();
    let generation = project.metadata.generation;
    let rollout = deployment.map(RolloutState::of);
    let up_to_date = rollout.as_ref().is_some_and(|r| {
        r.complete() && applied_revision.is_some() && r.revision.as_deref() == applied_revision
    });

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
        last_good_revision: previous.last_good_revision.clone(),
    };
    if up_to_date {
        status.current_revision = status.update_revision.clone();
        status.last_good_revision = status.update_revision.clone();
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
    } else if rollout.deadline_exceeded {
        let message = format!(
            "rollout exceeded spec.rollout.progressDeadlineSeconds: {counts}: {}",
            rollout.progress_message.clone().unwrap_or_default()
        );
        set(
            conditions::READY,
            false,
            reason::ROLLOUT_STALLED,
            message.clone(),
        );
        set(
            conditions::PROGRESSING,
            false,
            reason::ROLLOUT_STALLED,
            message.clone(),
        );
        set(conditions::DEGRADED, true, reason::ROLLOUT_STALLED, message);
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
    } else {
        set(
            conditions::READY,
            false,
            reason::ROLLING_OUT,
            format!("rolling out: {counts}"),
        );
        set(conditions::PROGRESSING, true, reason::ROLLING_OUT, counts);
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
