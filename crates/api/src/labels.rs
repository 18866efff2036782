//! Label and annotation keys set on every child object.

/// `app.kubernetes.io/name` of query pods and their children.
pub const APP_NAME: &str = "kbeast-query";
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";
/// Names the owning project; children are found by it.
pub const PROJECT_LABEL: &str = "kbeast.io/project";

/// Hash of the desired object, so an unchanged child is never re-applied.
pub const DESIRED_HASH_ANNOTATION: &str = "kbeast.io/desired-hash";
/// Hash of the query configuration and the Secrets read as environment, on the pod template: a
/// change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "kbeast.io/config-hash";
/// Hash of the pod template, on the Deployment: names the revision being rolled out.
pub const REVISION_ANNOTATION: &str = "kbeast.io/revision";
/// The same revision as a label on query pods, so the pods of one revision can be selected.
pub const POD_REVISION_LABEL: &str = "kbeast.io/revision";
/// Readiness gate of query pods: True once the operator's smoke check passed on the pod.
pub const SMOKE_PASSED_CONDITION: &str = "kbeast.io/smoke-passed";
/// On a purge Job: the uid of the project whose data it deletes. The Job has no owner
/// reference (the garbage collector would delete it with the project it purges for).
pub const PURGE_FOR_UID_ANNOTATION: &str = "kbeast.io/purge-for-uid";
