//! HTTP API behaviour of the real binary: ingest, get, search, delete, stats,
//! auth, errors, quotas, probes and metrics.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, Server, doc, ingest_request, write_keys};
use kbeast_client::{
    ClientError, DocumentInput, ErrorBody, Filter, HealthStatus, SearchMode, SearchRequest,
};
use reqwest::StatusCode;
use serde_json::json;

const RUST: &str = "Rust is a systems programming language. The borrow checker enforces ownership \
                    and lifetimes at compile time, so memory safety needs no garbage collector.";
const PLANTS: &str = "Photosynthesis lets plants turn sunlight, water and carbon dioxide into \
                      glucose. Chlorophyll in the leaves absorbs mostly red and blue light.";
const OCEAN: &str = "Ocean tides are caused by the gravitational pull of the moon and the sun. \
                     Spring tides happen when they align.";
const BREAD: &str = "Sourdough bread rises with wild yeast and lactic acid bacteria from a starter, \
                     then bakes in a hot oven until the crust is dark.";

fn sourced(id: &str, text: &str, source: &str, metadata: serde_json::Value) -> DocumentInput {
    DocumentInput {
        id: Some(id.to_string()),
        text: text.to_string(),
        source: Some(source.to_string()),
        metadata: Some(metadata.as_object().unwrap().clone()),
    }
}

fn top_doc(hits: &[kbeast_client::Hit]) -> &str {
    &hits.first().expect("at least one hit").doc_id
}

async fn api_error(result: Result<impl std::fmt::Debug, ClientError>) -> (StatusCode, ErrorBody) {
    match result {
        Err(ClientError::Api { status, body }) => (status, body),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Runs each named `async fn(Backend)` once on local disk and once on S3
/// (a moto server): the same suite on both storage backends.
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod local {
            $(#[tokio::test]
            async fn $test() {
                super::$test(super::Backend::Local).await
            })*
        }
        mod s3 {
            $(#[tokio::test]
            async fn $test() {
                if let Some(backend) = super::Backend::s3() {
                    super::$test(backend).await
                }
            })*
        }
    };
}

on_every_backend!(
    ingest_get_search_and_replace,
    delete_by_id_and_by_filter,
    stats_report_counts_model_and_version,
    readyz_and_metrics,
    erase_removes_the_documents_for_good,
    restart_keeps_every_document,
    default_search_mode_applies_when_mode_is_omitted,
    two_writers_on_one_table_lose_nothing,
);

async fn ingest_get_search_and_replace(backend: Backend) {
    let server = Server::start_on(backend, &["--chunk-size", "80", "--chunk-overlap", "10"]).await;
    let client = server.admin();
    let response = client
        .ingest(&ingest_request(vec![
            sourced("rust", RUST, "wiki", json!({"topic": "code"})),
            sourced("plants", PLANTS, "wiki", json!({"topic": "biology"})),
            sourced("ocean", OCEAN, "blog", json!({"topic": "physics"})),
            sourced("bread", BREAD, "blog", json!({"topic": "food"})),
        ]))
        .await
        .unwrap();
    let ids: Vec<&str> = response.documents.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["rust", "plants", "ocean", "bread"]);
    assert!(
        response.documents.iter().all(|d| d.chunks >= 2),
        "{response:?}"
    );

    // Get returns the chunks in order, consistent with the ingest response.
    let rust = client.get_document("rust").await.unwrap();
    assert_eq!(rust.chunks.len() as u32, response.documents[0].chunks);
    assert_eq!(rust.source.as_deref(), Some("wiki"));
    assert_eq!(rust.metadata["topic"], "code");
    assert!(
        rust.chunks
            .iter()
            .enumerate()
            .all(|(i, c)| c.index == i as u32)
    );
    assert!(rust.chunks[0].text.starts_with("Rust is a systems"));
    assert!(rust.chunks.iter().all(|c| c.text.chars().count() <= 80));

    for (mode, query, expected) in [
        (SearchMode::Keyword, "photosynthesis chlorophyll", "plants"),
        (
            SearchMode::Vector,
            "borrow checker ownership lifetimes",
            "rust",
        ),
        (SearchMode::Hybrid, "moon gravitational tides", "ocean"),
        (SearchMode::Hybrid, "sourdough yeast oven", "bread"),
    ] {
        let result = client
            .search(&SearchRequest::new(query, mode, 3))
            .await
            .unwrap();
        assert_eq!(result.mode, mode);
        assert!(!result.degraded);
        assert!(result.hits.len() <= 3);
        assert_eq!(
            top_doc(&result.hits),
            expected,
            "{mode:?} {query:?}: {:?}",
            result.hits
        );
        let scores: Vec<f32> = result.hits.iter().map(|h| h.score).collect();
        assert!(
            scores.windows(2).all(|w| w[0] >= w[1]),
            "sorted by score: {scores:?}"
        );
    }

    // Keyword search finds only chunks containing the word.
    let result = client
        .search(&SearchRequest::new("glucose", SearchMode::Keyword, 10))
        .await
        .unwrap();
    assert!(!result.hits.is_empty());
    assert!(result.hits.iter().all(|h| h.text.contains("glucose")));
    assert_eq!(result.hits[0].metadata["topic"], "biology");

    // A filter restricts every mode.
    let mut filtered = SearchRequest::new("borrow checker ownership", SearchMode::Vector, 10);
    filtered.filter = Some(Filter {
        source: Some("blog".into()),
        ..Filter::default()
    });
    let result = client.search(&filtered).await.unwrap();
    assert!(!result.hits.is_empty());
    assert!(
        result
            .hits
            .iter()
            .all(|h| h.source.as_deref() == Some("blog"))
    );
    filtered.filter = Some(Filter {
        metadata: Some(json!({"topic": "nope"}).as_object().unwrap().clone()),
        ..Filter::default()
    });
    assert!(client.search(&filtered).await.unwrap().hits.is_empty());

    // Re-ingesting replaces all chunks: stale ones disappear.
    let before = client.stats().await.unwrap();
    let replaced = client
        .ingest(&ingest_request(vec![doc("rust", "Rust, shortened.")]))
        .await
        .unwrap();
    assert_eq!(replaced.documents[0].chunks, 1);
    let rust = client.get_document("rust").await.unwrap();
    assert_eq!(rust.chunks.len(), 1);
    assert_eq!(rust.chunks[0].text, "Rust, shortened.");
    assert!(rust.metadata.is_empty());
    let after = client.stats().await.unwrap();
    assert_eq!(after.documents, before.documents);
    assert_eq!(
        after.chunks,
        before.chunks - u64::from(response.documents[0].chunks) + 1
    );
    let result = client
        .search(&SearchRequest::new(
            "borrow checker",
            SearchMode::Keyword,
            10,
        ))
        .await
        .unwrap();
    assert!(
        result.hits.iter().all(|h| h.doc_id != "rust"),
        "{:?}",
        result.hits
    );

    // Documents without an id get a content-derived one: retrying is idempotent.
    let anon = ingest_request(vec![DocumentInput {
        text: "An anonymous note about tea.".into(),
        ..DocumentInput::default()
    }]);
    let first = client.ingest(&anon).await.unwrap();
    let second = client.ingest(&anon).await.unwrap();
    assert_eq!(first.documents[0].id, second.documents[0].id);
    assert!(second.version > first.version);
    assert_eq!(
        client.stats().await.unwrap().documents,
        before.documents + 1
    );

    // Query text is plain words, never syntax: odd characters cannot break a search.
    for query in [
        "\"unbalanced",
        "a:b OR (c",
        "-minus +plus *",
        "🦀 ü",
        "' OR 1=1 --",
        "the",
    ] {
        for mode in [SearchMode::Keyword, SearchMode::Vector, SearchMode::Hybrid] {
            client
                .search(&SearchRequest::new(query, mode, 5))
                .await
                .unwrap_or_else(|e| panic!("{mode:?} {query:?}: {e}"));
        }
    }

    // Ids with awkward characters round-trip through the path.
    let odd = "it's a/doc ü?";
    client
        .ingest(&ingest_request(vec![doc(odd, "odd id")]))
        .await
        .unwrap();
    assert_eq!(client.get_document(odd).await.unwrap().id, odd);
}

