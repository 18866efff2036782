//! The kept-in-memory vector index.
//!
//! LanceDB's flat scan reads and decodes every vector of the table for each
//! query (about 10 ms at 10k chunks, 200 ms at 100k), and its IVF indices lose
//! recall on sparse vectors unless they scan nearly everything. A scan over
//! vectors already in memory is far cheaper. So while the table fits a memory
//! budget (`--vector-memory-bytes`), its vectors are held here, in one of two
//! forms:
//!
//! - **full** (small tables): the f32 vectors and the rows themselves. A query
//!   is a brute-force cosine scan, exact, with no storage read.
//! - **quantised** (tables too large for that): one signed byte per dimension
//!   of each unit vector, with a per-row scale, plus the row ids (about
//!   `dimension + 40` bytes a row; 100k chunks of 384 dimensions take 43 MB).
//!   A scan of the codes picks `limit × RERANK_FACTOR` candidates, which are
//!   read back with their full vectors from the table version the codes were
//!   built from and scored exactly. Scores are exact; recall is reported by the
//!   benchmark against an exact search.
//!
//! Larger tables go to LanceDB (and its vector index).
//!
//! Consistency: a snapshot records the table version it was read at, and is
//! used only while the table still is at that version. Any commit (ingest,
//! delete, erase, optimize) changes the version, so the next search goes to
//! LanceDB and starts a rebuild in the background; results are therefore always
//! those of the current table, from either path.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use futures::TryStreamExt;
use lancedb::Table;
use lancedb::arrow::arrow_array::{
    Array, FixedSizeListArray, Float32Array, RecordBatch, UInt64Array,
};
use lancedb::query::{ExecutableQuery, QueryBase, Select};

use super::{ScoredRow, SearchError};
use crate::store::{ChunkRow, ROW_COLUMNS, StoreError, chunk_id, decode_rows, string_column};
use kbeast_client::Metadata;

/// Memory the snapshot may take; above it, vector search stays on LanceDB.
/// 64 MiB holds the full form of about 30k chunks of 384 dimensions with texts
/// of a few hundred bytes, or the quantised form of about 150k.
pub const DEFAULT_BUDGET_BYTES: usize = 64 << 20;

/// Rough per-row cost besides the vector and the text: ids, metadata, the Vec slots.
const ROW_OVERHEAD_BYTES: usize = 160;

/// Per-row cost of the quantised form besides the codes: scale, row id, and
/// the doc id, chunk index, source and metadata slots.
const QUANTISED_ROW_OVERHEAD_BYTES: usize = 4 + 8 + 16 + 4 + 16 + 8;

/// Candidates read back and scored exactly, per hit asked for.
const RERANK_FACTOR: usize = 4;
/// At least this many candidates, so small `limit`s still rerank a useful pool.
const MIN_CANDIDATES: usize = 32;

pub struct ExactIndex {
    budget_bytes: AtomicUsize,
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
    held: Held,
}

enum Held {
    Full(FullVectors),
    Quantised(QuantisedVectors),
}

struct FullVectors {
    /// Row-major, `dimension` floats per row.
    vectors: Vec<f32>,
    /// 1 / |v| per row (0 for a zero vector), so scoring is a dot product.
    inverse_norms: Vec<f32>,
    rows: Vec<ChunkRow>,
}

struct QuantisedVectors {
    /// One signed byte per dimension of each unit vector, divided by `scales`.
    codes: BlockedCodes,
    scales: Vec<f32>,
    row_ids: Vec<u64>,
    /// What a hit reports besides its text, so only vectors and texts are read
    /// back (string columns cost the most to read). Shared between rows.
    doc_ids: Vec<Arc<str>>,
    chunk_indexes: Vec<u32>,
    sources: Vec<Option<Arc<str>>>,
    metadata: Vec<Arc<Metadata>>,
    /// The table pinned at the snapshot's version, for reading candidates back.
    table: Table,
}

/// Rows per block of `BlockedCodes`: its partial sums fit the L1 cache.
const BLOCK_ROWS: usize = 256;

