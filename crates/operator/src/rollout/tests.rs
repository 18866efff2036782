//! The gating state machine, case by case.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::decide::{CRASH_LOOP_RESTARTS, created_by_replica_set_of};
use super::gate::RolloutState;
use super::*;

const DEADLINE: i64 = 600;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + seconds).expect("valid time")
}

fn template(name: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        }),
        spec: None,
    }
}

/// A Deployment on `revision` with `updated` of `desired` pods on it, `available` available.
fn deployment(revision: &str, desired: i32, updated: i32, available: i32) -> RolloutState {
    RolloutState {
        desired,
        replicas: desired.max(updated + (desired - available).max(0)),
        ready: available,
        updated,
        available,
        observed: true,
        revision: Some(revision.to_string()),
    }
}

fn pod(name: &str, revision: &str) -> PodView {
    PodView {
        name: name.to_string(),
        revision: Some(revision.to_string()),
        ip: Some("10.0.0.1".to_string()),
        ..PodView::default()
    }
}

fn good_record() -> RolloutRecord {
    RolloutRecord {
        update_revision: Some("r1".into()),
        update_generation: Some(1),
        last_good_revision: Some("r1".into()),
        last_good_template: Some(template("r1")),
        ..RolloutRecord::default()
    }
}

struct Case<'a> {
    generation: i64,
    desired: &'a str,
    record: RolloutRecord,
    deployment: Option<RolloutState>,
    pods: Vec<PodView>,
    paused: bool,
    auto_rollback: bool,
    now: Timestamp,
}

impl Case<'_> {
    fn new(desired: &str) -> Case<'_> {
        Case {
            generation: 2,
            desired,
            record: good_record(),
            deployment: None,
            pods: Vec::new(),
            paused: false,
            auto_rollback: true,
            now: at(0),
        }
    }

    fn decide(&self) -> Decision {
        let desired_template = template(self.desired);
        decide(&RolloutInput {
            generation: self.generation,
            desired_revision: self.desired,
            desired_template: &desired_template,
            desired_spec: &serde_json::json!({ "revision": self.desired }),
            record: &self.record,
            deployment: self.deployment.as_ref(),
            pods: &self.pods,
            paused: self.paused,
            auto_rollback: self.auto_rollback,
            progress_deadline_seconds: DEADLINE,
            now: self.now,
        })
    }
}

#[test]
fn a_new_revision_starts_an_attempt_and_progresses() {
    let mut case = Case::new("r2");
    case.deployment = Some(deployment("r1", 2, 2, 2));
    let decision = case.decide();
    assert_eq!(decision.template, TemplateChoice::Desired);
    assert!(
        matches!(decision.phase, Phase::Progressing(_)),
        "{decision:?}"
    );
    assert_eq!(decision.record.update_revision.as_deref(), Some("r2"));
    assert_eq!(
        decision.record.started_at,
        Some(Time(at(0))),
        "the deadline clock starts"
    );
    assert_eq!(
        decision.record.last_good_revision.as_deref(),
        Some("r1"),
        "kept until r2 proves itself"
    );
    assert_eq!(decision.finished, None);
}

#[test]
fn a_complete_rollout_becomes_the_last_good_revision() {
    let mut case = Case::new("r2");
    case.record.update_revision = Some("r2".into());
    case.record.update_generation = Some(2);
    case.record.started_at = Some(Time(at(0)));
    case.deployment = Some(deployment("r2", 2, 2, 2));
    case.now = at(42);
    let decision = case.decide();
    assert_eq!(decision.phase, Phase::Complete);
    assert_eq!(decision.record.last_good_revision.as_deref(), Some("r2"));
    assert_eq!(
        decision.record.last_good_template,
        Some(template("r2")),
        "the applied template is kept for rollbacks"
    );
    assert_eq!(
        decision.record.last_good_spec,
        Some(serde_json::json!({ "revision": "r2" })),
        "and the spec that asked for it"
    );
    assert_eq!(
        decision.record.previous_good_revision.as_deref(),
        Some("r1"),
        "the good revision before it is kept for rollout undo"
    );
    assert_eq!(decision.record.started_at, None);
    assert_eq!(
        decision.finished,
        Some(Finished::Succeeded {
            revision: "r2".into(),
            seconds: Some(42.0)
        })
    );
    // The next reconcile finds nothing to do.
    case.record = decision.record.clone();
    let again = case.decide();
    assert_eq!(again.record, decision.record, "steady state writes nothing");
    assert_eq!(again.finished, None);
    assert_eq!(again.phase, Phase::Complete);
}

