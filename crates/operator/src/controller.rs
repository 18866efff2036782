//! Wires the reconciler into kube-runtime Controllers: one per watched namespace (or one for
//! the whole cluster), each owning every child kind through metadata-only watches.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kbeast_api::KnowledgeProject;
use kbeast_api::labels::PROJECT_LABEL;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{debug, warn};

use crate::facts::{names, secret_references};
use crate::reconcile::{Context, error_policy, reconcile};

/// Every (API group, resource) the controllers list and watch. The chart's RBAC is checked
/// against it; keep it in step with `controller_for`.
pub const WATCHED_RESOURCES: &[(&str, &str)] = &[
    ("kbeast.io", "knowledgeprojects"),
    ("apps", "deployments"),
    ("", "services"),
    ("", "serviceaccounts"),
    ("", "configmaps"),
    ("", "persistentvolumeclaims"),
    ("autoscaling", "horizontalpodautoscalers"),
    ("policy", "poddisruptionbudgets"),
    ("networking.k8s.io", "networkpolicies"),
    ("", "secrets"),
    ("", "pods"),
];

/// How long a project's reconcile waits for more events before it starts. Creating a project
/// sets off bursts of them (its children appear, the Deployment and pods report progress); one
/// reconcile per burst instead of one per event cuts the reconciles at scale by a third.
const RECONCILE_DEBOUNCE: Duration = Duration::from_millis(300);

/// Runs the controllers until `shutdown` resolves. `namespaces` empty means all namespaces.
pub async fn run(
    ctx: Arc<Context>,
    namespaces: Vec<String>,
    concurrency: u16,
    shutdown: futures::future::Shared<BoxFuture<'static, ()>>,
) {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    let controllers = scopes
        .into_iter()
        .map(|scope| controller_for(ctx.clone(), scope, concurrency, shutdown.clone()));
    futures::future::join_all(controllers).await;
}

fn api<K>(client: &Client, scope: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match scope {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// What a project's reconcile reacts to: identity, spec (generation), deletion, finalizers,
/// labels and annotations, but not status. Only the operator writes status, and each of its
/// status patches would otherwise trigger one more reconcile that finds nothing to do.
pub fn project_trigger(project: &KnowledgeProject) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = project.meta();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    meta.uid.hash(&mut hasher);
    meta.generation.hash(&mut hasher);
    meta.deletion_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .hash(&mut hasher);
    meta.finalizers.hash(&mut hasher);
    meta.labels.hash(&mut hasher);
    meta.annotations.hash(&mut hasher);
    Some(hasher.finish())
}

async fn controller_for(
    ctx: Arc<Context>,
    scope: Option<String>,
    concurrency: u16,
    shutdown: futures::future::Shared<BoxFuture<'static, ()>>,
) {
    let client = ctx.client.clone();
    // Only our children carry the project label; the watches ignore everything else.
    let children = watcher::Config::default()
        .labels(PROJECT_LABEL)
        .any_semantic();
    // The store holds every project for the whole run; nothing reads their managedFields.
    let (projects, writer) = reflector::store();
    let project_events = watcher(
        api::<KnowledgeProject>(&client, &scope),
        watcher::Config::default().any_semantic(),
    )
    .modify(|project| project.managed_fields_mut().clear())
    .reflect(writer)
    .applied_objects()
    .predicate_filter(project_trigger, PredicateConfig::default());
    let controller = Controller::for_stream(project_events, projects.clone());
    let secret_mapper = move |secret: PartialObjectMeta<Secret>| {
        let namespace = secret.namespace();
        let name = secret.name_any();
        projects
            .state()
            .into_iter()
            .filter(|p| p.namespace() == namespace)
            .filter(|p| {
                names::api_keys_secret(p) == name
                    || secret_references(p).iter().any(|r| r.name == name)
            })
            .map(|p| ObjectRef::from_obj(&*p))
            .collect::<Vec<_>>()
    };

    macro_rules! owned {
        ($controller:expr, $kind:ty) => {
            $controller.owns_stream(
                watcher(
                    api::<PartialObjectMeta<$kind>>(&client, &scope),
                    children.clone(),
                )
                .default_backoff()
                .touched_objects(),
            )
        };
    }
    let controller = owned!(controller, Deployment);
    let controller = owned!(controller, Service);
    let controller = owned!(controller, ServiceAccount);
    let controller = owned!(controller, ConfigMap);
    let controller = owned!(controller, PersistentVolumeClaim);
    let controller = owned!(controller, HorizontalPodAutoscaler);
    let controller = owned!(controller, PodDisruptionBudget);
    let controller = owned!(controller, NetworkPolicy);
    controller
        .watches_stream(
            watcher(
                api::<PartialObjectMeta<Secret>>(&client, &scope),
                watcher::Config::default().any_semantic(),
            )
            .default_backoff()
            .touched_objects(),
            secret_mapper,
        )
        // Query pods are owned by ReplicaSets; their project label leads back to the project,
        // so that readiness and crashes of new pods drive the health gate at once.
        .watches_stream(
            watcher(
                api::<PartialObjectMeta<Pod>>(&client, &scope),
                children.clone(),
            )
            .default_backoff()
            .touched_objects(),
            |pod: PartialObjectMeta<Pod>| {
                let project = pod.labels().get(PROJECT_LABEL)?;
                Some(ObjectRef::<KnowledgeProject>::new(project).within(&pod.namespace()?))
            },
        )
        .with_config(
            Config::default()
                .concurrency(concurrency)
                .debounce(RECONCILE_DEBOUNCE),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(project = %object.name, "reconciled"),
                Err(error) => warn!("controller: {error}"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::project_trigger;
    use kbeast_api::KnowledgeProject;
    use serde_json::json;

    fn project(change: serde_json::Value) -> KnowledgeProject {
        let mut base = json!({
            "apiVersion": "kbeast.io/v1alpha1", "kind": "KnowledgeProject",
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "generation": 1,
                "resourceVersion": "10", "finalizers": ["kbeast.io/cleanup"]},
            "spec": {"storage": {"ephemeral": {}}},
        });
        json_patch(&mut base, change);
        serde_json::from_value(base).expect("a valid project")
    }

    fn json_patch(base: &mut serde_json::Value, change: serde_json::Value) {
        match (base, change) {
            (serde_json::Value::Object(b), serde_json::Value::Object(c)) => {
                for (k, v) in c {
                    json_patch(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (b, c) => *b = c,
        }
    }

    #[test]
    fn status_only_changes_do_not_trigger_a_reconcile() {
        let before = project_trigger(&project(json!({})));
        let status_patched = project(json!({
            "metadata": {"resourceVersion": "11"},
            "status": {"observedGeneration": 1, "conditions": []},
        }));
        assert_eq!(project_trigger(&status_patched), before);
    }

    #[test]
    fn spec_deletion_finalizer_and_metadata_changes_trigger_a_reconcile() {
        let before = project_trigger(&project(json!({})));
        for (what, change) in [
            ("spec", json!({"metadata": {"generation": 2}})),
            (
                "deletion",
                json!({"metadata": {"deletionTimestamp": "2026-11-23T12:00:00Z"}}),
            ),
            ("finalizers", json!({"metadata": {"finalizers": []}})),
            ("labels", json!({"metadata": {"labels": {"team": "a"}}})),
            (
                "annotations",
                json!({"metadata": {"annotations": {"note": "x"}}}),
            ),
            (
                "a new project of the same name",
                json!({"metadata": {"uid": "u2"}}),
            ),
        ] {
            assert_ne!(project_trigger(&project(change)), before, "{what}");
        }
    }
}