/// Codes laid out dimension-major within blocks of `BLOCK_ROWS` rows, so a
/// scan adds one query component times a run of contiguous codes at a time,
/// and skips the query's zero components (sparse queries, such as the hash
/// embedder's, read only the codes of their few non-zero dimensions).
struct BlockedCodes {
    dimension: usize,
    rows: usize,
    codes: Vec<i8>,
}

impl BlockedCodes {
    fn new(dimension: usize) -> Self {
        Self {
            dimension,
            rows: 0,
            codes: Vec::new(),
        }
    }

    fn push(&mut self, row: &[i8]) {
        debug_assert_eq!(row.len(), self.dimension);
        let (block, offset) = (self.rows / BLOCK_ROWS, self.rows % BLOCK_ROWS);
        if offset == 0 {
            self.codes
                .resize((block + 1) * self.dimension * BLOCK_ROWS, 0);
        }
        let start = block * self.dimension * BLOCK_ROWS + offset;
        for (d, &code) in row.iter().enumerate() {
            self.codes[start + d * BLOCK_ROWS] = code;
        }
        self.rows += 1;
    }

    /// Calls `visit(row, Σ unit[d] × code[d])` for every row, with the widest
    /// vector instructions the CPU has.
    #[allow(unsafe_code)] // Calling a #[target_feature] function needs unsafe.
    fn scan(&self, unit: &[f32], visit: impl FnMut(usize, f32)) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { self.scan_avx2(unit, visit) };
            return;
        }
        self.scan_portable(unit, visit);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn scan_avx2(&self, unit: &[f32], visit: impl FnMut(usize, f32)) {
        self.scan_portable(unit, visit);
    }

    #[inline(always)]
    fn scan_portable(&self, unit: &[f32], mut visit: impl FnMut(usize, f32)) {
        let nonzero: Vec<(usize, f32)> = unit
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, x)| x != 0.0)
            .collect();
        let mut sums = [0f32; BLOCK_ROWS];
        for (block, codes) in self
            .codes
            .chunks_exact(self.dimension * BLOCK_ROWS)
            .enumerate()
        {
            sums.fill(0.0);
            for &(d, q) in &nonzero {
                let column = &codes[d * BLOCK_ROWS..(d + 1) * BLOCK_ROWS];
                for (sum, &code) in sums.iter_mut().zip(column) {
                    *sum += q * f32::from(code);
                }
            }
            let first = block * BLOCK_ROWS;
            let rows = (self.rows - first).min(BLOCK_ROWS);
            for (r, &sum) in sums[..rows].iter().enumerate() {
                visit(first + r, sum);
            }
        }
    }
}

