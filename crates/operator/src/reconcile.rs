//! The pipeline driver of one reconcile: observe → validate → build → gate → apply → status,
//! each step handing the next a typed result. Clean-up on deletion is in `cleanup`, Events in
//! `events`, the rollout gate in `rollout::gate`, shared state and backoff in `context`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kbeast_api::conditions;
use kbeast_api::labels::REVISION_ANNOTATION;
use kbeast_api::{FIELD_MANAGER, FINALIZER, KnowledgeProject, KnowledgeProjectStatus};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::apply::apply_children;
use crate::build::{
    ApiKeySet, ObservedFacts, desired_api_keys_secret, desired_children, secrets_hash,
};
use crate::cleanup::clean_up;
use crate::error::{Error, Result};
use crate::events::{announce_condition_changes, publish};
use crate::observe::{Observed, observe, ownership_conflicts};
use crate::rollout::gate_rollout;
use crate::status::{Outcome, Reconciled, condition, desired_status};
use crate::validate::{Blocked, ValidProject, validate};

pub use crate::context::{Context, backoff_delay};

/// Re-check a converged project this often, even without events.
const RESYNC_INTERVAL: Duration = Duration::from_secs(600);
/// Re-check a project that is blocked, or waits for pods, this often.
const PENDING_RECHECK: Duration = Duration::from_secs(30);
/// Re-check a running rollout this often: smoke-check retries and the deadline.
const ROLLOUT_RECHECK: Duration = Duration::from_secs(5);

