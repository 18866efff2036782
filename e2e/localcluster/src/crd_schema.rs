//! Custom resources against their CRD schema: pruning unknown fields, defaulting,
//! OpenAPI validation, list-type uniqueness, the scale paths, and CEL rules.

use serde_json::{Map, Value};

use crate::error::Cause;
use crate::registry::ScalePaths;

/// Removes fields the schema does not know; returns their paths (for warnings / Strict).
pub fn prune(object: &mut Value, schema: &Value) -> Vec<String> {
    let mut unknown = Vec::new();
    if let Value::Object(map) = object {
        let props = schema["properties"].as_object();
        let keys: Vec<String> = map.keys().cloned().collect();
        for key in keys {
            if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            match props.and_then(|p| p.get(&key)) {
                Some(sub) => prune_value(map.get_mut(&key).expect("key"), sub, &key, &mut unknown),
                None => {
                    map.remove(&key);
                    unknown.push(key);
                }
            }
        }
    }
    unknown
}

fn prune_value(value: &mut Value, schema: &Value, path: &str, unknown: &mut Vec<String>) {
    if schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true)
        && schema.get("properties").is_none()
    {
        return;
    }
    match value {
        Value::Object(map) => {
            if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, v) in map.iter_mut() {
                    prune_value(v, additional, &format!("{path}.{k}"), unknown);
                }
                return;
            }
            let Some(props) = schema["properties"].as_object() else {
                return;
            };
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true);
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                match props.get(&key) {
                    Some(sub) => prune_value(
                        map.get_mut(&key).expect("key"),
                        sub,
                        &format!("{path}.{key}"),
                        unknown,
                    ),
                    None if preserve => {}
                    None => {
                        map.remove(&key);
                        unknown.push(format!("{path}.{key}"));
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_value(item, item_schema, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

pub fn apply_defaults(object: &Value, schema: &Value) -> Value {
    let mut defaulted = kube::core::cel::apply_defaults(schema, object);
    // Kubernetes never defaults metadata from a CRD schema.
    if let (Some(meta), Some(obj)) = (object.get("metadata"), defaulted.as_object_mut()) {
        obj.insert("metadata".into(), meta.clone());
    }
    defaulted
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(expected: &str, v: &Value) -> bool {
    match expected {
        "integer" => type_name(v) == "integer",
        "number" => v.is_number(),
        "" => true,
        other => type_name(v) == other,
    }
}

/// Result of validating against the structural schema.
#[derive(Default)]
pub struct SchemaErrors {
    pub causes: Vec<Cause>,
    /// Errors after which Kubernetes does not run CEL rules.
    pub blocks_cel: bool,
}

pub fn validate_schema(object: &Value, schema: &Value) -> SchemaErrors {
    let mut errors = SchemaErrors::default();
    if let (Some(map), Some(props)) = (object.as_object(), schema["properties"].as_object()) {
        let mut keys: Vec<&String> = map
            .keys()
            .filter(|k| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
            .collect();
        keys.sort();
        for key in keys {
            if let Some(sub) = props.get(key) {
                validate_value(&map[key], sub, key, &mut errors);
            }
        }
    }
    errors
}

fn validate_value(value: &Value, schema: &Value, path: &str, errors: &mut SchemaErrors) {
    if value.is_null() && schema["nullable"] == Value::Bool(true) {
        return;
    }
    let expected = schema["type"].as_str().unwrap_or("");
    if !type_matches(expected, value) && schema["x-kubernetes-int-or-string"] != Value::Bool(true) {
        let actual = type_name(value);
        errors.causes.push(Cause::new(
            "FieldValueTypeInvalid",
            path,
            format!("Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""),
        ));
        errors.blocks_cel = true;
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        errors.causes.push(Cause::new(
            "FieldValueNotSupported",
            path,
            format!(
                "Unsupported value: {value}: supported values: {}",
                list.join(", ")
            ),
        ));
        errors.blocks_cel = true;
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema["minimum"].as_f64()
            && n < min
        {
            errors.causes.push(Cause::invalid(
                path,
                &value.to_string(),
                &format!(
                    "{path} in body should be greater than or equal to {}",
                    schema["minimum"]
                ),
            ));
        }
        if let Some(max) = schema["maximum"].as_f64()
            && n > max
        {
            errors.causes.push(Cause::invalid(
                path,
                &value.to_string(),
                &format!(
                    "{path} in body should be less than or equal to {}",
                    schema["maximum"]
                ),
            ));
        }
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if let Some(min) = schema["minLength"].as_u64()
            && len < min
        {
            errors.causes.push(Cause::invalid(
                path,
                &value.to_string(),
                &format!("{path} in body should be at least {min} chars long"),
            ));
        }
        if let Some(max) = schema["maxLength"].as_u64()
            && len > max
        {
            errors.causes.push(Cause::invalid(
                path,
                &value.to_string(),
                &format!("{path} in body should be at most {max} chars long"),
            ));
        }
    }
    match value {
        Value::Object(map) => {
            let props = schema["properties"].as_object();
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for key in keys {
                if let Some(sub) = props.and_then(|p| p.get(key)).or(additional) {
                    validate_value(&map[key], sub, &format!("{path}.{key}"), errors);
                }
            }
            for required in schema["required"].as_array().into_iter().flatten() {
                if let Some(r) = required.as_str()
                    && !map.contains_key(r)
                {
                    errors.causes.push(Cause::required(format!("{path}.{r}")));
                    errors.blocks_cel = true;
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate_value(item, item_schema, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

/// Duplicate items in `set` and `map` lists (checked after the OpenAPI pass, as Kubernetes does).
pub fn validate_list_types(value: &Value, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    match value {
        Value::Object(map) => {
            let props = schema["properties"].as_object();
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for key in keys {
                if let Some(sub) = props.and_then(|p| p.get(key)) {
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    validate_list_types(&map[key], sub, &child, causes);
                }
            }
        }
        Value::Array(items) => {
            let mut seen: Vec<Value> = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let identity = match schema["x-kubernetes-list-type"].as_str() {
                    Some("set") => Some(item.clone()),
                    Some("map") => {
                        let mut key = Map::new();
                        for k in schema["x-kubernetes-list-map-keys"]
                            .as_array()
                            .into_iter()
                            .flatten()
                        {
                            if let Some(k) = k.as_str() {
                                key.insert(
                                    k.to_string(),
                                    item.get(k).cloned().unwrap_or(Value::Null),
                                );
                            }
                        }
                        Some(Value::Object(key))
                    }
                    _ => None,
                };
                if let Some(identity) = identity {
                    if seen.contains(&identity) {
                        causes.push(Cause::new(
                            "FieldValueDuplicate",
                            format!("{path}[{i}]"),
                            format!("Duplicate value: {identity}"),
                        ));
                    } else {
                        seen.push(identity);
                    }
                }
                if let Some(item_schema) = schema.get("items") {
                    validate_list_types(item, item_schema, &format!("{path}[{i}]"), causes);
                }
            }
        }
        _ => {}
    }
}

fn at_json_path<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = object;
    for part in path
        .trim_start_matches('.')
        .split('.')
        .filter(|p| !p.is_empty())
    {
        current = current.get(part)?;
    }
    Some(current)
}

/// The checks the scale subresource makes on `specReplicasPath`.
pub fn validate_scale_paths(object: &Value, scale: &ScalePaths) -> Vec<Cause> {
    let path = &scale.spec_replicas;
    match at_json_path(object, path) {
        None | Some(Value::Null) => vec![],
        Some(v) if v.is_i64() => {
            if v.as_i64().unwrap_or(0) < 0 {
                vec![Cause::invalid(
                    path.clone(),
                    &v.to_string(),
                    "should be a non-negative integer",
                )]
            } else {
                vec![]
            }
        }
        Some(v) => {
            let shown = v
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| v.to_string());
            vec![Cause::invalid(
                path.clone(),
                "0",
                &format!(
                    "{path} accessor error: {shown} is of the type {}, expected int64",
                    go_type(v)
                ),
            )]
        }
    }
}

fn go_type(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "string",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
        Value::Null => "nil",
    }
}

pub fn cel_skipped_cause() -> Cause {
    Cause::new(
        "FieldValueInvalid",
        "<nil>",
        "Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
    )
}

thread_local! {
    /// Registering the CEL functions is costly; a `Validator` is not `Sync`, so one per thread.
    static CEL_VALIDATOR: kube::core::cel::Validator = kube::core::cel::Validator::new();
}

/// Runs `x-kubernetes-validations` (including transition rules when `old` is given), with
/// the rules compiled from `schema` beforehand when `compiled` is given.
pub fn validate_cel(
    object: &Value,
    old: Option<&Value>,
    schema: &Value,
    compiled: Option<&kube::core::cel::CompiledSchema>,
) -> Vec<Cause> {
    let result = CEL_VALIDATOR.with(|validator| match compiled {
        Some(rules) => validator.validate_compiled(rules, object, old),
        None => validator.validate(schema, object, old),
    });
    match result {
        Ok(()) => vec![],
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| {
                let field = e.field_path.trim_start_matches('.').to_string();
                let value = at_json_path(object, &field);
                // Rules that point elsewhere with fieldPath report no value.
                let redirected = schema.to_string().contains("\"fieldPath\":")
                    && rule_has_field_path(schema, &e.rule);
                let message = match value {
                    Some(v) if !v.is_object() && !v.is_array() && !redirected => {
                        format!("Invalid value: {v}: {}", e.message)
                    }
                    _ => format!("Invalid value: {}", e.message),
                };
                Cause::new(
                    e.reason.as_deref().unwrap_or("FieldValueInvalid"),
                    field,
                    message,
                )
            })
            .collect(),
    }
}

fn rule_has_field_path(schema: &Value, rule: &str) -> bool {
    match schema {
        Value::Object(map) => {
            if let Some(rules) = map
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
                && rules
                    .iter()
                    .any(|r| r["rule"] == rule && r.get("fieldPath").is_some())
            {
                return true;
            }
            map.values().any(|v| rule_has_field_path(v, rule))
        }
        Value::Array(items) => items.iter().any(|v| rule_has_field_path(v, rule)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.min <= self.max", "message": "min must not exceed max"},
                {"rule": "self.max == oldSelf.max", "message": "max is immutable"}],
            "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}}}}})
    }

    #[test]
    fn precompiled_rules_report_what_compiling_on_each_call_reports() {
        let schema = schema();
        let compiled = kube::core::cel::compile_schema(&schema);
        let old = json!({"spec": {"min": 1, "max": 2}});
        for (object, old) in [
            (json!({"spec": {"min": 3, "max": 2}}), None),
            (json!({"spec": {"min": 3, "max": 2}}), Some(&old)),
            (json!({"spec": {"min": 1, "max": 5}}), Some(&old)),
            (json!({"spec": {"min": 1, "max": 2}}), Some(&old)),
        ] {
            let fresh = validate_cel(&object, old, &schema, None);
            let cached = validate_cel(&object, old, &schema, Some(&compiled));
            assert_eq!(format!("{cached:?}"), format!("{fresh:?}"), "{object}");
        }
        let broken = validate_cel(
            &json!({"spec": {"min": 3, "max": 2}}),
            None,
            &schema,
            Some(&compiled),
        );
        assert_eq!(broken.len(), 1, "the failing rule is reported: {broken:?}");
    }
}