impl ExactIndex {
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            budget_bytes: AtomicUsize::new(budget_bytes),
            snapshot: RwLock::new(None),
            refreshing: AtomicBool::new(false),
            too_large_at: AtomicU64::new(0),
        }
    }

    /// Sets the memory budget (0 disables the index); applies from the next load.
    pub fn set_budget(&self, bytes: usize) {
        self.budget_bytes.store(bytes, Ordering::Relaxed);
    }

    fn budget(&self) -> usize {
        self.budget_bytes.load(Ordering::Relaxed)
    }

    /// The best `limit` rows by cosine similarity if a snapshot of `version`
    /// is held; None otherwise (the caller searches LanceDB). `allowed` keeps
    /// only chunks of those documents (a pre-filter, like LanceDB's).
    pub async fn search(
        &self,
        version: u64,
        query: &[f32],
        limit: usize,
        allowed: Option<&HashSet<&str>>,
    ) -> Option<Result<Vec<ScoredRow>, SearchError>> {
        let snapshot = self.snapshot.read().expect("exact index lock").clone()?;
        if snapshot.version != version || snapshot.dimension != query.len() {
            return None;
        }
        Some(match &snapshot.held {
            Held::Full(full) => Ok(full.search(snapshot.dimension, query, limit, allowed)),
            Held::Quantised(quantised) => {
                quantised
                    .search(snapshot.dimension, query, limit, allowed)
                    .await
            }
        })
    }

    /// Starts reading the table into a new snapshot unless one is being read,
    /// the held one is current, or the table was found too large at `version`.
    pub fn refresh_in_background(self: &Arc<Self>, table: &Table, version: u64) {
        if self.budget() == 0
            || self.too_large_at.load(Ordering::Relaxed) == version
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
            let started = Instant::now();
            match index.load(&table).await {
                Ok(Some(snapshot)) => {
                    let (form, rows) = match &snapshot.held {
                        Held::Full(full) => ("full", full.rows.len()),
                        Held::Quantised(q) => ("quantised", q.row_ids.len()),
                    };
                    tracing::debug!(
                        version = snapshot.version,
                        rows,
                        form,
                        elapsed_ms = started.elapsed().as_millis() as u64,
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
            // The read's buffers, and an older snapshot, were just freed.
            kbeast_memory::release_free();
            index.refreshing.store(false, Ordering::Release);
        });
    }

    /// Reads one pinned version of the table, in the full form if it fits the
    /// budget, else quantised; None (and the snapshot dropped) if neither fits.
    async fn load(&self, table: &Table) -> Result<Option<Snapshot>, SearchError> {
        // Pinned, so the version recorded is exactly the one read even if the
        // writer commits meanwhile.
        let pinned = table.checkout_current().await?;
        let version = pinned.version().await?;
        let rows = pinned.count_rows(None).await?;
        let dimension = vector_dimension(&pinned).await?;
        let budget = self.budget();
        // Texts are unknown before reading: decide early on the vectors alone,
        // and again on the real sizes while reading.
        if rows * (dimension * 4 + ROW_OVERHEAD_BYTES) <= budget
            && let Some(full) = load_full(&pinned, rows, dimension, budget).await?
        {
            return Ok(Some(Snapshot {
                version,
                dimension,
                held: Held::Full(full),
            }));
        }
        if rows * (dimension + QUANTISED_ROW_OVERHEAD_BYTES) <= budget
            && let Some(quantised) = load_quantised(pinned, rows, dimension, budget).await?
        {
            return Ok(Some(Snapshot {
                version,
                dimension,
                held: Held::Quantised(quantised),
            }));
        }
        self.too_large(version);
        Ok(None)
    }

    fn too_large(&self, version: u64) {
        self.too_large_at.store(version, Ordering::Relaxed);
        // An outdated snapshot would never be used again; free it.
        *self.snapshot.write().expect("exact index lock") = None;
    }
}

impl FullVectors {
    fn search(
        &self,
        dimension: usize,
        query: &[f32],
        limit: usize,
        allowed: Option<&HashSet<&str>>,
    ) -> Vec<ScoredRow> {
        let query_scale = inverse(norm(query));
        let mut best = TopK::new(limit);
        for (i, (vector, inverse_norm)) in self
            .vectors
            .chunks_exact(dimension)
            .zip(&self.inverse_norms)
            .enumerate()
        {
            if let Some(allowed) = allowed
                && !allowed.contains(self.rows[i].doc_id.as_str())
            {
                continue;
            }
            best.push(dot(query, vector) * inverse_norm * query_scale, i);
        }
        best.into_sorted()
            .into_iter()
            .map(|(score, i)| ScoredRow {
                row: self.rows[i].clone(),
                score,
            })
            .collect()
    }
}

