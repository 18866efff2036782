//! `kbeast-query serve`: wires the store, writer, keys and HTTP server
//! together, and shuts down in order on SIGTERM.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::cli::{EmbedderKind, ServeArgs};
use crate::embed::{
    BuiltinConfig, BuiltinEmbedder, Embedder, HashEmbedder, OpenAiConfig, OpenAiEmbedder,
};
use crate::http::auth::{KeyStore, generate_keys_file};
use crate::http::server::{self, ConnectionLimits};
use crate::http::{AppState, HttpLimits, router};
use crate::ingest::IngestLimits;
use crate::ingest::chunking::ChunkConfig;
use crate::ingest::writer::{Maintenance, Quotas, Writer, update_gauges};
use crate::search::Searcher;
use crate::serve_lock::ServeLock;
use crate::store::{
    CacheSizes, ConnectOptions, Store, VectorIndexShape, VectorQuery, is_object_store,
};
use crate::telemetry::Metrics;
use kbeast_client::{SearchMode, SearchRequest};

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let chunking = ChunkConfig::new(args.chunk_size, args.chunk_overlap, args.chunk_unit.into())
        .map_err(anyhow::Error::msg)
        .context("invalid --chunk-size/--chunk-overlap/--chunk-unit")?;
    anyhow::ensure!(args.embedding_dim > 0, "--embedding-dim must be positive");
    // Object storage has no local directory: keys must come from a file, and
    // there is no disk to watch.
    let (uri, data_dir) = if is_object_store(&args.data) {
        anyhow::ensure!(
            args.api_keys.is_some(),
            "--api-keys is required when --data is an object store URI ({})",
            args.data
        );
        (args.data.clone(), None)
    } else {
        std::fs::create_dir_all(&args.data)
            .with_context(|| format!("creating data directory {}", args.data))?;
        let dir = std::path::Path::new(&args.data).canonicalize()?;
        (dir.to_string_lossy().to_string(), Some(dir))
    };
    // Shared with other servers on this data; `restore` waits for none to hold it.
    let _serve_lock = ServeLock::shared(&args.data)?;
    let cache = CacheSizes {
        index_bytes: args.index_cache_bytes,
        metadata_bytes: args.metadata_cache_bytes,
    };
    let refresh_interval =
        (args.refresh_interval_ms > 0).then(|| Duration::from_millis(args.refresh_interval_ms));
    let connect_options = ConnectOptions {
        storage_options: args.storage.storage_options(),
        cache: Some(cache),
        read_consistency: refresh_interval,
    };

    let keys_path = match (&args.api_keys, &data_dir) {
        (Some(path), _) => path.clone(),
        (None, None) => unreachable!("checked above: object stores need --api-keys"),
        (None, Some(data_dir)) => {
            let path = data_dir.join("api-keys.yaml");
            if generate_keys_file(&path).context("generating the API keys file")? {
                tracing::info!(path = %path.display(), "generated an API keys file with one admin key");
            }
            path
        }
    };
    let keys = Arc::new(KeyStore::load(&keys_path)?);
    tracing::info!(path = %keys.path().display(), "using API keys file");
    let metrics = Arc::new(Metrics::new());
    keys.watch(
        Duration::from_millis(args.keys_reload_ms.max(50)),
        metrics.clone(),
    );

    let embedder: Arc<dyn Embedder> = match args.embedder {
        EmbedderKind::Hash => Arc::new(HashEmbedder::new(args.embedding_dim)),
        EmbedderKind::Openai => {
            let o = &args.openai;
            Arc::new(OpenAiEmbedder::new(OpenAiConfig {
                base_url: o.openai_base_url.clone(),
                api_key: o.openai_api_key.clone(),
                model: o.openai_model.clone(),
                dimension: args.embedding_dim,
                batch_size: o.openai_batch_size,
                timeout: Duration::from_millis(o.openai_timeout_ms),
                // Ends (and counts as a failure) before the request timeout would cancel it.
                call_budget: Duration::from_secs(args.request_timeout_secs) * 3 / 4,
                max_retries: o.openai_max_retries,
                initial_backoff: Duration::from_millis(o.openai_backoff_ms),
                breaker_failures: o.embedder_breaker_failures,
                breaker_cooldown: Duration::from_millis(o.embedder_breaker_cooldown_ms),
            })?)
        }
        EmbedderKind::Builtin => {
            anyhow::ensure!(
                args.embedding_dim == crate::embed::BUILTIN_DIMENSION,
                "--embedding-dim is {} but the builtin embedder's vectors have {}",
                args.embedding_dim,
                crate::embed::BUILTIN_DIMENSION
            );
            let b = &args.builtin;
            let started = std::time::Instant::now();
            let embedder = BuiltinEmbedder::load(
                &BuiltinConfig {
                    model_dir: b.builtin_model_dir.clone(),
                    threads: b.builtin_threads,
                    batch_size: b.builtin_batch_size,
                },
                metrics.embedding_truncated_inputs.clone(),
            )?;
            tracing::info!(
                model_dir = %b.builtin_model_dir.display(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "built-in embedding model loaded"
            );
            Arc::new(embedder)
        }
    };
    let state = Arc::new(AppState {
        store: OnceLock::new(),
        searcher: OnceLock::new(),
        writer: OnceLock::new(),
        embedder: embedder.clone(),
        chunking,
        ingest_limits: IngestLimits {
            max_documents: args.max_ingest_documents,
            max_chunks: args.max_ingest_chunks,
            max_metadata_bytes: args.max_metadata_bytes,
        },
        keys,
        metrics: metrics.clone(),
        data_dir: data_dir.clone(),
        default_mode: args.default_search_mode.into(),
        warmup: Default::default(),
        draining: Default::default(),
    });
    metrics
        .cache_capacity_bytes
        .with_label_values(&["index"])
        .set(cache.index_bytes as i64);
    metrics
        .cache_capacity_bytes
        .with_label_values(&["metadata"])
        .set(cache.metadata_bytes as i64);
    metrics
        .quota_max_documents
        .set(args.max_documents.unwrap_or(0) as i64);
    metrics
        .quota_max_bytes
        .set(args.max_bytes.unwrap_or(0) as i64);
    let limits = HttpLimits {
        max_body_bytes: args.max_body_bytes,
        request_timeout: Duration::from_secs(args.request_timeout_secs),
        max_concurrent_ingests: args.max_concurrent_ingests,
        max_requests_in_flight: args.max_requests_in_flight,
    };

    // Listen first so probes get answers (503 from /readyz) while the table opens.
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, project = args.project.as_deref().unwrap_or(""), "listening");
    let connection_limits = ConnectionLimits {
        header_read_timeout: Duration::from_millis(args.header_read_timeout_ms.max(1)),
        max_connections: args.max_connections,
    };
    let server = tokio::spawn(server::serve(
        listener,
        router(state.clone(), &limits),
        connection_limits,
        drain_then_stop(state.clone(), Duration::from_millis(args.shutdown_delay_ms)),
    ));

    let store = Arc::new(
        Store::open(
            &uri,
            embedder.model_id(),
            embedder.dimension(),
            &connect_options,
        )
        .await
        .with_context(|| format!("opening the store at {uri}"))?,
    );
    anyhow::ensure!(
        args.vector_nprobes > 0 && args.vector_refine_factor > 0 && args.vector_ef > 0,
        "--vector-nprobes, --vector-refine-factor and --vector-ef must be positive"
    );
    store.set_vector_query(VectorQuery {
        nprobes: args.vector_nprobes,
        refine_factor: args.vector_refine_factor,
        ef: args.vector_ef,
    });
    let searcher = Searcher::new(store.clone());
    searcher
        .exact_index()
        .set_budget(usize::try_from(args.vector_memory_bytes).unwrap_or(usize::MAX));
    store.set_vector_index_shape(VectorIndexShape {
        kind: args.vector_index_type.into(),
        partitions: (args.vector_index_partitions > 0).then_some(args.vector_index_partitions),
        sub_vectors: (args.vector_index_sub_vectors > 0).then_some(args.vector_index_sub_vectors),
    });
    let quotas = Quotas {
        max_documents: args.max_documents,
        max_bytes: args.max_bytes,
    };
    let maintenance = Maintenance {
        optimize_every_commits: args.optimize_every_commits,
        index_every_chunks: args.index_every_chunks,
        vector_index_min_rows: (args.vector_index_min_rows > 0)
            .then_some(args.vector_index_min_rows),
        refresh_interval,
    };
    let writer = Writer::spawn(store.clone(), quotas, maintenance, metrics.clone());
    update_gauges(&store, &metrics).await;
    let _ = state.writer.set(writer.handle.clone());
    let _ = state.store.set(store.clone());
    let _ = state.searcher.set(searcher);
    state.warmup.table_open.store(true, Ordering::SeqCst);
    warm_up(&state).await;
    {
        let index = store.docs();
        tracing::info!(
            documents = index.documents(),
            chunks = index.chunks(),
            model = store.model(),
            "store open"
        );
    }

    // Returns after the signal, once in-flight requests have finished.
    server.await.context("server task")?;
    tracing::info!("stopped accepting requests; flushing the writer");
    writer.shutdown().await;
    tracing::info!("shutdown complete");
    Ok(())
}

