//! The health-gating state machine: from the durable rollout record, the live Deployment and
//! the project's pods to what the operator applies and reports. Pure.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kbeast_api::labels::{POD_REVISION_LABEL, SMOKE_PASSED_CONDITION};
use kube::ResourceExt;

use super::gate::RolloutState;
use super::record::RolloutRecord;

/// Restarts after which a pod of the update revision counts as crash-looping.
pub const CRASH_LOOP_RESTARTS: i32 = 3;

/// What the pipeline needs to know about one query pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodView {
    pub name: String,
    /// `kbeast.io/revision` of the template the pod was created from.
    pub revision: Option<String>,
    pub terminating: bool,
    pub ip: Option<String>,
    /// Every container is ready (the kubelet's `ContainersReady`).
    pub containers_ready: bool,
    /// The `kbeast.io/smoke-passed` condition: `Some(true)` passed, `Some(false)` failed.
    pub smoke_passed: Option<bool>,
    /// Message of the smoke-check condition.
    pub smoke_message: Option<String>,
    /// Most restarts of any container.
    pub restarts: i32,
    /// Why a container is not running, from its waiting or last terminated state.
    pub container_problem: Option<String>,
}

impl PodView {
    pub fn of(pod: &Pod) -> Self {
        let status = pod.status.clone().unwrap_or_default();
        let conditions = status.conditions.unwrap_or_default();
        let condition = |type_: &str| conditions.iter().find(|c| c.type_ == type_);
        let gate = condition(SMOKE_PASSED_CONDITION);
        let containers = status.container_statuses.unwrap_or_default();
        let container_problem = containers.iter().find_map(|c| {
            let state = c.state.as_ref();
            let waiting = state.and_then(|s| s.waiting.as_ref());
            let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
            if c.ready {
                return None;
            }
            let mut parts = Vec::new();
            if let Some(waiting) = waiting {
                parts.push(format!(
                    "{}{}",
                    waiting.reason.as_deref().unwrap_or("Waiting"),
                    waiting
                        .message
                        .as_deref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                ));
            }
            if let Some(last) = last {
                parts.push(format!(
                    "last exit code {}{}",
                    last.exit_code,
                    last.message
                        .as_deref()
                        .or(last.reason.as_deref())
                        .map(|m| format!(": {}", m.trim()))
                        .unwrap_or_default()
                ));
            }
            (!parts.is_empty()).then(|| format!("container {}: {}", c.name, parts.join(", ")))
        });
        Self {
            name: pod.name_any(),
            revision: pod.labels().get(POD_REVISION_LABEL).cloned(),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            ip: status.pod_ip.filter(|ip| !ip.is_empty()),
            containers_ready: condition("ContainersReady").is_some_and(|c| c.status == "True"),
            smoke_passed: gate.map(|c| c.status == "True"),
            smoke_message: gate
                .and_then(|c| c.message.clone())
                .filter(|m| !m.is_empty()),
            restarts: containers
                .iter()
                .map(|c| c.restart_count)
                .max()
                .unwrap_or(0),
            container_problem,
        }
    }

    /// Its containers run and answer probes, but the smoke check has not passed yet.
    pub fn needs_smoke_check(&self) -> bool {
        !self.terminating
            && self.ip.is_some()
            && self.containers_ready
            && self.smoke_passed != Some(true)
    }

    pub fn crash_looping(&self) -> bool {
        !self.terminating && !self.containers_ready && self.restarts >= CRASH_LOOP_RESTARTS
    }
}

/// Whether `pod` is one the operator may gate: controlled by a ReplicaSet of the project's
/// Deployment `workload`, and on the pod network. Anything else carrying the project's labels
/// (a tenant's own pod, or one on the node's network) is neither smoke-checked nor counted, so
/// the operator's requests never go to an address a tenant picked.
pub fn created_by_replica_set_of(pod: &Pod, workload: &str) -> bool {
    let controlled = pod.metadata.owner_references.iter().flatten().any(|owner| {
        owner.controller == Some(true)
            && owner.kind == "ReplicaSet"
            && owner.api_version == "apps/v1"
            && owner
                .name
                .strip_prefix(workload)
                .is_some_and(|rest| rest.starts_with('-'))
    });
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    controlled && !host_network
}

