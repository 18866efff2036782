//! The operator's error type. Each variant maps to a short, stable label used in metrics.

/// Why a reconcile failed. The controller retries it with exponential backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),

    #[error("could not serialise {what}: {source}")]
    Serialize {
        what: &'static str,
        source: serde_json::Error,
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
            Self::Kube(error) => kube_error_label(error),
            Self::Serialize { .. } => "serialize",
            Self::MissingNamespace(_) => "missing_namespace",
            Self::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                kube::runtime::finalizer::Error::AddFinalizer(e)
                | kube::runtime::finalizer::Error::RemoveFinalizer(e) => kube_error_label(e),
                _ => "finalizer",
            },
            Self::CleanupPending(_) => "cleanup_pending",
        }
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
