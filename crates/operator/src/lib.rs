//! kbeast-operator: reconciles `KnowledgeProject`s into isolated, LanceDB-backed search services.
//!
//! The reconcile pipeline, one module per step: [`observe`] → [`validate`] → [`build`] →
//! [`rollout`] gate → [`apply`] → [`status`], driven by [`reconcile`] and wired up in
//! [`controller`]. [`facts`] holds what every step derives from the spec; [`cleanup`] runs on
//! deletion; [`events`] publishes Events; [`context`] is the state shared by reconciles.

pub mod apply;
pub mod build;
pub mod cleanup;
pub mod context;
pub mod controller;
pub mod error;
pub mod events;
pub mod facts;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod policy;
pub mod reconcile;
pub mod render;
pub mod rollout;
pub mod settings;
pub mod spec_problem;
pub mod status;
pub mod sync_check;
pub mod telemetry;
pub mod validate;
