//! Errors: the Kubernetes `Status` failures the emulator answers with, and library errors.

use serde_json::{Value, json};

/// One entry of `details.causes` in a `Status`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    pub reason: String,
    pub message: String,
    pub field: String,
}

impl Cause {
    pub fn new(reason: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Cause {
            reason: reason.to_string(),
            message: message.into(),
            field: field.into(),
        }
    }
    pub fn invalid(field: impl Into<String>, value: &str, detail: &str) -> Self {
        Cause::new(
            "FieldValueInvalid",
            field,
            format!("Invalid value: {value}: {detail}"),
        )
    }
    pub fn required(field: impl Into<String>) -> Self {
        Cause::new("FieldValueRequired", field, "Required value")
    }
}

/// A failed API request, rendered as a Kubernetes `Status` object (or plain text for 404 paths).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub details: Option<Value>,
    /// Served as `text/plain` instead of a `Status` (unknown paths and groups).
    pub plain_text: bool,
    pub retry_after_seconds: Option<u64>,
}

/// The resource an error talks about, for `details` and messages.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub group: &'a str,
    pub resource: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
}

impl Subject<'_> {
    /// `configmaps` or `deployments.apps`, as Kubernetes spells a qualified resource.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
    fn details(&self, kind_field: &str) -> Value {
        let mut d = serde_json::Map::new();
        if !self.name.is_empty() {
            d.insert("name".into(), json!(self.name));
        }
        if !self.group.is_empty() {
            d.insert("group".into(), json!(self.group));
        }
        d.insert("kind".into(), json!(kind_field));
        Value::Object(d)
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason: reason.to_string(),
            message: message.into(),
            details: None,
            plain_text: false,
            retry_after_seconds: None,
        }
    }
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
    pub fn page_not_found() -> Self {
        ApiError {
            plain_text: true,
            ..ApiError::new(404, "NotFound", "404 page not found")
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }
    pub fn not_found(s: &Subject<'_>) -> Self {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", s.qualified_resource(), s.name),
        )
        .with_details(s.details(s.resource))
    }
    /// Unknown resource in a known group/version: NotFound with empty details.
    pub fn resource_not_found() -> Self {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }
    pub fn already_exists(s: &Subject<'_>) -> Self {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", s.qualified_resource(), s.name),
        )
        .with_details(s.details(s.resource))
    }
    pub fn conflict(s: &Subject<'_>) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                s.qualified_resource(),
                s.name
            ),
        )
        .with_details(s.details(s.resource))
    }
    pub fn invalid(s: &Subject<'_>, causes: Vec<Cause>) -> Self {
        // The message lists each distinct error once, the causes keep duplicates.
        let mut rendered: Vec<String> = Vec::new();
        for c in &causes {
            let line = format!("{}: {}", c.field, c.message);
            if !rendered.contains(&line) {
                rendered.push(line);
            }
        }
        let summary = if rendered.len() == 1 {
            rendered[0].clone()
        } else {
            format!("[{}]", rendered.join(", "))
        };
        let mut details = s.details(s.kind);
        details["causes"] = causes_json(&causes);
        ApiError::new(
            422,
            "Invalid",
            format!(
                "{} \"{}\" is invalid: {summary}",
                s.qualified_kind(),
                s.name
            ),
        )
        .with_details(details)
    }
    pub fn method_not_allowed() -> Self {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .with_details(json!({}))
    }
    pub fn unsupported_media_type(accepted: &[&str]) -> Self {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
    }
    pub fn not_acceptable() -> Self {
        ApiError::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
        )
    }
    pub fn gone(message: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(500, "InternalError", message)
    }

    /// The `Status` object Kubernetes sends for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        });
        if let Some(d) = &self.details {
            status["details"] = d.clone();
        }
        status["code"] = json!(self.code);
        status
    }
}

pub fn causes_json(causes: &[Cause]) -> Value {
    Value::Array(
        causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect(),
    )
}

/// Errors of the library API (starting and stopping the cluster).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("kube client configuration failed: {0}")]
    Kubeconfig(String),
    #[error("kube client error: {0}")]
    Client(#[from] kube::Error),
    #[error("pod runner: {0}")]
    Network(#[from] crate::kubelet::network::NetworkError),
    #[error("port-forward to {target}: {message}")]
    PortForward { target: String, message: String },
}
