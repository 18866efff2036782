//! One reconcile of a project: observe → validate → build → apply → status, plus the clean-up
//! the finalizer runs on deletion.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kbeast_api::conditions::{self, reason};
use kbeast_api::{
    DeletionPolicy, FIELD_MANAGER, FINALIZER, KnowledgeProject, KnowledgeProjectStatus,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::apply::apply_children;
use crate::build::{
    ApiKeySet, DesiredChildren, ObservedFacts, desired_api_keys_secret, desired_children,
    desired_purge_job, names, secrets_hash, with_pod_template,
};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::observe::{Observed, is_owned_by, observe, ownership_conflicts};
use crate::rollout::{
    Decision, Finished, Phase, PodView, RolloutInput, RolloutRecord, TemplateChoice, decide,
    desired_record_config_map, gate_pods, record_from, smoke_expectation,
};
use crate::settings::OperatorSettings;
use crate::status::{Outcome, RolloutState, condition, desired_status};
use crate::validate::{describe, validate};

/// Re-check a converged project this often, even without events.
const RESYNC_INTERVAL: Duration = Duration::from_secs(600);
/// Re-check a project that is blocked, or waits for pods, this often.
const PENDING_RECHECK: Duration = Duration::from_secs(30);
/// Re-check a running rollout this often: smoke-check retries and the deadline.
const ROLLOUT_RECHECK: Duration = Duration::from_secs(5);
/// First and largest retry delay after a failed reconcile.
const BACKOFF_BASE: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Shared state of every reconcile.
pub struct Context {
    pub client: Client,
    pub settings: OperatorSettings,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// HTTP client of the smoke checks.
    pub http: reqwest::Client,
    failures: Mutex<HashMap<ObjectRef<KnowledgeProject>, u32>>,
    managed: Mutex<HashSet<ObjectRef<KnowledgeProject>>>,
}

impl Context {
    /// `instance` names this replica in the Events it publishes.
    pub fn new(
        client: Client,
        settings: OperatorSettings,
        metrics: Arc<Metrics>,
        instance: Option<String>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "kbeast-operator".into(),
                instance,
            },
        );
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(crate::rollout::smoke::SMOKE_CHECK_TIMEOUT)
            .build()
            .expect("an HTTP client with timeouts only builds");
        Self {
            client,
            settings,
            metrics,
            recorder,
            http,
            failures: Mutex::default(),
            managed: Mutex::default(),
        }
    }

    fn track(&self, project: &KnowledgeProject, present: bool) {
        let mut managed = self
            .managed
            .lock()
            .expect("managed-projects lock is never poisoned");
        let key = ObjectRef::from_obj(project);
        if present {
            managed.insert(key);
        } else {
            managed.remove(&key);
        }
        self.metrics.managed_projects.set(managed.len() as i64);
    }

    /// Next retry delay for a project that just failed: 2 s, 4 s, 8 s … up to 5 min.
    fn next_backoff(&self, project: &KnowledgeProject) -> Duration {
        let mut failures = self
            .failures
            .lock()
            .expect("failure-count lock is never poisoned");
        let count = failures.entry(ObjectRef::from_obj(project)).or_insert(0);
        *count = count.saturating_add(1);
        backoff_delay(*count)
    }

    fn reset_backoff(&self, project: &KnowledgeProject) {
        self.failures
            .lock()
            .expect("failure-count lock is never poisoned")
            .remove(&ObjectRef::from_obj(project));
    }
}

/// Delay before retry number `attempt` (1-based).
pub fn backoff_delay(attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
    BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_MAX)
}