/// Loads the indices and runs a keyword search through the search path and a
/// nearest-neighbour query on the table, so the first real requests do not
/// pay for cold caches; /readyz waits for it. The embedder is left out: a
/// slow or absent embedding service must not keep the pod unready (searches
/// degrade instead). A failure is logged and the server becomes ready anyway.
async fn warm_up(state: &AppState) {
    let started = std::time::Instant::now();
    let searcher = state.searcher.get().expect("set before warm-up");
    let store = searcher.store();
    match store.prewarm().await {
        Ok(names) => tracing::info!(indices = ?names, "indices loaded"),
        Err(error) => tracing::warn!(error = %error, "loading the indices failed"),
    }
    state.warmup.indices_loaded.store(true, Ordering::SeqCst);
    let request = SearchRequest::new("warm up", SearchMode::Keyword, 1);
    // A throwaway registry: warm-up queries are not user traffic.
    let scratch = Metrics::new();
    if let Err(error) = searcher
        .search(state.embedder.as_ref(), &scratch, &request)
        .await
    {
        tracing::warn!(error = %error, "warm-up keyword search failed");
    }
    if let Err(error) = store.warm_vector_path().await {
        tracing::warn!(error = %error, "warm-up vector query failed");
    }
    state.warmup.query_path.store(true, Ordering::SeqCst);
    kbeast_memory::release_free();
    kbeast_memory::spawn_release_loop();
    // Not awaited: until it is loaded, vector searches go to LanceDB.
    if let Err(error) = searcher.refresh_exact_index().await {
        tracing::warn!(error = %error, "reading the table version failed");
    }
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "warm");
}

/// Resolves when the server should stop accepting: after SIGTERM plus the drain delay, during
/// which clients are told to reconnect elsewhere.
async fn drain_then_stop(state: Arc<AppState>, delay: Duration) {
    shutdown_signal().await;
    state.draining.store(true, Ordering::SeqCst);
    tracing::info!(delay_ms = delay.as_millis() as u64, "draining");
    tokio::time::sleep(delay).await;
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
