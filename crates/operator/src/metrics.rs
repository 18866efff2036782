//! Prometheus metrics of the operator, served on `/metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
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
        for collector in [
            Box::new(reconciliations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reconcile_errors.clone()),
            Box::new(reconcile_duration.clone()),
            Box::new(managed_projects.clone()),
            Box::new(child_writes.clone()),
            Box::new(leader.clone()),
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
        }
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