impl QuantisedVectors {
    async fn search(
        &self,
        dimension: usize,
        query: &[f32],
        limit: usize,
        allowed: Option<&HashSet<&str>>,
    ) -> Result<Vec<ScoredRow>, SearchError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let query_scale = inverse(norm(query));
        let unit: Vec<f32> = query.iter().map(|x| x * query_scale).collect();
        let mut best = TopK::new((limit * RERANK_FACTOR).max(MIN_CANDIDATES));
        // Rows that cannot enter the full heap are dropped before touching it.
        let mut entry_score = f32::NEG_INFINITY;
        self.codes.scan(&unit, |i, approximate| {
            let score = approximate * self.scales[i];
            if score <= entry_score
                || allowed.is_some_and(|allowed| !allowed.contains(&*self.doc_ids[i]))
            {
                return;
            }
            best.push(score, i);
            if let Some(worst) = best.worst_if_full() {
                entry_score = worst;
            }
        });
        let candidates = best.into_sorted();
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        // Lance's own take (the query planner costs more than the read here),
        // in two steps: the candidates' vectors, then the rows of the best.
        let dataset = self
            .table
            .dataset()
            .ok_or_else(|| StoreError::Corrupt("not a local LanceDB table".into()))?
            .get()
            .await?;
        let take = |ids: Vec<u64>, columns: &'static [&'static str]| {
            let dataset = dataset.clone();
            async move {
                let projection = dataset
                    .schema()
                    .project(columns)
                    .map_err(lancedb::Error::from)?;
                let batch = dataset
                    .take_rows(&ids, projection)
                    .await
                    .map_err(lancedb::Error::from)?;
                if batch.num_rows() != ids.len() {
                    return Err(SearchError::from(StoreError::Corrupt(format!(
                        "read {} of {} rows back from table version {}",
                        batch.num_rows(),
                        ids.len(),
                        dataset.version().version
                    ))));
                }
                Ok(batch)
            }
        };
        let ids: Vec<u64> = candidates.iter().map(|&(_, i)| self.row_ids[i]).collect();
        let vectors = take(ids, &["vector"]).await?;
        // Rows come back in the order asked for: the candidates' scan order breaks ties.
        let (values, offset) = vector_values(&vectors, dimension)?;
        let mut scored: Vec<(f32, usize)> = candidates
            .iter()
            .enumerate()
            .map(|(n, &(_, i))| {
                let start = (offset + n) * dimension;
                let vector = &values[start..start + dimension];
                (dot(query, vector) * inverse(norm(vector)) * query_scale, i)
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.truncate(limit);
        let texts = take(
            scored.iter().map(|&(_, i)| self.row_ids[i]).collect(),
            &["text"],
        )
        .await?;
        let texts = string_column(&texts, "text")?;
        Ok(scored
            .into_iter()
            .enumerate()
            .map(|(n, (score, i))| ScoredRow {
                row: ChunkRow {
                    chunk_id: chunk_id(&self.doc_ids[i], self.chunk_indexes[i] as usize),
                    doc_id: self.doc_ids[i].to_string(),
                    chunk_index: self.chunk_indexes[i],
                    source: self.sources[i].as_deref().map(str::to_string),
                    text: texts.value(n).to_string(),
                    metadata: (*self.metadata[i]).clone(),
                },
                score,
            })
            .collect())
    }
}

/// Streams the rows and vectors; None once they exceed `budget`.
async fn load_full(
    pinned: &Table,
    rows: usize,
    dimension: usize,
    budget: usize,
) -> Result<Option<FullVectors>, SearchError> {
    let mut columns: Vec<&str> = ROW_COLUMNS.to_vec();
    columns.push("vector");
    let mut stream = pinned
        .query()
        .select(Select::columns(&columns))
        .execute()
        .await?;
    let mut full = FullVectors {
        vectors: Vec::with_capacity(rows * dimension),
        inverse_norms: Vec::with_capacity(rows),
        rows: Vec::with_capacity(rows),
    };
    let mut bytes = 0usize;
    while let Some(batch) = stream.try_next().await? {
        let (values, offset) = vector_values(&batch, dimension)?;
        for (i, row) in decode_rows(&batch)?.into_iter().enumerate() {
            let start = (offset + i) * dimension;
            let vector = &values[start..start + dimension];
            full.vectors.extend_from_slice(vector);
            full.inverse_norms.push(inverse(norm(vector)));
            bytes += dimension * 4 + row.text.len() + ROW_OVERHEAD_BYTES;
            full.rows.push(row);
        }
        if bytes > budget {
            return Ok(None);
        }
    }
    Ok(Some(full))
}

