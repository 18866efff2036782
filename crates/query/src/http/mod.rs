//! The HTTP API: shared state, the router and its middleware stack.

pub mod auth;
pub mod error;
mod health;
mod json_keys;
mod routes;
pub mod server;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::{get, post};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::embed::Embedder;
use crate::ingest::IngestLimits;
use crate::ingest::chunking::ChunkConfig;
use crate::ingest::writer::WriterHandle;
use crate::search::Searcher;
use crate::store::Store;
use crate::telemetry::Metrics;
use auth::KeyStore;
use error::ApiError;

pub struct AppState {
    /// Set once the table is open; until then data routes answer 503.
    pub store: OnceLock<Arc<Store>>,
    /// Searches the store; set with it.
    pub searcher: OnceLock<Searcher>,
    pub writer: OnceLock<WriterHandle>,
    pub embedder: Arc<dyn Embedder>,
    pub chunking: ChunkConfig,
    pub ingest_limits: IngestLimits,
    pub keys: Arc<KeyStore>,
    pub metrics: Arc<Metrics>,
    /// Local data directory, for the disk check; None on object storage.
    pub data_dir: Option<PathBuf>,
    /// Mode of searches that name none.
    pub default_mode: kbeast_client::SearchMode,
    pub warmup: Warmup,
    /// Set on SIGTERM: responses carry `Connection: close` and /readyz fails.
    pub draining: AtomicBool,
}

/// Start-up progress reported by /readyz.
#[derive(Debug, Default)]
pub struct Warmup {
    pub table_open: AtomicBool,
    pub indices_loaded: AtomicBool,
    pub query_path: AtomicBool,
}

impl AppState {
    pub fn store(&self) -> Result<&Arc<Store>, ApiError> {
        self.store.get().ok_or_else(ApiError::not_ready)
    }

    pub fn searcher(&self) -> Result<&Searcher, ApiError> {
        self.searcher.get().ok_or_else(ApiError::not_ready)
    }

    pub fn writer(&self) -> Result<&WriterHandle, ApiError> {
        self.writer.get().ok_or_else(ApiError::not_ready)
    }
}

pub struct HttpLimits {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// Ingests prepared at once; more are answered 503 with `Retry-After`.
    pub max_concurrent_ingests: usize,
    /// `/v1` requests in progress at once; more are answered 503 with `Retry-After`.
    pub max_requests_in_flight: usize,
}

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: Arc<AppState>, limits: &HttpLimits) -> Router {
    let api = Router::new()
        .route(
            "/v1/documents",
            post(routes::ingest).layer(middleware::from_fn_with_state(
                shed_over(limits.max_concurrent_ingests),
                shed,
            )),
        )
        .route(
            "/v1/documents/{id}",
            get(routes::get_document).delete(routes::delete_document),
        )
        .route("/v1/documents:delete", post(routes::delete_by_filter))
        .route("/v1/documents:erase", post(routes::erase))
        .route("/v1/search", post(routes::search))
        .route("/v1/stats", get(routes::stats))
        // Probes and metrics are never shed: a loaded pod is not a dead one.
        .route_layer(middleware::from_fn_with_state(
            shed_over(limits.max_requests_in_flight),
            shed,
        ))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(|| async { ApiError::not_found("no such route") });

    // Outermost first: the request id exists before the trace span opens, and
    // error rewriting sees the bare 408/413 responses of the inner layers.
    let layers = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let request_id = request
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                        request_id,
                    )
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(middleware::map_response(error::json_errors))
        .layer(middleware::from_fn(error::name_request_in_internal_errors))
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ));

    api.layer(middleware::from_fn_with_state(
        state.clone(),
        count_requests,
    ))
    .layer(middleware::map_response_with_state(
        state.clone(),
        close_while_draining,
    ))
    // The tower-http limit above is the single body limit.
    .layer(DefaultBodyLimit::disable())
    .layer(layers)
    .with_state(state)
}

/// At most `limit` requests at once through the wrapped routes together; the rest
/// get 503 with `Retry-After` at once, instead of queueing their bodies in memory.
fn shed_over(limit: usize) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(limit.max(1)))
}

async fn shed(State(slots): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    let Ok(_slot) = slots.try_acquire_owned() else {
        // Read the refused body to its end, discarding it: a server that answers
        // early and closes the connection makes the client fail with a broken
        // pipe while sending, instead of reading the 503.
        let mut body = request.into_body().into_data_stream();
        while let Some(Ok(_)) = body.next().await {}
        return overloaded();
    };
    next.run(request).await
}

fn overloaded() -> Response {
    let mut response = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "too many requests of this kind in progress; retry shortly",
    )
    .into_response();
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// `kb_http_requests_total` and `kb_http_request_duration_seconds`, labelled by
/// route template (not raw path, to bound cardinality).
async fn count_requests(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let metrics = &state.metrics;
    metrics
        .http_requests
        .with_label_values(&[method, route.as_str(), response.status().as_str()])
        .inc();
    metrics
        .http_duration
        .with_label_values(&[method, route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The method as a metric label: the standard methods by name, anything else
/// `other`, since any token is a valid method and each would be a new series.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// While draining, every response asks the client to close the connection, so keep-alive
/// clients reconnect (through the Service, to another pod) before this one stops accepting.
async fn close_while_draining(
    State(state): State<Arc<AppState>>,
    mut response: axum::response::Response,
) -> axum::response::Response {
    if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}
