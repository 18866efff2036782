//! Server-side apply of the desired children, in a fixed order, sending nothing for children
//! that are already in sync; then deletion of children that are no longer wanted.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kbeast_api::{FIELD_MANAGER, KnowledgeProject, REPLICAS_HANDOVER_MANAGER};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::build::DesiredChildren;
use crate::error::{Error, Result};
use crate::observe::LiveChildren;
use crate::sync_check::is_subset;

/// What the apply step changed, and the Deployment as it is now.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    /// Live Deployment after apply (the apply response, or the observed one when unchanged).
    pub deployment: Option<Deployment>,
    /// "Kind/name" of every child written or deleted, in order.
    pub changed: Vec<String>,
}

/// Applies every desired child that is not in sync, creates the API-keys Secret if it is
/// missing, and deletes the HPA when autoscaling is off.
pub async fn apply_children(
    client: &Client,
    project: &KnowledgeProject,
    desired: DesiredChildren,
    new_api_keys_secret: Option<Secret>,
    live: &LiveChildren,
) -> Result<Applied> {
    let namespace = project
        .namespace()
        .ok_or_else(|| Error::MissingNamespace(project.name_any()))?;
    let DesiredChildren {
        service_account,
        network_policy,
        config_map,
        pvc,
        service,
        deployment,
        pdb,
        hpa,
    } = desired;
    let mut applied = Applied::default();

    // Remove the HPA before the Deployment takes `replicas` back, so the two never race.
    if hpa.is_none()
        && let Some(live_hpa) = &live.hpa
    {
        delete(client, &namespace, live_hpa, &mut applied).await?;
    }

    apply_if_changed(
        client,
        &namespace,
        &service_account,
        live.service_account.as_ref(),
        &mut applied,
    )
    .await?;
    apply_if_changed(
        client,
        &namespace,
        &network_policy,
        live.network_policy.as_ref(),
        &mut applied,
    )
    .await?;
    apply_if_changed(
        client,
        &namespace,
        &config_map,
        live.config_map.as_ref(),
        &mut applied,
    )
    .await?;
    if let Some(secret) = new_api_keys_secret {
        create_secret(client, &namespace, &secret, &mut applied).await?;
    }
    if let Some(pvc) = &pvc {
        apply_if_changed(client, &namespace, pvc, live.pvc.as_ref(), &mut applied).await?;
    }
    apply_if_changed(
        client,
        &namespace,
        &service,
        live.service.as_ref(),
        &mut applied,
    )
    .await?;

    let live_deployment = live.deployment.as_ref();
    let handing_over = deployment
        .spec
        .as_ref()
        .is_some_and(|s| s.replicas.is_none())
        && live_deployment.is_some_and(|d| manager_owns_replicas(d, FIELD_MANAGER));
    if handing_over && let Some(live_deployment) = live_deployment {
        hand_over_replicas(client, &namespace, live_deployment, &mut applied).await?;
    }
    let deployment_in_sync =
        !handing_over && live_deployment.is_some_and(|l| in_sync(&deployment, l));
    applied.deployment = if deployment_in_sync {
        live.deployment.clone()
    } else {
        Some(server_side_apply(client, &namespace, &deployment, &mut applied).await?)
    };

    apply_if_changed(client, &namespace, &pdb, live.pdb.as_ref(), &mut applied).await?;
    if let Some(hpa) = &hpa {
        apply_if_changed(client, &namespace, hpa, live.hpa.as_ref(), &mut applied).await?;
    }
    Ok(applied)
}

/// Whether the live object already has every field of the desired one.
pub fn in_sync<K: Serialize>(desired: &K, live: &K) -> bool {
    match (serde_json::to_value(desired), serde_json::to_value(live)) {
        (Ok(desired), Ok(live)) => is_subset(&desired, &live),
        _ => false,
    }
}

async fn apply_if_changed<K>(
    client: &Client,
    namespace: &str,
    desired: &K,
    live: Option<&K>,
    applied: &mut Applied,
) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    if live.is_some_and(|live| in_sync(desired, live)) {
        return Ok(());
    }
    server_side_apply(client, namespace, desired, applied).await?;
    Ok(())
}

async fn server_side_apply<K>(
    client: &Client,
    namespace: &str,
    desired: &K,
    applied: &mut Applied,
) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
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
        .await?;
    applied.changed.push(format!("{}/{name}", K::kind(&())));
    Ok(result)
}

async fn create_secret(
    client: &Client,
    namespace: &str,
    secret: &Secret,
    applied: &mut Applied,
) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api.create(&PostParams::default(), secret).await {
        Ok(_) => {
            applied
                .changed
                .push(format!("Secret/{}", secret.name_any()));
            Ok(())
        }
        // Someone created it since we looked: never overwrite; the next reconcile checks its owner.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

async fn delete<K>(
    client: &Client,
    namespace: &str,
    object: &K,
    applied: &mut Applied,
) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = object.name_any();
    match api.delete(&name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => return Err(error.into()),
    }
    applied
        .changed
        .push(format!("{}/{name}-deleted", K::kind(&())));
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

/// Passes `spec.replicas` to a second field manager at its live value before our own apply
/// drops it. Were we its sole owner, the API server would reset it to 1 the moment we stopped
/// applying it (see k8s-golden/ssa-deployment.json), and the pod count would drop. The HPA
/// takes the field over from the handover manager the first time it scales.
async fn hand_over_replicas(
    client: &Client,
    namespace: &str,
    live: &Deployment,
    applied: &mut Applied,
) -> Result<()> {
    let replicas = live.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let name = live.name_any();
    let body = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas},
    });
    api.patch(
        &name,
        &PatchParams::apply(REPLICAS_HANDOVER_MANAGER),
        &Patch::Apply(&body),
    )
    .await?;
    applied
        .changed
        .push(format!("Deployment/{name}-replicas-handover"));
    Ok(())
}