/// Streams doc ids, row ids and vectors into codes; None once they exceed `budget`.
async fn load_quantised(
    pinned: Table,
    rows: usize,
    dimension: usize,
    budget: usize,
) -> Result<Option<QuantisedVectors>, SearchError> {
    let mut stream = pinned
        .query()
        .select(Select::columns(&[
            "doc_id",
            "chunk_index",
            "source",
            "metadata",
            "vector",
        ]))
        .with_row_id()
        .execute()
        .await?;
    let mut quantised = QuantisedVectors {
        codes: BlockedCodes::new(dimension),
        scales: Vec::with_capacity(rows),
        row_ids: Vec::with_capacity(rows),
        doc_ids: Vec::with_capacity(rows),
        chunk_indexes: Vec::with_capacity(rows),
        sources: Vec::with_capacity(rows),
        metadata: Vec::with_capacity(rows),
        table: pinned.clone(),
    };
    let mut row_codes = Vec::with_capacity(dimension);
    // One copy of each distinct source and metadata text.
    let mut sources: HashMap<String, Arc<str>> = HashMap::new();
    let mut metadata: HashMap<String, Arc<Metadata>> = HashMap::new();
    let mut bytes = 0usize;
    while let Some(batch) = stream.try_next().await? {
        let (values, offset) = vector_values(&batch, dimension)?;
        let docs = string_column(&batch, "doc_id")?;
        let batch_sources = string_column(&batch, "source")?;
        let batch_metadata = string_column(&batch, "metadata")?;
        let chunk_indexes = lancedb::arrow::arrow_cast::cast(
            batch
                .column_by_name("chunk_index")
                .ok_or_else(|| StoreError::Corrupt("missing column chunk_index".into()))?,
            &lancedb::arrow::arrow_schema::DataType::UInt32,
        )
        .map_err(|e| StoreError::Corrupt(format!("chunk_index: {e}")))?;
        let chunk_indexes = chunk_indexes
            .as_any()
            .downcast_ref::<lancedb::arrow::arrow_array::UInt32Array>()
            .ok_or_else(|| StoreError::Corrupt("chunk_index is not a number".into()))?;
        let ids = batch
            .column_by_name("_rowid")
            .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
            .ok_or_else(|| StoreError::Corrupt("no _rowid column".into()))?;
        for i in 0..batch.num_rows() {
            let start = (offset + i) * dimension;
            row_codes.clear();
            quantised
                .scales
                .push(quantise(&values[start..start + dimension], &mut row_codes));
            quantised.codes.push(&row_codes);
            quantised.row_ids.push(ids.value(i));
            quantised.chunk_indexes.push(chunk_indexes.value(i));
            let doc = docs.value(i);
            let doc = match quantised.doc_ids.last() {
                Some(last) if &**last == doc => last.clone(),
                _ => {
                    bytes += doc.len();
                    Arc::from(doc)
                }
            };
            quantised.doc_ids.push(doc);
            let source = (!batch_sources.is_null(i)).then(|| {
                let text = batch_sources.value(i);
                match sources.get(text) {
                    Some(shared) => shared.clone(),
                    None => {
                        bytes += text.len();
                        let shared: Arc<str> = Arc::from(text);
                        sources.insert(text.to_string(), shared.clone());
                        shared
                    }
                }
            });
            quantised.sources.push(source);
            let text = batch_metadata.value(i);
            let shared = match metadata.get(text) {
                Some(shared) => shared.clone(),
                None => {
                    let parsed: Metadata = serde_json::from_str(text).map_err(|e| {
                        StoreError::Corrupt(format!("metadata is not a JSON object: {e}"))
                    })?;
                    bytes += 2 * text.len() + 64;
                    let shared = Arc::new(parsed);
                    metadata.insert(text.to_string(), shared.clone());
                    shared
                }
            };
            quantised.metadata.push(shared);
            bytes += dimension + QUANTISED_ROW_OVERHEAD_BYTES;
        }
        if bytes > budget {
            return Ok(None);
        }
    }
    Ok(Some(quantised))
}

