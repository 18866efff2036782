//! The LanceDB chunks table: schema, opening, atomic writes and row decoding.

mod doc_index;

pub use doc_index::{DocEntry, DocIndex};

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::TryStreamExt;
use kbeast_client::{ChunkView, DocumentResponse, Metadata};
use lancedb::arrow::SendableRecordBatchStream;
use lancedb::arrow::arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Int32Array, RecordBatch,
    RecordBatchIterator, StringArray, TimestampMicrosecondArray,
};
use lancedb::arrow::arrow_cast::cast;
use lancedb::arrow::arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};
use lancedb::index::Index;
use lancedb::index::scalar::{BTreeIndexBuilder, FtsIndexBuilder};
use lancedb::index::vector::{IvfHnswSqIndexBuilder, IvfPqIndexBuilder, IvfSqIndexBuilder};
use lancedb::query::{ExecutableQuery, QueryBase, Select};
use lancedb::table::optimize::{CompactionOptions, Duration as ChronoDuration};
use lancedb::table::{OptimizeAction, OptimizeOptions, OptimizeStats};
use lancedb::{Connection, DistanceType, ObjectStoreRegistry, Session, Table};
use sha2::{Digest, Sha256};

pub const TABLE_NAME: &str = "chunks";

/// Deterministic id of a document's `index`-th chunk (the table's primary key), so
/// re-ingesting a document overwrites the same rows.
pub fn chunk_id(doc_id: &str, index: usize) -> String {
    let mut hasher = Sha256::new();
    hasher.update(doc_id.as_bytes());
    hasher.update([0u8]);
    hasher.update(index.to_string().as_bytes());
    hasher.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
const META_MODEL: &str = "kbeast.embedding_model";
const META_DIMENSION: &str = "kbeast.embedding_dimension";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the table at {uri} was built with embedding model {stored_model:?} (dimension {stored_dimension}), \
         but the server is configured with {model:?} (dimension {dimension}); \
         set spec.embedding.provider, spec.embedding.model and spec.embedding.dimension back, \
         or purge the data (a table that holds no chunks switches by itself)"
    )]
    IncompatibleModel {
        uri: String,
        stored_model: String,
        stored_dimension: usize,
        model: String,
        dimension: usize,
    },
    #[error("lancedb: {0}")]
    Lance(#[from] lancedb::Error),
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    #[error("unexpected table contents: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A document ready to be written: chunked and embedded.
#[derive(Debug, Clone)]
pub struct PreparedDocument {
    pub id: String,
    pub source: Option<String>,
    pub metadata: Metadata,
    pub chunks: Vec<String>,
    pub vectors: Vec<Vec<f32>>,
}

impl PreparedDocument {
    /// What the quota counts: each chunk's text plus the metadata stored with it.
    pub fn stored_bytes(&self) -> u64 {
        let metadata = metadata_json_bytes(&self.metadata) as u64;
        self.chunks.iter().map(|c| c.len() as u64 + metadata).sum()
    }
}

/// Bytes of `metadata` as stored: serialised JSON, copied into every chunk row.
/// No metadata counts as none (not as the two bytes of `{}`).
pub fn metadata_json_bytes(metadata: &Metadata) -> usize {
    if metadata.is_empty() {
        return 0;
    }
    serde_json::to_vec(metadata).map_or(0, |json| json.len())
}

/// One row of the chunks table, as read back.
#[derive(Debug, Clone)]
pub struct ChunkRow {
    pub chunk_id: String,
    pub doc_id: String,
    pub chunk_index: u32,
    pub source: Option<String>,
    pub text: String,
    pub metadata: Metadata,
}

/// Columns returned by searches and document reads (everything but the vector).
pub const ROW_COLUMNS: [&str; 6] = [
    "chunk_id",
    "doc_id",
    "chunk_index",
    "source",
    "text",
    "metadata",
];

/// How to reach the table: storage options (S3 endpoint, credentials) and
/// the bounds of LanceDB's caches.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub storage_options: Vec<(String, String)>,
    /// LanceDB Session cache budgets; None keeps LanceDB's defaults.
    pub cache: Option<CacheSizes>,
    /// How stale reads may be with respect to other processes' commits.
    /// None: never look (a single writer).
    pub read_consistency: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSizes {
    pub index_bytes: u64,
    pub metadata_bytes: u64,
}

/// Connects to the LanceDB database at `uri` (a directory or `s3://…`).
pub async fn connect(uri: &str, options: &ConnectOptions) -> Result<Connection> {
    let mut builder = lancedb::connect(uri).storage_options(options.storage_options.clone());
    if let Some(cache) = options.cache {
        builder = builder.session(Arc::new(Session::new(
            cache.index_bytes as usize,
            cache.metadata_bytes as usize,
            Arc::new(ObjectStoreRegistry::default()),
        )));
    }
    if let Some(interval) = options.read_consistency {
        builder = builder.read_consistency_interval(interval);
    }
    Ok(builder.execute().await?)
}

/// True for URIs LanceDB reaches through an object store rather than the
/// local filesystem.
pub fn is_object_store(uri: &str) -> bool {
    uri.split_once("://")
        .is_some_and(|(scheme, _)| !scheme.is_empty() && scheme != "file")
}

/// How LanceDB's vector index is queried (once it exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VectorQuery {
    /// IVF partitions probed per query. More probes: better recall, slower.
    pub nprobes: usize,
    /// Candidates re-ranked by their full vectors, as a multiple of the limit;
    /// this undoes most of the quantisation error.
    pub refine_factor: u32,
    /// Candidates an HNSW search keeps (IVF-HNSW indices only).
    pub ef: usize,
}

