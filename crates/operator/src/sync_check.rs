//! Decides whether a live child already matches what we would apply. Pure.
//!
//! Server-side apply of an unchanged object is a no-op on the server but still a write request;
//! a converged project must send none. A child is in sync when every field we set has the same
//! value live. Fields we stopped setting are caught by the `kbeast.io/desired-hash` annotation,
//! which is one of the fields we set.

use kbeast_api::quantity::parse_quantity;
use serde_json::Value;

/// Whether every field of `desired` has the same value in `live`.
///
/// Empty values (null, "", false, {}, []) match an absent field, because the API server omits
/// them when it stores an object. Two strings that are the same quantity ("0.5" and "500m")
/// match, because the API server canonicalises quantities.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(want), Value::Object(have)) => {
            want.iter().all(|(key, value)| match have.get(key) {
                Some(live_value) => is_subset(value, live_value),
                None => is_empty(value),
            })
        }
        (Value::Array(want), Value::Array(have)) => {
            want.len() == have.len() && want.iter().zip(have).all(|(w, h)| is_subset(w, h))
        }
        (Value::String(want), Value::String(have)) => want == have || same_quantity(want, have),
        (want, Value::Null) => is_empty(want),
        (want, have) => want == have,
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_empty),
        Value::Number(_) | Value::Bool(true) => false,
    }
}

fn same_quantity(a: &str, b: &str) -> bool {
    match (parse_quantity(a), parse_quantity(b)) {
        (Ok(x), Ok(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()).max(1.0),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extra_live_fields_and_server_defaults_are_in_sync() {
        let desired =
            json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "q"}]}}}});
        let live = json!({"spec": {"replicas": 2, "revisionHistoryLimit": 10,
            "template": {"spec": {"containers": [{"name": "q", "imagePullPolicy": "IfNotPresent"}]}}},
            "status": {"replicas": 2}});
        assert!(is_subset(&desired, &live));
    }

    #[test]
    fn a_changed_or_missing_value_is_out_of_sync() {
        let desired = json!({"spec": {"replicas": 3}});
        assert!(!is_subset(&desired, &json!({"spec": {"replicas": 2}})));
        assert!(!is_subset(&desired, &json!({"spec": {}})));
        assert!(!is_subset(&json!({"a": [1, 2]}), &json!({"a": [1]})));
        assert!(!is_subset(&json!({"a": [1]}), &json!({"a": [1, 2]})));
    }

    #[test]
    fn empty_values_match_omitted_fields() {
        let desired = json!({"a": {}, "b": [], "c": null, "d": "", "e": false, "f": {"g": {}}});
        assert!(is_subset(&desired, &json!({})));
        assert!(!is_subset(&json!({"e": true}), &json!({})));
        assert!(!is_subset(&json!({"n": 0}), &json!({})));
    }

    #[test]
    fn canonicalised_quantities_match() {
        assert!(is_subset(&json!({"cpu": "0.5"}), &json!({"cpu": "500m"})));
        assert!(is_subset(
            &json!({"memory": "1024Mi"}),
            &json!({"memory": "1Gi"})
        ));
        assert!(!is_subset(
            &json!({"memory": "1G"}),
            &json!({"memory": "1Gi"})
        ));
        assert!(!is_subset(
            &json!({"image": "q:1.0"}),
            &json!({"image": "q:1"})
        ));
    }
}
