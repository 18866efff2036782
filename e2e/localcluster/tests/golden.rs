//! Golden conformance: each recorded scenario replayed step by step against the emulator.
//! Steps that cannot match yet are listed with the reason (and in docs/testing.md).

mod common;

use common::replay;

#[tokio::test]
async fn configmap_crud() {
    replay("configmap-crud", &[], false).await;
}

#[tokio::test]
async fn ssa_configmap() {
    replay("ssa-configmap", &[], false).await;
}

#[tokio::test]
async fn ssa_deployment() {
    replay("ssa-deployment", &[], false).await;
}

#[tokio::test]
async fn generation() {
    replay("generation", &[], false).await;
}

#[tokio::test]
async fn status_subresource() {
    replay("status-subresource", &[], true).await;
}

#[tokio::test]
async fn crd() {
    replay("crd", &[], false).await;
}

#[tokio::test]
async fn finalizers() {
    replay("finalizers", &[], true).await;
}

#[tokio::test]
async fn gc() {
    replay("gc", &[], false).await;
}

#[tokio::test]
async fn watch() {
    replay("watch", &[], true).await;
}

#[tokio::test]
async fn lease() {
    replay("lease", &[], false).await;
}

#[tokio::test]
async fn errors() {
    replay("errors", &[], false).await;
}
