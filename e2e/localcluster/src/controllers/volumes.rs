//! A volume binder standing in for a provisioner: every pending PVC is bound at once to a
//! volume named after it, with the requested capacity.

use serde_json::json;

use super::{MANAGER, Scope, is_terminating, resource, timestamp, uid};
use crate::api::State;
use crate::system::write_as;

pub fn reconcile(state: &mut State, now: jiff::Timestamp, scope: &Scope) {
    let Some(rt) = resource(state, "", "v1", "persistentvolumeclaims") else {
        return;
    };
    let now_text = timestamp(now);
    for pvc in scope.touched_where(state, &rt, |pvc| {
        !is_terminating(pvc) && pvc["status"]["phase"] != "Bound"
    }) {
        let mut bound = super::working_copy(&pvc);
        let volume = format!("pvc-{}", uid(&pvc));
        if bound["spec"]["volumeName"].is_null() {
            bound["spec"]["volumeName"] = json!(volume);
        }
        bound["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] = json!("yes");
        bound["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"] = json!("yes");
        bound["status"] = json!({
            "phase": "Bound",
            "accessModes": pvc["spec"]["accessModes"],
            "capacity": {"storage": pvc["spec"]["resources"]["requests"]["storage"]},
        });
        write_as(state, &rt, Some(&pvc), bound, MANAGER, None, &now_text);
    }
}
