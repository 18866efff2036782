//! In-memory Kubernetes API server emulator for kbeast end-to-end tests.
//!
//! Start one with [`LocalCluster::start`]; see `docs/testing.md` for what it emulates.

// `ApiError` carries a Kubernetes Status body as a JSON value. It outgrows clippy's size limit
// once the workspace enables serde_json's `preserve_order` (through lancedb); errors are the
// cold path of a test server, so boxing them buys nothing.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod cluster;
pub mod controllers;
pub mod conversion;
pub mod crd_schema;
pub mod defaults;
pub mod delete;
pub mod discovery;
pub mod error;
pub mod fault_proxy;
pub mod faults;
pub mod fieldset;
pub mod gc;
pub mod kubelet;
pub mod patch;
pub mod persistence;
pub mod portforward;
pub mod registry;
pub mod request_log;
pub mod scale;
pub mod schema;
pub mod selectors;
pub mod ssa;
pub mod store;
pub mod system;
pub mod table;
pub mod validation;
pub mod watch;
pub mod write;

pub use cluster::{LocalCluster, Options};
pub use controllers::ControllerSet;
pub use error::{ApiError, Error};
pub use fault_proxy::FaultProxy;
pub use faults::{Fault, FaultAction};
pub use kubelet::KubeletOptions;
pub use kubelet::agent::{NodeAgent, NodeAgentOptions};
pub use request_log::{RequestFilter, RequestRecord};
