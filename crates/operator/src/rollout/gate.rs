//! The rollout gate of one reconcile: smoke-checks new pods, decides whether the desired
//! revision proceeds, fails or is rolled back, stores the durable record, and reports a
//! finished rollout.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kbeast_api::FIELD_MANAGER;
use kbeast_api::conditions::reason;
use kbeast_api::labels::REVISION_ANNOTATION;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{EventType, Recorder};
use kube::{Client, ResourceExt};
use tracing::warn;

use super::decide::created_by_replica_set_of;
use super::{
    Decision, Finished, PodView, RolloutInput, RolloutRecord, TemplateChoice, decide,
    desired_record_config_map, gate_pods, record_from, smoke_expectation,
};
use crate::apply::{Change, ChangeAction};
use crate::build::{DesiredChildren, with_pod_template};
use crate::error::{Error, Result};
use crate::events::publish;
use crate::facts::names;
use crate::metrics::Metrics;
use crate::observe::Observed;
use crate::validate::ValidProject;

/// What the gate uses of the operator's shared state.
pub struct GateContext<'a> {
    pub client: &'a Client,
    pub metrics: &'a Metrics,
    /// HTTP client of the smoke checks.
    pub http: &'a reqwest::Client,
    pub recorder: &'a Recorder,
}

/// The gate's verdict and what it wrote.
#[derive(Clone, Debug)]
pub struct Gated {
    /// The children to apply: with the last good pod template on a rollback.
    pub desired: DesiredChildren,
    pub decision: Decision,
    /// The rollout record, when it changed.
    pub changes: Vec<Change>,
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

/// Runs the gate over the observed pods and the durable record (see the module docs).
pub async fn gate_rollout(
    gate: &GateContext<'_>,
    valid: ValidProject<'_>,
    observed: &Observed,
    mut desired: DesiredChildren,
) -> Result<Gated> {
    let project = valid.project;
    let now = Time(jiff::Timestamp::now());
    let workload = names::workload(project);
    let mut pods: Vec<PodView> = observed
        .pods
        .iter()
        .filter(|pod| created_by_replica_set_of(pod, &workload))
        .map(PodView::of)
        .collect();
    let expected = smoke_expectation(project, observed.api_keys_file().as_deref());
    gate_pods(
        gate.client,
        gate.metrics,
        gate.http,
        valid.namespace,
        &mut pods,
        &expected,
        &now,
    )
    .await?;

    let record = record_from(observed.children.rollout_record.as_ref()).unwrap_or_else(|error| {
        warn!(project = %project.name_any(), "unreadable rollout record, starting afresh: {error}");
        RolloutRecord::default()
    });
    let revision = desired
        .deployment
        .annotations()
        .get(REVISION_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    let live = observed.children.deployment.as_ref().map(RolloutState::of);
    let desired_template = desired
        .deployment
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let rollout = &project.spec.rollout;
    let decision = decide(&RolloutInput {
        generation: project.metadata.generation.unwrap_or(0),
        desired_revision: &revision,
        desired_template: &desired_template,
        desired_spec: &serde_json::to_value(&project.spec).expect("the spec serialises"),
        record: &record,
        deployment: live.as_ref(),
        pods: &pods,
        paused: rollout.paused,
        auto_rollback: rollout.auto_rollback,
        progress_deadline_seconds: i64::from(rollout.progress_deadline_seconds),
        now: now.0,
    });

    let mut changes = Vec::new();
    // Stored before the Deployment changes, so a restart resumes from what was decided.
    if decision.record != record {
        let config_map = desired_record_config_map(project, &decision.record);
        let name = names::rollout_record(project);
        let api: Api<ConfigMap> = Api::namespaced(gate.client.clone(), valid.namespace);
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&config_map),
        )
        .await
        .map_err(|source| Error::WriteRolloutRecord {
            name: name.clone(),
            source,
        })?;
        changes.push(Change::new("ConfigMap", name, ChangeAction::Applied));
    }
    if decision.template == TemplateChoice::LastGood
        && let (Some(template), Some(good)) = (
            decision.record.last_good_template.clone(),
            decision.record.last_good_revision.as_deref(),
        )
    {
        desired.deployment = with_pod_template(desired.deployment, template, good);
    }
    if let Some(finished) = &decision.finished {
        report_finished(gate, valid, finished).await;
    }
    Ok(Gated {
        desired,
        decision,
        changes,
    })
}

/// Events and metrics of a rollout that just ended.
async fn report_finished(gate: &GateContext<'_>, valid: ValidProject<'_>, finished: &Finished) {
    let metrics = gate.metrics;
    match finished {
        Finished::Succeeded { revision, seconds } => {
            metrics.rollouts.with_label_values(&["succeeded"]).inc();
            if let Some(seconds) = seconds {
                metrics.rollout_duration.observe(*seconds);
            }
            publish(
                gate.recorder,
                valid.project,
                EventType::Normal,
                "RolloutSucceeded",
                "Rollout",
                format!("revision {revision} is rolled out and passed its smoke checks"),
            )
            .await;
        }
        Finished::Failed {
            revision,
            message,
            rolled_back_to,
            seconds,
        } => {
            let result = if rolled_back_to.is_some() {
                "rolled_back"
            } else {
                "failed"
            };
            metrics.rollouts.with_label_values(&[result]).inc();
            if let Some(seconds) = seconds {
                metrics.rollout_duration.observe(*seconds);
            }
            let outcome = match rolled_back_to {
                Some(good) => format!("rolling back to revision {good}"),
                None => "halted; no rollback (autoRollback is off or no revision was good yet)"
                    .to_string(),
            };
            publish(
                gate.recorder,
                valid.project,
                EventType::Warning,
                reason::ROLLOUT_FAILED,
                "Rollout",
                format!("revision {revision} failed: {message}; {outcome}"),
            )
            .await;
        }
    }
}
