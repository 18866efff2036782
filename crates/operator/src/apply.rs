//! Server-side apply of the desired children, in the order `DesiredChildren::in_apply_order`
//! gives, sending nothing for children that are already in sync; an HPA that is no longer
//! wanted is deleted first.

use std::fmt;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Secret;
use kbeast_api::{FIELD_MANAGER, REPLICAS_HANDOVER_MANAGER};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::build::{DesiredChild, DesiredChildren};
use crate::error::{Error, Result, api_code};
use crate::observe::LiveChildren;
use crate::sync_check::is_subset;
use crate::validate::ValidProject;

/// What was done to one child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeAction {
    /// Server-side applied.
    Applied,
    /// Created (the API-keys Secret, which is never overwritten).
    Created,
    Deleted,
    /// `spec.replicas` passed to the handover field manager (see `hand_over_replicas`).
    ReplicasHandedOver,
}

/// One write of a child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub kind: &'static str,
    pub name: String,
    pub action: ChangeAction,
}

impl Change {
    pub fn new(kind: &'static str, name: impl Into<String>, action: ChangeAction) -> Self {
        Self {
            kind,
            name: name.into(),
            action,
        }
    }
}

/// `Kind/name`, with a suffix for anything but a plain write, as in the `Applied` Event.
impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let suffix = match self.action {
            ChangeAction::Applied | ChangeAction::Created => "",
            ChangeAction::Deleted => "-deleted",
            ChangeAction::ReplicasHandedOver => "-replicas-handover",
        };
        write!(f, "{}/{}{suffix}", self.kind, self.name)
    }
}

/// What the apply step changed, and the Deployment as it is now.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    /// Live Deployment after apply (the apply response, or the observed one when unchanged).
    pub deployment: Option<Deployment>,
    /// Every child written or deleted, in order.
    pub changes: Vec<Change>,
}

/// Applies every desired child that is not in sync, creates the API-keys Secret if it is
/// missing, and deletes the HPA when autoscaling is off.
pub async fn apply_children(
    client: &Client,
    valid: ValidProject<'_>,
    desired: DesiredChildren,
    new_api_keys_secret: Option<Secret>,
    live: &LiveChildren,
) -> Result<Applied> {
    let namespace = valid.namespace;
    let mut applied = Applied {
        deployment: live.deployment.clone(),
        changes: Vec::new(),
    };

    // Remove the HPA before the Deployment takes `replicas` back, so the two never race.
    if desired.hpa.is_none()
        && let Some(live_hpa) = &live.hpa
    {
        delete(client, namespace, live_hpa, &mut applied).await?;
    }

    // A new autoscaled Deployment starts at the HPA's minimum, not the API default of 1.
    let initial_replicas = desired
        .hpa
        .as_ref()
        .and_then(|hpa| hpa.spec.as_ref())
        .and_then(|spec| spec.min_replicas);
    for child in desired.in_apply_order(new_api_keys_secret) {
        let changes = &mut applied.changes;
        match child {
            DesiredChild::ServiceAccount(o) => {
                apply_if_changed(
                    client,
                    namespace,
                    &o,
                    live.service_account.as_ref(),
                    changes,
                )
                .await?
            }
            DesiredChild::NetworkPolicy(o) => {
                apply_if_changed(client, namespace, &o, live.network_policy.as_ref(), changes)
                    .await?
            }
            DesiredChild::ConfigMap(o) => {
                apply_if_changed(client, namespace, &o, live.config_map.as_ref(), changes).await?
            }
            DesiredChild::ApiKeysSecret(o) => create_secret(client, namespace, &o, changes).await?,
            DesiredChild::Pvc(o) => {
                apply_if_changed(client, namespace, &o, live.pvc.as_ref(), changes).await?
            }
            DesiredChild::Service(o) => {
                apply_if_changed(client, namespace, &o, live.service.as_ref(), changes).await?
            }
            DesiredChild::Deployment(o) => {
                if let Some(applied_deployment) = apply_deployment(
                    client,
                    namespace,
                    o,
                    live.deployment.as_ref(),
                    initial_replicas,
                    changes,
                )
                .await?
                {
                    applied.deployment = Some(applied_deployment);
                }
            }
            DesiredChild::Pdb(o) => {
                apply_if_changed(client, namespace, &o, live.pdb.as_ref(), changes).await?
            }
            DesiredChild::Hpa(o) => {
                apply_if_changed(client, namespace, &o, live.hpa.as_ref(), changes).await?
            }
        }
    }
    Ok(applied)
}