/// Entry point for the controller.
pub async fn reconcile(project: Arc<KnowledgeProject>, ctx: Arc<Context>) -> Result<Action> {
    let timer = ctx.metrics.reconcile_duration.start_timer();
    let namespace = project
        .namespace()
        .ok_or_else(|| Error::MissingNamespace(project.name_any()))?;
    let api: Api<KnowledgeProject> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, project.clone(), |event| async {
        match event {
            FinalizerEvent::Apply(project) => reconcile_project(&project, &ctx).await,
            FinalizerEvent::Cleanup(project) => clean_up(&project, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    timer.observe_duration();
    match &result {
        Ok(_) => {
            ctx.metrics
                .reconciliations
                .with_label_values(&["success"])
                .inc();
            ctx.reset_backoff(&project);
        }
        Err(error) => {
            ctx.metrics
                .reconciliations
                .with_label_values(&["error"])
                .inc();
            ctx.metrics
                .reconcile_errors
                .with_label_values(&[error.metric_label()])
                .inc();
        }
    }
    result
}

/// Retries a failed reconcile with exponential backoff.
pub fn error_policy(project: Arc<KnowledgeProject>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.next_backoff(&project);
    warn!(
        project = %project.name_any(),
        namespace = project.namespace().unwrap_or_default(),
        reason = error.metric_label(),
        retry_in_seconds = delay.as_secs(),
        "reconcile failed: {error}"
    );
    Action::requeue(delay)
}

async fn reconcile_project(project: &KnowledgeProject, ctx: &Context) -> Result<Action> {
    ctx.track(project, true);
    let observed = Box::pin(observe(&ctx.client, project)).await?;

    let problems = validate(project);
    let conflicts = ownership_conflicts(project, &observed.children);
    let blocked = if !problems.is_empty() {
        Some(Outcome::InvalidSpec(describe(&problems)))
    } else if !conflicts.is_empty() {
        Some(Outcome::Conflict(conflicts.join("; ")))
    } else {
        observed.missing_secret().map(Outcome::SecretMissing)
    };

    let (outcome, deployment, revision, changed, decision) = match blocked {
        Some(outcome) => (
            outcome,
            observed.children.deployment.clone(),
            None,
            Vec::new(),
            None,
        ),
        None => {
            // Keys are generated only when they will be stored: a suspended project must not
            // see a new random revision on every reconcile.
            let new_secret = match (&project.spec.auth, &observed.children.api_keys_secret) {
                (None, None) if !project.spec.suspend => {
                    Some(desired_api_keys_secret(project, &ApiKeySet::generate()))
                }
                _ => None,
            };
            let facts = ObservedFacts {
                secrets_hash: secrets_hash(observed.env_secrets()),
            };
            let desired = desired_children(project, &ctx.settings, &facts);
            let revision = desired
                .deployment
                .annotations()
                .get(kbeast_api::labels::REVISION_ANNOTATION)
                .cloned();
            if project.spec.suspend {
                (
                    Outcome::Suspended,
                    observed.children.deployment.clone(),
                    revision,
                    Vec::new(),
                    None,
                )
            } else {
                // Boxed: these futures are large, and a reconcile runs on a task's stack.
                let (desired, decision, mut changed) =
                    Box::pin(gate_rollout(ctx, project, &observed, desired)).await?;
                let applied = Box::pin(apply_children(
                    &ctx.client,
                    project,
                    desired,
                    new_secret,
                    &observed.children,
                ))
                .await?;
                changed.extend(applied.changed);
                for change in &changed {
                    ctx.metrics
                        .child_writes
                        .with_label_values(&[kind_of(change)])
                        .inc();
                }
                (
                    Outcome::Converged,
                    applied.deployment,
                    revision,
                    changed,
                    Some(decision),
                )
            }
        }
    };

    let now = Time(jiff::Timestamp::now());
    let status = desired_status(
        project,
        &ctx.settings,
        &outcome,
        deployment.as_ref(),
        revision.as_deref(),
        decision.as_ref(),
        &now,
    );
    if !changed.is_empty() {
        info!(project = %project.name_any(), changed = ?changed, "applied children");
        publish(
            ctx,
            project,
            EventType::Normal,
            "Applied",
            "Apply",
            changed.join(", "),
        )
        .await;
    }
    ctx.metrics.record_conditions(
        &project.namespace().unwrap_or_default(),
        &project.name_any(),
        &status.conditions,
    );
    if project.status.as_ref() != Some(&status) {
        announce_condition_changes(ctx, project, &status).await;
        patch_status(ctx, project, &status).await?;
    }

    let ready = condition(&status, conditions::READY).is_some_and(|c| c.status == "True");
    let rolling = matches!(
        decision.as_ref().map(|d| &d.phase),
        Some(Phase::Progressing(_))
    );
    Ok(Action::requeue(if rolling {
        // Smoke checks are retried and the deadline is checked without waiting for events.
        ROLLOUT_RECHECK
    } else if ready {
        RESYNC_INTERVAL
    } else {
        PENDING_RECHECK
    }))
}

/// Health gating (see `rollout`): smoke-checks new pods, decides whether the desired revision
/// proceeds, fails or is rolled back, stores the durable record, and returns the children to
/// apply (with the last good pod template on a rollback) plus what was written.
async fn gate_rollout(
    ctx: &Context,
    project: &KnowledgeProject,
    observed: &Observed,
    mut desired: DesiredChildren,
) -> Result<(DesiredChildren, Decision, Vec<String>)> {
    let namespace = project
        .namespace()
        .ok_or_else(|| Error::MissingNamespace(project.name_any()))?;
    let now = Time(jiff::Timestamp::now());
    let mut pods: Vec<PodView> = observed.pods.iter().map(PodView::of).collect();
    let expected = smoke_expectation(project, observed.api_keys_file().as_deref());
    gate_pods(
        &ctx.client,
        &ctx.metrics,
        &ctx.http,
        &namespace,
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
        .get(kbeast_api::labels::REVISION_ANNOTATION)
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
        record: &record,
        deployment: live.as_ref(),
        pods: &pods,
        paused: rollout.paused,
        auto_rollback: rollout.auto_rollback,
        progress_deadline_seconds: i64::from(rollout.progress_deadline_seconds),
        now: now.0,
    });

    let mut changed = Vec::new();
    // Stored before the Deployment changes, so a restart resumes from what was decided.
    if decision.record != record {
        let config_map = desired_record_config_map(project, &decision.record);
        let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
        api.patch(
            &names::rollout_record(project),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&config_map),
        )
        .await?;
        changed.push(format!("ConfigMap/{}", names::rollout_record(project)));
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
        report_finished(ctx, project, finished).await;
    }
    Ok((desired, decision, changed))
}

/// Events and metrics of a rollout that just ended.
async fn report_finished(ctx: &Context, project: &KnowledgeProject, finished: &Finished) {
    let metrics = &ctx.metrics;
    match finished {
        Finished::Succeeded { revision, seconds } => {
            metrics.rollouts.with_label_values(&["succeeded"]).inc();
            if let Some(seconds) = seconds {
                metrics.rollout_duration.observe(*seconds);
            }
            publish(
                ctx,
                project,
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
                ctx,
                project,
                EventType::Warning,
                reason::ROLLOUT_FAILED,
                "Rollout",
                format!("revision {revision} failed: {message}; {outcome}"),
            )
            .await;
        }
    }
}

/// Emits an Event when Ready or Degraded changes status or reason.
async fn announce_condition_changes(
    ctx: &Context,
    project: &KnowledgeProject,
    status: &KnowledgeProjectStatus,
) {
    let previous = project.status.clone().unwrap_or_default();
    for type_ in [conditions::READY, conditions::DEGRADED] {
        let Some(now) = condition(status, type_) else {
            continue;
        };
        let before = condition(&previous, type_);
        if before.is_some_and(|b| b.status == now.status && b.reason == now.reason) {
            continue;
        }
        let warning =
            (type_ == conditions::READY && now.status == "False" && is_failure(&now.reason))
                || (type_ == conditions::DEGRADED && now.status == "True");
        if type_ == conditions::DEGRADED && now.status == "False" && before.is_none() {
            continue;
        }
        let event_type = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let note = format!("{type_}={}: {}", now.status, now.message);
        publish(ctx, project, event_type, &now.reason, "Reconcile", note).await;
    }
}

fn is_failure(reason: &str) -> bool {
    use kbeast_api::conditions::reason::*;
    [INVALID_SPEC, CONFLICT, SECRET_NOT_FOUND, ROLLOUT_FAILED].contains(&reason)
}

async fn patch_status(
    ctx: &Context,
    project: &KnowledgeProject,
    status: &KnowledgeProjectStatus,
) -> Result<()> {
    let namespace = project
        .namespace()
        .ok_or_else(|| Error::MissingNamespace(project.name_any()))?;
    let api: Api<KnowledgeProject> = Api::namespaced(ctx.client.clone(), &namespace);
    // Apply, not merge: fields we stop reporting are removed.
    let body = json!({
        "apiVersion": KnowledgeProject::api_version(&()),
        "kind": KnowledgeProject::kind(&()),
        "metadata": {"name": project.name_any()},
        "status": status,
    });
    api.patch_status(
        &project.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

async fn publish(
    ctx: &Context,
    project: &KnowledgeProject,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(truncate(note, 1000)),
        action: action.to_string(),
        secondary: None,
    };
    // Events are best effort: a failed one must not fail the reconcile.
    if let Err(error) = ctx.recorder.publish(&event, &project.object_ref(&())).await {
        warn!(project = %project.name_any(), "could not publish event: {error}");
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

fn kind_of(change: &str) -> &str {
    change.split('/').next().unwrap_or("unknown")
}

/// Runs before the finalizer is removed: keeps or deletes the data as `deletionPolicy` says.
/// Returning an error keeps the finalizer, so nothing is lost while clean-up is unfinished.
async fn clean_up(project: &KnowledgeProject, ctx: &Context) -> Result<Action> {
    let namespace = project
        .namespace()
        .ok_or_else(|| Error::MissingNamespace(project.name_any()))?;
    let storage = &project.spec.storage;
    let policy = storage.deletion_policy;
    if storage.volume.is_some() {
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
        let name = names::pvc(project);
        if let Some(pvc) = pvcs.get_opt(&name).await? {
            match policy {
                DeletionPolicy::Delete => {
                    pvcs.delete(&name, &DeleteParams::background()).await?;
                    publish(
                        ctx,
                        project,
                        EventType::Normal,
                        "DataDeleted",
                        "Cleanup",
                        format!("deletionPolicy Delete: deleted PersistentVolumeClaim {name}"),
                    )
                    .await;
                }
                DeletionPolicy::Retain if is_owned_by(&pvc, project) => {
                    // Without our owner reference the garbage collector leaves the PVC alone.
                    let uid = project.uid().unwrap_or_default();
                    let remaining: Vec<_> = pvc
                        .owner_references()
                        .iter()
                        .filter(|o| o.uid != uid)
                        .cloned()
                        .collect();
                    let patch = json!({"metadata": {"ownerReferences": remaining}});
                    pvcs.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await?;
                    publish(
                        ctx,
                        project,
                        EventType::Normal,
                        "DataRetained",
                        "Cleanup",
                        format!("deletionPolicy Retain: kept PersistentVolumeClaim {name}"),
                    )
                    .await;
                }
                DeletionPolicy::Retain => {}
            }
        }
    }
    if let Some(store) = &storage.object_store {
        match policy {
            DeletionPolicy::Retain => {
                publish(
                    ctx,
                    project,
                    EventType::Normal,
                    "DataRetained",
                    "Cleanup",
                    format!("deletionPolicy Retain: kept the data at {}", store.uri),
                )
                .await;
            }
            DeletionPolicy::Delete => purge_object_store(project, ctx, &namespace).await?,
        }
    }
    ctx.track(project, false);
    ctx.reset_backoff(project);
    ctx.metrics.forget_project(&namespace, &project.name_any());
    Ok(Action::await_change())
}

/// Runs the purge Job and waits for it. A failed Job keeps the finalizer; set
/// `deletionPolicy: Retain` or remove the finalizer by hand to give up on the data.
async fn purge_object_store(
    project: &KnowledgeProject,
    ctx: &Context,
    namespace: &str,
) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let name = names::purge_job(project);
    let Some(job) = jobs.get_opt(&name).await? else {
        let job = desired_purge_job(project, &ctx.settings)
            .expect("purge is only called for objectStore storage");
        jobs.create(&PostParams::default(), &job).await?;
        publish(
            ctx,
            project,
            EventType::Normal,
            "PurgeStarted",
            "Cleanup",
            format!("deletionPolicy Delete: started Job {name} to purge the data"),
        )
        .await;
        return Err(Error::CleanupPending(format!("purge Job {name} started")));
    };
    let status = job.status.unwrap_or_default();
    let finished = |type_: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == type_ && c.status == "True")
    };
    if finished("Complete") {
        publish(
            ctx,
            project,
            EventType::Normal,
            "DataDeleted",
            "Cleanup",
            format!("purge Job {name} deleted the data"),
        )
        .await;
        Ok(())
    } else if finished("Failed") {
        publish(ctx, project, EventType::Warning, "PurgeFailed", "Cleanup",
            format!("purge Job {name} failed; the finalizer stays so that no data is left behind unknowingly. Delete the Job to retry, or set spec.storage.deletionPolicy to Retain")).await;
        Err(Error::CleanupPending(format!("purge Job {name} failed")))
    } else {
        Err(Error::CleanupPending(format!(
            "purge Job {name} is running"
        )))
    }
}