#[test]
fn a_partly_rolled_deployment_is_not_complete() {
    let cases = [
        ("old pods still running", deployment("r2", 2, 1, 2)),
        ("new pods not available", deployment("r2", 2, 2, 1)),
        (
            "live template is the old revision",
            deployment("r1", 2, 2, 2),
        ),
    ];
    for (name, live) in cases {
        let mut case = Case::new("r2");
        case.record.update_revision = Some("r2".into());
        case.record.started_at = Some(Time(at(0)));
        case.deployment = Some(live);
        case.now = at(10);
        let decision = case.decide();
        assert!(
            matches!(decision.phase, Phase::Progressing(_)),
            "{name}: {decision:?}"
        );
        assert_eq!(
            decision.record.last_good_revision.as_deref(),
            Some("r1"),
            "{name}"
        );
    }
}

#[test]
fn a_crash_looping_pod_fails_the_rollout_and_rolls_back() {
    let mut case = Case::new("r2");
    case.record.update_revision = Some("r2".into());
    case.record.started_at = Some(Time(at(0)));
    case.deployment = Some(deployment("r2", 2, 1, 2));
    let mut crashing = pod("docs-r2-a", "r2");
    crashing.restarts = CRASH_LOOP_RESTARTS;
    crashing.container_problem =
        Some("container query: CrashLoopBackOff, last exit code 2: bad flag".into());
    case.pods = vec![pod("docs-r1-a", "r1"), crashing];
    case.now = at(30);
    let decision = case.decide();
    assert_eq!(
        decision.template,
        TemplateChoice::LastGood,
        "returns to the good ReplicaSet"
    );
    let Phase::Failed {
        message,
        rolled_back_to,
    } = &decision.phase
    else {
        panic!("expected a failure: {decision:?}");
    };
    assert!(
        message.contains("docs-r2-a") && message.contains("bad flag"),
        "names the pod and why: {message}"
    );
    assert_eq!(rolled_back_to.as_deref(), Some("r1"));
    assert_eq!(decision.record.failed_revision.as_deref(), Some("r2"));
    assert_eq!(decision.record.failed_generation, Some(2));
    assert!(
        matches!(decision.finished, Some(Finished::Failed { seconds: Some(s), .. }) if s == 30.0)
    );
}

#[test]
fn a_crash_looping_pod_of_another_revision_does_not_fail_the_rollout() {
    let mut case = Case::new("r2");
    case.record.update_revision = Some("r2".into());
    case.record.started_at = Some(Time(at(0)));
    let mut old = pod("docs-r1-a", "r1");
    old.restarts = 9;
    case.pods = vec![old];
    assert!(matches!(case.decide().phase, Phase::Progressing(_)));
}

#[test]
fn the_deadline_fails_a_rollout_whose_pods_never_pass_the_smoke_check() {
    let mut case = Case::new("r2");
    case.record.update_revision = Some("r2".into());
    case.record.started_at = Some(Time(at(0)));
    case.deployment = Some(deployment("r2", 2, 1, 2));
    let mut unhealthy = pod("docs-r2-a", "r2");
    unhealthy.containers_ready = true;
    unhealthy.smoke_passed = Some(false);
    unhealthy.smoke_message = Some("search was degraded to keyword".into());
    case.pods = vec![unhealthy];

    case.now = at(DEADLINE - 1);
    assert!(
        matches!(case.decide().phase, Phase::Progressing(ref m) if m.contains("degraded")),
        "still within the deadline, and says why it waits"
    );

    case.now = at(DEADLINE + 1);
    let decision = case.decide();
    let Phase::Failed {
        message,
        rolled_back_to,
    } = &decision.phase
    else {
        panic!("expected a failure: {decision:?}");
    };
    assert!(
        message.contains("progressDeadlineSeconds") && message.contains("degraded"),
        "{message}"
    );
    assert_eq!(rolled_back_to.as_deref(), Some("r1"));
}

#[test]
fn a_failed_revision_is_not_retried_for_the_same_generation() {
    let mut case = Case::new("r2");
    case.record.update_revision = Some("r2".into());
    case.record.failed_revision = Some("r2".into());
    case.record.failed_generation = Some(2);
    case.record.failure_message = Some("boom".into());
    case.deployment = Some(deployment("r1", 2, 2, 2));
    case.now = at(5000);
    let decision = case.decide();
    assert_eq!(decision.template, TemplateChoice::LastGood);
    assert_eq!(decision.record, case.record, "nothing new to remember");
    assert_eq!(decision.finished, None, "counted once, when it failed");
    assert_eq!(
        decision.phase,
        Phase::Failed {
            message: "boom".into(),
            rolled_back_to: Some("r1".into())
        }
    );
}