/// How the vector index is built; None keeps LanceDB's defaults (IVF-PQ: a
/// partition per 8,192 rows, one PQ sub-vector per 16 dimensions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VectorIndexShape {
    pub kind: VectorIndexKind,
    pub partitions: Option<u32>,
    /// IVF-PQ only.
    pub sub_vectors: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VectorIndexKind {
    /// IVF-PQ: product-quantised vectors in IVF partitions.
    #[default]
    Pq,
    /// IVF-SQ: 8-bit scalar-quantised vectors in IVF partitions.
    Sq,
    /// IVF-HNSW-SQ: an HNSW graph over scalar-quantised vectors per partition.
    HnswSq,
}

impl Default for VectorQuery {
    fn default() -> Self {
        Self {
            nprobes: 40,
            refine_factor: 10,
            ef: 100,
        }
    }
}

/// Scalar indices every chunks table has, by column.
pub const BTREE_COLUMNS: [&str; 2] = ["doc_id", "chunk_id"];

pub struct Store {
    table: Table,
    schema: SchemaRef,
    model: String,
    dimension: usize,
    cache: Option<CacheSizes>,
    /// Per-document summary, kept in step with the table by the writer.
    docs: RwLock<DocIndex>,
    /// Table version that `docs` reflects. When the table is at another
    /// version that this process did not write, another process committed.
    indexed_version: AtomicU64,
    /// Set once a commit of another process was seen: from then on the
    /// document index is reloaded after maintenance too.
    shared: AtomicBool,
    vector_query: RwLock<VectorQuery>,
    vector_index_shape: RwLock<VectorIndexShape>,
}