/// Everything the decision depends on.
#[derive(Clone, Debug)]
pub struct RolloutInput<'a> {
    pub generation: i64,
    /// Revision of the pod template the current spec asks for.
    pub desired_revision: &'a str,
    /// That template, stored as the last good one once it has rolled out.
    pub desired_template: &'a PodTemplateSpec,
    /// The project spec asking for it, stored as the last good one with the template.
    pub desired_spec: &'a serde_json::Value,
    pub record: &'a RolloutRecord,
    /// The live Deployment's progress; `None` before it exists.
    pub deployment: Option<&'a RolloutState>,
    pub pods: &'a [PodView],
    pub paused: bool,
    pub auto_rollback: bool,
    pub progress_deadline_seconds: i64,
    pub now: Timestamp,
}

/// Which pod template the Deployment gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateChoice {
    /// The one built from the current spec.
    Desired,
    /// The last good one from the record: a rollback.
    LastGood,
}

/// Where the rollout of the desired revision stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The desired revision is rolling out; the message says what it waits for.
    Progressing(String),
    /// The desired revision is fully rolled out and passed its gate.
    Complete,
    /// The desired revision failed for this generation and is not retried.
    Failed {
        message: String,
        /// The Deployment is back on (or returning to) the last good revision.
        rolled_back_to: Option<String>,
    },
    /// `spec.rollout.paused`: the Deployment is held; no deadline runs.
    Paused,
}

