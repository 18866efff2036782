//! The `KnowledgeProject` API (`kbeast.io/v1alpha1`): types, defaults, and the names
//! (labels, annotations, condition types and reasons) that the operator and tools share.
//!
//! This crate does no I/O.

pub mod conditions;
pub mod labels;
pub mod project;
pub mod quantity;
pub mod query_contract;
pub mod rollout_record;

pub use project::*;

/// API group of every kbeast resource.
pub const GROUP: &str = "kbeast.io";
/// Served and stored version.
pub const VERSION: &str = "v1alpha1";
/// Finalizer that runs data clean-up before a project disappears.
pub const FINALIZER: &str = "kbeast.io/cleanup";
/// Field manager of every server-side apply the operator sends.
pub const FIELD_MANAGER: &str = "kbeast-operator";
/// Field manager that holds `spec.replicas` while ownership passes from us to the HPA.
pub const REPLICAS_HANDOVER_MANAGER: &str = "kbeast-operator-replicas-handover";
