//! The smoke check run against one new query pod, directly at its IP, before the operator
//! lets it take traffic.

use std::time::Duration;

use kbeast_client::{Client, ClientError, HealthStatus, SearchMode, SearchRequest};

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
/// Longest response body read from a pod: the query API's answers to the check are far smaller.
pub const SMOKE_RESPONSE_LIMIT: usize = 64 * 1024;

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

/// The HTTP client of smoke checks. They go to pods tenants run: never follow a redirect.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(3))
        .timeout(SMOKE_CHECK_TIMEOUT)
        .build()
        .expect("an HTTP client with timeouts only builds")
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
    let anonymous = Client::with_http_client(http.clone(), base_url.clone(), None)
        .with_response_limit(SMOKE_RESPONSE_LIMIT);
    let (code, ready) = anonymous.ready().await.map_err(|e| match e {
        ClientError::Transport(_) => SmokeFailure::Unreachable(describe(&e)),
        _ => SmokeFailure::NotReady(describe(&e)),
    })?;
    if !code.is_success() || ready.status != HealthStatus::Healthy {
        return Err(SmokeFailure::NotReady(format!(
            "HTTP {code}, status {:?}",
            ready.status
        )));
    }
    let api_key = expected.api_key.clone().ok_or(SmokeFailure::NoApiKey)?;
    let client = Client::with_http_client(http.clone(), base_url, Some(api_key))
        .with_response_limit(SMOKE_RESPONSE_LIMIT);
    let stats = client
        .stats()
        .await
        .map_err(|e| SmokeFailure::SearchFailed(format!("/v1/stats: {}", describe(&e))))?;
    if stats.model != expected.model || stats.dimension != expected.dimension {
        return Err(SmokeFailure::ModelMismatch {
            expected_model: expected.model.clone(),
            expected_dimension: expected.dimension,
            actual_model: printable_id(&stats.model),
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
        .map_err(|e| SmokeFailure::SearchFailed(describe(&e)))?;
    if response.degraded {
        return Err(SmokeFailure::Degraded);
    }
    Ok(())
}

/// A failed request in words that quote nothing the pod sent but its status and, when it is
/// an identifier, its error code: the message lands in pod conditions and project status,
/// which others read.
fn describe(error: &ClientError) -> String {
    match error {
        ClientError::Api { status, body } => {
            format!("HTTP {status} ({})", printable_id(&body.error.code))
        }
        ClientError::Unexpected { status, .. } => {
            format!("HTTP {status}: not a query API response")
        }
        ClientError::TooLarge { .. } => error.to_string(),
        // reqwest's own words and the URL, never the response.
        ClientError::Transport(e) => e.to_string(),
    }
}

/// `id` when it looks like an identifier (a model id, an error code), else a placeholder.
fn printable_id(id: &str) -> String {
    let plain = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c));
    if plain {
        id.to_string()
    } else {
        "(not an identifier)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;

    use super::*;

    /// Serves `router` on a free loopback port.
    async fn serve(router: axum::Router) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, router).await });
        address
    }

    fn expectation() -> SmokeExpectation {
        SmokeExpectation {
            model: "hash-v1".into(),
            dimension: 384,
            query: BUILT_IN_SMOKE_QUERY.into(),
            api_key: Some("kb_r_0123456789abcdef".into()),
        }
    }

    async fn check(address: std::net::SocketAddr) -> Result<(), SmokeFailure> {
        smoke_check(
            &http_client(),
            &address.ip().to_string(),
            address.port(),
            &expectation(),
        )
        .await
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed() {
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let elsewhere = serve(axum::Router::new().route(
            "/readyz",
            get(move || async move {
                counted.fetch_add(1, Ordering::SeqCst);
                "{}"
            }),
        ))
        .await;
        let target = format!("http://{elsewhere}/readyz");
        let pod = serve(axum::Router::new().route(
            "/readyz",
            get(move || async move {
                (StatusCode::FOUND, [(header::LOCATION, target)]).into_response()
            }),
        ))
        .await;
        let failure = check(pod).await.expect_err("a redirect is no answer");
        assert!(matches!(failure, SmokeFailure::NotReady(_)), "{failure:?}");
        assert_eq!(hits.load(Ordering::SeqCst), 0, "the redirect was followed");
    }

    #[tokio::test]
    async fn bodies_are_capped_and_never_quoted() {
        let secret = "SECRET-FROM-THE-POD";
        let huge = secret.repeat(100_000);
        let pod =
            serve(axum::Router::new().route("/readyz", get(move || async move { huge }))).await;
        let failure = check(pod).await.expect_err("not the query API");
        let message = failure.to_string();
        assert!(message.contains("longer than 65536 bytes"), "{message}");

        let pod = serve(
            axum::Router::new()
                .route(
                    "/readyz",
                    get(|| async {
                        r#"{"status":"healthy","components":{"store":{"status":"healthy","latency_ms":0},"embedder":{"status":"healthy","model":"hash-v1"},"disk":{"status":"healthy","available_bytes":1},"warmup":{"status":"healthy","table_open":true,"indices_loaded":true,"query_path":true}}}"#
                    }),
                )
                .route(
                    "/v1/stats",
                    get(move || async move {
                        (StatusCode::INTERNAL_SERVER_ERROR, format!("{secret} {secret}"))
                            .into_response()
                    }),
                ),
        )
        .await;
        let failure = check(pod).await.expect_err("stats fail");
        let message = failure.to_string();
        assert!(!message.contains(secret), "the body is quoted: {message}");
        assert!(message.contains("HTTP 500"), "{message}");
    }

    #[test]
    fn only_identifiers_are_quoted() {
        assert_eq!(
            printable_id("openai:text-embedding-3-small"),
            "openai:text-embedding-3-small"
        );
        assert_eq!(printable_id("see http://evil <b>"), "(not an identifier)");
        assert_eq!(printable_id(&"a".repeat(65)), "(not an identifier)");
    }
}
