//! An OpenAI-compatible `/v1/embeddings` API in the test process, standing in for TEI, vLLM or
//! Ollama (none can run here). Vectors are bag-of-words hashes: equal texts get equal vectors
//! and shared words make them close, which is all a test of the wiring needs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Bag-of-words hashing into `dimension` components, L2-normalised.
pub fn bag_of_words(text: &str, dimension: usize) -> Vec<f32> {
    let mut v = vec![0f32; dimension];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let h = word
            .to_lowercase()
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        v[(h % dimension as u64) as usize] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.iter().map(|x| x / norm).collect()
}

struct Api {
    api_key: String,
    requests: AtomicU32,
}

/// A running embeddings API; stops when dropped.
pub struct EmbeddingsApi {
    pub address: SocketAddr,
    api: Arc<Api>,
    task: tokio::task::JoinHandle<()>,
}

impl EmbeddingsApi {
    /// Serves on `bind` (e.g. `0.0.0.0:0`, to be reachable from pod networks), requiring
    /// `Authorization: Bearer <api_key>`.
    pub async fn start(bind: &str, api_key: &str) -> EmbeddingsApi {
        let api = Arc::new(Api {
            api_key: api_key.to_string(),
            requests: AtomicU32::new(0),
        });
        let router = axum::Router::new()
            .route("/v1/embeddings", axum::routing::post(embeddings))
            .with_state(api.clone());
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .expect("embeddings API binds");
        let address = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        EmbeddingsApi { address, api, task }
    }

    /// Embedding requests answered so far (any status).
    pub fn requests(&self) -> u32 {
        self.api.requests.load(Ordering::SeqCst)
    }
}

impl Drop for EmbeddingsApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn embeddings(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    api.requests.fetch_add(1, Ordering::SeqCst);
    let authorized = headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {}", api.api_key));
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"message": "bad key"}})),
        )
            .into_response();
    }
    let dimension = body["dimensions"].as_u64().unwrap_or(1536) as usize;
    let texts: Vec<String> = match &body["input"] {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items
            .iter()
            .map(|t| t.as_str().unwrap_or_default().to_string())
            .collect(),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": {"message": "input is a string or a list"}})),
            )
                .into_response();
        }
    };
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            json!({"object": "embedding", "index": index, "embedding": bag_of_words(text, dimension)})
        })
        .collect();
    Json(json!({"object": "list", "data": data, "model": body["model"]})).into_response()
}
