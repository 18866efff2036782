use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kbeast_api::{KnowledgeProject, VolumeAccessMode};

use super::with_desired_hash;
use crate::facts::{child_meta, names};

/// The data volume, for `storage.volume` only.
pub fn desired_pvc(project: &KnowledgeProject) -> Option<PersistentVolumeClaim> {
    let volume = project.spec.storage.volume.as_ref()?;
    let access_mode = match volume.access_mode {
        VolumeAccessMode::ReadWriteOnce => "ReadWriteOnce",
        VolumeAccessMode::ReadWriteMany => "ReadWriteMany",
    };
    Some(with_desired_hash(PersistentVolumeClaim {
        metadata: child_meta(project, names::pvc(project)),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec![access_mode.to_string()]),
            storage_class_name: volume.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(volume.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }))
}
