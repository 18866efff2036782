//! `kubectl kbeast status`: one screen about a project.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kbeast_api::KnowledgeProject;
use kbeast_api::labels::{
    APP_NAME, INSTANCE_LABEL, NAME_LABEL, POD_REVISION_LABEL, SMOKE_PASSED_CONDITION,
};
use kbeast_api::rollout_record::{RECORD_KEY, RolloutRecord, config_map_name};
use kbeast_client::Scope;
use kbeast_client::StatsResponse;
use kube::ResourceExt;
use kube::api::ListParams;
use serde::Serialize;

use crate::cli::Output;
use crate::output::{print, table};
use crate::query_proxy::QueryProxy;
use crate::target::Target;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub project: String,
    pub namespace: String,
    pub generation: Option<i64>,
    pub observed_generation: Option<i64>,
    pub conditions: Vec<ConditionLine>,
    pub revisions: Revisions,
    pub replicas: String,
    pub endpoint: Option<String>,
    pub storage: String,
    pub model: String,
    pub pods: Vec<PodLine>,
    /// From the query API; `None` when it could not be reached (see `dataError`).
    pub data: Option<DataLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_error: Option<String>,
    pub quota: String,
    pub rollout_failure: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionLine {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub observed_generation: Option<i64>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revisions {
    pub current: Option<String>,
    pub update: Option<String>,
    pub last_good: Option<String>,
    pub failed: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodLine {
    pub name: String,
    pub phase: String,
    pub ready: bool,
    /// The operator's smoke check on this pod: passed, failed, or pending.
    pub smoke: String,
    pub revision: String,
    pub restarts: i32,
    pub ip: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataLine {
    pub documents: u64,
    pub chunks: u64,
    pub bytes: u64,
    pub storage_bytes: u64,
    pub model: String,
}

pub async fn run(target: &Target, name: &str, watch: bool, output: Output) -> Result<()> {
    loop {
        let report = collect(target, name).await?;
        if watch && output == Output::Table {
            // Clear the screen and home the cursor, as `watch` does.
            print!("\x1b[2J\x1b[H");
        }
        match output {
            Output::Table => print!("{}", render(&report)),
            _ => print(output, &report)?,
        }
        if !watch {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

pub async fn collect(target: &Target, name: &str) -> Result<StatusReport> {
    let project = target.project(name).await?;
    let status = project.status.clone().unwrap_or_default();
    let selector = format!("{NAME_LABEL}={APP_NAME},{INSTANCE_LABEL}={name}");
    let pods = target
        .api::<Pod>()
        .list(&ListParams::default().labels(&selector))
        .await?;
    let record = target
        .api::<ConfigMap>()
        .get_opt(&config_map_name(name))
        .await?
        .and_then(|c| c.data.and_then(|mut d| d.remove(RECORD_KEY)))
        .and_then(|text| serde_json::from_str::<RolloutRecord>(&text).ok());
    let (data, data_error) = match stats(target, &project).await {
        Ok(stats) => (
            Some(DataLine {
                documents: stats.documents,
                chunks: stats.chunks,
                bytes: stats.bytes,
                storage_bytes: stats.storage_bytes,
                model: stats.model,
            }),
            None,
        ),
        Err(error) => (None, Some(format!("{error:#}"))),
    };
    let mut pods: Vec<PodLine> = pods.items.iter().map(pod_line).collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(StatusReport {
        project: name.to_string(),
        namespace: target.namespace.clone(),
        generation: project.metadata.generation,
        observed_generation: status.observed_generation,
        conditions: status
            .conditions
            .iter()
            .map(|c| ConditionLine {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                observed_generation: c.observed_generation,
            })
            .collect(),
        revisions: Revisions {
            current: status.current_revision.clone(),
            update: status.update_revision.clone(),
            last_good: status.last_good_revision.clone(),
            failed: status.failed_revision.clone(),
        },
        replicas: status
            .replica_summary
            .clone()
            .unwrap_or_else(|| format!("{}/{}", status.ready_replicas, status.replicas)),
        endpoint: status.endpoint.clone(),
        storage: storage_line(&project),
        model: model_line(&project),
        pods,
        data,
        data_error,
        quota: quota_line(&project),
        rollout_failure: record.and_then(|r| r.failure_message),
    })
}

async fn stats(target: &Target, project: &KnowledgeProject) -> Result<StatsResponse> {
    QueryProxy::connect(target, project, Scope::Read, None)
        .await?
        .get("/v1/stats")
        .await
}

fn pod_line(pod: &Pod) -> PodLine {
    let status = pod.status.clone().unwrap_or_default();
    let condition = |kind: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == kind)
            .map(|c| c.status.clone())
    };
    PodLine {
        name: pod.name_any(),
        phase: status.phase.clone().unwrap_or_else(|| "Unknown".into()),
        ready: condition("Ready").as_deref() == Some("True"),
        smoke: match condition(SMOKE_PASSED_CONDITION).as_deref() {
            Some("True") => "passed",
            Some("False") => "failed",
            _ => "pending",
        }
        .to_string(),
        revision: pod
            .labels()
            .get(POD_REVISION_LABEL)
            .cloned()
            .unwrap_or_default(),
        restarts: status
            .container_statuses
            .iter()
            .flatten()
            .map(|c| c.restart_count)
            .sum(),
        ip: status.pod_ip.clone().unwrap_or_default(),
    }
}

fn storage_line(project: &KnowledgeProject) -> String {
    let storage = &project.spec.storage;
    let kind = if let Some(volume) = &storage.volume {
        format!("volume {} ({:?})", volume.size, volume.access_mode)
    } else if let Some(store) = &storage.object_store {
        format!("object store {}", store.uri)
    } else {
        let limit = storage
            .ephemeral
            .as_ref()
            .and_then(|e| e.size_limit.clone())
            .unwrap_or_else(|| "default".into());
        format!("ephemeral (sizeLimit {limit})")
    };
    format!("{kind}, deletionPolicy {:?}", storage.deletion_policy)
}

fn model_line(project: &KnowledgeProject) -> String {
    let embedding = &project.spec.embedding;
    let provider = serde_json::to_value(embedding.provider)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    match &embedding.model {
        Some(model) => format!("{provider} {model} ({} dimensions)", embedding.dimension),
        None => format!("{provider} ({} dimensions)", embedding.dimension),
    }
}

fn quota_line(project: &KnowledgeProject) -> String {
    let Some(quota) = &project.spec.quota else {
        return "none".into();
    };
    let documents = quota
        .max_documents
        .map_or("unlimited".into(), |n| n.to_string());
    let bytes = quota
        .max_bytes
        .clone()
        .unwrap_or_else(|| "unlimited".into());
    format!("{documents} documents, {bytes} bytes")
}

/// The human screen.
pub fn render(report: &StatusReport) -> String {
    let mut out = String::new();
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let _ = writeln!(out, "Project:     {}/{}", report.namespace, report.project);
    let _ = writeln!(
        out,
        "Generation:  {} (observed {})",
        report.generation.map_or("-".into(), |g| g.to_string()),
        report
            .observed_generation
            .map_or("-".into(), |g| g.to_string())
    );
    let _ = writeln!(out, "Replicas:    {}", report.replicas);
    let _ = writeln!(out, "Endpoint:    {}", dash(&report.endpoint));
    let _ = writeln!(out, "Storage:     {}", report.storage);
    let _ = writeln!(out, "Embedding:   {}", report.model);
    let _ = writeln!(out, "Quota:       {}", report.quota);
    match (&report.data, &report.data_error) {
        (Some(data), _) => {
            let _ = writeln!(
                out,
                "Data:        {} documents, {} chunks, {} bytes of text, {} bytes stored",
                data.documents, data.chunks, data.bytes, data.storage_bytes
            );
        }
        (None, Some(error)) => {
            let _ = writeln!(out, "Data:        unavailable: {error}");
        }
        (None, None) => {}
    }
    let r = &report.revisions;
    let _ = writeln!(
        out,
        "Revisions:   current {}, update {}, last good {}, failed {}",
        dash(&r.current),
        dash(&r.update),
        dash(&r.last_good),
        dash(&r.failed)
    );
    if let Some(failure) = &report.rollout_failure {
        let _ = writeln!(out, "Last failure: {failure}");
    }
    let _ = writeln!(out, "\nConditions:");
    out.push_str(&table(
        &["TYPE", "STATUS", "REASON", "GENERATION", "MESSAGE"],
        report
            .conditions
            .iter()
            .map(|c| {
                vec![
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.observed_generation.map_or("-".into(), |g| g.to_string()),
                    c.message.clone(),
                ]
            })
            .collect(),
    ));
    let _ = writeln!(out, "\nPods:");
    if report.pods.is_empty() {
        let _ = writeln!(out, "  none");
    } else {
        out.push_str(&table(
            &[
                "NAME", "PHASE", "READY", "SMOKE", "REVISION", "RESTARTS", "IP",
            ],
            report
                .pods
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        p.phase.clone(),
                        p.ready.to_string(),
                        p.smoke.clone(),
                        p.revision.clone(),
                        p.restarts.to_string(),
                        p.ip.clone(),
                    ]
                })
                .collect(),
        ));
    }
    out
}
