//! Resource limits against hostile clients: the worst bodies an ingest can
//! carry and too many of them at once leave the server up and answering, within
//! the pod's default memory limit.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The query container's default memory limit (`crates/operator/src/build/deployment.rs`).
const POD_MEMORY_LIMIT: u64 = 1 << 30;
/// Just under the default `--max-body-bytes` (10 MiB).
const BODY_BYTES: usize = 10_000_000;

fn words(bytes: usize) -> String {
    let mut text = String::with_capacity(bytes + 16);
    let mut i = 0u64;
    while text.len() < bytes {
        text.push_str(&format!("word{} ", i % 5000));
        i += 1;
    }
    text
}

async fn post_ingest(
    server: &Server,
    body: &Value,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let response = server
        .http()
        .post(server.url("/v1/documents"))
        .bearer_auth(server.admin_key())
        .body(serde_json::to_vec(body).unwrap())
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn assert_too_large(server: &Server, body: &Value, field: &str, flag: &str) {
    let (status, _, error) = post_ingest(server, body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{error}");
    assert_eq!(error["error"]["code"], "request_too_large");
    assert_eq!(error["error"]["field"], field);
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains(flag), "{message} names {flag}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worst_case_ingest_bodies_are_refused_or_bounded_and_the_server_stays_up() {
    // Small chunks make many rows out of few bytes: the worst default-ish configuration.
    let server = Server::start(&["--chunk-size", "200", "--chunk-overlap", "20"]).await;

    // ~55k chunks from one 10 MB document.
    let one_huge = json!({"documents": [{"id": "huge", "text": words(BODY_BYTES)}]});
    assert_too_large(
        &server,
        &one_huge,
        "documents[0].text",
        "--max-ingest-chunks",
    )
    .await;

    // ~140k tiny documents.
    let many: Vec<Value> = (0..140_000)
        .map(|i| json!({"id": format!("d{i}"), "text": "x"}))
        .collect();
    let many = json!({ "documents": many });
    assert!(serde_json::to_vec(&many).unwrap().len() < BODY_BYTES + 500_000);
    assert_too_large(&server, &many, "documents", "--max-ingest-documents").await;

    // 10 MB of metadata, which would be copied into every chunk row.
    let metadata = json!({"blob": "m".repeat(BODY_BYTES - 1000)});
    let fat = json!({"documents": [{"id": "fat", "text": words(20_000), "metadata": metadata}]});
    assert_too_large(
        &server,
        &fat,
        "documents[0].metadata",
        "--max-metadata-bytes",
    )
    .await;

    // The largest accepted bodies, several at once: some are shed with 503 + Retry-After.
    let near_chunk_limit = json!({"documents": [{"id": "big", "text": words(3_500_000)}]});
    let near_metadata_limit: Vec<Value> = (0..550)
        .map(|i| json!({"id": format!("m{i}"), "text": words(400), "metadata": {"blob": "m".repeat(16_000)}}))
        .collect();
    let near_metadata_limit = json!({ "documents": near_metadata_limit });
    let bodies: Vec<&Value> = (0..8)
        .map(|i| {
            if i % 2 == 0 {
                &near_chunk_limit
            } else {
                &near_metadata_limit
            }
        })
        .collect();
    let answers = futures::future::join_all(bodies.iter().map(|b| post_ingest(&server, b))).await;
    let mut shed = 0;
    for (status, headers, body) in &answers {
        match *status {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(body["error"]["code"], "overloaded");
                assert_eq!(headers["retry-after"], "1");
                shed += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(
        shed > 0,
        "8 concurrent ingests over the default limit of 4: some are shed"
    );
    assert!(shed < answers.len(), "and some are served");
    for body in [&near_chunk_limit, &near_metadata_limit] {
        let (status, _, answer) = post_ingest(&server, body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }

    let health = server
        .http()
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let stats = server.admin().stats().await.unwrap();
    assert_eq!(stats.documents, 551);
    let peak = server.peak_rss_bytes();
    eprintln!("peak RSS of the server: {} MiB", peak >> 20);
    assert!(
        peak < POD_MEMORY_LIMIT,
        "peak RSS {} MiB is over the pod's memory limit",
        peak >> 20
    );
}

#[tokio::test]
async fn metadata_counts_towards_the_byte_quota_once_per_chunk() {
    let server = Server::start(&[
        "--max-bytes",
        "300",
        "--chunk-size",
        "20",
        "--chunk-overlap",
        "0",
    ])
    .await;
    // 5 bytes of text, 102 bytes of metadata: 107.
    let small =
        json!({"documents": [{"id": "a", "text": "hello", "metadata": {"k": "v".repeat(94)}}]});
    let (status, _, body) = post_ingest(&server, &small).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(server.admin().stats().await.unwrap().bytes, 107);
    // Two chunks of short text, each stored with the 102 bytes: over 300 with the first.
    let text = "0123456789abcdef ghijklmnopqrstuvw";
    let chunked =
        json!({"documents": [{"id": "b", "text": text, "metadata": {"k": "v".repeat(94)}}]});
    let (status, _, body) = post_ingest(&server, &chunked).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_eq!(body["error"]["code"], "storage_quota_exceeded");
}

/// Connections that send part of a request line and stall (slow-loris).
async fn stalled_connections(server: &Server, count: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut streams = Vec::new();
    for _ in 0..count {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        stream
            .write_all(b"GET /v1/stats HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        streams.push(stream);
    }
    streams
}

/// Reads until the server closes the connection; panics if it stays open for `patience`.
async fn assert_closed_within(stream: &mut tokio::net::TcpStream, patience: Duration) {
    use tokio::io::AsyncReadExt;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(patience, stream.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "a stalled connection was still open after {patience:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_are_closed_after_the_header_timeout_while_others_are_served() {
    let server = Server::start(&["--header-read-timeout-ms", "1000"]).await;
    let mut stalled = stalled_connections(&server, 200).await;
    // A well-behaved client is served meanwhile.
    let started = Instant::now();
    assert_eq!(server.admin().stats().await.unwrap().documents, 0);
    let health = server
        .http()
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "served without waiting"
    );
    for stream in &mut stalled {
        assert_closed_within(stream, Duration::from_secs(10)).await;
    }
    assert_eq!(
        server
            .http()
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_until_stalled_ones_time_out() {
    let server =
        Server::start(&["--header-read-timeout-ms", "1000", "--max-connections", "4"]).await;
    let mut stalled = stalled_connections(&server, 4).await;
    let started = Instant::now();
    let health = server
        .http()
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "the fifth connection was served while four stalled ones held every slot"
    );
    for stream in &mut stalled {
        assert_closed_within(stream, Duration::from_secs(10)).await;
    }
}
