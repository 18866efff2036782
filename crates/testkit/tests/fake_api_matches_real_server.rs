//! The fake API's error bodies are the real API server's (k8s-golden).

use kbeast_testkit::{FakeApi, golden};
use kube::api::Api;
use kube::core::DynamicObject;

#[tokio::test]
async fn not_found_body_is_the_real_servers() {
    let recorded = golden::step("errors", "object-not-found");
    let fake = FakeApi::new();
    let client = fake.client();
    let resource = kube::discovery::ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        plural: "configmaps".into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client, "golden-errors", &resource);
    let error = api
        .get("missing")
        .await
        .expect_err("the object does not exist");
    let kube::Error::Api(status) = error else {
        panic!("expected an API error, got {error:?}");
    };
    let fake_body = serde_json::to_value(&status).expect("Status serialises");
    let real_body = &recorded["response"]["body"];
    for field in ["status", "message", "reason", "code"] {
        assert_eq!(fake_body[field], real_body[field], "field {field}");
    }
    assert_eq!(recorded["response"]["status"], 404);
}
