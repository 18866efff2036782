//! Counts of requests per verb, resource and client, so tests can assert on client behaviour
//! ("the operator made zero writes in 30 s").

use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

/// One served API request.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    /// Milliseconds since the cluster started.
    pub at_ms: u128,
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// `resource` or `resource/subresource`; empty for discovery and other paths.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The `fieldManager` query parameter when given, otherwise the User-Agent.
    pub client: String,
    pub user_agent: String,
    pub status: u16,
}

impl RequestRecord {
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }
}

/// Filter for [`RequestLog::count`]; `None` fields match anything.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    pub verb: Option<String>,
    pub resource: Option<String>,
    /// Matches the record's `client` or a User-Agent starting with this string.
    pub client: Option<String>,
    pub writes_only: bool,
    /// Only requests at or after this many milliseconds since start.
    pub since_ms: Option<u128>,
}

impl RequestFilter {
    pub fn matches(&self, r: &RequestRecord) -> bool {
        self.verb.as_ref().is_none_or(|v| v == &r.verb)
            && self.resource.as_ref().is_none_or(|res| res == &r.resource)
            && self
                .client
                .as_ref()
                .is_none_or(|c| c == &r.client || r.user_agent.starts_with(c.as_str()))
            && (!self.writes_only || r.is_write())
            && self.since_ms.is_none_or(|s| r.at_ms >= s)
    }
}

pub struct RequestLog {
    started: Instant,
    records: Mutex<Vec<RequestRecord>>,
}

impl Default for RequestLog {
    fn default() -> Self {
        RequestLog {
            started: Instant::now(),
            records: Mutex::new(Vec::new()),
        }
    }
}

impl RequestLog {
    pub fn elapsed_ms(&self) -> u128 {
        self.started.elapsed().as_millis()
    }
    pub fn record(&self, mut record: RequestRecord) {
        record.at_ms = self.elapsed_ms();
        self.records.lock().expect("request log lock").push(record);
    }
    pub fn records(&self) -> Vec<RequestRecord> {
        self.records.lock().expect("request log lock").clone()
    }
    pub fn count(&self, filter: &RequestFilter) -> usize {
        self.records
            .lock()
            .expect("request log lock")
            .iter()
            .filter(|r| filter.matches(r))
            .count()
    }
    pub fn clear(&self) {
        self.records.lock().expect("request log lock").clear();
    }
    /// Summary served by `/_localcluster/requests`: totals per verb and per client, plus records.
    pub fn summary(&self) -> serde_json::Value {
        let records = self.records();
        let mut by_verb = serde_json::Map::new();
        let mut by_client = serde_json::Map::new();
        for r in &records {
            let v = by_verb
                .entry(r.verb.clone())
                .or_insert(serde_json::json!(0));
            *v = serde_json::json!(v.as_u64().unwrap_or(0) + 1);
            let c = by_client
                .entry(r.client.clone())
                .or_insert(serde_json::json!({}));
            let n = c[&r.verb].as_u64().unwrap_or(0) + 1;
            c[&r.verb] = serde_json::json!(n);
        }
        serde_json::json!({"byVerb": by_verb, "byClient": by_client, "requests": records})
    }
}
