//! `/metrics`, `/healthz` and `/readyz` of the operator process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use kbeast_operator::http::{ServerState, router};
use kbeast_operator::metrics::Metrics;
use tower::ServiceExt;

async fn get(state: &ServerState, path: &str) -> (StatusCode, String) {
    let response = router(state.clone())
        .oneshot(
            Request::get(path)
                .body(Body::empty())
                .expect("valid request"),
        )
        .await
        .expect("router answers");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn readiness_follows_the_api_connection_and_metrics_are_exported() {
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let state = ServerState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
    assert_eq!(
        get(&state, "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    ready.store(true, Ordering::Relaxed);
    assert_eq!(get(&state, "/readyz").await.0, StatusCode::OK);

    metrics
        .reconciliations
        .with_label_values(&["success"])
        .inc();
    metrics
        .reconcile_errors
        .with_label_values(&["conflict"])
        .inc();
    metrics.reconcile_duration.observe(0.02);
    metrics.managed_projects.set(3);
    let (status, body) = get(&state, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        "kbeast_reconciliations_total{result=\"success\"} 1",
        "kbeast_reconcile_errors_total{reason=\"conflict\"} 1",
        "kbeast_reconcile_duration_seconds_count 1",
        "kbeast_managed_projects 3",
        "kbeast_leader 0",
    ] {
        assert!(body.contains(line), "missing {line:?} in:\n{body}");
    }
}

#[test]
fn a_changed_reason_replaces_the_project_condition_series() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    let condition = |status: &str, reason: &str| Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message: String::new(),
        observed_generation: Some(1),
        last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
    };
    let metrics = Metrics::new();
    metrics.record_conditions("tenants", "docs", &[condition("False", "RollingOut")]);
    metrics.record_conditions("tenants", "docs", &[condition("True", "Available")]);
    let text = metrics.render();
    assert!(text.contains(
        "kbeast_project_condition{condition=\"Ready\",namespace=\"tenants\",project=\"docs\",reason=\"Available\"} 1"
    ), "{text}");
    assert!(
        !text.contains("RollingOut"),
        "the old reason's series is gone:\n{text}"
    );
    metrics.forget_project("tenants", "docs");
    assert!(!metrics.render().contains("project=\"docs\""));
    assert!(
        metrics
            .names()
            .contains(&"kbeast_project_condition".to_string())
    );
    assert!(
        metrics
            .names()
            .contains(&"process_resident_memory_bytes".to_string())
    );
}
