//! The operator's error type. Each variant names the action and the object it failed on, and
//! maps to a short, stable label used in metrics.

/// Why a reconcile failed. The controller retries it with exponential backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read {kind}/{name}: {}", api_message(source))]
    Observe {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("list {kind} with labels {selector}: {}", api_message(source))]
    List {
        kind: &'static str,
        selector: String,
        #[source]
        source: kube::Error,
    },

    #[error("apply {kind}/{name}: {}", api_message(source))]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("create {kind}/{name}: {}", api_message(source))]
    Create {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("patch {kind}/{name}: {}", api_message(source))]
    Patch {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("delete {kind}/{name}: {}", api_message(source))]
    Delete {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },

    /// The durable rollout record (ConfigMap `<name>-rollout`) could not be stored.
    #[error("apply ConfigMap/{name}: {}", api_message(source))]
    WriteRolloutRecord {
        name: String,
        #[source]
        source: kube::Error,
    },

    /// A pod's `kbeast.io/smoke-passed` condition could not be written.
    #[error("patch status of Pod/{pod}: {}", api_message(source))]
    WriteSmokeCondition {
        pod: String,
        #[source]
        source: kube::Error,
    },

    #[error("patch status of KnowledgeProject/{name}: {}", api_message(source))]
    PatchStatus {
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("{0} has no namespace; KnowledgeProject is namespaced")]
    MissingNamespace(String),

    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    #[error("data clean-up is not finished: {0}")]
    CleanupPending(String),
}

impl Error {
    /// Short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::MissingNamespace(_) => "missing_namespace",
            Self::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                kube::runtime::finalizer::Error::AddFinalizer(e)
                | kube::runtime::finalizer::Error::RemoveFinalizer(e) => kube_error_label(e),
                _ => "finalizer",
            },
            Self::CleanupPending(_) => "cleanup_pending",
            _ => self.kube_error().map_or("unknown", kube_error_label),
        }
    }

    /// The API error underneath, if this is one.
    pub fn kube_error(&self) -> Option<&kube::Error> {
        match self {
            Self::Observe { source, .. }
            | Self::List { source, .. }
            | Self::Apply { source, .. }
            | Self::Create { source, .. }
            | Self::Patch { source, .. }
            | Self::Delete { source, .. }
            | Self::WriteRolloutRecord { source, .. }
            | Self::WriteSmokeCondition { source, .. }
            | Self::PatchStatus { source, .. } => Some(source),
            Self::MissingNamespace(_) | Self::Finalizer(_) | Self::CleanupPending(_) => None,
        }
    }

    /// The HTTP status of a child write the API server answered with an error, except
    /// conflicts and throttling (retried at once, never worth reporting).
    pub fn rejected_child_write(&self) -> Option<u16> {
        match self {
            Self::Apply { source, .. }
            | Self::Create { source, .. }
            | Self::Delete { source, .. }
            | Self::WriteRolloutRecord { source, .. }
            | Self::WriteSmokeCondition { source, .. } => {
                api_code(source).filter(|code| *code != 409 && *code != 429)
            }
            _ => None,
        }
    }
}

/// The HTTP status code of an API error response.
pub fn api_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// The API server's own message (it names the verb, resource and user), or the client error.
fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        kube::Error::Api(status) => status.reason.clone(),
        other => other.to_string(),
    }
}

fn kube_error_label(error: &kube::Error) -> &'static str {
    match error {
        kube::Error::Api(status) => match status.code {
            409 => "conflict",
            404 => "not_found",
            429 => "throttled",
            422 => "invalid",
            403 => "forbidden",
            500..=599 => "server_error",
            _ => "api_error",
        },
        _ => "transport",
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden() -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(
                "configmaps \"docs-rollout\" is forbidden: User \"system:serviceaccount:kbeast:kbeast-operator\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"tenants\"",
                "Forbidden",
            )
            .with_code(403)
            .boxed(),
        )
    }

    #[test]
    fn messages_name_the_action_the_object_and_the_servers_reason() {
        let error = Error::WriteRolloutRecord {
            name: "docs-rollout".into(),
            source: forbidden(),
        };
        assert_eq!(
            error.to_string(),
            "apply ConfigMap/docs-rollout: configmaps \"docs-rollout\" is forbidden: User \"system:serviceaccount:kbeast:kbeast-operator\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"tenants\""
        );
        assert_eq!(error.metric_label(), "forbidden");
        assert_eq!(error.rejected_child_write(), Some(403));
        let read = Error::Observe {
            kind: "Deployment",
            name: "docs".into(),
            source: forbidden(),
        };
        assert!(read.to_string().starts_with("read Deployment/docs: "));
        assert_eq!(
            read.rejected_child_write(),
            None,
            "reads are retried, not reported"
        );
    }
}
