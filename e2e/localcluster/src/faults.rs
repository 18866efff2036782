//! Fault injection: make chosen requests fail or slow down, configurable at run time.

use std::sync::Mutex;
use std::time::Duration;

/// What happens to a matching request.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction {
    /// 429 TooManyRequests with `Retry-After`.
    TooManyRequests { retry_after_seconds: u64 },
    /// 500 InternalError.
    InternalError,
    /// 409 Conflict as if the resourceVersion were stale.
    Conflict,
    /// Watch streams end after this long (the client sees a closed stream, not an error).
    CloseWatchAfter(Duration),
    /// The request is served normally after this delay.
    Latency(Duration),
}

/// Which requests a fault applies to. `None` fields match anything.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub verb: Option<String>,
    pub resource: Option<String>,
    pub action: FaultAction,
    /// How many matching requests to affect; `None` = until removed.
    pub remaining: Option<u32>,
    /// Affect only every n-th matching request (1 = all): a steady, reproducible fault rate.
    pub every: u32,
    seen: u32,
}

impl Fault {
    pub fn new(action: FaultAction) -> Self {
        Fault {
            verb: None,
            resource: None,
            action,
            remaining: None,
            every: 1,
            seen: 0,
        }
    }
    /// Fails one in `n` matching requests, e.g. `every(10)` for 10 %.
    pub fn every(mut self, n: u32) -> Self {
        self.every = n.max(1);
        self
    }
    pub fn verb(mut self, verb: &str) -> Self {
        self.verb = Some(verb.to_string());
        self
    }
    pub fn resource(mut self, resource: &str) -> Self {
        self.resource = Some(resource.to_string());
        self
    }
    pub fn times(mut self, n: u32) -> Self {
        self.remaining = Some(n);
        self
    }
    fn matches(&self, verb: &str, resource: &str) -> bool {
        self.verb.as_deref().is_none_or(|v| v == verb)
            && self.resource.as_deref().is_none_or(|r| r == resource)
    }
}

#[derive(Default)]
pub struct Faults {
    faults: Mutex<Vec<Fault>>,
}

impl Faults {
    pub fn add(&self, fault: Fault) {
        self.faults.lock().expect("faults lock").push(fault);
    }
    pub fn clear(&self) {
        self.faults.lock().expect("faults lock").clear();
    }
    /// The actions that apply to this request (consuming counted faults).
    pub fn take(&self, verb: &str, resource: &str) -> Vec<FaultAction> {
        let mut faults = self.faults.lock().expect("faults lock");
        let mut actions = Vec::new();
        for f in faults.iter_mut().filter(|f| f.matches(verb, resource)) {
            f.seen = f.seen.wrapping_add(1);
            if f.seen % f.every != 0 {
                continue;
            }
            if let Some(n) = f.remaining.as_mut() {
                if *n == 0 {
                    continue;
                }
                *n -= 1;
            }
            actions.push(f.action.clone());
        }
        faults.retain(|f| f.remaining != Some(0));
        actions
    }
}
