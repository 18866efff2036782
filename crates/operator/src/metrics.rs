//! Prometheus metrics of the operator, served on `/metrics`.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the operator exports.
pub struct Metrics {
    pub registry: Registry,
    /// `kbeast_reconciliations_total{result}`: finished reconciles, success or error.
    pub reconciliations: IntCounterVec,
    /// `kbeast_reconcile_errors_total{reason}`: failed reconciles by error label.
    pub reconcile_errors: IntCounterVec,
    /// `kbeast_reconcile_duration_seconds`.
    pub reconcile_duration: Histogram,
    /// `kbeast_managed_projects`: projects this replica reconciles.
    pub managed_projects: IntGauge,
    /// `kbeast_child_writes_total{kind}`: child objects written or deleted.
    pub child_writes: IntCounterVec,
    /// `kbeast_leader`: 1 while this replica holds the leader lease.
    pub leader: IntGauge,
    /// `kbeast_project_condition{namespace,project,condition,reason}`: 1 when the condition is True.
    pub project_condition: IntGaugeVec,
    /// `kbeast_rollouts_total{result}`: finished rollouts: succeeded, rolled_back or failed.
    pub rollouts: IntCounterVec,
    /// `kbeast_rollout_duration_seconds`: from the start of a rollout to its end.
    pub rollout_duration: Histogram,
    /// `kbeast_smoke_check_failures_total{reason}`: failed smoke checks of new pods.
    pub smoke_check_failures: IntCounterVec,
    /// Reason currently exported per (namespace, project, condition), to drop stale series.
    exported_reasons: Mutex<HashMap<(String, String, String), String>>,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciliations = IntCounterVec::new(
            Opts::new(
                "kbeast_reconciliations_total",
                "Reconciles finished, by result",
            ),
            &["result"],
        )
        .expect("metric definition is valid");
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "kbeast_reconcile_errors_total",
                "Failed reconciles, by reason",
            ),
            &["reason"],
        )
        .expect("metric definition is valid");
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "kbeast_reconcile_duration_seconds",
                "Duration of one reconcile",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("metric definition is valid");
        let managed_projects = IntGauge::new(
            "kbeast_managed_projects",
            "KnowledgeProjects reconciled by this replica",
        )
        .expect("metric definition is valid");
        let child_writes = IntCounterVec::new(
            Opts::new(
                "kbeast_child_writes_total",
                "Child objects applied, created or deleted, by kind",
            ),
            &["kind"],
        )
        .expect("metric definition is valid");
        let leader = IntGauge::new("kbeast_leader", "1 while this replica is the leader")
            .expect("metric definition is valid");
        let project_condition = IntGaugeVec::new(
            Opts::new(
                "kbeast_project_condition",
                "Conditions of each KnowledgeProject: 1 when True, with the current reason",
            ),
            &["namespace", "project", "condition", "reason"],
        )
        .expect("metric definition is valid");
        let rollouts = IntCounterVec::new(
            Opts::new(
                "kbeast_rollouts_total",
                "Finished rollouts of a new pod-template revision, by result (succeeded, rolled_back, failed)",
            ),
            &["result"],
        )
        .expect("metric definition is valid");
        let rollout_duration = Histogram::with_opts(
            HistogramOpts::new(
                "kbeast_rollout_duration_seconds",
                "Time from the start of a rollout until it succeeded or failed",
            )
            .buckets(vec![
                5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0,
            ]),
        )
        .expect("metric definition is valid");
        let smoke_check_failures = IntCounterVec::new(
            Opts::new(
                "kbeast_smoke_check_failures_total",
                "Smoke checks of query pods that failed, by reason",
            ),
            &["reason"],
        )
        .expect("metric definition is valid");
        for collector in [
            Box::new(reconciliations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reconcile_errors.clone()),
            Box::new(reconcile_duration.clone()),
            Box::new(managed_projects.clone()),
            Box::new(child_writes.clone()),
            Box::new(leader.clone()),
            Box::new(project_condition.clone()),
            Box::new(rollouts.clone()),
            Box::new(rollout_duration.clone()),
            Box::new(smoke_check_failures.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Self {
            registry,
            reconciliations,
            reconcile_errors,
            reconcile_duration,
            managed_projects,
            child_writes,
            leader,
            project_condition,
            rollouts,
            rollout_duration,
            smoke_check_failures,
            exported_reasons: Mutex::default(),
        }
    }

    /// Exports a project's conditions, replacing the series of a changed reason.
    pub fn record_conditions(&self, namespace: &str, project: &str, conditions: &[Condition]) {
        let mut exported = self
            .exported_reasons
            .lock()
            .expect("metrics lock is never poisoned");
        for condition in conditions {
            let key = (
                namespace.to_string(),
                project.to_string(),
                condition.type_.clone(),
            );
            if let Some(old) = exported.insert(key, condition.reason.clone())
                && old != condition.reason
            {
                let _ = self.project_condition.remove_label_values(&[
                    namespace,
                    project,
                    &condition.type_,
                    &old,
                ]);
            }
            self.project_condition
                .with_label_values(&[namespace, project, &condition.type_, &condition.reason])
                .set(i64::from(condition.status == "True"));
        }
    }

    /// Drops every series of a project that is gone.
    pub fn forget_project(&self, namespace: &str, project: &str) {
        let mut exported = self
            .exported_reasons
            .lock()
            .expect("metrics lock is never poisoned");
        exported.retain(|(ns, name, condition), reason| {
            let ours = ns == namespace && name == project;
            if ours {
                let _ = self
                    .project_condition
                    .remove_label_values(&[ns, name, condition, reason]);
            }
            !ours
        });
    }

    /// Names of every metric family this process exports, used or not.
    pub fn names(&self) -> Vec<String> {
        let collectors: [&dyn prometheus::core::Collector; 10] = [
            &self.reconciliations,
            &self.reconcile_errors,
            &self.reconcile_duration,
            &self.managed_projects,
            &self.child_writes,
            &self.leader,
            &self.project_condition,
            &self.rollouts,
            &self.rollout_duration,
            &self.smoke_check_failures,
        ];
        let mut names: Vec<String> = collectors
            .iter()
            .flat_map(|c| c.desc().into_iter().map(|d| d.fq_name.clone()))
            .collect();
        names.extend(
            self.registry
                .gather()
                .into_iter()
                .map(|f| f.name().to_string()),
        );
        names.sort();
        names.dedup();
        names
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding of gathered metrics cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
