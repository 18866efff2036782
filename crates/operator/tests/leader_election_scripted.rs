//! Lease-based leader election against a scripted in-memory API with real resourceVersion
//! conflicts.

use std::time::Duration;

use kbeast_operator::leader::{Attempt, LeaderElector, LeaseTiming};
use kbeast_testkit::FakeApi;
use serde_json::json;

const LEASE_PATH: &str =
    "/apis/coordination.k8s.io/v1/namespaces/kbeast-system/leases/kbeast-operator-leader";

fn elector(api: &FakeApi, identity: &str) -> LeaderElector {
    LeaderElector::new(
        api.client(),
        "kbeast-system",
        "kbeast-operator-leader",
        identity,
        LeaseTiming {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_millis(10),
        },
    )
}

fn holder(api: &FakeApi) -> serde_json::Value {
    api.get(LEASE_PATH).expect("lease exists")["spec"]["holderIdentity"].clone()
}

#[tokio::test]
async fn the_first_candidate_creates_the_lease_and_the_second_waits() {
    let api = FakeApi::new();
    let a = elector(&api, "replica-a");
    let b = elector(&api, "replica-b");
    assert_eq!(
        a.try_acquire_or_renew().await.expect("works"),
        Attempt::Acquired
    );
    assert_eq!(holder(&api), "replica-a");
    assert_eq!(
        b.try_acquire_or_renew().await.expect("works"),
        Attempt::HeldByOther("replica-a".to_string())
    );
    let renew_time = api.get(LEASE_PATH).expect("lease")["spec"]["renewTime"].clone();
    assert!(
        renew_time
            .as_str()
            .is_some_and(|t| t.len() == "2026-11-22T10:00:00.000000Z".len()),
        "MicroTime with six fractional digits: {renew_time}"
    );
    assert_eq!(
        a.try_acquire_or_renew().await.expect("renews"),
        Attempt::Acquired
    );
    assert_eq!(
        api.get(LEASE_PATH).expect("lease")["spec"]["leaseTransitions"],
        0
    );
}

#[tokio::test]
async fn an_expired_lease_is_taken_over() {
    let api = FakeApi::new();
    api.insert(
        LEASE_PATH,
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "kbeast-operator-leader", "namespace": "kbeast-system"},
            "spec": {"holderIdentity": "replica-dead", "leaseDurationSeconds": 15,
                "renewTime": "2020-01-01T00:00:00.000000Z", "leaseTransitions": 3}}),
    );
    let b = elector(&api, "replica-b");
    // Expired means unchanged for the lease duration on this replica's clock, as in client-go.
    assert_eq!(
        b.try_acquire_or_renew().await.expect("works"),
        Attempt::HeldByOther("replica-dead".to_string())
    );
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(16)).await;
    assert_eq!(
        b.try_acquire_or_renew().await.expect("works"),
        Attempt::Acquired
    );
    assert_eq!(holder(&api), "replica-b");
    assert_eq!(
        api.get(LEASE_PATH).expect("lease")["spec"]["leaseTransitions"],
        4
    );
    let update = api
        .requests()
        .into_iter()
        .find(|r| r.method == "PUT")
        .expect("a PUT");
    assert!(
        update.body.as_ref().expect("body")["metadata"]["resourceVersion"].is_string(),
        "the takeover carries the resourceVersion it read, so a racing writer gets 409"
    );
}

#[tokio::test]
async fn a_holder_whose_clock_is_behind_keeps_the_lease_while_it_renews() {
    let api = FakeApi::new();
    // The holder's clock is an hour behind: every renewTime it writes looks long expired.
    let behind = |seconds: u32| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "kbeast-operator-leader", "namespace": "kbeast-system"},
            "spec": {"holderIdentity": "replica-a", "leaseDurationSeconds": 15,
                "renewTime": format!("2026-12-03T10:{:02}:{:02}.000000Z", seconds / 60, seconds % 60)}})
    };
    api.insert(LEASE_PATH, behind(0));
    let b = elector(&api, "replica-b");
    tokio::time::pause();
    for renewal in 1..=12 {
        assert_eq!(
            b.try_acquire_or_renew().await.expect("works"),
            Attempt::HeldByOther("replica-a".to_string()),
            "renewal {renewal}"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        api.insert(LEASE_PATH, behind(renewal * 5));
    }
    // It stops renewing: after the lease duration unchanged, the lease is taken over.
    b.try_acquire_or_renew().await.expect("works");
    tokio::time::advance(Duration::from_secs(16)).await;
    assert_eq!(
        b.try_acquire_or_renew().await.expect("works"),
        Attempt::Acquired
    );
}

#[tokio::test]
async fn a_released_lease_is_free_at_once() {
    let api = FakeApi::new();
    let a = elector(&api, "replica-a");
    let b = elector(&api, "replica-b");
    a.acquire().await;
    a.release().await;
    assert_eq!(holder(&api), serde_json::Value::Null);
    assert_eq!(
        b.try_acquire_or_renew().await.expect("works"),
        Attempt::Acquired
    );
}

#[tokio::test]
async fn losing_the_lease_ends_hold() {
    let api = FakeApi::new();
    let a = elector(&api, "replica-a");
    a.acquire().await;
    let mut lease = api.get(LEASE_PATH).expect("lease");
    lease["spec"]["holderIdentity"] = json!("replica-b");
    lease["spec"]["renewTime"] = json!("2099-01-01T00:00:00.000000Z");
    api.insert(LEASE_PATH, lease);
    tokio::time::timeout(Duration::from_secs(5), a.hold())
        .await
        .expect("hold returns once another replica holds the lease");
}
