//! Client for the kbeast query API: the wire types ([`wire`]) and a small async
//! HTTP client over them.

pub mod keys;
pub mod wire;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use wire::*;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a 4xx/5xx and the JSON error body.
    #[error("HTTP {status}: {} ({})", body.error.message, body.error.code)]
    Api { status: StatusCode, body: ErrorBody },
    /// The server answered with something that is not the documented format.
    #[error("HTTP {status}: unexpected response body: {body}")]
    Unexpected { status: StatusCode, body: String },
    /// The body was longer than the client's limit ([`Client::with_response_limit`]).
    #[error("HTTP {status}: response body longer than {limit} bytes")]
    TooLarge { status: StatusCode, limit: usize },
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. }
            | ClientError::Unexpected { status, .. }
            | ClientError::TooLarge { status, .. } => Some(*status),
            ClientError::Transport(e) => e.status(),
        }
    }

    /// The `error.code` of an API error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { body, .. } => Some(&body.error.code),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
    /// Longest response body read; longer ones fail with [`ClientError::TooLarge`].
    response_limit: Option<usize>,
}

impl Client {
    /// `base_url` like `http://127.0.0.1:8080` (no trailing path).
    pub fn new(base_url: impl Into<String>, api_key: Option<String>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self::with_http_client(http, base_url, api_key))
    }

    pub fn with_http_client(
        http: reqwest::Client,
        base_url: impl Into<String>,
        api_key: Option<String>,
    ) -> Self {
        Self {
            http,
            base_url: base_url.into().trim_end_matches('/').to_string(),
            api_key,
            response_limit: None,
        }
    }

    /// Reads at most `bytes` of any response body (for servers that are not trusted).
    pub fn with_response_limit(mut self, bytes: usize) -> Self {
        self.response_limit = Some(bytes);
        self
    }

    /// The body as text, within the response limit.
    async fn body(&self, mut response: reqwest::Response) -> Result<(StatusCode, String)> {
        let status = response.status();
        let Some(limit) = self.response_limit else {
            return Ok((status, response.text().await?));
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if bytes.len() + chunk.len() > limit {
                return Err(ClientError::TooLarge { status, limit });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// A request with the base URL and, if set, the bearer key applied.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self
            .http
            .request(method, format!("{}{}", self.base_url, path));
        match &self.api_key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    pub async fn ingest(&self, request: &IngestRequest) -> Result<IngestResponse> {
        self.send_json(Method::POST, "/v1/documents", Some(request))
            .await
    }

    pub async fn get_document(&self, id: &str) -> Result<DocumentResponse> {
        let path = format!("/v1/documents/{}", encode_path_segment(id));
        self.send_json::<(), _>(Method::GET, &path, None).await
    }

    pub async fn delete_document(&self, id: &str) -> Result<DeleteResponse> {
        let path = format!("/v1/documents/{}", encode_path_segment(id));
        self.send_json::<(), _>(Method::DELETE, &path, None).await
    }

    pub async fn delete_by_filter(&self, filter: &DeleteByFilterRequest) -> Result<DeleteResponse> {
        self.send_json(Method::POST, "/v1/documents:delete", Some(filter))
            .await
    }

    pub async fn erase(&self, request: &EraseRequest) -> Result<EraseResponse> {
        self.send_json(Method::POST, "/v1/documents:erase", Some(request))
            .await
    }

    pub async fn search(&self, request: &SearchRequest) -> Result<SearchResponse> {
        self.send_json(Method::POST, "/v1/search", Some(request))
            .await
    }

    pub async fn stats(&self) -> Result<StatsResponse> {
        self.send_json::<(), _>(Method::GET, "/v1/stats", None)
            .await
    }

    /// `GET /readyz`; a 503 still carries a [`ReadyResponse`], so it is returned as Ok.
    pub async fn ready(&self) -> Result<(StatusCode, ReadyResponse)> {
        let response = self.request(Method::GET, "/readyz").send().await?;
        let (status, body) = self.body(response).await?;
        match serde_json::from_str(&body) {
            Ok(ready) => Ok((status, ready)),
            Err(_) => Err(ClientError::Unexpected { status, body }),
        }
    }

    /// Sends the request; a 503 with `Retry-After` (the server shed it before doing anything)
    /// is sent again after the delay, for at most [`MAX_RETRY_AFTER_WAIT`] in all.
    async fn send_json<B: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<R> {
        let mut waited = Duration::ZERO;
        let response = loop {
            let mut builder = self.request(method.clone(), path);
            if let Some(body) = body {
                builder = builder.json(body);
            }
            let response = builder.send().await?;
            match retry_after(&response) {
                Some(delay) if waited + delay <= MAX_RETRY_AFTER_WAIT => {
                    tokio::time::sleep(delay).await;
                    waited += delay;
                }
                _ => break response,
            }
        };
        let (status, text) = self.body(response).await?;
        if status.is_success() {
            serde_json::from_str(&text).map_err(|_| ClientError::Unexpected { status, body: text })
        } else {
            match serde_json::from_str::<ErrorBody>(&text) {
                Ok(body) => Err(ClientError::Api { status, body }),
                Err(_) => Err(ClientError::Unexpected { status, body: text }),
            }
        }
    }
}

/// The longest a request waits in all on `Retry-After` answers before the 503 is returned.
pub const MAX_RETRY_AFTER_WAIT: Duration = Duration::from_secs(30);

/// The delay of a 503 that carries `Retry-After` in seconds.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    if response.status() != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let seconds: u64 = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// Percent-encodes everything but unreserved characters, so any document id
/// round-trips through the path.
pub fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode_path_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(encode_path_segment("é"), "%C3%A9");
        assert_eq!(encode_path_segment("doc-1_x.y~"), "doc-1_x.y~");
    }

    #[test]
    fn search_request_defaults_and_unknown_mode() {
        let req: SearchRequest = serde_json::from_str(r#"{"query":"q"}"#).unwrap();
        assert_eq!(req.mode, None, "the server picks its default mode");
        assert_eq!(req.top_k, DEFAULT_TOP_K);
        assert!(serde_json::from_str::<SearchRequest>(r#"{"query":"q","mode":"fuzzy"}"#).is_err());
    }
}
