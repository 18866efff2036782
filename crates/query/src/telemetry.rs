//! JSON logging and Prometheus metrics.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tracing_subscriber::EnvFilter;

/// JSON lines on stdout. `filter` uses `RUST_LOG` syntax, e.g. `info` or `kbeast_query=debug`.
pub fn init_logging(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .init();
}

pub struct Metrics {
    registry: Registry,
    pub query_duration: HistogramVec,
    pub queries: IntCounterVec,
    pub ingest_documents: IntCounter,
    pub ingest_chunks: IntCounter,
    pub embedding_duration: Histogram,
    pub embedding_errors: IntCounter,
    /// Texts the embedding model read only in part (longer than its token limit).
    pub embedding_truncated_inputs: IntCounter,
    pub vector_search_duration: Histogram,
    pub documents: IntGauge,
    pub chunks: IntGauge,
    pub storage_bytes: IntGauge,
    pub degraded: IntGauge,
    /// UTF-8 bytes of chunk text held: what `--max-bytes` limits.
    pub document_bytes: IntGauge,
    /// `--max-documents` and `--max-bytes`; 0 when unlimited.
    pub quota_max_documents: IntGauge,
    pub quota_max_bytes: IntGauge,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    /// LanceDB Session cache budgets (`--index-cache-bytes`, `--metadata-cache-bytes`).
    pub cache_capacity_bytes: IntGaugeVec,
    /// Reloads of the API keys file that failed (the previous keys stay in force).
    pub keys_reload_failures: IntCounter,
    /// 1 while the keys file on disk is the one in force, 0 while it is broken.
    pub keys_file_valid: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let latency_buckets = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let histogram = |name: &str, help: &str| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(latency_buckets.clone()))
                .expect("valid histogram")
        };
        let metrics = Self {
            query_duration: HistogramVec::new(
                HistogramOpts::new("kb_query_duration_seconds", "Search latency by mode")
                    .buckets(latency_buckets.clone()),
                &["mode"],
            )
            .expect("valid histogram"),
            queries: IntCounterVec::new(
                Opts::new(
                    "kb_queries_total",
                    "Searches by mode and outcome (ok, error, degraded)",
                ),
                &["mode", "outcome"],
            )
            .expect("valid counter"),
            ingest_documents: IntCounter::new(
                "kb_ingest_documents_total",
                "Documents written (including replacements)",
            )
            .expect("valid counter"),
            ingest_chunks: IntCounter::new("kb_ingest_chunks_total", "Chunks written")
                .expect("valid counter"),
            embedding_duration: histogram(
                "kb_embedding_duration_seconds",
                "Latency of one embedding call",
            ),
            embedding_errors: IntCounter::new(
                "kb_embedding_errors_total",
                "Failed embedding calls",
            )
            .expect("valid counter"),
            embedding_truncated_inputs: IntCounter::new(
                "kb_embedding_truncated_inputs_total",
                "Texts longer than the embedding model's token limit, embedded from their start only",
            )
            .expect("valid counter"),
            vector_search_duration: histogram(
                "kb_vector_search_duration_seconds",
                "Latency of the vector part of a search",
            ),
            documents: IntGauge::new("kb_documents", "Documents stored").expect("valid gauge"),
            chunks: IntGauge::new("kb_chunks", "Chunks stored").expect("valid gauge"),
            storage_bytes: IntGauge::new("kb_storage_bytes", "Bytes of table data and index files")
                .expect("valid gauge"),
            degraded: IntGauge::new(
                "kb_degraded",
                "1 while searches fall back to keyword because the embedder is down",
            )
            .expect("valid gauge"),
            keys_reload_failures: IntCounter::new(
                "kb_keys_reload_failures_total",
                "Reloads of the API keys file that failed; the previous keys stay in force",
            )
            .expect("valid counter"),
            keys_file_valid: IntGauge::new(
                "kb_keys_file_valid",
                "1 while the API keys file on disk is in force, 0 while it is broken",
            )
            .expect("valid gauge"),
            document_bytes: IntGauge::new(
                "kb_document_bytes",
                "UTF-8 bytes of chunk text stored (what the byte quota limits)",
            )
            .expect("valid gauge"),
            quota_max_documents: IntGauge::new(
                "kb_quota_max_documents",
                "Document quota; 0 when unlimited",
            )
            .expect("valid gauge"),
            quota_max_bytes: IntGauge::new(
                "kb_quota_max_bytes",
                "Byte quota on chunk text; 0 when unlimited",
            )
            .expect("valid gauge"),
            http_requests: IntCounterVec::new(
                Opts::new(
                    "kb_http_requests_total",
                    "HTTP requests by route and status",
                ),
                &["method", "route", "status"],
            )
            .expect("valid counter"),
            http_duration: HistogramVec::new(
                HistogramOpts::new("kb_http_request_duration_seconds", "HTTP request latency")
                    .buckets(latency_buckets.clone()),
                &["method", "route"],
            )
            .expect("valid histogram"),
            cache_capacity_bytes: IntGaugeVec::new(
                Opts::new(
                    "kb_cache_capacity_bytes",
                    "Byte budget of LanceDB's caches, by cache (index, metadata)",
                ),
                &["cache"],
            )
            .expect("valid gauge"),
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(metrics.query_duration.clone()),
            Box::new(metrics.queries.clone()),
            Box::new(metrics.ingest_documents.clone()),
            Box::new(metrics.ingest_chunks.clone()),
            Box::new(metrics.embedding_duration.clone()),
            Box::new(metrics.embedding_errors.clone()),
            Box::new(metrics.embedding_truncated_inputs.clone()),
            Box::new(metrics.vector_search_duration.clone()),
            Box::new(metrics.documents.clone()),
            Box::new(metrics.chunks.clone()),
            Box::new(metrics.storage_bytes.clone()),
            Box::new(metrics.degraded.clone()),
            Box::new(metrics.document_bytes.clone()),
            Box::new(metrics.quota_max_documents.clone()),
            Box::new(metrics.quota_max_bytes.clone()),
            Box::new(metrics.http_requests.clone()),
            Box::new(metrics.http_duration.clone()),
            Box::new(metrics.cache_capacity_bytes.clone()),
            Box::new(metrics.keys_reload_failures.clone()),
            Box::new(metrics.keys_file_valid.clone()),
        ];
        for collector in collectors {
            metrics
                .registry
                .register(collector)
                .expect("metric names are unique");
        }
        // Pre-create the labelled series so dashboards see zeros, not gaps.
        for mode in ["vector", "keyword", "hybrid"] {
            metrics.query_duration.with_label_values(&[mode]);
            for outcome in ["ok", "error", "degraded"] {
                metrics.queries.with_label_values(&[mode, outcome]);
            }
        }
        metrics
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encoding metrics to memory");
        String::from_utf8(buffer).expect("metrics are UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
