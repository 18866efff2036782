//! Search over the chunks table: vector (cosine), keyword (BM25 full-text) and
//! hybrid (score fusion of both, `hybrid.rs`).

mod exact;
mod hybrid;
mod keyword;
mod vector;

pub use exact::ExactIndex;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use futures::TryStreamExt;
use kbeast_client::{Hit, SearchMode, SearchRequest};
use lancedb::arrow::arrow_array::RecordBatch;

use crate::embed::{EmbedError, Embedder};
use crate::store::{ChunkRow, Store, StoreError, decode_rows, doc_id_in, float_column};
use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("lancedb: {0}")]
    Lance(#[from] lancedb::Error),
    #[error("search task failed: {0}")]
    Task(tokio::task::JoinError),
}

#[derive(Debug, Clone)]
pub struct ScoredRow {
    pub row: ChunkRow,
    /// Higher is better.
    pub score: f32,
}

pub struct SearchOutcome {
    pub hits: Vec<Hit>,
    /// The embedder failed and keyword results were served instead.
    pub degraded: bool,
}

/// Searches one store, answering vector queries from an in-memory exact index of its vectors
/// while that index holds the table's current version.
pub struct Searcher {
    store: Arc<Store>,
    exact_index: Arc<ExactIndex>,
}

impl Searcher {
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            exact_index: Arc::default(),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn exact_index(&self) -> &Arc<ExactIndex> {
        &self.exact_index
    }

    /// Runs `request` (already validated).
    pub async fn search(
        &self,
        embedder: &dyn Embedder,
        metrics: &Metrics,
        request: &SearchRequest,
    ) -> Result<SearchOutcome, SearchError> {
        search(self, embedder, metrics, request).await
    }

    /// Starts loading the exact index at the table's current version, unless it holds it.
    pub async fn refresh_exact_index(&self) -> Result<(), StoreError> {
        let version = self.store.version().await?;
        self.exact_index
            .refresh_in_background(self.store.table(), version);
        Ok(())
    }
}

/// A filter is resolved to document ids first and applied as a pre-filter, so `top_k` counts
/// only matching chunks.
async fn search(
    searcher: &Searcher,
    embedder: &dyn Embedder,
    metrics: &Metrics,
    request: &SearchRequest,
) -> Result<SearchOutcome, SearchError> {
    let store = &searcher.store;
    let ids = match &request.filter {
        Some(filter) if !filter.is_empty() => {
            let ids = store.matching_documents(filter);
            if ids.is_empty() {
                return Ok(SearchOutcome {
                    hits: Vec::new(),
                    degraded: false,
                });
            }
            Some(ids)
        }
        _ => None,
    };
    let allowed: Option<HashSet<&str>> = ids
        .as_ref()
        .map(|ids| ids.iter().map(String::as_str).collect());
    let filter = ids.as_ref().map(|ids| {
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        doc_id_in(&refs)
    });
    let prefilter = Prefilter {
        sql: filter.as_deref(),
        docs: allowed.as_ref(),
    };
    let filter = prefilter.sql;
    let top_k = request.top_k as usize;
    let query = request.query.as_str();

    let mode = request.mode.unwrap_or(SearchMode::Hybrid);
    let (rows, degraded) = match mode {
        SearchMode::Keyword => (keyword::search(store, query, top_k, filter).await?, false),
        SearchMode::Vector => match embed_query(embedder, metrics, query).await {
            Ok(vector) => (
                timed_vector(searcher, metrics, vector, top_k, &prefilter).await?,
                false,
            ),
            Err(error) => {
                tracing::warn!(error = %error, "embedder unavailable; serving keyword results");
                (keyword::search(store, query, top_k, filter).await?, true)
            }
        },
        SearchMode::Hybrid => {
            // Fuse deeper candidate lists than asked for, so documents ranked
            // moderately by both searches can still surface. The keyword search
            // runs on its own task, alongside embedding and the vector search.
            let depth = hybrid::candidate_depth(top_k);
            // A JoinSet aborts the task if this request is dropped (timeout, disconnect).
            let mut by_keyword = tokio::task::JoinSet::new();
            by_keyword.spawn({
                let (store, query) = (Arc::clone(store), query.to_owned());
                let filter = filter.map(str::to_owned);
                async move { keyword::search(&store, &query, depth, filter.as_deref()).await }
            });
            let by_vector = match embed_query(embedder, metrics, query).await {
                Ok(vector) => {
                    Some(timed_vector(searcher, metrics, vector, depth, &prefilter).await)
                }
                Err(error) => {
                    tracing::warn!(error = %error, "embedder unavailable; serving keyword results");
                    None
                }
            };
            let mut by_keyword = by_keyword
                .join_next()
                .await
                .expect("one task was spawned")
                .map_err(SearchError::Task)??;
            match by_vector.transpose()? {
                Some(by_vector) => (hybrid::fuse(&by_keyword, &by_vector, depth, top_k), false),
                None => {
                    by_keyword.truncate(top_k);
                    (by_keyword, true)
                }
            }
        }
    };
    let hits = rows
        .into_iter()
        .map(|scored| Hit {
            doc_id: scored.row.doc_id,
            chunk_id: scored.row.chunk_id,
            text: scored.row.text,
            score: scored.score,
            source: scored.row.source,
            metadata: scored.row.metadata,
        })
        .collect();
    Ok(SearchOutcome { hits, degraded })
}

