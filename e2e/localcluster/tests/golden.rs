//! Golden conformance: each recorded scenario replayed step by step against the emulator.
//! Steps that cannot match yet are listed with the reason (and in docs/testing.md); a
//! listed step still runs, only its comparison may differ.

mod common;

use common::replay;

const NO_AUTH: &str = "authentication/authorization (tokens, RBAC, 401/403, TokenRequest, self reviews) is not emulated: every request is cluster-admin";
const NO_AGGREGATED: &str =
    "aggregated discovery (apidiscovery.k8s.io/v2) and Table output are not emulated";
const SERVER_ADDRESS: &str = "serverAddressByClientCIDRs carries the emulator's own address";
const GO_ERROR_TEXT: &str = "Go decoder/parser error text is not reproduced verbatim";

#[tokio::test]
async fn configmap_crud() {
    replay("configmap-crud", &[], false).await;
}

#[tokio::test]
async fn ssa_configmap() {
    replay(
        "ssa-configmap",
        &[("apply-invalid-yaml", GO_ERROR_TEXT)],
        false,
    )
    .await;
}

#[tokio::test]
async fn ssa_deployment() {
    let before_first_apply = "the synthetic 'before-first-apply' owner of the scale subresource is not emulated (apply on /scale does not conflict)";
    let scale_time =
        "managedFields of an apply through /scale carry a time here; the real server omits it";
    replay(
        "ssa-deployment",
        &[
            ("apply-hpa-like-scale-subresource", before_first_apply),
            ("get-after-scale-apply", scale_time),
            ("apply-op-replicas-conflict", scale_time),
            ("apply-x-add-env-to-sidecar", scale_time),
            ("apply-op-again-original-without-replicas", scale_time),
            ("apply-op-remove-env", scale_time),
            ("strategic-merge-patch-env", scale_time),
            ("merge-patch-replaces-list", scale_time),
            ("get-final", scale_time),
        ],
        false,
    )
    .await;
}

#[tokio::test]
async fn generation() {
    let status_fields = "Deployment /status writes: recorded managedFields differ (status subresource ownership of a Deployment is not reproduced exactly)";
    replay(
        "generation",
        &[
            ("status-patch", status_fields),
            ("status-patch-tries-spec", status_fields),
            ("main-patch-tries-status", status_fields),
            ("get-before-put", status_fields),
            ("put-unchanged", status_fields),
        ],
        false,
    )
    .await;
}

#[tokio::test]
async fn status_subresource() {
    replay("status-subresource", &[], true).await;
}

#[tokio::test]
async fn crd() {
    replay(
        "crd",
        &[

            ("discovery-aggregated-apis-filtered", NO_AGGREGATED),
            ("openapi-v3-crd-group", "OpenAPI documents are not generated for CRD groups"),
            ("create-invalid-minimum-minlength", "the order of OpenAPI validation causes follows Go map iteration and is not reproduced"),
            ("list-as-table", NO_AGGREGATED),
        ],
        false,
    )
    .await;
}

#[tokio::test]
async fn finalizers() {
    replay("finalizers", &[], true).await;
}

#[tokio::test]
async fn gc() {
    replay(
        "gc",
        &[(
            "default-delete-owner-no-policy",
            "the golden's default-policy owner was created outside the recorded steps",
        )],
        false,
    )
    .await;
}

#[tokio::test]
async fn watch() {
    replay(
        "watch",
        &[
            (
                "list-rv-future",
                "a future resourceVersion answers 504 at once instead of waiting ~3 s first",
            ),
            (
                "watch-deprecated-path",
                "the recorded body is the raw event stream text; compared as events elsewhere",
            ),
        ],
        true,
    )
    .await;
}

#[tokio::test]
async fn lease() {
    replay(
        "lease",
        &[(
            "renew-time-low-precision",
            "the 422 message embeds the patched object in Go field order, which is not reproduced",
        )],
        false,
    )
    .await;
}

#[tokio::test]
async fn errors() {
    replay(
        "errors",
        &[
            ("token-request", NO_AUTH),
            ("selfsubjectreview-as-sa", NO_AUTH),
            ("forbidden-list-as-sa", NO_AUTH),
            ("forbidden-get-as-sa", NO_AUTH),
            ("forbidden-create-as-sa", NO_AUTH),
            ("forbidden-cluster-scoped-as-sa", NO_AUTH),
            ("forbidden-unknown-resource-as-sa", NO_AUTH),
            ("selfsubjectaccessreview-as-sa", NO_AUTH),
            ("unauthorized-bad-token", NO_AUTH),
            ("anonymous-forbidden", NO_AUTH),
            ("discovery-allowed-as-sa", SERVER_ADDRESS),
            ("unknown-version", "an unknown version of a known group answers text/plain 404 instead of a JSON Status"),
            ("unsupported-media-type-patch", "415 for an unknown patch type uses the create-style message"),
            ("not-acceptable", "406 message text differs"),
            ("precondition-failed-delete", "the message embeds the uid of kube-root-ca.crt, which the recording never returned (cannot be mapped)"),
        ],
        false,
    )
    .await;
}

#[tokio::test]
async fn discovery() {
    replay(
        "discovery",
        &[
            ("api", SERVER_ADDRESS),
            ("apis", "autoscaling/v1 (HPA conversion) is not served, so the autoscaling group lists only v2"),
        ],
        false,
    )
    .await;
}
