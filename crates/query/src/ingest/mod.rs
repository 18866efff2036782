//! Ingestion: validating documents, chunking and embedding them (on the
//! blocking pool, so CPU work never stalls the async workers) and handing them
//! to the writer. Per-request limits bound the memory one request can take.

pub mod chunking;
pub mod writer;

use std::sync::Arc;
use std::time::Instant;

use kbeast_client::DocumentInput;
use sha2::{Digest, Sha256};

use crate::embed::{EmbedError, Embedder};
use crate::store::{PreparedDocument, metadata_json_bytes};
use crate::telemetry::Metrics;
use chunking::{ChunkConfig, chunk_text_fitting};

pub const MAX_ID_BYTES: usize = 256;
pub const MAX_SOURCE_BYTES: usize = 1024;

/// What one ingest request may hold; the pod's memory is sized for a few of
/// these at once (see `--max-concurrent-ingests`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestLimits {
    pub max_documents: usize,
    pub max_chunks: usize,
    /// Of one document's metadata as stored JSON (it is stored with every chunk).
    pub max_metadata_bytes: usize,
}

impl IngestLimits {
    pub const DEFAULT_MAX_DOCUMENTS: usize = 1000;
    pub const DEFAULT_MAX_CHUNKS: usize = 20_000;
    pub const DEFAULT_MAX_METADATA_BYTES: usize = 16 << 10;
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_documents: Self::DEFAULT_MAX_DOCUMENTS,
            max_chunks: Self::DEFAULT_MAX_CHUNKS,
            max_metadata_bytes: Self::DEFAULT_MAX_METADATA_BYTES,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{message}")]
    Invalid { field: String, message: String },
    /// Over a per-request limit; the message names the limit and its flag.
    #[error("{message}")]
    TooLarge { field: String, message: String },
    #[error(transparent)]
    Embedding(#[from] EmbedError),
}

fn invalid(field: String, message: impl Into<String>) -> IngestError {
    IngestError::Invalid {
        field,
        message: message.into(),
    }
}

fn too_large(field: String, message: String) -> IngestError {
    IngestError::TooLarge { field, message }
}

/// Validates, chunks and embeds a batch; fails as a whole on the first problem.
pub async fn prepare(
    inputs: Vec<DocumentInput>,
    chunking: &ChunkConfig,
    limits: &IngestLimits,
    embedder: &Arc<dyn Embedder>,
    metrics: &Metrics,
) -> Result<Vec<PreparedDocument>, IngestError> {
    let (chunking, limits) = (*chunking, *limits);
    let model = embedder.clone();
    let mut documents = tokio::task::spawn_blocking(move || {
        chunk_all(inputs, &chunking, &limits, &|chunk| model.fits(chunk))
    })
    .await
    .expect("chunking does not panic")?;

    // One embedding call for the whole request lets providers batch.
    let texts: Vec<String> = documents.iter().flat_map(|d| d.chunks.clone()).collect();
    let started = Instant::now();
    let result = embedder.embed(&texts).await;
    metrics
        .embedding_duration
        .observe(started.elapsed().as_secs_f64());
    let mut vectors = result
        .inspect_err(|_| metrics.embedding_errors.inc())?
        .into_iter();
    for doc in &mut documents {
        doc.vectors = vectors.by_ref().take(doc.chunks.len()).collect();
    }
    Ok(documents)
}

/// Validates and chunks every document, stopping at the first one over a limit.
/// `fits` says whether the embedder reads a chunk whole; chunks that do not fit are split.
fn chunk_all(
    inputs: Vec<DocumentInput>,
    chunking: &ChunkConfig,
    limits: &IngestLimits,
    fits: &dyn Fn(&str) -> bool,
) -> Result<Vec<PreparedDocument>, IngestError> {
    if inputs.is_empty() {
        return Err(invalid(
            "documents".into(),
            "at least one document is required",
        ));
    }
    if inputs.len() > limits.max_documents {
        return Err(too_large(
            "documents".into(),
            format!(
                "{} documents is over the limit of {} per request (--max-ingest-documents)",
                inputs.len(),
                limits.max_documents
            ),
        ));
    }
    let mut total_chunks = 0usize;
    let mut documents = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        let id = match input.id {
            Some(id) => {
                validate_id(&id).map_err(|m| invalid(format!("documents[{i}].id"), m))?;
                id
            }
            None => derived_id(input.source.as_deref(), &input.text),
        };
        if let Some(source) = &input.source
            && (source.len() > MAX_SOURCE_BYTES || source.chars().any(char::is_control))
        {
            return Err(invalid(
                format!("documents[{i}].source"),
                format!(
                    "source must be at most {MAX_SOURCE_BYTES} bytes without control characters"
                ),
            ));
        }
        let metadata = input.metadata.unwrap_or_default();
        let metadata_bytes = metadata_json_bytes(&metadata);
        if metadata_bytes > limits.max_metadata_bytes {
            return Err(too_large(
                format!("documents[{i}].metadata"),
                format!(
                    "metadata of {metadata_bytes} bytes is over the limit of {} bytes per document (--max-metadata-bytes)",
                    limits.max_metadata_bytes
                ),
            ));
        }
        let chunks = chunk_text_fitting(&input.text, chunking, fits);
        if chunks.is_empty() {
            return Err(invalid(
                format!("documents[{i}].text"),
                "text must not be blank",
            ));
        }
        total_chunks += chunks.len();
        if total_chunks > limits.max_chunks {
            return Err(too_large(
                format!("documents[{i}].text"),
                format!(
                    "the request is over the limit of {} chunks per request (--max-ingest-chunks)",
                    limits.max_chunks
                ),
            ));
        }
        documents.push(PreparedDocument {
            id,
            source: input.source,
            metadata,
            chunks,
            vectors: Vec::new(),
        });
    }
    Ok(documents)
}

fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(format!("id must be 1 to {MAX_ID_BYTES} bytes"));
    }
    if id.chars().any(char::is_control) {
        return Err("id must not contain control characters".into());
    }
    Ok(())
}

/// Id of a document sent without one: a hash of source and text, so that
/// retrying the same request replaces rather than duplicates.
fn derived_id(source: Option<&str>, text: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(source.unwrap_or("").as_bytes());
    hasher.update([0u8]);
    hasher.update(text.as_bytes());
    format!("doc-{}", chunking::hex(&hasher.finalize()[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::HashEmbedder;

    fn doc(id: Option<&str>, text: &str) -> DocumentInput {
        DocumentInput {
            id: id.map(str::to_string),
            text: text.to_string(),
            ..DocumentInput::default()
        }
    }

    #[tokio::test]
    async fn prepares_chunks_with_one_vector_each() {
        let metrics = Metrics::new();
        let config = ChunkConfig::new(40, 5, chunking::ChunkUnit::Chars).unwrap();
        let embedder: Arc<dyn Embedder> = Arc::new(HashEmbedder::new(16));
        let text = "A sentence about things. Another sentence about stuff. And one more here.";
        let docs = prepare(
            vec![doc(Some("a"), text), doc(None, "short")],
            &config,
            &IngestLimits::default(),
            &embedder,
            &metrics,
        )
        .await
        .unwrap();
        assert_eq!(docs[0].id, "a");
        assert!(docs[0].chunks.len() > 1);
        assert_eq!(docs[0].vectors.len(), docs[0].chunks.len());
        assert_eq!(docs[1].chunks, vec!["short"]);
        assert_eq!(docs[1].id, derived_id(None, "short"));
        assert_eq!(docs[1].vectors[0], HashEmbedder::new(16).embed_one("short"));
    }

    #[tokio::test]
    async fn names_the_offending_field() {
        let metrics = Metrics::new();
        let config = ChunkConfig::new(40, 5, chunking::ChunkUnit::Chars).unwrap();
        let embedder: Arc<dyn Embedder> = Arc::new(HashEmbedder::new(16));
        let err = prepare(
            vec![doc(Some("a"), "ok"), doc(Some("b"), "  ")],
            &config,
            &IngestLimits::default(),
            &embedder,
            &metrics,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, IngestError::Invalid { ref field, .. } if field == "documents[1].text")
        );
        let err = prepare(
            vec![doc(Some(""), "ok")],
            &config,
            &IngestLimits::default(),
            &embedder,
            &metrics,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, IngestError::Invalid { ref field, .. } if field == "documents[0].id")
        );
        let err = prepare(
            vec![],
            &config,
            &IngestLimits::default(),
            &embedder,
            &metrics,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, IngestError::Invalid { ref field, .. } if field == "documents"));
    }
}
