//! State shared by every reconcile: clients, settings, metrics, the Event recorder, and the
//! per-project backoff and managed-project bookkeeping.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kbeast_api::KnowledgeProject;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;

use crate::metrics::Metrics;
use crate::rollout::gate::GateContext;
use crate::settings::OperatorSettings;

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
        let http = crate::rollout::smoke::http_client();
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

    /// What the rollout gate may use.
    pub fn gate(&self) -> GateContext<'_> {
        GateContext {
            client: &self.client,
            metrics: &self.metrics,
            http: &self.http,
            recorder: &self.recorder,
        }
    }

    /// Counts `project` as managed (or no longer) in `kbeast_managed_projects`.
    pub fn track(&self, project: &KnowledgeProject, present: bool) {
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
    pub fn next_backoff(&self, project: &KnowledgeProject) -> Duration {
        let mut failures = self
            .failures
            .lock()
            .expect("failure-count lock is never poisoned");
        let count = failures.entry(ObjectRef::from_obj(project)).or_insert(0);
        *count = count.saturating_add(1);
        backoff_delay(*count)
    }

    /// Reconciles of the project that failed in a row, up to now.
    pub fn failures_in_a_row(&self, project: &KnowledgeProject) -> u32 {
        self.failures
            .lock()
            .expect("failure-count lock is never poisoned")
            .get(&ObjectRef::from_obj(project))
            .copied()
            .unwrap_or(0)
    }

    pub fn reset_backoff(&self, project: &KnowledgeProject) {
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
