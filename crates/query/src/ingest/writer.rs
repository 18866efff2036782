//! The single writer task. All table mutations go through it, so quota checks
//! and the in-memory document index are exact, and concurrent ingests are
//! coalesced into one commit instead of racing each other's commits.
//!
//! A request is acknowledged only after the commit that contains it succeeded.
//! A request rejected for quota takes no part in the commit; a failed commit
//! fails every request in it and changes nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kbeast_client::Filter;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::store::{DocEntry, PreparedDocument, Store};
use crate::telemetry::Metrics;

/// Upper bound of chunks coalesced into one commit.
const MAX_BATCH_CHUNKS: usize = 4096;

/// Background upkeep done by the writer between commits, so it never races a write.
#[derive(Debug, Clone, Copy, Default)]
pub struct Maintenance {
    /// Optimize (compact, update indices, prune) after this many commits; 0 = never.
    pub optimize_every_commits: u64,
    /// Update the indices once this many chunks were written since the last
    /// update, so keyword search does not scan ever more unindexed rows; 0 = never.
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
    #[error("storage quota exceeded: {would_have} bytes of text would exceed the limit of {limit}")]
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
    // Other replicas may write the same table: their commits must reach the
    // document index (counts, quotas, filters) even while this one is idle.
    let mut refresh = maintenance.refresh_interval.map(|period| {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    loop {
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
                tokio::select! {
                    command = receiver.recv() => match command {
                        Some(command) => command,
                        None => break,
                    },
                    () = tick => {
                        refresh_from_other_writers(&store, &metrics).await;
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
            maintain(&store, &metrics, maintenance).await;
        } else if maintenance.index_every_chunks > 0
            && unindexed_chunks >= maintenance.index_every_chunks
        {
            unindexed_chunks = 0;
            match store.update_indices().await {
                Ok(()) => tracing::info!("updated the indices"),
                Err(error) => tracing::warn!(error = %error, "updating the indices failed"),
            }
            settle(&store).await;
        }
    }
    tracing::info!("writer stopped");
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

/// Failures are logged and retried at the next round: upkeep must not stop writes.
async fn maintain(store: &Store, metrics: &Metrics, maintenance: Maintenance) {
    if let Some(min_rows) = maintenance.vector_index_min_rows
        && store.docs().chunks() >= min_rows
    {
        match store.has_vector_index().await {
            Ok(false) => match store.create_vector_index().await {
                Ok(()) => tracing::info!(chunks = store.docs().chunks(), "built the vector index"),
                Err(error) => tracing::warn!(error = %error, "building the vector index failed"),
            },
            Ok(true) => {}
            Err(error) => tracing::warn!(error = %error, "listing indices failed"),
        }
    }
    match store.optimize().await {
        Ok(stats) => {
            let compaction = stats.compaction.unwrap_or_default();
            let prune = stats.prune.unwrap_or_default();
            tracing::info!(
                fragments_removed = compaction.fragments_removed,
                fragments_added = compaction.fragments_added,
                versions_pruned = prune.old_versions,
                bytes_pruned = prune.bytes_removed,
                "optimized the table"
            );
        }
        Err(error) => tracing::warn!(error = %error, "optimizing the table failed"),
    }
    settle(store).await;
    update_gauges(store, metrics).await;
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
                new_bytes += doc.text_bytes();
                seen.insert(&doc.id, doc.text_bytes());
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

    match store.replace_documents(&to_write).await {
        Ok(version) => {
            after_own_commit(store, version, |store| {
                let mut index = store.docs_mut();
                for doc in &to_write {
                    index.insert(
                        doc.id.clone(),
                        DocEntry {
                            source: doc.source.clone(),
                            metadata: doc.metadata.clone(),
                            chunks: doc.chunks.len() as u64,
                            bytes: doc.text_bytes(),
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

async fn delete(
    store: &Store,
    metrics: &Metrics,
    filter: &Filter,
) -> Result<DeleteOutcome, WriteError> {
    let ids = store.docs().matching(filter);
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