impl Store {
    /// Opens the chunks table at `uri`, creating it (with its full-text and
    /// BTree indices) on first use, and adds missing indices: to older tables,
    /// and to a table another replica has created but not yet indexed. Refuses a table built with another model or dimension.
    pub async fn open(
        uri: &str,
        model: &str,
        dimension: usize,
        options: &ConnectOptions,
    ) -> Result<Self> {
        let connection = connect(uri, options).await?;
        let schema = chunk_schema(model, dimension);
        let table = match connection.open_table(TABLE_NAME).execute().await {
            Ok(table) => table,
            Err(lancedb::Error::TableNotFound { .. }) => {
                match create_table(&connection, schema.clone(), None).await {
                    Ok(table) => table,
                    // Another replica created it first.
                    Err(StoreError::Lance(lancedb::Error::TableAlreadyExists { .. })) => {
                        connection.open_table(TABLE_NAME).execute().await?
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e.into()),
        };
        let table = match check_model(uri, table.schema().await?.as_ref(), model, dimension) {
            Ok(()) => table,
            // Nothing is stored, so nothing is lost: a new project may still change its embedder.
            Err(StoreError::IncompatibleModel { stored_model, .. })
                if table.count_rows(None).await? == 0 =>
            {
                tracing::info!(
                    stored_model,
                    model,
                    "recreating the empty table for a new embedding model"
                );
                connection.drop_table(TABLE_NAME, &[]).await?;
                let table = create_table(&connection, schema.clone(), None).await?;
                check_model(uri, table.schema().await?.as_ref(), model, dimension)?;
                table
            }
            Err(error) => return Err(error),
        };
        ensure_primary_key(&table).await?;
        ensure_fts_index(&table).await?;
        ensure_btree_indices(&table).await?;
        let store = Self {
            table,
            schema,
            model: model.to_string(),
            dimension,
            cache: options.cache,
            docs: RwLock::new(DocIndex::default()),
            indexed_version: AtomicU64::new(0),
            shared: AtomicBool::new(false),
            vector_query: RwLock::default(),
            vector_index_shape: RwLock::default(),
        };
        store.reload_doc_index().await?;
        Ok(store)
    }

    pub fn vector_query(&self) -> VectorQuery {
        *self.vector_query.read().expect("vector query lock")
    }

    pub fn set_vector_query(&self, query: VectorQuery) {
        *self.vector_query.write().expect("vector query lock") = query;
    }

    pub fn set_vector_index_shape(&self, shape: VectorIndexShape) {
        *self.vector_index_shape.write().expect("vector index lock") = shape;
    }

    pub fn cache_sizes(&self) -> Option<CacheSizes> {
        self.cache
    }

    /// Rebuilds the document index from the table at its latest version.
    pub async fn reload_doc_index(&self) -> Result<()> {
        let version = self.table.version().await?;
        let index = self.load_doc_index().await?;
        *self.docs.write().expect("doc index lock") = index;
        self.indexed_version.store(version, Ordering::SeqCst);
        Ok(())
    }

    /// Records that this process committed `version` and updated the
    /// document index for it. Returns false when other commits came in
    /// between (the version skipped): the index must then be reloaded.
    pub fn advance_indexed_version(&self, version: u64) -> bool {
        let previous = self.indexed_version.swap(version, Ordering::SeqCst);
        let own = version == previous + 1;
        if !own {
            self.shared.store(true, Ordering::SeqCst);
        }
        own
    }

    /// Makes the next `refresh_if_changed` reload the document index.
    pub fn invalidate_doc_index(&self) {
        self.indexed_version.store(0, Ordering::SeqCst);
    }

    /// After this process's own multi-commit operations (optimize): takes
    /// the new version as indexed, unless another process was ever seen
    /// writing, in which case the index is reloaded to be sure.
    pub async fn settle_after_maintenance(&self) -> Result<()> {
        if self.shared.load(Ordering::SeqCst) {
            self.reload_doc_index().await
        } else {
            let version = self.table.version().await?;
            self.indexed_version.store(version, Ordering::SeqCst);
            Ok(())
        }
    }

    /// Reloads the document index if the table moved past the indexed
    /// version without this process (another writer). Returns whether it did.
    pub async fn refresh_if_changed(&self) -> Result<bool> {
        self.table.checkout_latest().await?;
        let version = self.table.version().await?;
        if version == self.indexed_version.load(Ordering::SeqCst) {
            return Ok(false);
        }
        self.shared.store(true, Ordering::SeqCst);
        self.reload_doc_index().await?;
        Ok(true)
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Ids of the documents matching `filter`. The scan holds the index's std lock, so on a
    /// multi-threaded runtime it runs with the worker handed over (`block_in_place`).
    pub fn matching_documents(&self, filter: &kbeast_client::Filter) -> Vec<String> {
        let scan = || self.docs().matching(filter);
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(scan),
            _ => scan(),
        }
    }

    pub fn docs(&self) -> std::sync::RwLockReadGuard<'_, DocIndex> {
        self.docs.read().expect("doc index lock")
    }

    pub(crate) fn docs_mut(&self) -> std::sync::RwLockWriteGuard<'_, DocIndex> {
        self.docs.write().expect("doc index lock")
    }

    /// Writes `documents` in one commit: their new chunks are inserted or
    /// updated and every other chunk of the same documents is deleted. Returns
    /// the table version of the commit.
    ///
    /// This is a single merge-insert keyed on `chunk_id` with
    /// "when not matched by source, delete where doc_id IN (...)": one atomic
    /// commit, so readers never see a document half replaced, and a failure
    /// leaves the table untouched. (Delete-then-add would be two commits.)
    pub async fn replace_documents(&self, documents: &[PreparedDocument]) -> Result<u64> {
        let batch = self.record_batch(documents)?;
        let ids: Vec<&str> = documents.iter().map(|d| d.id.as_str()).collect();
        let mut merge = self.table.merge_insert(&["chunk_id"]);
        merge
            .when_matched_update_all(None)
            .when_not_matched_insert_all()
            .when_not_matched_by_source_delete(Some(doc_id_in(&ids)));
        let reader = RecordBatchIterator::new(vec![Ok(batch)], self.schema.clone());
        let result = merge.execute(Box::new(reader)).await?;
        Ok(result.version)
    }

    /// Appends the chunks of documents that are not in the table: one commit
    /// that only adds rows, so its cost does not grow with the table (a
    /// merge-insert joins against every row). Correct only for ids absent from
    /// the table; see [`Store::stored_exactly`] for the check after the commit.
    /// Returns the table version of the commit.
    pub async fn append_documents(&self, documents: &[PreparedDocument]) -> Result<u64> {
        let batch = self.record_batch(documents)?;
        Ok(self.table.add(batch).execute().await?.version)
    }

