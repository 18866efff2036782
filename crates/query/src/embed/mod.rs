//! Embedding providers: turn texts into fixed-size vectors.

mod hash;

pub use hash::HashEmbedder;

use futures::future::BoxFuture;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("embedding failed: {0}")]
    Failed(String),
}

pub trait Embedder: Send + Sync + 'static {
    /// Identifies the model; stored with the table so vectors are never mixed.
    fn model_id(&self) -> &str;
    fn dimension(&self) -> usize;
    /// One vector per input text, in order.
    fn embed<'a>(&'a self, texts: &'a [String])
    -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>>;
}
