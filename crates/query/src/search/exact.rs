//! A kept-in-memory exact vector index for small tables.
//!
//! LanceDB's flat scan reads and decodes every vector of the table for each
//! query (about 10 ms at 10k chunks); a scan over vectors already in memory
//! takes well under a millisecond. So while the table fits a memory budget, the
//! chunks and their vectors are held here and searched by brute force, which is
//! exact. Larger tables go to LanceDB (and its vector index).
//!
//! Consistency: a snapshot records the table version it was read at, and is
//! used only while the table still is at that version. Any commit (ingest,
//! delete, erase, optimize) changes the version, so the next search goes to
//! LanceDB and starts a rebuild in the background; results are therefore always
//! those of the current table, from either path.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use futures::TryStreamExt;
use lancedb::Table;
use lancedb::arrow::arrow_array::{Array, FixedSizeListArray, Float32Array, RecordBatch};
use lancedb::query::{ExecutableQuery, QueryBase, Select};

use super::{ScoredRow, SearchError};
use crate::store::{ChunkRow, ROW_COLUMNS, StoreError, decode_rows};

/// Memory the snapshot may take (vectors plus row texts); above it, vector
/// search stays on LanceDB. 64 MiB holds about 30k chunks of 384 dimensions
/// with texts of a few hundred bytes (fewer with longer texts).
pub const DEFAULT_BUDGET_BYTES: usize = 64 << 20;

/// Rough per-row cost besides the vector and the text: ids, metadata, the Vec slots.
const ROW_OVERHEAD_BYTES: usize = 160;

pub struct ExactIndex {
    budget_bytes: usize,
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    refreshing: AtomicBool,
    /// The last version found too large for the budget (0: none), so a large
    /// table is not re-read on every search.
    too_large_at: AtomicU64,
}

impl Default for ExactIndex {
    fn default() -> Self {
        Self::new(DEFAULT_BUDGET_BYTES)
    }
}

struct Snapshot {
    version: u64,
    dimension: usize,
    /// Row-major, `dimension` floats per row.
    vectors: Vec<f32>,
    /// 1 / |v| per row (0 for a zero vector), so scoring is a dot product.
    inverse_norms: Vec<f32>,
    rows: Vec<ChunkRow>,
}