    /// True if the table holds exactly the chunk ids of `documents` for their
    /// ids, each once: no duplicate and no chunk of another version of them.
    pub async fn stored_exactly(&self, documents: &[PreparedDocument]) -> Result<bool> {
        let ids: Vec<&str> = documents.iter().map(|d| d.id.as_str()).collect();
        let mut stored: Vec<String> = Vec::new();
        let mut stream = self
            .table
            .query()
            .only_if(doc_id_in(&ids))
            .select(Select::columns(&["chunk_id"]))
            .execute()
            .await?;
        while let Some(batch) = stream.try_next().await? {
            let chunk_ids = string_column(&batch, "chunk_id")?;
            stored.extend(chunk_ids.iter().flatten().map(str::to_string));
        }
        let mut expected: Vec<String> = documents
            .iter()
            .flat_map(|d| (0..d.chunks.len()).map(|i| chunk_id(&d.id, i)))
            .collect();
        stored.sort_unstable();
        expected.sort_unstable();
        Ok(stored == expected)
    }

    /// Replaces every stored row of `documents`, duplicates included, by
    /// their chunks, in one commit. The merge key adds `ingested_at`, which no
    /// stored row shares with the rows written now, so nothing matches: every
    /// old row of these documents is deleted and every new one inserted.
    pub async fn overwrite_documents(&self, documents: &[PreparedDocument]) -> Result<u64> {
        let batch = self.record_batch(documents)?;
        let ids: Vec<&str> = documents.iter().map(|d| d.id.as_str()).collect();
        let mut merge = self.table.merge_insert(&["chunk_id", "ingested_at"]);
        merge
            .when_not_matched_insert_all()
            .when_not_matched_by_source_delete(Some(doc_id_in(&ids)));
        let reader = RecordBatchIterator::new(vec![Ok(batch)], self.schema.clone());
        Ok(merge.execute(Box::new(reader)).await?.version)
    }

    /// Keeps, for each of `ids`, only the rows of the document's newest write
    /// (the rows of one commit share `ingested_at`) and deletes the others, in
    /// one commit: what a crash between an append and its rewrite (see the
    /// writer) can leave behind. The kept rows match themselves on
    /// (`chunk_id`, `ingested_at`) and stay; every other row of these ids is
    /// "not matched by source" and deleted. Returns the commit's version.
    pub async fn remove_superseded_rows(&self, ids: &[&str]) -> Result<u64> {
        let batches: Vec<RecordBatch> = self
            .table
            .query()
            .only_if(doc_id_in(ids))
            .execute()
            .await?
            .try_collect()
            .await?;
        let newest_of = |batch: &RecordBatch| -> Result<(StringArray, TimestampMicrosecondArray)> {
            let times = batch
                .column_by_name("ingested_at")
                .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
                .cloned()
                .ok_or_else(|| StoreError::Corrupt("ingested_at is not a timestamp".into()))?;
            Ok((string_column(batch, "doc_id")?, times))
        };
        let mut newest: HashMap<String, i64> = HashMap::new();
        for batch in &batches {
            let (docs, times) = newest_of(batch)?;
            for i in 0..batch.num_rows() {
                let time = newest.entry(docs.value(i).to_string()).or_insert(i64::MIN);
                *time = (*time).max(times.value(i));
            }
        }
        let mut kept = Vec::new();
        for batch in &batches {
            let (docs, times) = newest_of(batch)?;
            let keep: lancedb::arrow::arrow_array::BooleanArray = (0..batch.num_rows())
                .map(|i| Some(newest.get(docs.value(i)) == Some(&times.value(i))))
                .collect();
            let batch = lancedb::arrow::arrow_select::filter::filter_record_batch(batch, &keep)?;
            kept.push(RecordBatch::try_new(
                self.schema.clone(),
                batch.columns().to_vec(),
            )?);
        }
        let mut merge = self.table.merge_insert(&["chunk_id", "ingested_at"]);
        merge
            .when_not_matched_insert_all()
            .when_not_matched_by_source_delete(Some(doc_id_in(ids)));
        let reader = RecordBatchIterator::new(kept.into_iter().map(Ok), self.schema.clone());
        Ok(merge.execute(Box::new(reader)).await?.version)
    }

    /// Table version the document index reflects (0: unknown, reload pending).
    pub fn indexed_version(&self) -> u64 {
        self.indexed_version.load(Ordering::SeqCst)
    }

    /// Deletes all chunks of the given documents in one commit. Returns the
    /// rows deleted and the version of the commit.
    pub async fn delete_documents(&self, ids: &[&str]) -> Result<(u64, u64)> {
        let result = self.table.delete(doc_id_in(ids).as_str()).await?;
        Ok((result.num_deleted_rows, result.version))
    }

