//! Test support shared by kbeast's crates: a scripted in-memory Kubernetes API behind a real
//! `kube::Client`, and access to the recorded real-server exchanges in `shared/k8s-golden/`.

pub mod fake_api;
pub mod golden;

pub use fake_api::{Failure, FakeApi, RecordedRequest};
