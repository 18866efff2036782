//! The single writer task. All table mutations go through it, so quota checks
//! and the in-memory document index are exact, and concurrent ingests are
//! coalesced into one commit instead of racing each other's commits.
//!
//! A request is acknowledged only after the commit that contains it succeeded.
//! A request rejected for quota takes no part in the commit; a failed commit
//! fails every request in it and changes nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kbeast_client::Filter;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::store::{DocEntry, PreparedDocument, Store};
use crate::telemetry::Metrics;

/// Upper bound of chunks coalesced into one commit.
const MAX_BATCH_CHUNKS: usize = 4096;

/// How long the writer must have had nothing to do before it updates the
/// indices for fewer unindexed chunks than a bulk load waits for.
const IDLE_BEFORE_INDEXING: Duration = Duration::from_millis(250);

/// Background upkeep done by the writer between commits, so it never races a write.
#[derive(Debug, Clone, Copy, Default)]
pub struct Maintenance {
    /// Optimize (compact, update indices, prune) after this many commits; 0 = never.
    pub optimize_every_commits: u64,
    /// Update the indices once this many chunks were written since the last
    /// update and the writer is idle, or during a stream of writes once they
    /// reach half the indexed chunks (`index_update_due`), so keyword search
    /// does not scan ever more unindexed rows; 0 = never.
    pub index_every_chunks: u64,
    /// Build the vector index once the table has this many chunks; None = never.
    pub vector_index_min_rows: Option<u64>,
    /// How often to look for other processes' commits; None = never (single writer).
    pub refresh_interval: Option<Duration>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Quotas {
    pub max_documents: Option<u64>,
    pub max_bytes: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("document quota exceeded: {would_have} documents would exceed the limit of {limit}")]
    DocumentQuota { limit: u64, would_have: u64 },
    #[error(
        "storage quota exceeded: {would_have} bytes of text and metadata would exceed the limit of {limit}"
    )]
    ByteQuota { limit: u64, would_have: u64 },
    #[error("write failed: {0}")]
    Store(String),
    #[error("the writer is shutting down")]
    ShuttingDown,
}

#[derive(Debug, Clone)]
pub struct UpsertOutcome {
    /// (document id, chunk count) in request order.
    pub documents: Vec<(String, u32)>,
    pub version: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct DeleteOutcome {
    pub documents: u64,
    pub chunks: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct EraseOutcome {
    pub deleted: DeleteOutcome,
    pub erased: crate::store::EraseStats,
}

enum Command {
    Upsert {
        documents: Vec<PreparedDocument>,
        reply: oneshot::Sender<Result<UpsertOutcome, WriteError>>,
    },
    Delete {
        filter: Filter,
        reply: oneshot::Sender<Result<DeleteOutcome, WriteError>>,
    },
    Erase {
        filter: Filter,
        reply: oneshot::Sender<Result<EraseOutcome, WriteError>>,
    },
    Shutdown,
}

#[derive(Clone)]
pub struct WriterHandle {
    commands: mpsc::Sender<Command>,
}

impl WriterHandle {
    pub async fn upsert(
        &self,
        documents: Vec<PreparedDocument>,
    ) -> Result<UpsertOutcome, WriteError> {
        let (reply, response) = oneshot::channel();
        self.send(Command::Upsert { documents, reply }).await?;
        response.await.map_err(|_| WriteError::ShuttingDown)?
    }

    pub async fn delete(&self, filter: Filter) -> Result<DeleteOutcome, WriteError> {
        let (reply, response) = oneshot::channel();
        self.send(Command::Delete { filter, reply }).await?;
        response.await.map_err(|_| WriteError::ShuttingDown)?
    }

    pub async fn erase(&self, filter: Filter) -> Result<EraseOutcome, WriteError> {
        let (reply, response) = oneshot::channel();
        self.send(Command::Erase { filter, reply }).await?;
        response.await.map_err(|_| WriteError::ShuttingDown)?
    }

    async fn send(&self, command: Command) -> Result<(), WriteError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| WriteError::ShuttingDown)
    }
}