    /// Makes deleted rows physically gone: rewrites every fragment holding
    /// deletions, rebuilds the full-text index from the remaining rows (so no
    /// token of a deleted text survives in it), and removes every older
    /// version with its files. Readers pinned to an older version (a running
    /// snapshot) lose it.
    pub async fn erase_deleted(&self) -> Result<EraseStats> {
        let compaction = self
            .table
            .optimize(OptimizeAction::Compact {
                options: CompactionOptions {
                    materialize_deletions: true,
                    materialize_deletions_threshold: 0.0,
                    ..CompactionOptions::default()
                },
                remap_options: None,
            })
            .await?
            .compaction
            .unwrap_or_default();
        create_fts_index(&self.table, true).await?;
        self.update_indices().await?;
        let prune = self
            .table
            .optimize(OptimizeAction::Prune {
                older_than: Some(ChronoDuration::zero()),
                // Files not referenced by any version may belong to another
                // writer's commit in progress: left alone.
                delete_unverified: Some(false),
                error_if_tagged_old_versions: Some(false),
            })
            .await?
            .prune
            .unwrap_or_default();
        Ok(EraseStats {
            fragments_rewritten: compaction.fragments_removed as u64,
            versions_removed: prune.old_versions,
            bytes_removed: prune.bytes_removed,
        })
    }

    /// The chunks of one document in order, or None if it does not exist.
    pub async fn document(&self, id: &str) -> Result<Option<DocumentResponse>> {
        let batches: Vec<RecordBatch> = self
            .table
            .query()
            .only_if(doc_id_in(&[id]))
            .select(Select::columns(&ROW_COLUMNS))
            .execute()
            .await?
            .try_collect()
            .await?;
        let mut rows = Vec::new();
        for batch in &batches {
            rows.extend(decode_rows(batch)?);
        }
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let (source, metadata) = (first.source.clone(), first.metadata.clone());
        rows.sort_by_key(|r| r.chunk_index);
        Ok(Some(DocumentResponse {
            id: id.to_string(),
            source,
            metadata,
            chunks: rows
                .into_iter()
                .map(|r| ChunkView {
                    chunk_id: r.chunk_id,
                    index: r.chunk_index,
                    text: r.text,
                })
                .collect(),
        }))
    }

    pub async fn version(&self) -> Result<u64> {
        Ok(self.table.version().await?)
    }

    /// Bytes of data and index files, as recorded in the manifest.
    pub async fn storage_bytes(&self) -> Result<u64> {
        Ok(self.table.stats().await?.total_bytes as u64)
    }

    /// Compacts small files, folds new rows into the indices and prunes
    /// versions older than LanceDB's default retention (7 days).
    pub async fn optimize(&self) -> Result<OptimizeStats> {
        Ok(self.table.optimize(OptimizeAction::All).await?)
    }

    /// Folds rows written since the last time into the existing indices
    /// (incremental; no retraining). Until then they are searched by a scan.
    pub async fn update_indices(&self) -> Result<()> {
        self.table
            .optimize(OptimizeAction::Index(OptimizeOptions::default()))
            .await?;
        Ok(())
    }

    /// The table's indices with their coverage, for stats.
    pub async fn index_states(&self) -> Result<Vec<kbeast_client::IndexState>> {
        let mut states = Vec::new();
        for index in self.table.list_indices().await? {
            let stats = self.table.index_stats(&index.name).await?;
            states.push(kbeast_client::IndexState {
                name: index.name.clone(),
                columns: index.columns.clone(),
                index_type: index.index_type.to_string(),
                indexed_rows: stats.as_ref().map(|s| s.num_indexed_rows as u64),
                unindexed_rows: stats.as_ref().map(|s| s.num_unindexed_rows as u64),
            });
        }
        states.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(states)
    }

    /// Loads the indices into the cache, so the first searches do not pay for
    /// reading them. Returns the names of the indices warmed. The full-text
    /// index is left out: warming it reads every posting list (about 200 MB at
    /// 100k chunks); searches load the lists they need, within the cache budget.
    pub async fn prewarm(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for index in self.table.list_indices().await? {
            if index.index_type == lancedb::index::IndexType::FTS {
                continue;
            }
            self.table.prewarm_index(&index.name).await?;
            names.push(index.name);
        }
        Ok(names)
    }

    /// One nearest-neighbour query with a fixed unit vector: loads the vector
    /// column (or index) the way searches read it, without the embedder.
    pub async fn warm_vector_path(&self) -> Result<()> {
        let unit = vec![1.0 / (self.dimension as f32).sqrt(); self.dimension];
        let _: Vec<RecordBatch> = self
            .table
            .query()
            .nearest_to(unit)?
            .distance_type(DistanceType::Cosine)
            .limit(1)
            .select(Select::columns(&ROW_COLUMNS))
            .execute()
            .await?
            .try_collect()
            .await?;
        Ok(())
    }

