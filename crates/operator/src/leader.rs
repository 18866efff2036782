//! Leader election through a `coordination.k8s.io/v1` Lease, so that two replicas are safe:
//! only the holder reconciles. A replica that cannot renew in time stops reconciling.
//!
//! As client-go does, a lease counts as expired when this replica has not seen its record
//! change for the lease duration, measured on its own monotonic clock: the holder's `renewTime`
//! is only compared with itself, so clock skew between nodes cannot hand the lease over while
//! its holder still renews.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tracing::{info, warn};

/// Timing of the election, like client-go's defaults scaled down.
#[derive(Clone, Debug)]
pub struct LeaseTiming {
    /// How long a lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leadership.
    pub renew_deadline: Duration,
    /// How often candidates and the leader act.
    pub retry_period: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// One candidate for the lease `namespace/name`.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
    /// The lease record last seen and when (local clock) it was first seen so.
    observed: std::sync::Mutex<Option<(LeaseSpec, tokio::time::Instant)>>,
}

/// What one attempt found.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    Acquired,
    HeldByOther(String),
}

impl LeaderElector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: LeaseTiming,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
            observed: std::sync::Mutex::default(),
        }
    }

    /// When the lease's current record was first seen here: now, if it changed since last time.
    fn observe(&self, spec: &LeaseSpec) -> tokio::time::Instant {
        let mut observed = self.observed.lock().expect("lock is never poisoned");
        match observed.as_ref() {
            Some((record, at)) if record == spec => *at,
            _ => {
                let now = tokio::time::Instant::now();
                *observed = Some((spec.clone(), now));
                now
            }
        }
    }

    /// Waits until this candidate holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Acquired) => {
                    info!(lease = %self.name, identity = %self.identity, "became leader");
                    return;
                }
                Ok(Attempt::HeldByOther(holder)) => {
                    tracing::debug!(lease = %self.name, %holder, "lease held by another replica")
                }
                Err(error) => warn!(lease = %self.name, "leader election attempt failed: {error}"),
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    /// Renews the lease until renewal fails for longer than the renew deadline; then returns,
    /// and the caller must stop reconciling.
    pub async fn hold(&self) {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.timing.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Acquired) => last_renewal = tokio::time::Instant::now(),
                Ok(Attempt::HeldByOther(holder)) => {
                    warn!(lease = %self.name, %holder, "lost the lease to another replica");
                    return;
                }
                Err(error) => {
                    warn!(lease = %self.name, "could not renew the lease: {error}");
                    if last_renewal.elapsed() > self.timing.renew_deadline {
                        return;
                    }
                }
            }
        }
    }

    /// Gives the lease up at shutdown, so that a standby takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        if let Err(error) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            warn!(lease = %self.name, "could not release the lease: {error}");
        }
    }

    /// One step of the election: create the lease, renew our own, or take over an expired one.
    pub async fn try_acquire_or_renew(&self) -> Result<Attempt, kube::Error> {
        let now = jiff::Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.held_spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Acquired),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::HeldByOther(
                    "(just created by another replica)".to_string(),
                )),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.identity;
        let unchanged_for = self.observe(&spec).elapsed();
        if !ours && !holder.is_empty() && !expired(&spec, unchanged_for) {
            return Ok(Attempt::HeldByOther(holder));
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquired = match (&spec.acquire_time, ours) {
            (Some(time), true) => time.0,
            _ => now,
        };
        lease.spec = Some(self.held_spec(acquired, now, transitions));
        // A replace carries the resourceVersion we read: if another replica wrote in between,
        // the API server answers 409 and we lost this round.
        match self
            .api
            .replace(&lease.name_any(), &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.observe(&written.spec.unwrap_or_default());
                Ok(Attempt::Acquired)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Ok(Attempt::HeldByOther("(conflicting update)".to_string()))
            }
            Err(error) => Err(error),
        }
    }

    fn held_spec(
        &self,
        acquired: jiff::Timestamp,
        renewed: jiff::Timestamp,
        transitions: i32,
    ) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timing.lease_duration.as_secs() as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}

/// Whether a lease whose record has not changed for `unchanged_for` (local clock) has expired:
/// its holder did not renew within the lease duration. A lease without a duration is expired.
pub fn expired(spec: &LeaseSpec, unchanged_for: Duration) -> bool {
    let duration = u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0);
    unchanged_for > Duration::from_secs(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_expires_only_after_its_duration_without_a_change() {
        let spec = LeaseSpec {
            holder_identity: Some("other".to_string()),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        };
        assert!(!expired(&spec, Duration::from_secs(5)));
        assert!(!expired(&spec, Duration::from_secs(15)));
        assert!(expired(&spec, Duration::from_secs(16)));
        assert!(expired(&LeaseSpec::default(), Duration::from_millis(1)));
    }

    #[test]
    fn lease_times_serialise_with_microsecond_precision() {
        // The API server rejects MicroTime without exactly six fractional digits (k8s-golden/lease.json).
        let time = MicroTime("2026-11-22T10:00:00Z".parse().expect("valid timestamp"));
        assert_eq!(
            serde_json::to_string(&time).expect("serialises"),
            "\"2026-11-22T10:00:00.000000Z\""
        );
    }
}
