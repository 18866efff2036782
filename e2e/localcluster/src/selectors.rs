//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!key`) and field selectors.

use serde_json::Value;

use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

fn valid_value(value: &str) -> bool {
    value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        let invalid =
            |detail: &str| ApiError::bad_request(format!("unable to parse requirement: {detail}"));
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let words: Vec<&str> = part.split_whitespace().collect();
            if words.len() >= 2 && (words[1] == "in" || words[1] == "notin") {
                let rest = part[part.find(words[1]).unwrap_or(0) + words[1].len()..].trim();
                let inner = rest
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| invalid(&format!("found '{rest}', expected: '('")))?;
                let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
                let key = words[0].to_string();
                reqs.push(if words[1] == "in" {
                    Requirement::In(key, values)
                } else {
                    Requirement::NotIn(key, values)
                });
            } else if let Some((k, v)) = part.split_once("!=") {
                reqs.push(Requirement::NotEquals(k.trim().into(), v.trim().into()));
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                let v = v.trim();
                if let Some(op) = ["==", "=", "!="].iter().find(|op| v.contains(**op)) {
                    return Err(ApiError::bad_request(format!(
                        "found '{op}', expected: ',' or 'end of string'"
                    )));
                }
                if !valid_value(v) || !valid_key(k.trim()) {
                    return Err(invalid(&format!(
                        "values[0][{}]: Invalid value: \"{v}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
                        k.trim()
                    )));
                }
                reqs.push(Requirement::Equals(k.trim().into(), v.into()));
            } else if let Some(k) = part.strip_prefix('!') {
                reqs.push(Requirement::DoesNotExist(k.trim().into()));
            } else if valid_key(part) {
                reqs.push(Requirement::Exists(part.into()));
            } else {
                return Err(invalid(&format!("found '{part}'")));
            }
        }
        Ok(LabelSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `key=value` requirements: every matching object carries each of them, so a label
    /// index can narrow a list to the objects carrying one.
    pub fn equalities(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().filter_map(|r| match r {
            Requirement::Equals(k, v) => Some((k.as_str(), v.as_str())),
            _ => None,
        })
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => !get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        })
    }
}

/// Field selectors on `metadata.name` / `metadata.namespace` (plus a few kind-specific fields).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(s: &str, supported: &[&str]) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            if !supported.contains(&field) {
                let list: Vec<String> = supported.iter().map(|f| format!("\"{f}\"")).collect();
                return Err(ApiError::bad_request(format!(
                    "\"{field}\" is not a known field selector: only {}",
                    list.join(", ")
                )));
            }
            reqs.push((field.to_string(), equal, value.to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let mut current = object;
            for part in field.split('.') {
                current = &current[part];
            }
            let actual = match current {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (actual == *value) == *equal
        })
    }
}

/// Field selectors a resource supports beyond name and namespace.
pub fn supported_fields(resource: &str) -> Vec<&'static str> {
    let mut fields = vec!["metadata.name", "metadata.namespace"];
    match resource {
        "pods" => fields.extend([
            "spec.nodeName",
            "status.phase",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.podIP",
        ]),
        "events" => fields.extend([
            "involvedObject.kind",
            "involvedObject.name",
            "involvedObject.namespace",
            "involvedObject.uid",
            "reason",
            "type",
            "source",
        ]),
        "secrets" => fields.push("type"),
        "namespaces" => fields.push("status.phase"),
        "replicasets" => fields.push("status.replicas"),
        _ => {}
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_based_label_selectors() {
        let obj = json!({"metadata": {"labels": {"app": "demo", "tier": "backend"}}});
        let sel = LabelSelector::parse("app in (demo,other),tier!=frontend").unwrap();
        assert!(sel.matches(&obj));
        assert!(
            !LabelSelector::parse("app notin (demo)")
                .unwrap()
                .matches(&obj)
        );
        assert!(LabelSelector::parse("tier").unwrap().matches(&obj));
        assert!(!LabelSelector::parse("!tier").unwrap().matches(&obj));
        assert!(LabelSelector::parse("a==b==c").is_err());
    }

    #[test]
    fn equalities_are_the_key_value_requirements_only() {
        let sel = LabelSelector::parse("app=demo,tier==backend,env!=prod,zone in (a),x").unwrap();
        let found: Vec<(&str, &str)> = sel.equalities().collect();
        assert_eq!(found, vec![("app", "demo"), ("tier", "backend")]);
        assert_eq!(LabelSelector::parse("!x").unwrap().equalities().count(), 0);
    }

    #[test]
    fn unsupported_field_selector_is_rejected() {
        let err =
            FieldSelector::parse("data.key1=value1", &supported_fields("configmaps")).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(err.message.contains("not a known field selector"));
    }
}
