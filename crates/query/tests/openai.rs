//! The `openai` embedder against a fake embeddings API in this process:
//! batching, retries on transient errors only, the circuit breaker, and
//! keyword fallback (`degraded`) while the provider is down.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::{Server, doc, ingest_request};
use kbeast_client::{ClientError, HealthStatus, SearchMode, SearchRequest};
use serde_json::{Value, json};

const OK: u32 = 0;
const UNAVAILABLE: u32 = 1;
const BAD_REQUEST: u32 = 2;
/// Accept the request and never answer.
const HANG: u32 = 3;
const API_KEY: &str = "sk-test-0123456789";

#[derive(Default)]
struct Fake {
    mode: AtomicU32,
    /// Fail this many requests with 503 before answering normally.
    fail_next: AtomicU32,
    requests: AtomicU32,
    max_batch: AtomicUsize,
    bad_requests: AtomicU32,
    /// Hanging requests whose caller went away.
    hung_up: AtomicU32,
}

/// Counts a hanging request dropped before it answered.
struct HungUp(Arc<Fake>);

impl Drop for HungUp {
    fn drop(&mut self) {
        self.0.hung_up.fetch_add(1, Ordering::SeqCst);
    }
}

/// Bag-of-words hashing, so equal texts get equal vectors.
fn fake_embedding(text: &str, dimension: usize) -> Vec<f32> {
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

async fn embeddings(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    fake.requests.fetch_add(1, Ordering::SeqCst);
    let authorized = headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {API_KEY}"));
    let well_formed = body["model"] == "text-embedding-3-small" && body["dimensions"] == 32;
    if !authorized || !well_formed {
        fake.bad_requests.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::BAD_REQUEST, "bad request").into_response();
    }
    if fake
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "try later").into_response();
    }
    match fake.mode.load(Ordering::SeqCst) {
        UNAVAILABLE => return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response(),
        BAD_REQUEST => return (StatusCode::BAD_REQUEST, "input rejected").into_response(),
        HANG => {
            let _hung_up = HungUp(fake.clone());
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        _ => {}
    }
    let inputs: Vec<String> = serde_json::from_value(body["input"].clone()).unwrap();
    fake.max_batch.fetch_max(inputs.len(), Ordering::SeqCst);
    // Answer out of order: the client must sort by index.
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(|(index, text)| json!({"index": index, "embedding": fake_embedding(text, 32), "object": "embedding"}))
        .collect();
    Json(json!({"object": "list", "data": data, "model": "text-embedding-3-small"})).into_response()
}

async fn start_fake() -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake::default());
    let app = axum::Router::new()
        .route("/v1/embeddings", axum::routing::post(embeddings))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, url)
}