#[test]
fn a_new_generation_starts_a_new_attempt_even_while_failed() {
    // Fix-forward with a new revision, and a retry of the same revision after any spec change.
    for desired in ["r3", "r2"] {
        let mut case = Case::new(desired);
        case.generation = 3;
        case.record.update_revision = Some("r2".into());
        case.record.failed_revision = Some("r2".into());
        case.record.failed_generation = Some(2);
        case.record.failure_message = Some("boom".into());
        case.deployment = Some(deployment("r1", 2, 2, 2));
        case.now = at(100);
        let decision = case.decide();
        assert_eq!(decision.template, TemplateChoice::Desired, "{desired}");
        assert!(
            matches!(decision.phase, Phase::Progressing(_)),
            "{desired}: {decision:?}"
        );
        assert_eq!(decision.record.failed_revision, None, "{desired}");
        assert_eq!(decision.record.update_revision.as_deref(), Some(desired));
        assert_eq!(
            decision.record.started_at,
            Some(Time(at(100))),
            "{desired}: a fresh deadline"
        );
    }
}

#[test]
fn without_auto_rollback_a_failed_rollout_is_only_halted() {
    let mut case = Case::new("r2");
    case.auto_rollback = false;
    case.record.update_revision = Some("r2".into());
    case.record.started_at = Some(Time(at(0)));
    case.now = at(DEADLINE + 1);
    let decision = case.decide();
    assert_eq!(decision.template, TemplateChoice::Desired);
    assert!(matches!(
        decision.phase,
        Phase::Failed {
            rolled_back_to: None,
            ..
        }
    ));
    assert!(matches!(
        decision.finished,
        Some(Finished::Failed {
            rolled_back_to: None,
            ..
        })
    ));
}

#[test]
fn the_first_revision_has_nothing_to_roll_back_to() {
    let mut case = Case::new("r1");
    case.generation = 1;
    case.record = RolloutRecord {
        update_revision: Some("r1".into()),
        update_generation: Some(1),
        started_at: Some(Time(at(0))),
        ..RolloutRecord::default()
    };
    case.now = at(DEADLINE + 1);
    let decision = case.decide();
    assert_eq!(decision.template, TemplateChoice::Desired);
    assert!(matches!(
        decision.phase,
        Phase::Failed {
            rolled_back_to: None,
            ..
        }
    ));
}

#[test]
fn a_paused_rollout_runs_no_deadline_and_restarts_the_clock_on_resume() {
    let mut case = Case::new("r2");
    case.paused = true;
    case.record.update_revision = Some("r2".into());
    case.record.started_at = Some(Time(at(0)));
    case.now = at(DEADLINE * 3);
    let paused = case.decide();
    assert_eq!(paused.phase, Phase::Paused);
    assert_eq!(paused.record.started_at, None);

    case.paused = false;
    case.record = paused.record;
    let resumed = case.decide();
    assert!(matches!(resumed.phase, Phase::Progressing(_)));
    assert_eq!(resumed.record.started_at, Some(Time(at(DEADLINE * 3))));
}

#[test]
fn a_completed_revision_stays_complete_while_pods_come_and_go() {
    let mut case = Case::new("r1");
    case.deployment = Some(deployment("r1", 3, 3, 2));
    case.now = at(DEADLINE * 10);
    let decision = case.decide();
    assert_eq!(
        decision.phase,
        Phase::Complete,
        "a scale-up is not a new rollout"
    );
    assert_eq!(decision.record, case.record);
}

#[test]
fn pods_need_a_smoke_check_once_their_containers_are_ready() {
    let ready = PodView {
        containers_ready: true,
        ..pod("a", "r2")
    };
    let cases = [
        ("containers ready, not checked", ready.clone(), true),
        (
            "failed before: retried",
            PodView {
                smoke_passed: Some(false),
                ..ready.clone()
            },
            true,
        ),
        (
            "passed",
            PodView {
                smoke_passed: Some(true),
                ..ready.clone()
            },
            false,
        ),
        (
            "containers not ready",
            PodView {
                containers_ready: false,
                ..ready.clone()
            },
            false,
        ),
        (
            "no IP yet",
            PodView {
                ip: None,
                ..ready.clone()
            },
            false,
        ),
        (
            "terminating",
            PodView {
                terminating: true,
                ..ready.clone()
            },
            false,
        ),
    ];
    for (name, pod, expected) in cases {
        assert_eq!(pod.needs_smoke_check(), expected, "{name}");
    }
}