async fn delete_by_id_and_by_filter(backend: Backend) {
    let server = Server::start_on(backend, &[]).await;
    let client = server.admin();
    client
        .ingest(&ingest_request(vec![
            sourced("a", "alpha text", "s1", json!({"lang": "en", "team": "x"})),
            sourced("b", "beta text", "s1", json!({"lang": "de"})),
            sourced("c", "gamma text", "s2", json!({"lang": "en"})),
            sourced("d", "delta text", "s2", json!({"lang": "fr"})),
            sourced(
                "e",
                "epsilon text",
                "s3",
                json!({"lang": "en", "team": "y"}),
            ),
        ]))
        .await
        .unwrap();

    let deleted = client.delete_document("a").await.unwrap();
    assert_eq!((deleted.deleted_documents, deleted.deleted_chunks), (1, 1));
    let (status, body) = api_error(client.get_document("a").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body.error.code, "not_found");
    assert_eq!(
        api_error(client.delete_document("a").await).await.0,
        StatusCode::NOT_FOUND
    );

    let by_source = client
        .delete_by_filter(&Filter {
            source: Some("s1".into()),
            ..Filter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_source.deleted_documents, 1); // only b is left in s1
    let by_metadata = client
        .delete_by_filter(&Filter {
            metadata: Some(json!({"lang": "en"}).as_object().unwrap().clone()),
            ..Filter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_metadata.deleted_documents, 2); // c and e
    let by_ids = client
        .delete_by_filter(&Filter {
            ids: Some(vec!["d".into(), "missing".into()]),
            ..Filter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_ids.deleted_documents, 1);

    let stats = client.stats().await.unwrap();
    assert_eq!((stats.documents, stats.chunks, stats.bytes), (0, 0, 0));
    let hits = client
        .search(&SearchRequest::new("text", SearchMode::Hybrid, 10))
        .await
        .unwrap()
        .hits;
    assert!(hits.is_empty(), "{hits:?}");

    let (status, body) = api_error(client.delete_by_filter(&Filter::default()).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body.error.field.as_deref(), Some("ids"));
}

/// A filter condition that selects by nothing (`"metadata": {}`, `"ids": []`) is refused with
/// the field named: an empty metadata object would otherwise match every document, so a write
/// key could delete everything through `documents:delete`.
#[tokio::test]
async fn filter_conditions_that_select_nothing_are_refused_and_delete_nothing() {
    let server = Server::start_on(Backend::Local, &[]).await;
    let client = server.admin();
    client
        .ingest(&ingest_request(vec![
            sourced("a", "alpha text", "s1", json!({"lang": "en"})),
            sourced("b", "beta text", "s2", json!({"lang": "de"})),
        ]))
        .await
        .unwrap();
    let empty_metadata = Filter {
        metadata: Some(serde_json::Map::new()),
        ..Filter::default()
    };
    let no_ids = Filter {
        ids: Some(Vec::new()),
        ..Filter::default()
    };
    for (filter, field) in [(&empty_metadata, "metadata"), (&no_ids, "ids")] {
        let (status, body) = api_error(client.delete_by_filter(filter).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{filter:?}");
        assert_eq!(body.error.field.as_deref(), Some(field), "{filter:?}");
        let mut search = SearchRequest::new("text", SearchMode::Keyword, 10);
        search.filter = Some(filter.clone());
        let (status, body) = api_error(client.search(&search).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "search {filter:?}");
        assert_eq!(
            body.error.field.as_deref(),
            Some(&*format!("filter.{field}")),
            "search {filter:?}"
        );
    }
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.documents, 2, "nothing was deleted");
}

async fn stats_report_counts_model_and_version(backend: Backend) {
    let server = Server::start_on(backend, &["--embedding-dim", "64"]).await;
    let client = server.admin();
    let empty = client.stats().await.unwrap();
    assert_eq!((empty.documents, empty.chunks, empty.bytes), (0, 0, 0));
    assert_eq!((empty.model.as_str(), empty.dimension), ("hash-v1", 64));
    let response = client
        .ingest(&ingest_request(vec![
            doc("x", "hello world"),
            doc("y", "héllo"),
        ]))
        .await
        .unwrap();
    let stats = client.stats().await.unwrap();
    assert_eq!((stats.documents, stats.chunks), (2, 2));
    assert_eq!(stats.bytes, ("hello world".len() + "héllo".len()) as u64);
    assert!(stats.storage_bytes > 0);
    assert_eq!(stats.table_version, response.version);
    assert!(stats.table_version > empty.table_version);
}

const READER: &str = "reader-secret-0000000000";
const WRITER: &str = "writer-secret-0000000000";

#[tokio::test]
async fn auth_scopes_and_key_reload() {
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = keys_dir.path().join("keys.json");
    write_keys(
        &keys,
        &json!([
            {"id": "reader", "secret": READER, "scopes": ["read"]},
            {"id": "writer", "secret": WRITER, "scopes": ["write"]},
        ])
        .to_string(),
    );
    let server = Server::start(&[
        "--api-keys",
        keys.to_str().unwrap(),
        "--keys-reload-ms",
        "100",
    ])
    .await;
    assert!(
        !server.data_dir().join("api-keys.yaml").exists(),
        "no key generated when a file is given"
    );
    let search = SearchRequest::new("anything", SearchMode::Keyword, 5);

    let (status, body) = api_error(server.client(None).search(&search).await).await;
    assert_eq!(
        (status, body.error.code.as_str()),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
    let (status, _) = api_error(
        server
            .client(Some("wrong-secret-000000000".into()))
            .stats()
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let response = server
        .http()
        .get(server.url("/v1/stats"))
        .header("authorization", format!("Basic {READER}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    // `X-Api-Key` does what `Authorization: Bearer` does (the Kubernetes service proxy
    // keeps `Authorization` for itself).
    for (key, expected) in [
        (READER, StatusCode::OK),
        ("wrong-secret-000000000", StatusCode::UNAUTHORIZED),
    ] {
        let response = server
            .http()
            .get(server.url("/v1/stats"))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "X-Api-Key {key}");
    }

    let reader = server.client(Some(READER.into()));
    let writer = server.client(Some(WRITER.into()));
    reader.search(&search).await.unwrap();
    let (status, body) =
        api_error(reader.ingest(&ingest_request(vec![doc("a", "text")])).await).await;
    assert_eq!(
        (status, body.error.code.as_str()),
        (StatusCode::FORBIDDEN, "permission_denied")
    );
    assert_eq!(
        api_error(reader.delete_document("a").await).await.0,
        StatusCode::FORBIDDEN
    );
    writer
        .ingest(&ingest_request(vec![doc("a", "text")]))
        .await
        .unwrap();
    assert_eq!(
        api_error(writer.search(&search).await).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        api_error(writer.stats().await).await.0,
        StatusCode::FORBIDDEN
    );

    for path in ["/healthz", "/readyz", "/metrics"] {
        let status = server
            .http()
            .get(server.url(path))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::OK, "{path}");
    }

    // Replace the keys: the new admin key starts working, the old keys stop.
    let new_admin = "new-admin-secret-000000000";
    write_keys(
        &keys,
        &format!("- id: ops\n  secret: {new_admin}\n  scopes: [admin]\n"),
    );
    let admin = server.client(Some(new_admin.into()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin.stats().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "new key not picked up:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(admin.stats().await.unwrap().documents, 1);
    assert_eq!(
        api_error(reader.search(&search).await).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Secrets never reach the log; key ids do (audit).
    let log = server.log();
    for secret in [READER, WRITER, new_admin] {
        assert!(!log.contains(secret), "secret {secret} logged");
    }
    let audit = log
        .lines()
        .find(|l| l.contains("\"target\":\"audit\"") && l.contains("\"action\":\"ingest\""))
        .expect("audit line for the ingest");
    let audit: serde_json::Value = serde_json::from_str(audit).unwrap();
    assert_eq!(audit["fields"]["key_id"], "writer");
    assert_eq!(audit["fields"]["documents"], 1);
}

async fn post_raw(
    server: &Server,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, ErrorBody) {
    let response = server
        .http()
        .post(server.url(path))
        .bearer_auth(server.admin_key())
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "{status}"
    );
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {text:?}: {e}"));
    (status, body)
}

#[tokio::test]
async fn errors_are_json_and_name_the_field() {
    let server = Server::start(&["--max-body-bytes", "4096"]).await;

    let big = json!({"documents": [{"id": "big", "text": "x".repeat(5000)}]}).to_string();
    let (status, body) = post_raw(&server, "/v1/documents", big).await;
    assert_eq!(
        (status, body.error.code.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    // Also when the size is not announced up front (chunked body).
    let stream = futures::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1000])));
    let (status, _) = post_raw(&server, "/v1/documents", reqwest::Body::wrap_stream(stream)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(server.admin().stats().await.unwrap().documents, 0);

    let (status, body) = post_raw(&server, "/v1/search", "{\"query\": ").await;
    assert_eq!(
        (status, body.error.code.as_str()),
        (StatusCode::BAD_REQUEST, "malformed_json")
    );

    for (request, field) in [
        (json!({"query": "q", "mode": "fuzzy"}), "mode"),
        (json!({"query": "q", "top_k": 0}), "top_k"),
        (json!({"query": "q", "top_k": 101}), "top_k"),
        (json!({"query": "q", "top_k": -1}), "top_k"),
        (json!({"mode": "vector"}), "query"),
        (json!({"query": "  "}), "query"),
        (
            json!({"query": "q", "filter": {"source": 3}}),
            "filter.source",
        ),
    ] {
        let (status, body) = post_raw(&server, "/v1/search", request.to_string()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request}");
        assert_eq!(body.error.code, "invalid_argument");
        assert_eq!(
            body.error.field.as_deref(),
            Some(field),
            "{request}: {body:?}"
        );
    }
    for (request, field) in [
        (
            json!({"documents": [{"id": "a", "text": "ok"}, {"id": "b", "text": " \n"}]}),
            "documents[1].text",
        ),
        (json!({"documents": [{"id": "a"}]}), "documents[0].text"),
        (
            json!({"documents": [{"id": "", "text": "t"}]}),
            "documents[0].id",
        ),
        (json!({"documents": []}), "documents"),
        (json!({"docs": []}), "docs"),
    ] {
        let (status, body) = post_raw(&server, "/v1/documents", request.to_string()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request}");
        assert_eq!(
            body.error.field.as_deref(),
            Some(field),
            "{request}: {body:?}"
        );
    }
    // The rejected batch wrote nothing, not even its valid first document.
    assert_eq!(server.admin().stats().await.unwrap().documents, 0);

    let response = server
        .http()
        .get(server.url("/v2/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.error.code, "not_found");
    let response = server
        .http()
        .put(server.url("/v1/search"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.error.code, "method_not_allowed");

    // Request ids: propagated when given, generated otherwise.
    let response = server
        .http()
        .get(server.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let response = server
        .http()
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    let generated = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    assert!(server.log().contains("abc-123"), "request id in the logs");
}

#[tokio::test]
async fn quotas_reject_without_writing() {
    let server = Server::start(&["--max-documents", "2", "--max-bytes", "150"]).await;
    let client = server.admin();
    let fifty = "x".repeat(50);
    client
        .ingest(&ingest_request(vec![doc("a", &fifty), doc("b", &fifty)]))
        .await
        .unwrap();

    let (status, body) = api_error(
        client
            .ingest(&ingest_request(vec![doc("c", "small")]))
            .await,
    )
    .await;
    assert_eq!(
        (status, body.error.code.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "document_quota_exceeded")
    );
    // Replacing an existing document adds none, so it is allowed.
    client
        .ingest(&ingest_request(vec![doc("a", &"y".repeat(40))]))
        .await
        .unwrap();
    let (status, body) = api_error(
        client
            .ingest(&ingest_request(vec![doc("b", &"z".repeat(120))]))
            .await,
    )
    .await;
    assert_eq!(
        (status, body.error.code.as_str()),
        (StatusCode::INSUFFICIENT_STORAGE, "storage_quota_exceeded")
    );

    let stats = client.stats().await.unwrap();
    assert_eq!((stats.documents, stats.bytes), (2, 90));
    assert_eq!(
        client.get_document("b").await.unwrap().chunks[0].text,
        fifty
    );
    assert!(client.get_document("c").await.is_err());
    // Deleting frees quota.
    client.delete_document("b").await.unwrap();
    client
        .ingest(&ingest_request(vec![doc("c", "small")]))
        .await
        .unwrap();
}

async fn readyz_and_metrics(backend: Backend) {
    let server = Server::start_on(backend, &[]).await;
    let (status, ready) = server.ready().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready.status, HealthStatus::Healthy);
    assert_eq!(ready.components.store.status, HealthStatus::Healthy);
    assert!(ready.components.store.latency_ms.is_some());
    assert_eq!(
        ready.components.embedder.model,
        kbeast_api::query_contract::HASH_MODEL_ID
    );
    match server.backend {
        Backend::Local => assert!(ready.components.disk.available_bytes.unwrap() > 0),
        // No local disk holds the data.
        Backend::S3(_) => assert_eq!(ready.components.disk.available_bytes, None),
    }
    assert_eq!(
        ready.components.warmup,
        kbeast_client::WarmupHealth {
            status: HealthStatus::Healthy,
            table_open: true,
            indices_loaded: true,
            query_path: true,
        }
    );
    let raw: serde_json::Value = server
        .http()
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raw["components"]["store"]["status"], "healthy");
    assert_eq!(raw["components"]["warmup"]["status"], "healthy");
    assert_eq!(raw["components"]["warmup"]["query_path"], true);

    let client = server.admin();
    client
        .ingest(&ingest_request(vec![
            doc("m1", "metrics test"),
            doc("m2", "more metrics"),
        ]))
        .await
        .unwrap();
    client
        .search(&SearchRequest::new("metrics", SearchMode::Vector, 5))
        .await
        .unwrap();
    let metrics = server
        .http()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "kb_query_duration_seconds_bucket{mode=\"vector\"",
        "kb_queries_total{mode=\"vector\",outcome=\"ok\"} 1",
        "kb_queries_total{mode=\"hybrid\",outcome=\"ok\"} 0",
        "kb_ingest_documents_total 2",
        "kb_ingest_chunks_total 2",
        "kb_embedding_duration_seconds_count 2",
        "kb_embedding_errors_total 0",
        "kb_vector_search_duration_seconds_count 1",
        "kb_documents 2",
        "kb_chunks 2",
        "kb_storage_bytes ",
        "kb_degraded 0",
        "kb_http_requests_total{method=\"POST\",route=\"/v1/search\",status=\"200\"} 1",
        "kb_http_request_duration_seconds_bucket",
        "kb_cache_capacity_bytes{cache=\"index\"} 268435456",
        "kb_cache_capacity_bytes{cache=\"metadata\"} 16777216",
    ] {
        assert!(metrics.contains(name), "missing {name:?} in\n{metrics}");
    }
}

/// A word no other text in these tests contains, to look for in storage.
const SECRET_WORD: &str = "zanzibarquokkaflux";

/// Files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
            {
                found.push(path);
            }
        }
    }
    found
}

async fn erase_removes_the_documents_for_good(backend: Backend) {
    let server = Server::start_on(backend, &[]).await;
    let client = server.admin();
    let secret = format!("The patient record mentions {SECRET_WORD} twice: {SECRET_WORD}.");
    client
        .ingest(&ingest_request(vec![
            doc("keep", "an ordinary document about bread"),
            sourced("forget-me", &secret, "crm", json!({"subject": "42"})),
        ]))
        .await
        .unwrap();
    // Overwrite once more so an older version also holds the text.
    client
        .ingest(&ingest_request(vec![sourced(
            "forget-me",
            &secret,
            "crm",
            json!({"subject": "42"}),
        )]))
        .await
        .unwrap();
    if let Backend::Local = server.backend {
        // Otherwise the check after the erasure would prove nothing.
        assert!(
            !files_containing(&server.data_dir(), SECRET_WORD).is_empty(),
            "the text is stored verbatim before the erasure"
        );
    }

    // Erasure is an admin action and needs a filter.
    let (status, body) = api_error(client.erase(&Filter::default()).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body.error.field.as_deref(), Some("ids"));

    let erased = client
        .erase(&Filter {
            metadata: Some(json!({"subject": "42"}).as_object().unwrap().clone()),
            ..Filter::default()
        })
        .await
        .unwrap();
    assert_eq!((erased.erased_documents, erased.erased_chunks), (1, 1));
    assert!(erased.versions_removed > 0, "{erased:?}");
    assert!(erased.bytes_removed > 0, "{erased:?}");

    assert_eq!(
        api_error(client.get_document("forget-me").await).await.0,
        StatusCode::NOT_FOUND
    );
    for mode in [SearchMode::Keyword, SearchMode::Hybrid, SearchMode::Vector] {
        let hits = client
            .search(&SearchRequest::new(SECRET_WORD, mode, 10))
            .await
            .unwrap()
            .hits;
        assert!(
            hits.iter().all(|h| h.doc_id == "keep"),
            "{mode:?}: {hits:?}"
        );
    }
    let stats = client.stats().await.unwrap();
    assert_eq!((stats.documents, stats.chunks), (1, 1));
    if let Backend::Local = server.backend {
        let left = files_containing(&server.data_dir(), SECRET_WORD);
        assert!(left.is_empty(), "erased text still on disk in {left:?}");
    }
    // The rest still works after the rewrite.
    assert_eq!(
        client.get_document("keep").await.unwrap().chunks[0].text,
        "an ordinary document about bread"
    );
}

async fn restart_keeps_every_document(backend: Backend) {
    let mut server = Server::start_on(backend, &[]).await;
    let client = server.admin();
    let docs: Vec<DocumentInput> = (0..30)
        .map(|i| {
            doc(
                &format!("doc-{i}"),
                &format!("document number {i} about topic{i}"),
            )
        })
        .collect();
    for batch in docs.chunks(7) {
        client
            .ingest(&ingest_request(batch.to_vec()))
            .await
            .unwrap();
    }
    client.delete_document("doc-3").await.unwrap();
    let before = client.stats().await.unwrap();
    assert_eq!(before.documents, 29);

    assert!(server.terminate().success(), "{}", server.log());
    server.restart().await;
    let client = server.admin();
    let after = client.stats().await.unwrap();
    assert_eq!(
        (
            after.documents,
            after.chunks,
            after.bytes,
            after.table_version
        ),
        (
            before.documents,
            before.chunks,
            before.bytes,
            before.table_version
        )
    );
    assert_eq!(
        client.get_document("doc-17").await.unwrap().chunks[0].text,
        "document number 17 about topic17"
    );
    assert!(client.get_document("doc-3").await.is_err());
    for mode in [SearchMode::Keyword, SearchMode::Vector, SearchMode::Hybrid] {
        let result = client
            .search(&SearchRequest::new("topic21", mode, 3))
            .await
            .unwrap();
        assert_eq!(top_doc(&result.hits), "doc-21", "{mode:?}");
    }
}

async fn default_search_mode_applies_when_mode_is_omitted(backend: Backend) {
    for (flag, expected) in [
        (None, "hybrid"),
        (Some("vector"), "vector"),
        (Some("keyword"), "keyword"),
        (Some("hybrid"), "hybrid"),
    ] {
        let args: Vec<&str> = match flag {
            Some(mode) => vec!["--default-search-mode", mode],
            None => vec![],
        };
        let server = Server::start_on(backend.clone(), &args).await;
        server
            .admin()
            .ingest(&ingest_request(vec![doc("d", "default modes")]))
            .await
            .unwrap();
        let search = |body: serde_json::Value| {
            let request = server
                .http()
                .post(server.url("/v1/search"))
                .bearer_auth(server.admin_key())
                .json(&body);
            async move {
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                response.json::<serde_json::Value>().await.unwrap()
            }
        };
        let response = search(json!({"query": "default modes"})).await;
        assert_eq!(response["mode"], expected, "flag {flag:?}");
        assert_eq!(response["hits"][0]["doc_id"], "d", "flag {flag:?}");
        // An explicit mode still wins.
        let response = search(json!({"query": "default modes", "mode": "keyword"})).await;
        assert_eq!(response["mode"], "keyword");
    }
}

#[tokio::test]
async fn stats_show_indices_and_cache_budgets() {
    let mut server = Server::start(&[
        "--index-cache-bytes",
        "32M",
        "--metadata-cache-bytes",
        "1048576",
    ])
    .await;
    let client = server.admin();
    client
        .ingest(&ingest_request(vec![doc("a", "alpha"), doc("b", "beta")]))
        .await
        .unwrap();
    let stats = client.stats().await.unwrap();
    assert_eq!(
        stats.cache,
        Some(kbeast_client::CacheConfig {
            index_cache_bytes: 32 << 20,
            metadata_cache_bytes: 1 << 20,
        })
    );
    let index_on = |stats: &kbeast_client::StatsResponse, column: &str| {
        stats
            .indices
            .iter()
            .find(|i| i.columns == [column])
            .cloned()
            .unwrap_or_else(|| panic!("no index on {column}: {:?}", stats.indices))
    };
    for column in ["doc_id", "chunk_id"] {
        let index = index_on(&stats, column);
        assert_eq!(index.index_type, "BTREE", "{index:?}");
        // Two rows written after the (empty) table was indexed.
        assert_eq!(
            index.indexed_rows.unwrap() + index.unindexed_rows.unwrap(),
            2
        );
    }
    assert_eq!(index_on(&stats, "text").index_type, "FTS");
    let metrics = server
        .http()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("kb_cache_capacity_bytes{cache=\"index\"} 33554432"));
    assert!(metrics.contains("kb_cache_capacity_bytes{cache=\"metadata\"} 1048576"));

    // A table without indices (from before the BTree indices, or created by
    // another replica that has not indexed it yet) gets them when opened.
    assert!(server.terminate().success());
    {
        let db = lancedb::connect(server.data_dir().to_str().unwrap())
            .execute()
            .await
            .unwrap();
        let table = db.open_table("chunks").execute().await.unwrap();
        for index in table.list_indices().await.unwrap() {
            table.drop_index(&index.name).await.unwrap();
        }
        assert!(table.list_indices().await.unwrap().is_empty());
    }
    server.restart().await;
    let stats = server.admin().stats().await.unwrap();
    for column in ["doc_id", "chunk_id", "text"] {
        assert_eq!(index_on(&stats, column).indexed_rows, Some(2));
    }
    let found = server
        .admin()
        .search(&kbeast_client::SearchRequest::new(
            "alpha",
            kbeast_client::SearchMode::Keyword,
            5,
        ))
        .await
        .unwrap();
    assert_eq!(found.hits.len(), 1, "{found:?}");
}

#[test]
fn bad_cache_sizes_are_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for (args, env, flag) in [
        (
            vec!["--index-cache-bytes", "lots"],
            None,
            "--index-cache-bytes",
        ),
        (
            vec!["--index-cache-bytes", "5T"],
            None,
            "--index-cache-bytes",
        ),
        (
            vec![],
            Some(("KBEAST_METADATA_CACHE_BYTES", "-1")),
            "--metadata-cache-bytes",
        ),
    ] {
        let mut command = std::process::Command::new(common::BIN);
        command
            .args(["serve", "--data", data, "--listen", "127.0.0.1:0"])
            .args(&args);
        if let Some((name, value)) = env {
            command.env(name, value);
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} {env:?} was accepted");
        assert!(stderr.contains(flag), "{args:?} {env:?}: {stderr}");
    }
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing written"
    );
}

#[tokio::test]
async fn readyz_fails_until_warm_while_healthz_answers() {
    let root = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let log = std::fs::File::create(root.path().join("server.log")).unwrap();
    let mut child = std::process::Command::new(common::BIN)
        .args(["serve", "--data"])
        .arg(root.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut not_ready_seen = 0;
    loop {
        assert!(Instant::now() < deadline, "never ready");
        assert!(child.try_wait().unwrap().is_none(), "server exited");
        let Ok(response) = http.get(format!("{base}/readyz")).send().await else {
            continue; // not listening yet
        };
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap();
        let warmup = &body["components"]["warmup"];
        let warm = warmup["table_open"] == true
            && warmup["indices_loaded"] == true
            && warmup["query_path"] == true;
        if status == StatusCode::OK {
            assert!(warm, "ready before warm: {body}");
            assert_eq!(warmup["status"], "healthy");
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(!warm, "warm but not ready: {body}");
        assert_eq!(body["status"], "unhealthy");
        assert_eq!(warmup["status"], "unhealthy");
        // Liveness does not wait for warmth.
        let health = http.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        not_ready_seen += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    // Creating the table and its three indices takes far longer than a poll.
    assert!(
        not_ready_seen > 0,
        "never saw the server before it was warm"
    );
}

/// Two server processes write the same table at once, with ids of their own
/// and ids both write. Every acknowledged document must be there, and both
/// processes must report the exact counts.
async fn two_writers_on_one_table_lose_nothing(backend: Backend) {
    let args = ["--refresh-interval-ms", "200", "--chunk-size", "400"];
    let first = Server::start_on(backend.clone(), &args).await;
    let second = Server::start_with(
        backend,
        tempfile::tempdir().unwrap(),
        Some(first.data.clone()),
        args.iter().map(|s| s.to_string()).collect(),
    )
    .await;
    const PER_CLIENT: usize = 6;
    const CLIENTS_PER_SERVER: usize = 3;
    let mut tasks = Vec::new();
    for (name, server) in [("one", &first), ("two", &second)] {
        for client_no in 0..CLIENTS_PER_SERVER {
            let client = server.admin();
            tasks.push(tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0..PER_CLIENT {
                    let own = format!("{name}-{client_no}-{i}");
                    // Both servers write these, with the same text.
                    let shared = format!("shared-{client_no}-{i}");
                    let batch = vec![
                        doc(&own, &format!("written by {name} as {own}")),
                        doc(&shared, &format!("written by both as {shared}")),
                    ];
                    let response = client
                        .ingest(&ingest_request(batch))
                        .await
                        .unwrap_or_else(|e| panic!("{name} {own}: {e}"));
                    acknowledged.extend(response.documents.into_iter().map(|d| d.id));
                }
                acknowledged
            }));
        }
    }
    let started = Instant::now();
    let mut expected = std::collections::BTreeSet::new();
    for task in tasks {
        expected.extend(task.await.unwrap());
    }
    assert_eq!(
        expected.len(),
        2 * CLIENTS_PER_SERVER * PER_CLIENT + CLIENTS_PER_SERVER * PER_CLIENT
    );

    eprintln!(
        "{} writes took {:?}",
        first.backend.name(),
        started.elapsed()
    );

    for server in [&first, &second] {
        let client = server.admin();
        // Each process picks up the other's last commits within the refresh interval.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stats = client.stats().await.unwrap();
            if stats.documents == expected.len() as u64 {
                assert_eq!(
                    stats.chunks,
                    expected.len() as u64,
                    "one chunk per document"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} documents on {}:\n{}",
                stats.documents,
                expected.len(),
                server.base_url,
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for id in &expected {
            let document = client
                .get_document(id)
                .await
                .unwrap_or_else(|e| panic!("{id} missing on {}: {e}", server.base_url));
            assert_eq!(document.chunks.len(), 1, "{id}");
        }
        // Searches see the other process's documents too.
        let hits = client
            .search(&SearchRequest::new("two-2-5", SearchMode::Keyword, 3))
            .await
            .unwrap()
            .hits;
        assert_eq!(top_doc(&hits), "two-2-5");
    }
}

#[tokio::test]
async fn chunk_sizes_can_count_tokens() {
    let server = Server::start(&[
        "--chunk-unit",
        "tokens",
        "--chunk-size",
        "4",
        "--chunk-overlap",
        "1",
    ])
    .await;
    let client = server.admin();
    // Ten words of many characters each: pieces of 4 - 1 = 3 words, each chunk
    // after the first starting with the previous piece's last word.
    let words: Vec<String> = (0..10)
        .map(|i| format!("{}{i}", "word".repeat(20)))
        .collect();
    let response = client
        .ingest(&ingest_request(vec![doc("t", &words.join(" "))]))
        .await
        .unwrap();
    assert_eq!(response.documents[0].chunks, 4);
    let chunks = client.get_document("t").await.unwrap().chunks;
    let texts: Vec<Vec<&str>> = chunks
        .iter()
        .map(|c| c.text.split_whitespace().collect())
        .collect();
    assert_eq!(texts[0], words[0..3]);
    assert_eq!(texts[1], words[2..6]);
    assert_eq!(texts[2], words[5..9]);
    assert_eq!(texts[3], words[8..10]);
}

/// Any token is a valid HTTP method, and /metrics needs no key: a raw method label would let
/// anyone create unbounded series. Unknown methods are counted as `other`.
#[tokio::test]
async fn unknown_methods_share_one_metrics_label() {
    let server = Server::start(&[]).await;
    for junk in ["JUNK1", "JUNK2", "BREW"] {
        let method = reqwest::Method::from_bytes(junk.as_bytes()).unwrap();
        let response = server
            .http()
            .request(method, server.url("/v1/stats"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
    let metrics = server
        .http()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains("JUNK") && !metrics.contains("BREW"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "kb_http_requests_total{method=\"other\",route=\"/v1/stats\",status=\"405\"} 3"
        ),
        "{metrics}"
    );
}

/// The route's scope is checked from the headers, before the body is read: a read key that
/// announces 8 MiB to a write route and sends only the first KiB gets 403 at once.
#[tokio::test]
async fn the_scope_is_checked_before_the_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = keys_dir.path().join("keys.json");
    write_keys(
        &keys,
        &json!([{"id": "reader", "secret": READER, "scopes": ["read"]}]).to_string(),
    );
    let server = Server::start(&["--api-keys", keys.to_str().unwrap()]).await;
    for route in [
        "/v1/documents",
        "/v1/documents:delete",
        "/v1/documents:erase",
    ] {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        let head = format!(
            "POST {route} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READER}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            8 << 20
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all("{".repeat(1024).as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            let mut buffer = [0u8; 4096];
            while !String::from_utf8_lossy(&answer).contains("permission_denied") {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&buffer[..n]),
                }
            }
        })
        .await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            read.is_ok(),
            "{route}: no answer while the body was incomplete"
        );
        assert!(answer.starts_with("HTTP/1.1 403"), "{route}: {answer}");
        assert!(answer.contains("permission_denied"), "{route}: {answer}");
    }
}

#[tokio::test]
async fn duplicate_json_keys_are_refused_naming_the_key() {
    let server = Server::start(&[]).await;
    for (route, body, field) in [
        (
            "/v1/documents:delete",
            r#"{"ids": ["keep"], "ids": ["a"]}"#,
            "ids",
        ),
        (
            "/v1/documents",
            r#"{"documents": [{"id": "a", "text": "x", "id": "b"}]}"#,
            "documents[0].id",
        ),
        (
            "/v1/search",
            r#"{"query": "x", "top_k": 1, "top_k": 100000}"#,
            "top_k",
        ),
    ] {
        let response = server
            .http()
            .post(server.url(route))
            .bearer_auth(server.admin_key())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{route}");
        let error: ErrorBody = response.json().await.unwrap();
        assert_eq!(error.error.field.as_deref(), Some(field), "{route}");
        assert!(
            error.error.message.contains("duplicate key"),
            "{route}: {error:?}"
        );
    }
    assert_eq!(server.admin().stats().await.unwrap().documents, 0);
}

/// A storage failure answers 500 with the request id and without LanceDB's text (which names
/// paths, buckets and endpoints); the log has the text under that id.
#[tokio::test]
async fn internal_errors_name_the_request_not_the_storage_details() {
    let server = Server::start(&[]).await;
    let client = server.admin();
    client
        .ingest(&ingest_request(vec![doc("a", RUST)]))
        .await
        .unwrap();
    // The table's data files disappear under the running server.
    let data_files = server.data_dir().join("chunks.lance").join("data");
    std::fs::remove_dir_all(&data_files).unwrap();

    let response = server
        .http()
        .get(server.url("/v1/documents/a"))
        .bearer_auth(server.admin_key())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.error.code, "internal");
    assert!(body.error.message.contains(&request_id), "{body:?}");
    let data_dir = server.data_dir().to_string_lossy().into_owned();
    for internal in [
        data_dir.as_str(),
        "chunks.lance",
        "lance",
        "not found",
        "os error",
    ] {
        assert!(
            !body.error.message.to_lowercase().contains(internal),
            "{internal:?} leaked: {body:?}"
        );
    }
    let log = server.log();
    let logged = log
        .lines()
        .find(|l| l.contains("internal error") && l.contains(&request_id))
        .unwrap_or_else(|| panic!("no log line with the request id:\n{log}"));
    assert!(logged.contains("chunks.lance"), "{logged}");
}