    pub async fn has_vector_index(&self) -> Result<bool> {
        let indices = self.table.list_indices().await?;
        Ok(indices.iter().any(|i| i.columns == ["vector"]))
    }

    /// Builds (or rebuilds, replacing it) an IVF-PQ index (cosine) on
    /// `vector`. Until it exists, vector search is an exact scan, which is fine
    /// for small tables.
    pub async fn create_vector_index(&self) -> Result<()> {
        let shape = *self.vector_index_shape.read().expect("vector index lock");
        let index = match shape.kind {
            VectorIndexKind::Pq => {
                let mut builder = IvfPqIndexBuilder::default().distance_type(DistanceType::Cosine);
                if let Some(partitions) = shape.partitions {
                    builder = builder.num_partitions(partitions);
                }
                if let Some(sub_vectors) = shape.sub_vectors {
                    builder = builder.num_sub_vectors(sub_vectors);
                }
                Index::IvfPq(builder)
            }
            VectorIndexKind::Sq => {
                let mut builder = IvfSqIndexBuilder::default().distance_type(DistanceType::Cosine);
                if let Some(partitions) = shape.partitions {
                    builder = builder.num_partitions(partitions);
                }
                Index::IvfSq(builder)
            }
            VectorIndexKind::HnswSq => {
                let mut builder =
                    IvfHnswSqIndexBuilder::default().distance_type(DistanceType::Cosine);
                if let Some(partitions) = shape.partitions {
                    builder = builder.num_partitions(partitions);
                }
                Index::IvfHnswSq(builder)
            }
        };
        self.table
            .create_index(&["vector"], index)
            .execute()
            .await?;
        Ok(())
    }

    /// A cheap round trip to storage, for readiness checks.
    pub async fn ping(&self) -> Result<usize> {
        Ok(self.table.count_rows(None).await?)
    }

    /// Scans doc_id, source, metadata and text of every row once at startup.
    async fn load_doc_index(&self) -> Result<DocIndex> {
        let mut stream = self
            .table
            .query()
            .select(Select::columns(&ROW_COLUMNS))
            .execute()
            .await?;
        let mut index = DocIndex::default();
        let mut chunk_ids = HashSet::new();
        while let Some(batch) = stream.try_next().await? {
            for row in decode_rows(&batch)? {
                if !chunk_ids.insert(row.chunk_id) {
                    index.mark_duplicated(&row.doc_id);
                }
                let bytes = row.text.len() + metadata_json_bytes(&row.metadata);
                index.add_chunk(&row.doc_id, row.source, row.metadata, bytes as u64);
            }
        }
        Ok(index)
    }

    fn record_batch(&self, documents: &[PreparedDocument]) -> Result<RecordBatch> {
        let rows: usize = documents.iter().map(|d| d.chunks.len()).sum();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let mut chunk_ids = Vec::with_capacity(rows);
        let mut doc_ids = Vec::with_capacity(rows);
        let mut indexes = Vec::with_capacity(rows);
        let mut sources = Vec::with_capacity(rows);
        let mut texts = Vec::with_capacity(rows);
        let mut metadata = Vec::with_capacity(rows);
        let mut flat_vectors = Vec::with_capacity(rows * self.dimension);
        for doc in documents {
            let metadata_json = serde_json::Value::Object(doc.metadata.clone()).to_string();
            if doc.vectors.len() != doc.chunks.len() {
                return Err(StoreError::Corrupt(format!(
                    "document {} has {} chunks but {} vectors",
                    doc.id,
                    doc.chunks.len(),
                    doc.vectors.len()
                )));
            }
            for (index, (text, vector)) in doc.chunks.iter().zip(&doc.vectors).enumerate() {
                if vector.len() != self.dimension {
                    return Err(StoreError::Corrupt(format!(
                        "vector of dimension {} for a table of dimension {}",
                        vector.len(),
                        self.dimension
                    )));
                }
                chunk_ids.push(chunk_id(&doc.id, index));
                doc_ids.push(doc.id.clone());
                indexes.push(index as i32);
                sources.push(doc.source.clone());
                texts.push(text.clone());
                metadata.push(metadata_json.clone());
                flat_vectors.extend_from_slice(vector);
            }
        }
        let vectors = FixedSizeListArray::try_new(
            Arc::new(Field::new("item", DataType::Float32, true)),
            self.dimension as i32,
            Arc::new(Float32Array::from(flat_vectors)),
            None,
        )?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(chunk_ids)),
            Arc::new(StringArray::from(doc_ids)),
            Arc::new(Int32Array::from(indexes)),
            Arc::new(StringArray::from(sources)),
            Arc::new(StringArray::from(texts)),
            Arc::new(StringArray::from(metadata)),
            Arc::new(vectors),
            Arc::new(TimestampMicrosecondArray::from(vec![now; rows]).with_timezone("UTC")),
        ];
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// Creates the chunks table with `schema`, fills it from `rows` if given, and
/// builds its full-text index.
pub async fn create_table(
    connection: &Connection,
    schema: SchemaRef,
    rows: Option<SendableRecordBatchStream>,
) -> Result<Table> {
    let table = connection
        .create_empty_table(TABLE_NAME, schema)
        .execute()
        .await?;
    if let Some(rows) = rows {
        table.add(rows).execute().await?;
    }
    ensure_primary_key(&table).await?;
    create_fts_index(&table, false).await?;
    ensure_btree_indices(&table).await?;
    Ok(table)
}