/// Applies the Deployment unless it is in sync, handing `replicas` over to the HPA first when
/// autoscaling was just turned on. A Deployment created for an HPA gets `initial_replicas`
/// (the HPA's minimum) under the handover manager, so it never runs below the minimum while
/// the HPA has not synced yet. Returns the applied object, or None when nothing was sent.
async fn apply_deployment(
    client: &Client,
    namespace: &str,
    deployment: Deployment,
    live: Option<&Deployment>,
    initial_replicas: Option<i32>,
    changes: &mut Vec<Change>,
) -> Result<Option<Deployment>> {
    let leaves_replicas = deployment
        .spec
        .as_ref()
        .is_some_and(|s| s.replicas.is_none());
    let handing_over =
        leaves_replicas && live.is_some_and(|d| manager_owns_replicas(d, FIELD_MANAGER));
    if handing_over && let Some(live) = live {
        let replicas = live.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        hand_over_replicas(client, namespace, &live.name_any(), replicas, changes).await?;
    }
    if !handing_over && live.is_some_and(|l| in_sync(&deployment, l)) {
        return Ok(None);
    }
    let mut applied = server_side_apply(client, namespace, &deployment, changes).await?;
    if leaves_replicas
        && live.is_none()
        && let Some(replicas) = initial_replicas.filter(|n| *n != 1)
    {
        applied =
            hand_over_replicas(client, namespace, &applied.name_any(), replicas, changes).await?;
    }
    Ok(Some(applied))
}

/// Whether the live object already has every field of the desired one.
pub fn in_sync<K: Serialize>(desired: &K, live: &K) -> bool {
    match (serde_json::to_value(desired), serde_json::to_value(live)) {
        (Ok(desired), Ok(live)) => is_subset(&desired, &live),
        _ => false,
    }
}

/// The API kind of a child, for errors and change records.
fn kind_of<K: k8s_openapi::Resource>() -> &'static str {
    K::KIND
}

async fn apply_if_changed<K>(
    client: &Client,
    namespace: &str,
    desired: &K,
    live: Option<&K>,
    changes: &mut Vec<Change>,
) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    if live.is_some_and(|live| in_sync(desired, live)) {
        return Ok(());
    }
    server_side_apply(client, namespace, desired, changes).await?;
    Ok(())
}

async fn server_side_apply<K>(
    client: &Client,
    namespace: &str,
    desired: &K,
    changes: &mut Vec<Change>,
) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = desired.name_any();
    let result = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(desired),
        )
        .await
        .map_err(|source| Error::Apply {
            kind: kind_of::<K>(),
            name: name.clone(),
            source,
        })?;
    changes.push(Change::new(kind_of::<K>(), name, ChangeAction::Applied));
    Ok(result)
}

async fn create_secret(
    client: &Client,
    namespace: &str,
    secret: &Secret,
    changes: &mut Vec<Change>,
) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let name = secret.name_any();
    match api.create(&PostParams::default(), secret).await {
        Ok(_) => {
            changes.push(Change::new("Secret", name, ChangeAction::Created));
            Ok(())
        }
        // Someone created it since we looked: never overwrite; the next reconcile checks its owner.
        Err(source) if api_code(&source) == Some(409) => Ok(()),
        Err(source) => Err(Error::Create {
            kind: "Secret",
            name,
            source,
        }),
    }
}

async fn delete(
    client: &Client,
    namespace: &str,
    hpa: &HorizontalPodAutoscaler,
    applied: &mut Applied,
) -> Result<()> {
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), namespace);
    let name = hpa.name_any();
    let kind = kind_of::<HorizontalPodAutoscaler>();
    match api.delete(&name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(source) if api_code(&source) == Some(404) => {}
        Err(source) => return Err(Error::Delete { kind, name, source }),
    }
    applied
        .changes
        .push(Change::new(kind, name, ChangeAction::Deleted));
    Ok(())
}

/// Whether `manager`'s apply owns `spec.replicas` of the Deployment.
pub fn manager_owns_replicas(deployment: &Deployment, manager: &str) -> bool {
    deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry.manager.as_deref() == Some(manager)
                && entry.operation.as_deref() == Some("Apply")
                && entry.subresource.as_deref().unwrap_or("").is_empty()
        })
        .any(|entry| {
            entry
                .fields_v1
                .as_ref()
                .and_then(|fields| fields.0.get("f:spec"))
                .and_then(|spec| spec.get("f:replicas"))
                .is_some()
        })
}

/// Passes `spec.replicas` (at its live value) to a second field manager before our own apply
/// drops it. Were we its sole owner, the API server would reset it to 1 the moment we stopped
/// applying it (see k8s-golden/ssa-deployment.json), and the pod count would drop. The HPA
/// takes the field over from the handover manager the first time it scales.
async fn hand_over_replicas(
    client: &Client,
    namespace: &str,
    name: &str,
    replicas: i32,
    changes: &mut Vec<Change>,
) -> Result<Deployment> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let name = name.to_string();
    let body = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas},
    });
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(REPLICAS_HANDOVER_MANAGER),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|source| Error::Apply {
            kind: "Deployment",
            name: name.clone(),
            source,
        })?;
    changes.push(Change::new(
        "Deployment",
        name,
        ChangeAction::ReplicasHandedOver,
    ));
    Ok(applied)
}