async fn embed_query(
    embedder: &dyn Embedder,
    metrics: &Metrics,
    query: &str,
) -> Result<Vec<f32>, EmbedError> {
    let started = Instant::now();
    let result = embedder.embed(&[query.to_string()]).await;
    metrics
        .embedding_duration
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(mut vectors) if vectors.len() == 1 => {
            metrics.degraded.set(0);
            Ok(vectors.remove(0))
        }
        Ok(vectors) => {
            metrics.embedding_errors.inc();
            Err(EmbedError::Failed(format!(
                "expected 1 vector, got {}",
                vectors.len()
            )))
        }
        Err(error) => {
            metrics.embedding_errors.inc();
            metrics.degraded.set(1);
            Err(error)
        }
    }
}

/// A document pre-filter in both forms: SQL for LanceDB, a set for the in-memory index.
struct Prefilter<'a> {
    sql: Option<&'a str>,
    docs: Option<&'a HashSet<&'a str>>,
}

/// Vector search from the in-memory exact index when it holds the current
/// table version, else from LanceDB (and the index is refreshed behind).
async fn timed_vector(
    searcher: &Searcher,
    metrics: &Metrics,
    vector: Vec<f32>,
    limit: usize,
    prefilter: &Prefilter<'_>,
) -> Result<Vec<ScoredRow>, SearchError> {
    let started = Instant::now();
    let store = &searcher.store;
    let version = store.version().await?;
    let exact = &searcher.exact_index;
    let rows = match exact.search(version, &vector, limit, prefilter.docs).await {
        Some(rows) => rows,
        None => {
            exact.refresh_in_background(store.table(), version);
            vector::search(store, vector, limit, prefilter.sql).await
        }
    };
    metrics
        .vector_search_duration
        .observe(started.elapsed().as_secs_f64());
    rows
}

/// Collects a result stream into rows, scoring each with `score(raw column value)`.
async fn collect_scored(
    stream: lancedb::arrow::SendableRecordBatchStream,
    score_column: &str,
    score: impl Fn(f32) -> f32,
) -> Result<Vec<ScoredRow>, SearchError> {
    let batches: Vec<RecordBatch> = stream.try_collect().await?;
    let mut scored = Vec::new();
    for batch in &batches {
        let raw = float_column(batch, score_column)?;
        for (i, row) in decode_rows(batch)?.into_iter().enumerate() {
            scored.push(ScoredRow {
                row,
                score: score(raw.value(i)),
            });
        }
    }
    scored.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(scored)
}