/// Replaces every row of `table` with `rows` in one commit (a new version: until
/// it lands, readers see the old rows, and a failed copy leaves them in place),
/// then builds the indices again over the new rows.
pub async fn overwrite_table(table: &Table, rows: SendableRecordBatchStream) -> Result<()> {
    table
        .add(rows)
        .mode(lancedb::table::AddDataMode::Overwrite)
        .execute()
        .await?;
    ensure_primary_key(table).await?;
    create_fts_index(table, true).await?;
    ensure_btree_indices(table).await?;
    Ok(())
}

/// Declares `chunk_id` the table's primary key. Merge-inserts then record
/// the keys they insert, and two writers that insert the same chunk
/// concurrently conflict and retry (the loser then updates the winner's row)
/// instead of both appending it: without this, two replicas ingesting the
/// same document at once leave duplicate chunks.
async fn ensure_primary_key(table: &Table) -> Result<()> {
    match table.set_unenforced_primary_key(["chunk_id"]).await {
        Ok(()) => {
            tracing::info!("declared chunk_id the primary key");
            Ok(())
        }
        // Set before (LanceDB refuses to change it), maybe by another replica.
        Err(lancedb::Error::InvalidInput { message }) if message.contains("already set") => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// The full-text index on `text`. Positions enable phrase queries. Rows
/// added later are searched unindexed (flat) until the index is optimised,
/// so results stay exact.
async fn create_fts_index(table: &Table, replace: bool) -> Result<()> {
    table
        .create_index(
            &["text"],
            Index::FTS(FtsIndexBuilder::default().with_position(true)),
        )
        .replace(replace)
        .execute()
        .await?;
    Ok(())
}

/// The full-text index if the table has none yet. A replica that opens a
/// table another replica has just created may see it before its index.
async fn ensure_fts_index(table: &Table) -> Result<()> {
    if table
        .list_indices()
        .await?
        .iter()
        .any(|i| i.columns == ["text"])
    {
        return Ok(());
    }
    match create_fts_index(table, false).await {
        Ok(()) => {
            tracing::info!("created the full-text index");
            Ok(())
        }
        // Another replica created it at the same moment.
        Err(StoreError::Lance(error)) if error.to_string().contains("already exists") => Ok(()),
        Err(error) => Err(error),
    }
}

/// BTree indices on `doc_id` (document reads, deletes and the
/// merge-insert's delete filter) and `chunk_id` (the merge-insert key).
/// Tables created before they existed get them on first open.
async fn ensure_btree_indices(table: &Table) -> Result<()> {
    let existing = table.list_indices().await?;
    for column in BTREE_COLUMNS {
        if existing.iter().any(|i| i.columns == [column]) {
            continue;
        }
        match table
            .create_index(&[column], Index::BTree(BTreeIndexBuilder::default()))
            .replace(false)
            .execute()
            .await
        {
            Ok(()) => tracing::info!(column, "created a BTree index"),
            // Another replica created it at the same moment.
            Err(error) if error.to_string().contains("already exists") => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// What `erase_deleted` removed.
#[derive(Debug, Clone, Copy, Default)]
pub struct EraseStats {
    pub fragments_rewritten: u64,
    pub versions_removed: u64,
    pub bytes_removed: u64,
}

/// The chunks table schema; the embedding model and dimension live in the
/// schema metadata so a table is never searched with foreign vectors.
pub fn chunk_schema(model: &str, dimension: usize) -> SchemaRef {
    let fields = vec![
        Field::new("chunk_id", DataType::Utf8, false),
        Field::new("doc_id", DataType::Utf8, false),
        Field::new("chunk_index", DataType::Int32, false),
        Field::new("source", DataType::Utf8, true),
        Field::new("text", DataType::Utf8, false),
        Field::new("metadata", DataType::Utf8, false),
        Field::new(
            "vector",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, true)),
                dimension as i32,
            ),
            false,
        ),
        Field::new(
            "ingested_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ];
    let metadata = HashMap::from([
        (META_MODEL.to_string(), model.to_string()),
        (META_DIMENSION.to_string(), dimension.to_string()),
    ]);
    Arc::new(Schema::new_with_metadata(fields, metadata))
}

fn check_model(uri: &str, schema: &Schema, model: &str, dimension: usize) -> Result<()> {
    // The vector column is authoritative for the dimension; the metadata adds the model.
    let stored_dimension = match schema.field_with_name("vector").map(|f| f.data_type()) {
        Ok(DataType::FixedSizeList(_, n)) => *n as usize,
        _ => return Err(StoreError::Corrupt("no vector column".into())),
    };
    let stored_model = schema
        .metadata()
        .get(META_MODEL)
        .cloned()
        .unwrap_or_else(|| "<unknown>".to_string());
    if stored_model != model || stored_dimension != dimension {
        return Err(StoreError::IncompatibleModel {
            uri: uri.to_string(),
            stored_model,
            stored_dimension,
            model: model.to_string(),
            dimension,
        });
    }
    Ok(())
}

/// `doc_id IN ('a', 'b')` with SQL string quoting.
pub fn doc_id_in(ids: &[&str]) -> String {
    let list: Vec<String> = ids
        .iter()
        .map(|id| format!("'{}'", id.replace('\'', "''")))
        .collect();
    format!("doc_id IN ({})", list.join(", "))
}

pub(crate) fn string_column(batch: &RecordBatch, name: &str) -> Result<StringArray> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| StoreError::Corrupt(format!("missing column {name}")))?;
    let column = cast(column, &DataType::Utf8)?;
    column
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| StoreError::Corrupt(format!("column {name} is not text")))
}

/// Reads a float column such as `_distance` or `_score`.
pub fn float_column(batch: &RecordBatch, name: &str) -> Result<Float32Array> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| StoreError::Corrupt(format!("missing column {name}")))?;
    let column = cast(column, &DataType::Float32)?;
    column
        .as_any()
        .downcast_ref::<Float32Array>()
        .cloned()
        .ok_or_else(|| StoreError::Corrupt(format!("column {name} is not a float")))
}

