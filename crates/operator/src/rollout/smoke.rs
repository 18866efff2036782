//! The smoke check run against one new query pod, directly at its IP, before the operator
//! lets it take traffic.

use std::time::Duration;

use kbeast_client::{Client, HealthStatus, SearchMode, SearchRequest};

/// What a healthy pod of the project looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmokeExpectation {
    pub model: String,
    pub dimension: u32,
    /// `spec.rollout.smokeQuery`, or the built-in probe query.
    pub query: String,
    /// A key with the read scope; `None` when the keys Secret has none.
    pub api_key: Option<String>,
}

/// The built-in probe query: any text exercises the embedder and both indexes.
pub const BUILT_IN_SMOKE_QUERY: &str = "kbeast smoke check";
/// Longest a whole smoke check may take.
pub const SMOKE_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a smoke check failed. `label()` is the `reason` of
/// `kbeast_smoke_check_failures_total`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SmokeFailure {
    #[error("no API key with the read scope in the project's keys Secret")]
    NoApiKey,
    #[error("cannot reach the pod: {0}")]
    Unreachable(String),
    #[error("/readyz is not healthy: {0}")]
    NotReady(String),
    #[error(
        "serves model {actual_model:?} with dimension {actual_dimension}, expected {expected_model:?} with dimension {expected_dimension}"
    )]
    ModelMismatch {
        expected_model: String,
        expected_dimension: u32,
        actual_model: String,
        actual_dimension: u32,
    },
    #[error("search failed: {0}")]
    SearchFailed(String),
    #[error("search was degraded to keyword: the embedder is not answering")]
    Degraded,
    #[error("no answer within {}s", SMOKE_CHECK_TIMEOUT.as_secs())]
    Timeout,
}

impl SmokeFailure {
    pub fn label(&self) -> &'static str {
        match self {
            Self::NoApiKey => "no_api_key",
            Self::Unreachable(_) => "unreachable",
            Self::NotReady(_) => "not_ready",
            Self::ModelMismatch { .. } => "model_mismatch",
            Self::SearchFailed(_) => "search_failed",
            Self::Degraded => "degraded",
            Self::Timeout => "timeout",
        }
    }
}

/// Runs the smoke check against `http://<ip>:<port>`.
pub async fn smoke_check(
    http: &reqwest::Client,
    ip: &str,
    port: u16,
    expected: &SmokeExpectation,
) -> Result<(), SmokeFailure> {
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    let base_url = format!("http://{host}:{port}");
    match tokio::time::timeout(SMOKE_CHECK_TIMEOUT, run(http, base_url, expected)).await {
        Ok(result) => result,
        Err(_) => Err(SmokeFailure::Timeout),
    }
}

async fn run(
    http: &reqwest::Client,
    base_url: String,
    expected: &SmokeExpectation,
) -> Result<(), SmokeFailure> {
    let anonymous = Client::with_http_client(http.clone(), base_url.clone(), None);
    let (code, ready) = anonymous
        .ready()
        .await
        .map_err(|e| SmokeFailure::Unreachable(e.to_string()))?;
    if !code.is_success() || ready.status != HealthStatus::Healthy {
        return Err(SmokeFailure::NotReady(format!(
            "HTTP {code}, status {:?}",
            ready.status
        )));
    }
    let api_key = expected.api_key.clone().ok_or(SmokeFailure::NoApiKey)?;
    let client = Client::with_http_client(http.clone(), base_url, Some(api_key));
    let stats = client
        .stats()
        .await
        .map_err(|e| SmokeFailure::SearchFailed(format!("/v1/stats: {e}")))?;
    if stats.model != expected.model || stats.dimension != expected.dimension {
        return Err(SmokeFailure::ModelMismatch {
            expected_model: expected.model.clone(),
            expected_dimension: expected.dimension,
            actual_model: stats.model,
            actual_dimension: stats.dimension,
        });
    }
    // Vector mode, so that an embedder outage shows instead of a silent keyword fallback.
    let response = client
        .search(&SearchRequest::new(
            expected.query.clone(),
            SearchMode::Vector,
            1,
        ))
        .await
        .map_err(|e| SmokeFailure::SearchFailed(e.to_string()))?;
    if response.degraded {
        return Err(SmokeFailure::Degraded);
    }
    Ok(())
}
