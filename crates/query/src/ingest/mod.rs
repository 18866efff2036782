//! Ingestion: validating documents, chunking and embedding them (here, in the
//! request task, in parallel across requests) and handing them to the writer.

pub mod chunking;
pub mod writer;

use std::time::Instant;

use kbeast_client::DocumentInput;
use sha2::{Digest, Sha256};

use crate::embed::{EmbedError, Embedder};
use crate::store::PreparedDocument;
use crate::telemetry::Metrics;
use chunking::{ChunkConfig, chunk_text_fitting};

pub const MAX_ID_BYTES: usize = 256;
pub const MAX_SOURCE_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{message}")]
    Invalid { field: String, message: String },
    #[error(transparent)]
    Embedding(#[from] EmbedError),
}

fn invalid(field: String, message: impl Into<String>) -> IngestError {
    IngestError::Invalid {
        field,
        message: message.into(),
    }
}

/// Validates, chunks and embeds a batch; fails as a whole on the first problem.
pub async fn prepare(
    inputs: Vec<DocumentInput>,
    chunking: &ChunkConfig,
    embedder: &dyn Embedder,
    metrics: &Metrics,
) -> Result<Vec<PreparedDocument>, IngestError> {
    if inputs.is_empty() {
        return Err(invalid(
            "documents".into(),
            "at least one document is required",
        ));
    }
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
        let chunks = chunk_text_fitting(&input.text, chunking, &|chunk| embedder.fits(chunk));
        if chunks.is_empty() {
            return Err(invalid(
                format!("documents[{i}].text"),
                "text must not be blank",
            ));
        }
        documents.push(PreparedDocument {
            id,
            source: input.source,
            metadata: input.metadata.unwrap_or_default(),
            chunks,
            vectors: Vec::new(),
        });
    }

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
        let embedder = HashEmbedder::new(16);
        let text = "A sentence about things. Another sentence about stuff. And one more here.";
        let docs = prepare(
            vec![doc(Some("a"), text), doc(None, "short")],
            &config,
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
        assert_eq!(docs[1].vectors[0], embedder.embed_one("short"));
    }

    #[tokio::test]
    async fn names_the_offending_field() {
        let metrics = Metrics::new();
        let config = ChunkConfig::new(40, 5, chunking::ChunkUnit::Chars).unwrap();
        let embedder = HashEmbedder::new(16);
        let err = prepare(
            vec![doc(Some("a"), "ok"), doc(Some("b"), "  ")],
            &config,
            &embedder,
            &metrics,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, IngestError::Invalid { ref field, .. } if field == "documents[1].text")
        );
        let err = prepare(vec![doc(Some(""), "ok")], &config, &embedder, &metrics)
            .await
            .unwrap_err();
        assert!(
            matches!(err, IngestError::Invalid { ref field, .. } if field == "documents[0].id")
        );
        let err = prepare(vec![], &config, &embedder, &metrics)
            .await
            .unwrap_err();
        assert!(matches!(err, IngestError::Invalid { ref field, .. } if field == "documents"));
    }
}
