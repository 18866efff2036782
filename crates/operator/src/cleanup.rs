//! What the finalizer runs before a project goes: keeps or deletes its data as
//! `deletionPolicy` says. Returning an error keeps the finalizer, so nothing is lost while
//! clean-up is unfinished.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kbeast_api::labels::PURGE_FOR_UID_ANNOTATION;
use kbeast_api::{DeletionPolicy, KnowledgeProject};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::json;

use crate::build::desired_purge_job;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::events::publish;
use crate::facts::names;
use crate::observe::is_owned_by;

const PVC: &str = "PersistentVolumeClaim";

pub async fn clean_up(
    project: &KnowledgeProject,
    namespace: &str,
    ctx: &Context,
) -> Result<Action> {
    let storage = &project.spec.storage;
    let policy = storage.deletion_policy;
    let note = async |type_, reason, note| {
        publish(&ctx.recorder, project, type_, reason, "Cleanup", note).await;
    };
    if storage.volume.is_some() {
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
        let name = names::pvc(project);
        let found = pvcs.get_opt(&name).await.map_err(|source| Error::Observe {
            kind: PVC,
            name: name.clone(),
            source,
        })?;
        if let Some(pvc) = found {
            match policy {
                DeletionPolicy::Delete if !is_owned_by(&pvc, project) => {
                    note(
                        EventType::Warning,
                        "DataNotOwned",
                        format!("deletionPolicy Delete: PersistentVolumeClaim {name} is not owned by this project; left in place"),
                    )
                    .await;
                }
                DeletionPolicy::Delete => {
                    // The uid precondition: only the claim just checked, never a successor.
                    let params = DeleteParams {
                        preconditions: Some(Preconditions {
                            uid: pvc.uid(),
                            resource_version: None,
                        }),
                        ..DeleteParams::background()
                    };
                    pvcs.delete(&name, &params)
                        .await
                        .map_err(|source| Error::Delete {
                            kind: PVC,
                            name: name.clone(),
                            source,
                        })?;
                    note(
                        EventType::Normal,
                        "DataDeleted",
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
                        .await
                        .map_err(|source| Error::Patch {
                            kind: PVC,
                            name: name.clone(),
                            source,
                        })?;
                    note(
                        EventType::Normal,
                        "DataRetained",
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
                note(
                    EventType::Normal,
                    "DataRetained",
                    format!("deletionPolicy Retain: kept the data at {}", store.uri),
                )
                .await;
            }
            DeletionPolicy::Delete => purge_object_store(project, namespace, ctx).await?,
        }
    }
    ctx.track(project, false);
    ctx.reset_backoff(project);
    ctx.metrics.forget_project(namespace, &project.name_any());
    Ok(Action::await_change())
}

/// Runs the purge Job and waits for it. A failed Job keeps the finalizer; set
/// `deletionPolicy: Retain` or remove the finalizer by hand to give up on the data.
async fn purge_object_store(
    project: &KnowledgeProject,
    namespace: &str,
    ctx: &Context,
) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let name = names::purge_job(project);
    let note = async |type_, reason, note| {
        publish(&ctx.recorder, project, type_, reason, "Cleanup", note).await;
    };
    let found = jobs.get_opt(&name).await.map_err(|source| Error::Observe {
        kind: "Job",
        name: name.clone(),
        source,
    })?;
    let Some(job) = found else {
        let job = desired_purge_job(project, &ctx.settings)
            .expect("purge is only called for objectStore storage");
        jobs.create(&PostParams::default(), &job)
            .await
            .map_err(|source| Error::Create {
                kind: "Job",
                name: name.clone(),
                source,
            })?;
        note(
            EventType::Normal,
            "PurgeStarted",
            format!("deletionPolicy Delete: started Job {name} to purge the data"),
        )
        .await;
        return Err(Error::CleanupPending(format!("purge Job {name} started")));
    };
    let purges_this_project = job
        .annotations()
        .get(PURGE_FOR_UID_ANNOTATION)
        .is_some_and(|uid| Some(uid) == project.uid().as_ref());
    if !purges_this_project {
        note(
            EventType::Warning,
            "PurgeBlocked",
            format!("Job {name} exists but was not created to purge this project's data; delete it so that the purge can run"),
        )
        .await;
        return Err(Error::CleanupPending(format!(
            "Job {name} is not this project's purge Job"
        )));
    }
    let status = job.status.unwrap_or_default();
    let finished = |type_: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == type_ && c.status == "True")
    };
    if finished("Complete") {
        note(
            EventType::Normal,
            "DataDeleted",
            format!("purge Job {name} deleted the data"),
        )
        .await;
        Ok(())
    } else if finished("Failed") {
        note(
            EventType::Warning,
            "PurgeFailed",
            format!("purge Job {name} failed; the finalizer stays so that no data is left behind unknowingly. Delete the Job to retry, or set spec.storage.deletionPolicy to Retain"),
        )
        .await;
        Err(Error::CleanupPending(format!("purge Job {name} failed")))
    } else {
        Err(Error::CleanupPending(format!(
            "purge Job {name} is running"
        )))
    }
}