/// The f32 values of a batch's `vector` column, and the column's row offset into them.
fn vector_values(batch: &RecordBatch, dimension: usize) -> Result<(&[f32], usize), SearchError> {
    let vectors = batch
        .column_by_name("vector")
        .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>())
        .ok_or_else(|| StoreError::Corrupt("vector column is not a list".into()))?;
    if vectors.value_length() as usize != dimension {
        return Err(StoreError::Corrupt("vector column of another dimension".into()).into());
    }
    let values = vectors
        .values()
        .as_any()
        .downcast_ref::<Float32Array>()
        .ok_or_else(|| StoreError::Corrupt("vector values are not f32".into()))?;
    Ok((values.values(), vectors.offset()))
}

/// Appends the codes of `vector`'s unit vector to `codes` and returns their
/// scale: `unit[d] ≈ codes[d] × scale`, with the largest component at ±127.
fn quantise(vector: &[f32], codes: &mut Vec<i8>) -> f32 {
    let inverse_norm = inverse(norm(vector));
    let largest = vector.iter().fold(0f32, |m, x| m.max(x.abs())) * inverse_norm;
    if largest == 0.0 {
        codes.extend(std::iter::repeat_n(0, vector.len()));
        return 0.0;
    }
    let to_code = 127.0 / largest * inverse_norm;
    codes.extend(vector.iter().map(|x| (x * to_code).round() as i8));
    largest / 127.0
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

fn inverse(x: f32) -> f32 {
    if x > 0.0 { 1.0 / x } else { 0.0 }
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

    /// The lowest score kept, once `k` are kept: a later row needs more to
    /// enter (an equal score loses to the earlier row).
    fn worst_if_full(&self) -> Option<f32> {
        (self.k > 0 && self.heap.len() == self.k)
            .then(|| self.heap.peek().map(|Reverse((Score(s), _))| *s))
            .flatten()
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
            held: Held::Full(FullVectors {
                vectors: vectors.iter().flatten().copied().collect(),
                inverse_norms: vectors.iter().map(|v| inverse(norm(v))).collect(),
                rows: docs.iter().map(|d| row(d)).collect(),
            }),
        };
        *index.snapshot.write().unwrap() = Some(Arc::new(snapshot));
        index
    }

    fn doc_ids(rows: &[ScoredRow]) -> Vec<&str> {
        rows.iter().map(|r| r.row.doc_id.as_str()).collect()
    }

    #[tokio::test]
    async fn ranks_by_cosine_similarity_not_dot_product() {
        // "long" has the largest dot product with the query but a wider angle.
        let index = index_with(
            7,
            &[[10.0, 10.0, 0.0], [1.0, 0.1, 0.0], [0.0, 0.0, 1.0]],
            &["long", "close", "orthogonal"],
        );
        let hits = index
            .search(7, &[2.0, 0.0, 0.0], 3, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(doc_ids(&hits), vec!["close", "long", "orthogonal"]);
        assert!((hits[1].score - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert!(hits[2].score.abs() < 1e-6);
    }

    #[tokio::test]
    async fn only_serves_the_version_it_holds() {
        let index = index_with(7, &[[1.0, 0.0, 0.0]], &["a"]);
        assert!(index.search(8, &[1.0, 0.0, 0.0], 1, None).await.is_none());
        assert!(
            index.search(7, &[1.0, 0.0], 1, None).await.is_none(),
            "dimension"
        );
        assert!(
            ExactIndex::default()
                .search(1, &[1.0], 1, None)
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn limit_and_prefilter() {
        let vectors = [
            [1.0, 0.0, 0.0],
            [0.9, 0.1, 0.0],
            [0.5, 0.5, 0.0],
            [0.0, 1.0, 0.0],
        ];
        let index = index_with(1, &vectors, &["a", "b", "c", "d"]);
        let q = [1.0, 0.0, 0.0];
        assert_eq!(
            doc_ids(&index.search(1, &q, 2, None).await.unwrap().unwrap()),
            ["a", "b"]
        );
        let allowed: HashSet<&str> = ["d", "c"].into_iter().collect();
        let hits = index
            .search(1, &q, 10, Some(&allowed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(doc_ids(&hits), ["c", "d"]);
        assert!(
            index
                .search(1, &q, 0, None)
                .await
                .unwrap()
                .unwrap()
                .is_empty()
        );
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
            if let Some(rows) = index.search(version, query, 10, None).await {
                return rows.unwrap();
            }
            index.refresh_in_background(store.table(), version);
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the in-memory index never loaded version {version}");
    }

    #[tokio::test]
    async fn agrees_with_lancedb_and_follows_the_table_version() {
        let dir = tempfile::tempdir().unwrap();
        let texts =
            ["red apples", "green apples", "blue sky", "red sky at night"].map(String::from);
        let store = store_with(&dir, &texts).await;
        let embedder = crate::embed::HashEmbedder::new(16);
        let query = embedder.embed_one("red apples");
        let index = Arc::new(ExactIndex::default());
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
        assert!(index.search(version, &query, 10, None).await.is_none());
        let after = served(&index, &store, &query).await;
        assert_eq!(after.len(), 3);
        assert!(!doc_ids(&after).contains(&"d0"));
    }

    async fn store_with(dir: &tempfile::TempDir, texts: &[String]) -> crate::store::Store {
        use crate::embed::HashEmbedder;
        use crate::store::{PreparedDocument, Store};
        let store = Store::open(
            dir.path().to_str().unwrap(),
            "hash-v1",
            16,
            &Default::default(),
        )
        .await
        .unwrap();
        let embedder = HashEmbedder::new(16);
        let docs: Vec<PreparedDocument> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| PreparedDocument {
                id: format!("d{i}"),
                source: i.is_multiple_of(2).then(|| format!("s{}", i % 4)),
                metadata: serde_json::json!({"n": i % 3}).as_object().unwrap().clone(),
                chunks: vec![t.clone()],
                vectors: vec![embedder.embed_one(t)],
            })
            .collect();
        store.replace_documents(&docs).await.unwrap();
        store
    }

    #[tokio::test]
    async fn a_table_over_the_budget_is_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(&dir, &["text".to_string()]).await;
        let version = store.version().await.unwrap();
        // One row of 16 dimensions: about 230 bytes in full form, 140 quantised.
        let index = ExactIndex::new(100);
        assert!(index.load(store.table()).await.unwrap().is_none());
        assert_eq!(index.too_large_at.load(Ordering::Relaxed), version);
        let quantised = ExactIndex::new(200).load(store.table()).await.unwrap();
        assert!(matches!(quantised.unwrap().held, Held::Quantised(_)));
        let full = ExactIndex::new(DEFAULT_BUDGET_BYTES)
            .load(store.table())
            .await
            .unwrap();
        assert!(matches!(full.unwrap().held, Held::Full(_)));
    }

    #[test]
    fn quantised_codes_reproduce_the_unit_vector() {
        let vector = [3.0f32, -4.0, 0.0, 0.5, -0.01];
        let mut codes = Vec::new();
        let scale = quantise(&vector, &mut codes);
        assert_eq!(codes[1], -127, "the largest component takes the full range");
        for (x, code) in vector.iter().zip(&codes) {
            let unit = x / norm(&vector);
            assert!((unit - f32::from(*code) * scale).abs() <= scale / 2.0 + 1e-6);
        }
        assert_eq!(quantise(&[0.0; 3], &mut codes), 0.0);
        assert_eq!(&codes[5..], &[0, 0, 0]);
    }

    #[test]
    fn code_scans_match_a_plain_sum_at_any_length_and_row_count() {
        for (len, rows) in [
            (1usize, 1usize),
            (7, 3),
            (8, 255),
            (9, 256),
            (17, 257),
            (384, 600),
        ] {
            let mut unit: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            unit[0] = 0.0; // a zero component is skipped, not mis-summed
            let row_codes = |row: usize| -> Vec<i8> {
                (0..len)
                    .map(|d| ((row * 31 + d * 37) % 255) as u8 as i8)
                    .collect()
            };
            let mut codes = BlockedCodes::new(len);
            for row in 0..rows {
                codes.push(&row_codes(row));
            }
            let mut seen = Vec::new();
            codes.scan(&unit, |row, sum| seen.push((row, sum)));
            assert_eq!(seen.len(), rows, "{len}x{rows}");
            for (i, (row, sum)) in seen.into_iter().enumerate() {
                assert_eq!(row, i);
                let expected: f32 = unit
                    .iter()
                    .zip(row_codes(row))
                    .map(|(x, c)| x * f32::from(c))
                    .sum();
                assert!(
                    (sum - expected).abs() <= 1e-3 * expected.abs().max(1.0),
                    "{len}x{rows} row {row}: {sum} vs {expected}"
                );
            }
        }
    }

    /// Deterministic texts over a small vocabulary, so neighbours overlap.
    fn corpus(n: usize) -> Vec<String> {
        let words = [
            "red", "green", "blue", "apple", "sky", "night", "river", "stone", "light", "cloud",
            "field", "storm", "glass", "paper", "wolf", "salt",
        ];
        (0..n)
            .map(|i| {
                (0..3 + i % 4)
                    .map(|j| words[(i * 7 + j * 5 + i / 3) % words.len()])
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    #[tokio::test]
    async fn the_quantised_form_agrees_with_an_exact_scan() {
        use crate::embed::HashEmbedder;
        let dir = tempfile::tempdir().unwrap();
        let texts = corpus(300);
        let store = store_with(&dir, &texts).await;
        let index = Arc::new(ExactIndex::new(300 * 100));
        let version = store.version().await.unwrap();
        let snapshot = index.load(store.table()).await.unwrap().unwrap();
        assert!(matches!(snapshot.held, Held::Quantised(_)));
        *index.snapshot.write().unwrap() = Some(Arc::new(snapshot));
        let embedder = HashEmbedder::new(16);
        for query in [
            "red apple",
            "storm over the river",
            "glass",
            "wolf salt night",
        ] {
            let vector = embedder.embed_one(query);
            let from_memory = index
                .search(version, &vector, 10, None)
                .await
                .unwrap()
                .unwrap();
            let from_lance = super::super::vector::search(&store, vector.clone(), 10, None)
                .await
                .unwrap();
            assert_eq!(from_memory.len(), 10);
            // Same scores rank for rank (ids may differ only between equal scores).
            for (m, l) in from_memory.iter().zip(&from_lance) {
                assert!(
                    (m.score - l.score).abs() < 1e-5,
                    "{query}: {} vs {}",
                    m.score,
                    l.score
                );
            }
            for hit in &from_memory {
                let i: usize = hit.row.doc_id[1..].parse().unwrap();
                assert_eq!(hit.row.text, texts[i]);
                assert_eq!(hit.row.chunk_id, chunk_id(&hit.row.doc_id, 0));
                assert_eq!(
                    hit.row.source,
                    i.is_multiple_of(2).then(|| format!("s{}", i % 4))
                );
                assert_eq!(hit.row.metadata["n"], serde_json::json!(i % 3));
            }
        }
        // A pre-filter keeps only the allowed documents.
        let allowed: HashSet<&str> = ["d3", "d150"].into_iter().collect();
        let hits = index
            .search(version, &embedder.embed_one("red"), 10, Some(&allowed))
            .await
            .unwrap()
            .unwrap();
        let mut ids = doc_ids(&hits);
        ids.sort();
        assert_eq!(ids, ["d150", "d3"]);
        // After a commit it is stale, and a reload reflects the delete.
        store.delete_documents(&["d0"]).await.unwrap();
        let after = store.version().await.unwrap();
        assert!(
            index
                .search(after, &embedder.embed_one("red"), 10, None)
                .await
                .is_none()
        );
        let hits = served(&index, &store, &embedder.embed_one(&texts[0])).await;
        assert!(!doc_ids(&hits).contains(&"d0"));
    }
}
