//! kbeast-operator: reconciles `KnowledgeProject`s into isolated, LanceDB-backed search services.
//!
//! The reconcile pipeline, one module per step: [`observe`] → [`validate`] → [`build`] →
//! [`apply`] → [`status`], driven by [`reconcile`] and wired up in [`controller`]. [`rollout`]
//! gates each new pod-template revision on smoke checks of its pods.

pub mod apply;
pub mod build;
pub mod controller;
pub mod error;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod reconcile;
pub mod render;
pub mod rollout;
pub mod settings;
pub mod status;
pub mod sync_check;
pub mod telemetry;
pub mod validate;
