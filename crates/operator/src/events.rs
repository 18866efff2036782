//! Kubernetes Events about a project. Best effort: a failed Event never fails a reconcile.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kbeast_api::conditions::{self, reason};
use kbeast_api::{KnowledgeProject, KnowledgeProjectStatus};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use tracing::warn;

/// Longest note the API server accepts on an Event.
const MAX_NOTE_BYTES: usize = 1000;

/// Publishes one Event on the project.
pub async fn publish(
    recorder: &Recorder,
    project: &KnowledgeProject,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(truncate(note, MAX_NOTE_BYTES)),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &project.object_ref(&())).await {
        warn!(project = %project.name_any(), "could not publish event: {error}");
    }
}

/// Emits an Event when Ready or Degraded changes status or reason.
pub async fn announce_condition_changes(
    recorder: &Recorder,
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
        publish(
            recorder,
            project,
            event_type,
            &now.reason,
            "Reconcile",
            note,
        )
        .await;
    }
}

fn condition<'a>(status: &'a KnowledgeProjectStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

fn is_failure(reason: &str) -> bool {
    [
        reason::INVALID_SPEC,
        reason::CONFLICT,
        reason::SECRET_NOT_FOUND,
        reason::ROLLOUT_FAILED,
        reason::FORBIDDEN,
    ]
    .contains(&reason)
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