pub struct Writer {
    pub handle: WriterHandle,
    task: JoinHandle<()>,
}

impl Writer {
    pub fn spawn(
        store: Arc<Store>,
        quotas: Quotas,
        maintenance: Maintenance,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (commands, receiver) = mpsc::channel(1024);
        let task = tokio::spawn(run(store, quotas, maintenance, metrics, receiver));
        Self {
            handle: WriterHandle { commands },
            task,
        }
    }

    /// Finishes every queued write, then stops. Later writes fail with ShuttingDown.
    pub async fn shutdown(self) {
        let _ = self.handle.commands.send(Command::Shutdown).await;
        drop(self.handle);
        let _ = self.task.await;
    }
}

async fn run(
    store: Arc<Store>,
    quotas: Quotas,
    maintenance: Maintenance,
    metrics: Arc<Metrics>,
    mut receiver: mpsc::Receiver<Command>,
) {
    let mut held_back: Option<Command> = None;
    let mut commits_since_optimize = 0u64;
    let mut unindexed_chunks = 0u64;
    let vector_training = Arc::new(VectorIndexTraining::default());
    // Other replicas may write the same table: their commits must reach the
    // document index (counts, quotas, filters) even while this one is idle.
    let mut refresh = maintenance.refresh_interval.map(|period| {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    loop {
        remove_superseded_rows(&store).await;
        let command = match held_back.take() {
            Some(command) => command,
            None => {
                let tick = async {
                    match refresh.as_mut() {
                        Some(interval) => {
                            interval.tick().await;
                        }
                        None => std::future::pending().await,
                    }
                };
                let idle = async {
                    if index_update_due(
                        maintenance.index_every_chunks,
                        unindexed_chunks,
                        store.docs().chunks(),
                        true,
                    ) {
                        tokio::time::sleep(IDLE_BEFORE_INDEXING).await;
                    } else {
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    command = receiver.recv() => match command {
                        Some(command) => command,
                        None => break,
                    },
                    () = tick => {
                        refresh_from_other_writers(&store, &metrics).await;
                        continue;
                    }
                    () = idle => {
                        unindexed_chunks = 0;
                        update_indices(&store).await;
                        kbeast_memory::release_free();
                        continue;
                    }
                }
            }
        };
        match command {
            Command::Shutdown => {
                // Refuse new commands but drain the queued ones.
                receiver.close();
            }
            Command::Delete { filter, reply } => {
                let _ = reply.send(delete(&store, &metrics, &filter).await);
                commits_since_optimize += 1;
            }
            Command::Erase { filter, reply } => {
                let _ = reply.send(erase(&store, &metrics, &filter).await);
            }
            Command::Upsert { documents, reply } => {
                let mut chunks: usize = documents.iter().map(|d| d.chunks.len()).sum();
                let mut batch = vec![(documents, reply)];
                while chunks < MAX_BATCH_CHUNKS {
                    match receiver.try_recv() {
                        Ok(Command::Upsert { documents, reply }) => {
                            chunks += documents.iter().map(|d| d.chunks.len()).sum::<usize>();
                            batch.push((documents, reply));
                        }
                        Ok(other) => {
                            held_back = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                unindexed_chunks += upsert_batch(&store, quotas, &metrics, batch).await;
                commits_since_optimize += 1;
            }
        }
        if maintenance.optimize_every_commits > 0
            && commits_since_optimize >= maintenance.optimize_every_commits
        {
            commits_since_optimize = 0;
            unindexed_chunks = 0;
            maintain(&store, &metrics, maintenance, &vector_training).await;
        } else if index_update_due(
            maintenance.index_every_chunks,
            unindexed_chunks,
            store.docs().chunks(),
            false,
        ) {
            unindexed_chunks = 0;
            update_indices(&store).await;
        }
    }
    tracing::info!("writer stopped");
}

/// Whether to rebuild the vector index, trained on `trained_rows` chunks, now
/// that the table has `rows`. Optimising only assigns new rows to the
/// partitions learned at training time; once the table has grown or shrunk by
/// more than a fifth since, partitions drift out of balance and recall at a
/// fixed number of probes drops, so the IVF centroids and PQ codebooks are
/// learned again.
fn vector_retrain_due(trained_rows: u64, rows: u64) -> bool {
    rows.abs_diff(trained_rows) * 5 > trained_rows
}

/// Whether to fold the chunks written since the last index update into the
/// indices. Updating rebuilds the full-text and BTree indices, at a cost that
/// grows with the table, so while writes keep coming it waits until the
/// unindexed chunks reach half the indexed ones: a bulk load then rebuilds a
/// logarithmic number of times instead of once per `every` chunks. Once the
/// writer is idle, `every` unindexed chunks suffice, so keyword searches soon
/// stop scanning them.
fn index_update_due(every: u64, unindexed: u64, total: u64, idle: bool) -> bool {
    if every == 0 || unindexed < every {
        return false;
    }
    let indexed = total.saturating_sub(unindexed);
    idle || unindexed * 2 >= indexed
}

async fn update_indices(store: &Store) {
    let started = Instant::now();
    match store.update_indices().await {
        Ok(()) => tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "updated the indices"
        ),
        Err(error) => tracing::warn!(error = %error, "updating the indices failed"),
    }
    settle(store).await;
}

/// If the last reload of the document index found a chunk stored twice (a
/// writer crashed between an append and its rewrite, see
/// `append_new_documents`), keeps the newest write of those documents.
async fn remove_superseded_rows(store: &Store) {
    let ids = store.docs_mut().take_duplicated();
    if ids.is_empty() {
        return;
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    match store.remove_superseded_rows(&refs).await {
        Ok(_) => {
            tracing::warn!(documents = ?ids, "removed duplicate chunks left by an interrupted write");
            if let Err(error) = store.reload_doc_index().await {
                store.invalidate_doc_index();
                tracing::warn!(error = %error, "reloading the document index failed");
            }
        }
        Err(error) => tracing::warn!(error = %error, "removing duplicate chunks failed"),
    }
}

async fn refresh_from_other_writers(store: &Store, metrics: &Metrics) {
    match store.refresh_if_changed().await {
        Ok(true) => {
            tracing::info!(
                documents = store.docs().documents(),
                "reloaded the document index after commits of another writer"
            );
            update_gauges(store, metrics).await;
        }
        Ok(false) => {}
        Err(error) => tracing::warn!(error = %error, "checking for other writers' commits failed"),
    }
}

/// After this process's own upkeep commits: see `Store::settle_after_maintenance`.
async fn settle(store: &Store) {
    if let Err(error) = store.settle_after_maintenance().await {
        tracing::warn!(error = %error, "refreshing the document index failed");
    }
}

/// Brings the document index up to a commit of this process at `version`,
/// or reloads it when other writers committed in between.
async fn after_own_commit(store: &Store, version: u64, apply: impl FnOnce(&Store)) {
    if store.advance_indexed_version(version) {
        apply(store);
    } else if let Err(error) = store.reload_doc_index().await {
        // The periodic refresh retries.
        store.invalidate_doc_index();
        tracing::warn!(error = %error, "reloading the document index failed");
    } else {
        tracing::info!(
            version,
            "other writers committed; reloaded the document index"
        );
    }
}

/// The vector index as this process trains it.
#[derive(Default)]
struct VectorIndexTraining {
    /// A build runs in the background.
    running: AtomicBool,
    /// Chunks in the table when this process last trained the index (0: not
    /// yet known; after a restart the count at the first maintenance is the
    /// baseline).
    trained_rows: AtomicU64,
}

/// Builds or retrains the vector index in a background task: training
/// IVF-PQ on 100k chunks takes longer than a request may wait, and LanceDB
/// commits an index next to concurrent writes without conflict. The writer's
/// next commit then finds the version moved and reloads the document index.
fn train_vector_index(store: &Arc<Store>, training: &Arc<VectorIndexTraining>, rows: u64) {
    if training.running.swap(true, Ordering::SeqCst) {
        return;
    }
    let previous = training.trained_rows.load(Ordering::SeqCst);
    let (store, training) = (store.clone(), training.clone());
    tokio::spawn(async move {
        let started = Instant::now();
        match store.create_vector_index().await {
            Ok(()) => {
                training.trained_rows.store(rows, Ordering::SeqCst);
                let elapsed_ms = started.elapsed().as_millis() as u64;
                if previous == 0 {
                    tracing::info!(chunks = rows, elapsed_ms, "built the vector index");
                } else {
                    tracing::info!(
                        chunks = rows,
                        trained_on = previous,
                        elapsed_ms,
                        "retrained the vector index"
                    );
                }
            }
            Err(error) => tracing::warn!(error = %error, "building the vector index failed"),
        }
        kbeast_memory::release_free();
        training.running.store(false, Ordering::SeqCst);
    });
}

/// Failures are logged and retried at the next round: upkeep must not stop writes.
async fn maintain(
    store: &Arc<Store>,
    metrics: &Metrics,
    maintenance: Maintenance,
    training: &Arc<VectorIndexTraining>,
) {
    // A compaction would conflict with an index build running in the background.
    if training.running.load(Ordering::SeqCst) {
        return;
    }
    let started = Instant::now();
    match store.optimize().await {
        Ok(stats) => {
            let compaction = stats.compaction.unwrap_or_default();
            let prune = stats.prune.unwrap_or_default();
            tracing::info!(
                fragments_removed = compaction.fragments_removed,
                fragments_added = compaction.fragments_added,
                versions_pruned = prune.old_versions,
                bytes_pruned = prune.bytes_removed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "optimized the table"
            );
        }
        Err(error) => tracing::warn!(error = %error, "optimizing the table failed"),
    }
    settle(store).await;
    if let Some(min_rows) = maintenance.vector_index_min_rows
        && !training.running.load(Ordering::SeqCst)
    {
        let rows = store.docs().chunks();
        match store.has_vector_index().await {
            Ok(false) if rows >= min_rows => {
                training.trained_rows.store(0, Ordering::SeqCst);
                train_vector_index(store, training, rows);
            }
            Ok(false) => {}
            Ok(true) => {
                let trained = match training.trained_rows.load(Ordering::SeqCst) {
                    0 => {
                        training.trained_rows.store(rows, Ordering::SeqCst);
                        rows
                    }
                    trained => trained,
                };
                if vector_retrain_due(trained, rows) {
                    train_vector_index(store, training, rows);
                }
            }
            Err(error) => tracing::warn!(error = %error, "listing indices failed"),
        }
    }

    update_gauges(store, metrics).await;
    kbeast_memory::release_free();
}

type UpsertRequest = (
    Vec<PreparedDocument>,
    oneshot::Sender<Result<UpsertOutcome, WriteError>>,
);

/// Returns the number of chunks committed.
async fn upsert_batch(
    store: &Store,
    quotas: Quotas,
    metrics: &Metrics,
    batch: Vec<UpsertRequest>,
) -> u64 {
    // Admit requests in arrival order against the projected totals.
    let mut accepted: Vec<UpsertRequest> = Vec::new();
    {
        let index = store.docs();
        let mut documents = index.documents();
        let mut bytes = index.bytes();
        // Bytes of documents already admitted in this batch, by id.
        let mut staged: HashMap<String, u64> = HashMap::new();
        for (docs, reply) in batch {
            let (mut new_documents, mut new_bytes, mut freed_bytes) = (0u64, 0u64, 0u64);
            let mut seen: HashMap<&str, u64> = HashMap::new();
            for doc in &docs {
                let previous = match seen.get(doc.id.as_str()) {
                    Some(b) => Some(*b),
                    None => staged
                        .get(&doc.id)
                        .copied()
                        .or_else(|| index.get(&doc.id).map(|e| e.bytes)),
                };
                match previous {
                    Some(b) => freed_bytes += b,
                    None => new_documents += 1,
                }
                new_bytes += doc.stored_bytes();
                seen.insert(&doc.id, doc.stored_bytes());
            }
            let would_have_documents = documents + new_documents;
            let would_have_bytes = (bytes + new_bytes).saturating_sub(freed_bytes);
            let rejection = match quotas {
                Quotas {
                    max_documents: Some(limit),
                    ..
                } if new_documents > 0 && would_have_documents > limit => {
                    Some(WriteError::DocumentQuota {
                        limit,
                        would_have: would_have_documents,
                    })
                }
                Quotas {
                    max_bytes: Some(limit),
                    ..
                } if new_bytes > freed_bytes && would_have_bytes > limit => {
                    Some(WriteError::ByteQuota {
                        limit,
                        would_have: would_have_bytes,
                    })
                }
                _ => None,
            };
            if let Some(error) = rejection {
                let _ = reply.send(Err(error));
                continue;
            }
            documents = would_have_documents;
            bytes = would_have_bytes;
            for (id, b) in seen {
                staged.insert(id.to_string(), b);
            }
            accepted.push((docs, reply));
        }
    }
    if accepted.is_empty() {
        return 0;
    }

    // Later versions of a document in the same batch win.
    let mut position: HashMap<&str, usize> = HashMap::new();
    let mut merged: Vec<&PreparedDocument> = Vec::new();
    for doc in accepted.iter().flat_map(|(docs, _)| docs) {
        match position.get(doc.id.as_str()) {
            Some(&i) => merged[i] = doc,
            None => {
                position.insert(&doc.id, merged.len());
                merged.push(doc);
            }
        }
    }
    let to_write: Vec<PreparedDocument> = merged.into_iter().cloned().collect();

    let started = Instant::now();
    let all_new = {
        let index = store.docs();
        to_write.iter().all(|d| index.get(&d.id).is_none())
    };
    let written = if all_new {
        append_new_documents(store, &to_write).await
    } else {
        store.replace_documents(&to_write).await
    };
    match written {
        Ok(version) => {
            tracing::debug!(
                documents = to_write.len(),
                appended = all_new,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "committed an ingest"
            );
            after_own_commit(store, version, |store| {
                let mut index = store.docs_mut();
                for doc in &to_write {
                    index.insert(
                        doc.id.clone(),
                        DocEntry {
                            source: doc.source.clone(),
                            metadata: std::sync::Arc::new(doc.metadata.clone()),
                            chunks: doc.chunks.len() as u64,
                            bytes: doc.stored_bytes(),
                        },
                    );
                }
            })
            .await;
            let chunks: usize = to_write.iter().map(|d| d.chunks.len()).sum();
            metrics.ingest_documents.inc_by(to_write.len() as u64);
            metrics.ingest_chunks.inc_by(chunks as u64);
            update_gauges(store, metrics).await;
            for (docs, reply) in accepted {
                let documents = docs
                    .iter()
                    .map(|d| (d.id.clone(), d.chunks.len() as u32))
                    .collect();
                let _ = reply.send(Ok(UpsertOutcome { documents, version }));
            }
            chunks as u64
        }
        Err(error) => {
            tracing::error!(error = %error, documents = to_write.len(), "ingest commit failed");
            for (_, reply) in accepted {
                let _ = reply.send(Err(WriteError::Store(error.to_string())));
            }
            0
        }
    }
}

/// Writes documents that the document index does not know with a plain
/// append, whose cost does not grow with the table. If the commit directly
/// follows the version the index reflects, no other process committed in
/// between and the ids were new. Otherwise another replica may have written
/// some of the same ids concurrently (appends do not conflict in LanceDB); if
/// the table does not hold exactly one copy of these chunks, they are
/// rewritten in one commit that first removes every stored row of these ids.
/// The request is acknowledged only after that, so it is ordered last.
async fn append_new_documents(
    store: &Store,
    documents: &[PreparedDocument],
) -> Result<u64, crate::store::StoreError> {
    let expected = store.indexed_version();
    let version = store.append_documents(documents).await?;
    if expected != 0 && version == expected + 1 {
        return Ok(version);
    }
    if store.stored_exactly(documents).await? {
        return Ok(version);
    }
    tracing::warn!(
        documents = documents.len(),
        "another writer wrote some of the same new documents concurrently; rewriting them"
    );
    store.overwrite_documents(documents).await
}

async fn delete(
    store: &Store,
    metrics: &Metrics,
    filter: &Filter,
) -> Result<DeleteOutcome, WriteError> {
    let ids = store.matching_documents(filter);
    if ids.is_empty() {
        return Ok(DeleteOutcome {
            documents: 0,
            chunks: 0,
        });
    }
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (chunks, version) = store
        .delete_documents(&id_refs)
        .await
        .map_err(|e| WriteError::Store(e.to_string()))?;
    after_own_commit(store, version, |store| {
        let mut index = store.docs_mut();
        for id in &ids {
            index.remove(id);
        }
    })
    .await;
    update_gauges(store, metrics).await;
    Ok(DeleteOutcome {
        documents: ids.len() as u64,
        chunks,
    })
}

/// Deletes, then removes the deleted rows physically. The delete is
/// acknowledged only once the erasure finished.
async fn erase(
    store: &Store,
    metrics: &Metrics,
    filter: &Filter,
) -> Result<EraseOutcome, WriteError> {
    let deleted = delete(store, metrics, filter).await?;
    let erased = store.erase_deleted().await.map_err(|e| {
        WriteError::Store(format!("documents deleted, but erasing them failed: {e}"))
    })?;
    settle(store).await;
    update_gauges(store, metrics).await;
    Ok(EraseOutcome { deleted, erased })
}

pub async fn update_gauges(store: &Store, metrics: &Metrics) {
    {
        let index = store.docs();
        metrics.documents.set(index.documents() as i64);
        metrics.chunks.set(index.chunks() as i64);
        metrics.document_bytes.set(index.bytes() as i64);
    }
    match store.storage_bytes().await {
        Ok(bytes) => metrics.storage_bytes.set(bytes as i64),
        Err(error) => tracing::warn!(error = %error, "could not read storage size"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ConnectOptions;

    #[test]
    fn indices_wait_for_half_the_table_while_busy_and_for_every_chunks_when_idle() {
        // (every, unindexed, total, idle, due)
        let cases = [
            (1000, 999, 999, true, false),    // below `every`, even when idle
            (1000, 1000, 1000, false, true),  // nothing indexed yet
            (1000, 1000, 5000, false, false), // busy: 1000 < half of 4000
            (1000, 2000, 6000, false, true),  // busy: 2000 = half of 4000
            (1000, 1000, 50_000, true, true), // idle: `every` suffices
            (0, 10_000, 10_000, true, false), // disabled
        ];
        for (every, unindexed, total, idle, due) in cases {
            assert_eq!(
                index_update_due(every, unindexed, total, idle),
                due,
                "every {every}, unindexed {unindexed}, total {total}, idle {idle}"
            );
        }
    }

    #[test]
    fn a_bulk_load_updates_the_indices_a_logarithmic_number_of_times() {
        let (mut total, mut unindexed, mut updates) = (0u64, 0u64, 0);
        for _ in 0..100 {
            total += 1000;
            unindexed += 1000;
            if index_update_due(1000, unindexed, total, false) {
                updates += 1;
                unindexed = 0;
            }
        }
        assert!(
            (5..=15).contains(&updates),
            "{updates} updates for 100k chunks"
        );
    }

    #[test]
    fn the_vector_index_is_retrained_after_a_fifth_of_growth_or_shrinkage() {
        assert!(!vector_retrain_due(100_000, 100_000));
        assert!(!vector_retrain_due(100_000, 120_000));
        assert!(vector_retrain_due(100_000, 120_001));
        assert!(!vector_retrain_due(100_000, 80_000));
        assert!(vector_retrain_due(100_000, 79_999));
    }

    fn document(id: &str, texts: &[&str]) -> PreparedDocument {
        PreparedDocument {
            id: id.to_string(),
            source: None,
            metadata: Default::default(),
            chunks: texts.iter().map(|t| t.to_string()).collect(),
            vectors: texts.iter().map(|_| vec![0.5; 4]).collect(),
        }
    }

    async fn open(dir: &std::path::Path) -> Store {
        Store::open(
            dir.to_str().unwrap(),
            "hash-v1",
            4,
            &ConnectOptions::default(),
        )
        .await
        .unwrap()
    }

    async fn chunk_texts(store: &Store, id: &str) -> Vec<String> {
        let document = store.document(id).await.unwrap().unwrap();
        document.chunks.into_iter().map(|c| c.text).collect()
    }

    #[tokio::test]
    async fn new_documents_are_appended_without_rewriting() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let before = store.version().await.unwrap();
        let version = append_new_documents(&store, &[document("a", &["one", "two"])])
            .await
            .unwrap();
        assert_eq!(version, before + 1, "one commit");
        assert_eq!(chunk_texts(&store, "a").await, ["one", "two"]);
    }

    /// Two processes append the same new id at once: appends do not conflict
    /// in LanceDB, so the second sees that the version moved, finds the other
    /// copy and rewrites the document: exactly one copy, the later one.
    #[tokio::test]
    async fn a_concurrent_append_of_the_same_new_id_leaves_one_copy() {
        let dir = tempfile::tempdir().unwrap();
        let mine = open(dir.path()).await;
        let other = open(dir.path()).await;
        append_new_documents(&other, &[document("x", &["theirs 0", "theirs 1"])])
            .await
            .unwrap();
        assert!(mine.docs().get("x").is_none(), "this process does not know");

        let written = [document("x", &["mine 0"]), document("y", &["mine y"])];
        append_new_documents(&mine, &written).await.unwrap();
        assert!(mine.stored_exactly(&written).await.unwrap());
        assert_eq!(chunk_texts(&mine, "x").await, ["mine 0"]);
        assert_eq!(chunk_texts(&mine, "y").await, ["mine y"]);
        assert_eq!(mine.ping().await.unwrap(), 2, "no duplicate rows");
    }

    /// A writer died between appending a document another replica had just
    /// written and rewriting it: the next load of the document index finds
    /// the duplicate, and the writer keeps only the newest write.
    #[tokio::test]
    async fn duplicates_left_by_an_interrupted_append_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let other = open(dir.path()).await;
        other
            .append_documents(&[document("x", &["old 0", "old 1"]), document("k", &["kept"])])
            .await
            .unwrap();
        let crashed = open(dir.path()).await;
        crashed
            .append_documents(&[document("x", &["new 0"])])
            .await
            .unwrap();

        let store = open(dir.path()).await;
        assert_eq!(
            store.docs().get("x").unwrap().chunks,
            3,
            "the duplicate is seen"
        );
        remove_superseded_rows(&store).await;
        assert_eq!(chunk_texts(&store, "x").await, ["new 0"]);
        assert_eq!(chunk_texts(&store, "k").await, ["kept"]);
        assert_eq!(store.docs().get("x").unwrap().chunks, 1);
        assert_eq!(store.ping().await.unwrap(), 2);
    }
}