/// Decodes the [`ROW_COLUMNS`] of a batch.
pub fn decode_rows(batch: &RecordBatch) -> Result<Vec<ChunkRow>> {
    let chunk_ids = string_column(batch, "chunk_id")?;
    let doc_ids = string_column(batch, "doc_id")?;
    let sources = string_column(batch, "source")?;
    let texts = string_column(batch, "text")?;
    let metadata = string_column(batch, "metadata")?;
    let indexes = cast(
        batch
            .column_by_name("chunk_index")
            .ok_or_else(|| StoreError::Corrupt("missing column chunk_index".into()))?,
        &DataType::Int32,
    )?;
    let indexes = indexes
        .as_any()
        .downcast_ref::<Int32Array>()
        .ok_or_else(|| StoreError::Corrupt("chunk_index is not an integer".into()))?;
    let mut rows = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let metadata: Metadata = serde_json::from_str(metadata.value(i))
            .map_err(|e| StoreError::Corrupt(format!("metadata is not a JSON object: {e}")))?;
        rows.push(ChunkRow {
            chunk_id: chunk_ids.value(i).to_string(),
            doc_id: doc_ids.value(i).to_string(),
            chunk_index: indexes.value(i) as u32,
            source: (!sources.is_null(i)).then(|| sources.value(i).to_string()),
            text: texts.value(i).to_string(),
            metadata,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_ids_are_deterministic_and_distinct() {
        assert_eq!(chunk_id("doc", 3), chunk_id("doc", 3));
        assert_ne!(chunk_id("doc", 3), chunk_id("doc", 4));
        assert_ne!(chunk_id("doc1", 0), chunk_id("doc", 10));
        assert_eq!(chunk_id("doc", 0).len(), 32);
    }

    #[test]
    fn doc_id_filter_quotes_strings() {
        assert_eq!(doc_id_in(&["a", "it's"]), "doc_id IN ('a', 'it''s')");
    }

    #[test]
    fn model_check_names_both_models() {
        let schema = chunk_schema("hash-v1", 384);
        assert!(check_model("mem", &schema, "hash-v1", 384).is_ok());
        let err = check_model("mem", &schema, "hash-v1", 64)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dimension 384") && err.contains("dimension 64"),
            "{err}"
        );
        let err = check_model("mem", &schema, "other", 384)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"hash-v1\"") && err.contains("\"other\""),
            "{err}"
        );
    }
}