#[test]
fn pod_views_read_the_gate_restarts_and_container_problems() {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "docs-abc", "labels": {"kbeast.io/revision": "r2"}},
        "status": {
            "podIP": "10.1.2.3",
            "conditions": [
                {"type": "ContainersReady", "status": "False"},
                {"type": "kbeast.io/smoke-passed", "status": "False", "message": "no answer"}
            ],
            "containerStatuses": [{
                "name": "query", "image": "q", "imageID": "", "ready": false, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                "lastState": {"terminated": {"exitCode": 2, "reason": "Error", "message": "unknown flag --x\n"}}
            }]
        }
    }))
    .expect("pod parses");
    let view = PodView::of(&pod);
    assert_eq!(view.revision.as_deref(), Some("r2"));
    assert_eq!(view.ip.as_deref(), Some("10.1.2.3"));
    assert_eq!(view.smoke_passed, Some(false));
    assert_eq!(view.smoke_message.as_deref(), Some("no answer"));
    assert_eq!(view.restarts, 4);
    assert!(view.crash_looping());
    assert_eq!(
        view.container_problem.as_deref(),
        Some(
            "container query: CrashLoopBackOff (back-off 40s), last exit code 2: unknown flag --x"
        )
    );
}

#[test]
fn an_openai_project_expects_the_model_id_the_query_server_reports() {
    let mut project = crate::facts::test_support::sample("minimal.yaml");
    project.spec.embedding.provider = kbeast_api::EmbeddingProvider::Openai;
    project.spec.embedding.model = Some("e5-small".into());
    project.spec.embedding.dimension = 768;
    let expected = smoke_expectation(&project, None);
    // kbeast-query's openai embedder names itself `openai:<model>` (crates/query/src/embed).
    assert_eq!(expected.model, "openai:e5-small");
    assert_eq!(expected.dimension, 768);
}

#[test]
fn a_hash_project_expects_the_hash_model_id() {
    let mut project = crate::facts::test_support::sample("minimal.yaml");
    project.spec.embedding.provider = kbeast_api::EmbeddingProvider::Hash;
    assert_eq!(smoke_expectation(&project, None).model, "hash-v1");
}

#[test]
fn the_smoke_key_is_the_first_key_that_may_search() {
    let keys = r#"[{"id": "w", "secret": "kb_w", "scopes": ["write"]},
                   {"id": "r", "secret": "kb_r", "scopes": ["read"]}]"#;
    let project = crate::facts::test_support::sample("minimal.yaml");
    let expected = smoke_expectation(&project, Some(keys));
    assert_eq!(expected.api_key.as_deref(), Some("kb_r"));
    // The sample runs the builtin embedder, which kbeast-query names `minilm-l6-v2`.
    assert_eq!(expected.model, "minilm-l6-v2");
    assert_eq!(expected.dimension, 384);
    assert_eq!(expected.query, BUILT_IN_SMOKE_QUERY);
    assert_eq!(
        smoke_expectation(&project, Some("not a list")).api_key,
        None
    );
    assert_eq!(smoke_expectation(&project, None).api_key, None);
}

#[test]
fn only_pods_of_the_projects_replica_sets_on_the_pod_network_are_gated() {
    let pod = |owner: Value, host_network: bool| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "ownerReferences": [owner]},
            "spec": {"containers": [], "hostNetwork": host_network},
        }))
        .expect("pod parses")
    };
    let replica_set = |name: &str, controller: bool| {
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name, "uid": "u",
               "controller": controller})
    };
    assert!(created_by_replica_set_of(
        &pod(replica_set("docs-5d9f", true), false),
        "docs"
    ));
    for (case, candidate) in [
        ("host network", pod(replica_set("docs-5d9f", true), true)),
        (
            "not the controller",
            pod(replica_set("docs-5d9f", false), false),
        ),
        (
            "another Deployment's",
            pod(replica_set("docsx-5d9f", true), false),
        ),
        (
            "another Deployment's",
            pod(replica_set("other-5d9f", true), false),
        ),
        (
            "a Job's",
            pod(
                json!({"apiVersion": "batch/v1", "kind": "Job", "name": "docs-1", "uid": "u",
                       "controller": true}),
                false,
            ),
        ),
    ] {
        assert!(!created_by_replica_set_of(&candidate, "docs"), "{case}");
    }
    let bare: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}})).expect("pod");
    assert!(!created_by_replica_set_of(&bare, "docs"), "no owner");
}