/// Entry point for the controller. Every log line of one reconcile carries its span (kube-runtime's
/// own span covers only the creation of this future, not its polling).
#[tracing::instrument(
    name = "reconcile",
    skip_all,
    fields(
        project = %project.name_any(),
        namespace = %project.namespace().unwrap_or_default(),
        generation = project.metadata.generation.unwrap_or(0),
    )
)]
pub async fn reconcile(project: Arc<KnowledgeProject>, ctx: Arc<Context>) -> Result<Action> {
    let timer = ctx.metrics.reconcile_duration.start_timer();
    let namespace = project
        .namespace()
        .ok_or_else(|| Error::MissingNamespace(project.name_any()))?;
    let api: Api<KnowledgeProject> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, project.clone(), |event| async {
        match event {
            FinalizerEvent::Apply(project) => reconcile_project(&project, &namespace, &ctx).await,
            FinalizerEvent::Cleanup(project) => clean_up(&project, &namespace, &ctx).await,
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

/// Server errors (5xx) on a child write count as a refusal to report only once this many
/// reconciles in a row have failed (about 14 s of backoff): a passing etcd timeout should not
/// flip Ready, an exhausted Service IP range should show.
const SERVER_ERRORS_BEFORE_REPORTING: u32 = 3;

/// Whether a failed child write is reported in the project's status: a refusal (4xx but
/// conflicts and throttling) at once, a server error once it persists.
fn reported_in_status(error: &Error, failures_in_a_row: u32) -> bool {
    error
        .rejected_child_write()
        .is_some_and(|code| code < 500 || failures_in_a_row >= SERVER_ERRORS_BEFORE_REPORTING)
}

async fn reconcile_project(
    project: &KnowledgeProject,
    namespace: &str,
    ctx: &Context,
) -> Result<Action> {
    ctx.track(project, true);
    let observed = Box::pin(observe(&ctx.client, project, namespace)).await?;
    let conflicts = ownership_conflicts(project, &observed.children);
    let reconciled = match validate(
        project,
        namespace,
        &observed.referenced_secrets,
        &conflicts,
        &ctx.settings.policy,
    ) {
        Err(blocked) => Reconciled::blocked(blocked, observed.children.deployment.clone()),
        Ok(valid) => match Box::pin(build_gate_apply(ctx, valid, &observed)).await {
            Ok(reconciled) => reconciled,
            Err(error) if reported_in_status(&error, ctx.failures_in_a_row(project)) => {
                // Say why in the status (retrying cannot fix RBAC, admission or quota), then
                // fail for the backoff.
                let blocked = if error.rejected_child_write() == Some(403) {
                    Blocked::WriteForbidden(error.to_string())
                } else {
                    Blocked::WriteRejected(error.to_string())
                };
                let reconciled = Reconciled::blocked(blocked, observed.children.deployment.clone());
                if let Err(report_error) = report(ctx, project, namespace, &reconciled).await {
                    warn!(project = %project.name_any(), "could not report {error}: {report_error}");
                }
                return Err(error);
            }
            Err(error) => return Err(error),
        },
    };
    let status = report(ctx, project, namespace, &reconciled).await?;

    let ready = condition(&status, conditions::READY).is_some_and(|c| c.status == "True");
    Ok(Action::requeue(if reconciled.rolling() {
        // Smoke checks are retried and the deadline is checked without waiting for events.
        ROLLOUT_RECHECK
    } else if ready {
        RESYNC_INTERVAL
    } else {
        PENDING_RECHECK
    }))
}

/// Build, gate and apply a valid project (or only build it, when suspended).
async fn build_gate_apply(
    ctx: &Context,
    valid: ValidProject<'_>,
    observed: &Observed,
) -> Result<Reconciled> {
    let project = valid.project;
    // Keys are generated only when they will be stored: a suspended project must not see a
    // new random revision on every reconcile.
    let new_secret = match (&project.spec.auth, &observed.children.api_keys_secret) {
        (None, None) if !project.spec.suspend => {
            Some(desired_api_keys_secret(project, &ApiKeySet::generate()))
        }
        _ => None,
    };
    let facts = ObservedFacts {
        secrets_hash: secrets_hash(valid.env_secrets()),
    };
    let desired = desired_children(project, &ctx.settings, &facts);
    let revision = desired
        .deployment
        .annotations()
        .get(REVISION_ANNOTATION)
        .cloned();
    if project.spec.suspend {
        return Ok(Reconciled {
            outcome: Outcome::Suspended,
            deployment: observed.children.deployment.clone(),
            revision,
            changes: Vec::new(),
            decision: None,
        });
    }
    // Boxed: these futures are large, and a reconcile runs on a task's stack.
    let gated = Box::pin(gate_rollout(&ctx.gate(), valid, observed, desired)).await?;
    let applied = Box::pin(apply_children(
        &ctx.client,
        valid,
        gated.desired,
        new_secret,
        &observed.children,
    ))
    .await?;
    let mut changes = gated.changes;
    changes.extend(applied.changes);
    Ok(Reconciled {
        outcome: Outcome::Converged,
        deployment: applied.deployment,
        revision,
        changes,
        decision: Some(gated.decision),
    })
}

/// Counts and announces the changes, and writes the status when it differs from the stored one.
async fn report(
    ctx: &Context,
    project: &KnowledgeProject,
    namespace: &str,
    reconciled: &Reconciled,
) -> Result<KnowledgeProjectStatus> {
    for change in &reconciled.changes {
        ctx.metrics
            .child_writes
            .with_label_values(&[change.kind])
            .inc();
    }
    let now = Time(jiff::Timestamp::now());
    let status = desired_status(project, &ctx.settings, reconciled, &now);
    if !reconciled.changes.is_empty() {
        let changed: Vec<String> = reconciled.changes.iter().map(ToString::to_string).collect();
        info!(project = %project.name_any(), changed = ?changed, "applied children");
        publish(
            &ctx.recorder,
            project,
            EventType::Normal,
            "Applied",
            "Apply",
            changed.join(", "),
        )
        .await;
    }
    ctx.metrics
        .record_conditions(namespace, &project.name_any(), &status.conditions);
    if project.status.as_ref() != Some(&status) {
        announce_condition_changes(&ctx.recorder, project, &status).await;
        patch_status(ctx, project, namespace, &status).await?;
    }
    Ok(status)
}

async fn patch_status(
    ctx: &Context,
    project: &KnowledgeProject,
    namespace: &str,
    status: &KnowledgeProjectStatus,
) -> Result<()> {
    let api: Api<KnowledgeProject> = Api::namespaced(ctx.client.clone(), namespace);
    let name = project.name_any();
    // Apply, not merge: fields we stop reporting are removed.
    let body = json!({
        "apiVersion": KnowledgeProject::api_version(&()),
        "kind": KnowledgeProject::kind(&()),
        "metadata": {"name": name},
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|source| Error::PatchStatus {
        name: name.clone(),
        source,
    })?;
    Ok(())
}