/// A broken keys file keeps the previous keys in force (a bad edit must not lock everyone out),
/// so it is made visible: an error log line without secrets, a failure counter and a gauge.
#[tokio::test]
async fn a_broken_keys_file_is_reported_without_its_secrets() {
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = keys_dir.path().join("keys.json");
    let valid = json!([{"id": "reader", "secret": READER, "scopes": ["read"]}]).to_string();
    write_keys(&keys, &valid);
    let server = Server::start(&[
        "--api-keys",
        keys.to_str().unwrap(),
        "--keys-reload-ms",
        "50",
    ])
    .await;
    let metric = |name: &'static str| {
        let server = &server;
        async move {
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
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{name} missing"))
        }
    };
    assert_eq!(metric("kb_keys_file_valid").await, 1.0);
    assert_eq!(metric("kb_keys_reload_failures_total").await, 0.0);

    // A new secret pasted where the scopes belong.
    let pasted = "sk-new-secret-pasted-in-the-wrong-place";
    write_keys(
        &keys,
        &format!(r#"[{{"id": "reader", "secret": "{READER}", "scopes": "{pasted}"}}]"#),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric("kb_keys_file_valid").await != 0.0 {
        assert!(Instant::now() < deadline, "kb_keys_file_valid stayed 1");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metric("kb_keys_reload_failures_total").await >= 1.0);
    let search = SearchRequest::new("anything", SearchMode::Keyword, 1);
    server
        .client(Some(READER.into()))
        .search(&search)
        .await
        .unwrap();
    let log = server.log();
    assert!(log.contains("the API keys file is broken"), "{log}");
    assert!(!log.contains(pasted), "a secret reached the log:\n{log}");

    write_keys(&keys, &valid);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric("kb_keys_file_valid").await != 1.0 {
        assert!(
            Instant::now() < deadline,
            "kb_keys_file_valid stayed 0 after the fix"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