/// An attempt that ended in this decision, for Events and metrics.
#[derive(Clone, Debug, PartialEq)]
pub enum Finished {
    Succeeded {
        revision: String,
        seconds: Option<f64>,
    },
    Failed {
        revision: String,
        message: String,
        rolled_back_to: Option<String>,
        seconds: Option<f64>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub template: TemplateChoice,
    /// The record to store; differs from the input record only when something happened.
    pub record: RolloutRecord,
    pub phase: Phase,
    pub finished: Option<Finished>,
}

/// Decides the next step of the rollout.
pub fn decide(input: &RolloutInput<'_>) -> Decision {
    let desired = input.desired_revision;
    let mut record = input.record.clone();

    // A failure is remembered per (revision, generation): the same spec is not retried in a
    // loop, but any new generation is a fresh attempt (fix-forward).
    if record.failed_revision.as_deref() == Some(desired)
        && record.failed_generation == Some(input.generation)
    {
        let rolled_back_to = rollback_target(input);
        return Decision {
            template: if rolled_back_to.is_some() {
                TemplateChoice::LastGood
            } else {
                TemplateChoice::Desired
            },
            phase: Phase::Failed {
                message: record.failure_message.clone().unwrap_or_default(),
                rolled_back_to,
            },
            record,
            finished: None,
        };
    }

    let new_attempt = record.update_revision.as_deref() != Some(desired)
        || record.failed_revision.as_deref() == Some(desired);
    if new_attempt {
        record.update_revision = Some(desired.to_string());
        record.update_generation = Some(input.generation);
        record.started_at = None;
        record.failed_revision = None;
        record.failed_generation = None;
        record.failure_message = None;
    }

    let live = input
        .deployment
        .filter(|d| d.revision.as_deref() == Some(desired));
    if live.is_some_and(RolloutState::complete) {
        let finished = (record.last_good_revision.as_deref() != Some(desired)
            || record.started_at.is_some())
        .then(|| Finished::Succeeded {
            revision: desired.to_string(),
            seconds: record
                .started_at
                .as_ref()
                .map(|t| seconds_between(t.0, input.now)),
        });
        if record.last_good_revision.as_deref() != Some(desired) {
            record.previous_good_revision = record.last_good_revision.take();
            record.previous_good_spec = record.last_good_spec.take();
        }
        record.last_good_revision = Some(desired.to_string());
        record.last_good_template = Some(input.desired_template.clone());
        record.last_good_spec = Some(input.desired_spec.clone());
        record.started_at = None;
        return Decision {
            template: TemplateChoice::Desired,
            record,
            phase: Phase::Complete,
            finished,
        };
    }
    if record.last_good_revision.as_deref() == Some(desired) && record.started_at.is_none() {
        // Rolled out before; pods come and go (scale-up, a restarted pod) without a new attempt.
        return Decision {
            template: TemplateChoice::Desired,
            record,
            phase: Phase::Complete,
            finished: None,
        };
    }

    if input.paused {
        // The deadline clock restarts on resume.
        record.started_at = None;
        return Decision {
            template: TemplateChoice::Desired,
            record,
            phase: Phase::Paused,
            finished: None,
        };
    }
    let started_at = record.started_at.get_or_insert(Time(input.now)).0;

    let ours: Vec<&PodView> = input
        .pods
        .iter()
        .filter(|p| p.revision.as_deref() == Some(desired) && !p.terminating)
        .collect();
    let elapsed = seconds_between(started_at, input.now);
    let failure = if let Some(pod) = ours.iter().find(|p| p.crash_looping()) {
        Some(format!(
            "revision {desired}: pod {} is crash-looping ({} restarts){}",
            pod.name,
            pod.restarts,
            pod.container_problem
                .as_deref()
                .map(|p| format!(": {p}"))
                .unwrap_or_default()
        ))
    } else if elapsed > input.progress_deadline_seconds as f64 {
        Some(format!(
            "revision {desired} was not fully available within spec.rollout.progressDeadlineSeconds ({}s){}",
            input.progress_deadline_seconds,
            first_pod_problem(&ours)
                .map(|p| format!(": {p}"))
                .unwrap_or_default()
        ))
    } else {
        None
    };

    let Some(message) = failure else {
        return Decision {
            template: TemplateChoice::Desired,
            record,
            phase: Phase::Progressing(progress_message(&ours, input.deployment)),
            finished: None,
        };
    };
    record.failed_revision = Some(desired.to_string());
    record.failed_generation = Some(input.generation);
    record.failure_message = Some(message.clone());
    record.started_at = None;
    let failed_input = RolloutInput {
        record: &record,
        ..input.clone()
    };
    let rolled_back_to = rollback_target(&failed_input);
    Decision {
        template: if rolled_back_to.is_some() {
            TemplateChoice::LastGood
        } else {
            TemplateChoice::Desired
        },
        phase: Phase::Failed {
            message: message.clone(),
            rolled_back_to: rolled_back_to.clone(),
        },
        finished: Some(Finished::Failed {
            revision: desired.to_string(),
            message,
            rolled_back_to,
            seconds: Some(elapsed),
        }),
        record,
    }
}

/// The revision a failed rollout returns to, when rollback is on and one is stored.
fn rollback_target(input: &RolloutInput<'_>) -> Option<String> {
    let record = input.record;
    let good = record.last_good_revision.as_deref()?;
    (input.auto_rollback && record.last_good_template.is_some() && good != input.desired_revision)
        .then(|| good.to_string())
}

fn first_pod_problem(pods: &[&PodView]) -> Option<String> {
    pods.iter().find_map(|p| {
        if p.smoke_passed == Some(false) {
            Some(format!(
                "pod {} failed its smoke check: {}",
                p.name,
                p.smoke_message.as_deref().unwrap_or("no details")
            ))
        } else {
            p.container_problem
                .as_ref()
                .map(|problem| format!("pod {}: {problem}", p.name))
        }
    })
}

fn progress_message(pods: &[&PodView], deployment: Option<&RolloutState>) -> String {
    let counts = deployment.map_or_else(
        || "waiting for the Deployment".to_string(),
        |d| {
            format!(
                "{} of {} pods updated, {} ready, {} available",
                d.updated, d.desired, d.ready, d.available
            )
        },
    );
    match first_pod_problem(pods) {
        Some(problem) => format!("{counts}; {problem}"),
        None => counts,
    }
}

fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    (to.as_millisecond() - from.as_millisecond()).max(0) as f64 / 1000.0
}