async fn metric(server: &Server, name: &str) -> String {
    let text = server
        .http()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("{name} missing"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_embedder_batches_retries_breaks_and_degrades() {
    let (fake, url) = start_fake().await;
    let server = Server::start(&[
        "--embedder",
        "openai",
        "--openai-base-url",
        &url,
        "--openai-api-key",
        API_KEY,
        "--embedding-dim",
        "32",
        "--openai-batch-size",
        "4",
        "--openai-max-retries",
        "2",
        "--openai-backoff-ms",
        "10",
        "--embedder-breaker-failures",
        "2",
        "--embedder-breaker-cooldown-ms",
        "500",
    ])
    .await;
    let client = server.admin();
    let requests = || fake.requests.load(Ordering::SeqCst);

    // 10 single-chunk documents in batches of 4 = 3 requests, plus one retry.
    fake.fail_next.store(1, Ordering::SeqCst);
    let docs = (0..10)
        .map(|i| {
            doc(
                &format!("d{i}"),
                &format!("document {i} mentions topic{i} and shared words"),
            )
        })
        .collect();
    client.ingest(&ingest_request(docs)).await.unwrap();
    assert_eq!(requests(), 4);
    assert_eq!(fake.max_batch.load(Ordering::SeqCst), 4);
    assert_eq!(
        fake.bad_requests.load(Ordering::SeqCst),
        0,
        "model, dimensions and key sent"
    );
    let stats = client.stats().await.unwrap();
    // The operator's smoke check expects the id of the query contract.
    let model = kbeast_api::query_contract::openai_model_id("text-embedding-3-small");
    assert_eq!(
        (stats.model.as_str(), stats.dimension, stats.documents),
        (model.as_str(), 32, 10)
    );

    let query = SearchRequest::new(
        "document 7 mentions topic7 and shared words",
        SearchMode::Vector,
        3,
    );
    let result = client.search(&query).await.unwrap();
    assert!(!result.degraded);
    assert_eq!(result.hits[0].doc_id, "d7");

    // Provider down: each search retries twice, then serves keyword results.
    fake.mode.store(UNAVAILABLE, Ordering::SeqCst);
    let before = requests();
    let hybrid = SearchRequest::new("topic3", SearchMode::Hybrid, 3);
    let result = client.search(&hybrid).await.unwrap();
    assert!(result.degraded);
    assert_eq!(result.mode, SearchMode::Hybrid);
    assert_eq!(result.hits[0].doc_id, "d3");
    assert_eq!(requests(), before + 3);
    assert_eq!(metric(&server, "kb_degraded").await, "kb_degraded 1");
    let (status, ready) = server.ready().await;
    assert_eq!(
        (status, ready.status),
        (reqwest::StatusCode::OK, HealthStatus::Degraded)
    );
    assert_eq!(ready.components.embedder.status, HealthStatus::Degraded);

    // The second failed call opens the breaker; then calls fail fast.
    assert!(client.search(&query).await.unwrap().degraded);
    let open = requests();
    assert!(client.search(&query).await.unwrap().degraded);
    assert_eq!(requests(), open, "no calls while the circuit is open");
    // Every document matches; the hybrid fallback still returns only top_k.
    let broad = client
        .search(&SearchRequest::new("shared words", SearchMode::Hybrid, 3))
        .await
        .unwrap();
    assert!(broad.degraded);
    assert_eq!(broad.hits.len(), 3, "top_k bounds the fallback's hits");
    match client
        .ingest(&ingest_request(vec![doc("new", "not embedded")]))
        .await
    {
        Err(ClientError::Api { status, body }) => {
            assert_eq!(
                (status, body.error.code.as_str()),
                (
                    reqwest::StatusCode::SERVICE_UNAVAILABLE,
                    "embedder_unavailable"
                )
            );
        }
        other => panic!("expected 503, got {other:?}"),
    }
    assert_eq!(client.stats().await.unwrap().documents, 10);

    // Provider back: after the cooldown a trial call closes the breaker.
    fake.mode.store(OK, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let result = client.search(&query).await.unwrap();
        if !result.degraded {
            assert_eq!(result.hits[0].doc_id, "d7");
            break;
        }
        assert!(Instant::now() < deadline, "breaker never closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&server, "kb_degraded").await, "kb_degraded 0");
    assert_eq!(server.ready().await.1.status, HealthStatus::Healthy);

    // A rejected input is not retried and does not count as an outage.
    fake.mode.store(BAD_REQUEST, Ordering::SeqCst);
    let before = requests();
    match client
        .ingest(&ingest_request(vec![doc("x", "rejected")]))
        .await
    {
        Err(ClientError::Api { status, body }) => {
            assert_eq!(
                (status, body.error.code.as_str()),
                (reqwest::StatusCode::BAD_GATEWAY, "embedder_failed")
            );
        }
        other => panic!("expected 502, got {other:?}"),
    }
    assert_eq!(requests(), before + 1);
    assert!(
        !server.log().contains(API_KEY),
        "the provider key is never logged"
    );
}

/// The openai flags for the fake, plus `extra`.
async fn start_server(url: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--embedder",
        "openai",
        "--openai-base-url",
        url,
        "--openai-api-key",
        API_KEY,
        "--embedding-dim",
        "32",
        "--openai-backoff-ms",
        "10",
    ];
    args.extend_from_slice(extra);
    Server::start(&args).await
}

/// Polls a vector search until it is answered by the provider again.
async fn wait_until_not_degraded(server: &Server, within: Duration) {
    let query = SearchRequest::new("document 1 mentions topic1", SearchMode::Vector, 1);
    let deadline = Instant::now() + within;
    loop {
        if !server.admin().search(&query).await.unwrap().degraded {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the breaker did not close within {within:?} of the provider's return"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ingest_two(server: &Server) {
    let docs = (0..2)
        .map(|i| doc(&format!("d{i}"), &format!("document {i} mentions topic{i}")))
        .collect();
    server.admin().ingest(&ingest_request(docs)).await.unwrap();
}

/// Opens the breaker (threshold 1) with one search against a provider answering 503.
async fn open_breaker(server: &Server, fake: &Fake) {
    fake.mode.store(UNAVAILABLE, Ordering::SeqCst);
    let query = SearchRequest::new("topic1", SearchMode::Vector, 1);
    assert!(server.admin().search(&query).await.unwrap().degraded);
    assert_eq!(
        server.ready().await.1.components.embedder.status,
        HealthStatus::Degraded
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_provider_trips_the_breaker_before_the_request_times_out() {
    let (fake, url) = start_fake().await;
    // Attempts of 10 s, four of them, against a 2 s request timeout.
    let server = start_server(
        &url,
        &[
            "--request-timeout-secs",
            "2",
            "--openai-timeout-ms",
            "10000",
            "--openai-max-retries",
            "3",
            "--embedder-breaker-failures",
            "2",
            "--embedder-breaker-cooldown-ms",
            "500",
        ],
    )
    .await;
    ingest_two(&server).await;
    fake.mode.store(HANG, Ordering::SeqCst);
    let query = SearchRequest::new("topic1", SearchMode::Vector, 1);
    for _ in 0..2 {
        // Degraded within the request timeout, not a 408 that records nothing.
        let result = server.admin().search(&query).await.unwrap();
        assert!(result.degraded);
    }
    let (status, ready) = server.ready().await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(ready.components.embedder.status, HealthStatus::Degraded);
    let calls = fake.requests.load(Ordering::SeqCst);
    let started = Instant::now();
    assert!(server.admin().search(&query).await.unwrap().degraded);
    assert!(started.elapsed() < Duration::from_secs(1), "fails fast");
    assert_eq!(fake.requests.load(Ordering::SeqCst), calls, "open: no call");

    fake.mode.store(OK, Ordering::SeqCst);
    wait_until_not_degraded(&server, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_trial_does_not_leave_the_breaker_half_open() {
    let (fake, url) = start_fake().await;
    let server = start_server(
        &url,
        &[
            "--openai-max-retries",
            "0",
            "--embedder-breaker-failures",
            "1",
            "--embedder-breaker-cooldown-ms",
            "300",
        ],
    )
    .await;
    ingest_two(&server).await;
    open_breaker(&server, &fake).await;
    tokio::time::sleep(Duration::from_millis(400)).await;

    // The half-open trial is an ingest the provider rejects with 400.
    fake.mode.store(BAD_REQUEST, Ordering::SeqCst);
    let result = server
        .admin()
        .ingest(&ingest_request(vec![doc("x", "rejected")]))
        .await;
    match result {
        Err(ClientError::Api { status, .. }) => {
            assert_eq!(status, reqwest::StatusCode::BAD_GATEWAY)
        }
        other => panic!("expected 502, got {other:?}"),
    }

    fake.mode.store(OK, Ordering::SeqCst);
    wait_until_not_degraded(&server, Duration::from_secs(5)).await;
    assert_eq!(server.ready().await.1.status, HealthStatus::Healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_trial_does_not_leave_the_breaker_half_open() {
    let (fake, url) = start_fake().await;
    // Attempts far longer than the test's patience: only the cancellation can end the trial.
    let server = start_server(
        &url,
        &[
            "--openai-timeout-ms",
            "60000",
            "--openai-max-retries",
            "0",
            "--embedder-breaker-failures",
            "1",
            "--embedder-breaker-cooldown-ms",
            "300",
        ],
    )
    .await;
    ingest_two(&server).await;
    open_breaker(&server, &fake).await;
    tokio::time::sleep(Duration::from_millis(400)).await;

    // The trial hangs at the provider; its client gives up and hangs up.
    fake.mode.store(HANG, Ordering::SeqCst);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let gave_up = impatient
        .post(server.url("/v1/search"))
        .bearer_auth(server.admin_key())
        .json(&json!({"query": "topic1", "mode": "vector", "top_k": 1}))
        .send()
        .await;
    assert!(gave_up.is_err_and(|e| e.is_timeout()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.hung_up.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the server never dropped the cancelled trial's provider call"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    fake.mode.store(OK, Ordering::SeqCst);
    wait_until_not_degraded(&server, Duration::from_secs(5)).await;
    assert_eq!(server.ready().await.1.status, HealthStatus::Healthy);
}