impl ExactIndex {
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            budget_bytes,
            snapshot: RwLock::new(None),
            refreshing: AtomicBool::new(false),
            too_large_at: AtomicU64::new(0),
        }
    }

    /// The best `limit` rows by cosine similarity if a snapshot of `version`
    /// is held; None otherwise (the caller searches LanceDB). `allowed` keeps
    /// only chunks of those documents (a pre-filter, like LanceDB's).
    pub fn search(
        &self,
        version: u64,
        query: &[f32],
        limit: usize,
        allowed: Option<&HashSet<&str>>,
    ) -> Option<Vec<ScoredRow>> {
        let snapshot = self.snapshot.read().expect("exact index lock").clone()?;
        if snapshot.version != version || snapshot.dimension != query.len() {
            return None;
        }
        let query_norm = norm(query);
        let query_scale = if query_norm > 0.0 {
            1.0 / query_norm
        } else {
            0.0
        };
        let mut best = TopK::new(limit);
        for (i, (vector, inverse_norm)) in snapshot
            .vectors
            .chunks_exact(snapshot.dimension)
            .zip(&snapshot.inverse_norms)
            .enumerate()
        {
            if let Some(allowed) = allowed
                && !allowed.contains(snapshot.rows[i].doc_id.as_str())
            {
                continue;
            }
            best.push(dot(query, vector) * inverse_norm * query_scale, i);
        }
        Some(
            best.into_sorted()
                .into_iter()
                .map(|(score, i)| ScoredRow {
                    row: snapshot.rows[i].clone(),
                    score,
                })
                .collect(),
        )
    }

    /// Starts reading the table into a new snapshot unless one is being read,
    /// the held one is current, or the table was found too large at `version`.
    pub fn refresh_in_background(self: &Arc<Self>, table: &Table, version: u64) {
        if self.too_large_at.load(Ordering::Relaxed) == version
            || self
                .snapshot
                .read()
                .expect("exact index lock")
                .as_ref()
                .is_some_and(|s| s.version >= version)
            || self.refreshing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let index = self.clone();
        let table = table.clone();
        tokio::spawn(async move {
            match index.load(&table).await {
                Ok(Some(snapshot)) => {
                    tracing::debug!(
                        version = snapshot.version,
                        rows = snapshot.rows.len(),
                        "loaded the in-memory vector index"
                    );
                    let mut held = index.snapshot.write().expect("exact index lock");
                    if held.as_ref().is_none_or(|h| h.version < snapshot.version) {
                        *held = Some(Arc::new(snapshot));
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(error = %error, "loading the in-memory vector index failed")
                }
            }
            index.refreshing.store(false, Ordering::Release);
        });
    }

    /// Reads one pinned version of the table; None (and the snapshot dropped)
    /// if it does not fit the budget.
    async fn load(&self, table: &Table) -> Result<Option<Snapshot>, SearchError> {
        // Pinned, so the version recorded is exactly the one read even if the
        // writer commits meanwhile.
        let pinned = table.checkout_current().await?;
        let version = pinned.version().await?;
        let rows = pinned.count_rows(None).await?;
        let dimension = vector_dimension(&pinned).await?;
        // Texts are unknown before reading: decide early on the vectors alone,
        // and again on the real sizes while reading.
        if rows * (dimension * 4 + ROW_OVERHEAD_BYTES) > self.budget_bytes {
            self.too_large(version);
            return Ok(None);
        }
        let mut columns: Vec<&str> = ROW_COLUMNS.to_vec();
        columns.push("vector");
        let batches: Vec<RecordBatch> = pinned
            .query()
            .select(Select::columns(&columns))
            .execute()
            .await?
            .try_collect()
            .await?;
        let mut snapshot = Snapshot {
            version,
            dimension,
            vectors: Vec::with_capacity(rows * dimension),
            inverse_norms: Vec::with_capacity(rows),
            rows: Vec::with_capacity(rows),
        };
        let mut bytes = 0usize;
        for batch in &batches {
            let vectors = batch
                .column_by_name("vector")
                .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>())
                .ok_or_else(|| StoreError::Corrupt("vector column is not a list".into()))?;
            let values = vectors
                .values()
                .as_any()
                .downcast_ref::<Float32Array>()
                .ok_or_else(|| StoreError::Corrupt("vector values are not f32".into()))?;
            let decoded = decode_rows(batch)?;
            for (i, row) in decoded.into_iter().enumerate() {
                let start = (vectors.offset() + i) * dimension;
                let vector = &values.values()[start..start + dimension];
                let n = norm(vector);
                snapshot.vectors.extend_from_slice(vector);
                snapshot
                    .inverse_norms
                    .push(if n > 0.0 { 1.0 / n } else { 0.0 });
                bytes += dimension * 4 + row.text.len() + ROW_OVERHEAD_BYTES;
                snapshot.rows.push(row);
            }
            if bytes > self.budget_bytes {
                self.too_large(version);
                return Ok(None);
            }
        }
        Ok(Some(snapshot))
    }

    fn too_large(&self, version: u64) {
        self.too_large_at.store(version, Ordering::Relaxed);
        // An outdated snapshot would never be used again; free it.
        *self.snapshot.write().expect("exact index lock") = None;
    }
}

async fn vector_dimension(table: &Table) -> Result<usize, SearchError> {
    let schema = table.schema().await?;
    match schema
        .field_with_name("vector")
        .map(|f| f.data_type().clone())
    {
        Ok(lancedb::arrow::arrow_schema::DataType::FixedSizeList(_, n)) => Ok(n as usize),
        _ => Err(StoreError::Corrupt("no vector column".into()).into()),
    }
}

fn norm(v: &[f32]) -> f32 {
    dot(v, v).sqrt()
}

/// Eight independent accumulators let the compiler vectorise the loop.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sums = [0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..8 {
            sums[lane] += x[lane] * y[lane];
        }
    }
    sums.iter().sum::<f32>() + tail
}

/// Keeps the `k` highest scores seen (ties: the earlier row wins).
struct TopK {
    k: usize,
    heap: BinaryHeap<Reverse<(Score, Reverse<usize>)>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Score(f32);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl TopK {
    fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    fn push(&mut self, score: f32, index: usize) {
        if self.k == 0 {
            return;
        }
        let entry = Reverse((Score(score), Reverse(index)));
        if self.heap.len() < self.k {
            self.heap.push(entry);
        } else if let Some(worst) = self.heap.peek()
            && entry < *worst
        {
            // `Reverse` flips the order: smaller entry means a better score.
            self.heap.pop();
            self.heap.push(entry);
        }
    }

    /// Best first.
    fn into_sorted(self) -> Vec<(f32, usize)> {
        let mut all: Vec<(f32, usize)> = self
            .heap
            .into_iter()
            .map(|Reverse((Score(s), Reverse(i)))| (s, i))
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(doc: &str) -> ChunkRow {
        ChunkRow {
            chunk_id: format!("{doc}#0"),
            doc_id: doc.to_string(),
            chunk_index: 0,
            source: None,
            text: String::new(),
            metadata: Default::default(),
        }
    }

    fn index_with(version: u64, vectors: &[[f32; 3]], docs: &[&str]) -> ExactIndex {
        let index = ExactIndex::default();
        let snapshot = Snapshot {
            version,
            dimension: 3,
            vectors: vectors.iter().flatten().copied().collect(),
            inverse_norms: vectors
                .iter()
                .map(|v| {
                    let n = norm(v);
                    if n > 0.0 { 1.0 / n } else { 0.0 }
                })
                .collect(),
            rows: docs.iter().map(|d| row(d)).collect(),
        };
        *index.snapshot.write().unwrap() = Some(Arc::new(snapshot));
        index
    }

    fn doc_ids(rows: &[ScoredRow]) -> Vec<&str> {
        rows.iter().map(|r| r.row.doc_id.as_str()).collect()
    }

    #[test]
    fn ranks_by_cosine_similarity_not_dot_product() {
        // "long" has the largest dot product with the query but a wider angle.
        let index = index_with(
            7,
            &[[10.0, 10.0, 0.0], [1.0, 0.1, 0.0], [0.0, 0.0, 1.0]],
            &["long", "close", "orthogonal"],
        );
        let hits = index.search(7, &[2.0, 0.0, 0.0], 3, None).unwrap();
        assert_eq!(doc_ids(&hits), vec!["close", "long", "orthogonal"]);
        assert!((hits[1].score - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert!(hits[2].score.abs() < 1e-6);
    }

    #[test]
    fn only_serves_the_version_it_holds() {
        let index = index_with(7, &[[1.0, 0.0, 0.0]], &["a"]);
        assert!(index.search(8, &[1.0, 0.0, 0.0], 1, None).is_none());
        assert!(index.search(7, &[1.0, 0.0], 1, None).is_none(), "dimension");
        assert!(ExactIndex::default().search(1, &[1.0], 1, None).is_none());
    }

    #[test]
    fn limit_and_prefilter() {
        let vectors = [
            [1.0, 0.0, 0.0],
            [0.9, 0.1, 0.0],
            [0.5, 0.5, 0.0],
            [0.0, 1.0, 0.0],
        ];
        let index = index_with(1, &vectors, &["a", "b", "c", "d"]);
        let q = [1.0, 0.0, 0.0];
        assert_eq!(doc_ids(&index.search(1, &q, 2, None).unwrap()), ["a", "b"]);
        let allowed: HashSet<&str> = ["d", "c"].into_iter().collect();
        let hits = index.search(1, &q, 10, Some(&allowed)).unwrap();
        assert_eq!(doc_ids(&hits), ["c", "d"]);
        assert!(index.search(1, &q, 0, None).unwrap().is_empty());
    }

    #[test]
    fn dot_handles_lengths_that_are_not_multiples_of_eight() {
        for len in [0usize, 1, 7, 8, 9, 17, 384] {
            let a: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let b: Vec<f32> = (0..len).map(|i| 1.0 + (i % 3) as f32).collect();
            let expected: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!(
                (dot(&a, &b) - expected).abs() <= 1e-3 * expected.max(1.0),
                "{len}"
            );
        }
    }

    /// Waits (bounded) for the background reload to serve `version`.
    async fn served(
        index: &Arc<ExactIndex>,
        store: &crate::store::Store,
        query: &[f32],
    ) -> Vec<ScoredRow> {
        let version = store.version().await.unwrap();
        for _ in 0..500 {
            if let Some(rows) = index.search(version, query, 10, None) {
                return rows;
            }
            index.refresh_in_background(store.table(), version);
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the in-memory index never loaded version {version}");
    }

    #[tokio::test]
    async fn agrees_with_lancedb_and_follows_the_table_version() {
        use crate::embed::HashEmbedder;
        use crate::store::{PreparedDocument, Store};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path().to_str().unwrap(),
            "hash-v1",
            16,
            &Default::default(),
        )
        .await
        .unwrap();
        let embedder = HashEmbedder::new(16);
        let texts = ["red apples", "green apples", "blue sky", "red sky at night"];
        let docs: Vec<PreparedDocument> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| PreparedDocument {
                id: format!("d{i}"),
                source: None,
                metadata: Default::default(),
                chunks: vec![t.to_string()],
                vectors: vec![embedder.embed_one(t)],
            })
            .collect();
        store.replace_documents(&docs).await.unwrap();
        let query = embedder.embed_one("red apples");
        let index = store.exact_index().clone();
        let from_memory = served(&index, &store, &query).await;
        let from_lance = super::super::vector::search(&store, query.clone(), 10, None)
            .await
            .unwrap();
        assert_eq!(doc_ids(&from_memory), doc_ids(&from_lance));
        for (m, l) in from_memory.iter().zip(&from_lance) {
            assert!(
                (m.score - l.score).abs() < 1e-5,
                "{} vs {}",
                m.score,
                l.score
            );
        }

        // A commit makes the snapshot stale: it is not served, and a reload sees the delete.
        let old_version = store.version().await.unwrap();
        store.delete_documents(&["d0"]).await.unwrap();
        let version = store.version().await.unwrap();
        assert!(version > old_version);
        assert!(index.search(version, &query, 10, None).is_none());
        let after = served(&index, &store, &query).await;
        assert_eq!(after.len(), 3);
        assert!(!doc_ids(&after).contains(&"d0"));
    }

    #[tokio::test]
    async fn a_table_over_the_budget_is_not_loaded() {
        use crate::store::Store;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path().to_str().unwrap(),
            "hash-v1",
            16,
            &Default::default(),
        )
        .await
        .unwrap();
        let doc = crate::store::PreparedDocument {
            id: "a".into(),
            source: None,
            metadata: Default::default(),
            chunks: vec!["text".into()],
            vectors: vec![vec![0.25; 16]],
        };
        store.replace_documents(&[doc]).await.unwrap();
        let index = ExactIndex::new(100);
        let loaded = index.load(store.table()).await.unwrap();
        assert!(loaded.is_none());
        let version = store.version().await.unwrap();
        assert_eq!(index.too_large_at.load(Ordering::Relaxed), version);
        assert!(
            ExactIndex::new(DEFAULT_BUDGET_BYTES)
                .load(store.table())
                .await
                .unwrap()
                .is_some()
        );
    }
}
