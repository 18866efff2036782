//! Embedding providers: turn texts into fixed-size vectors.

mod builtin;
mod hash;
mod openai;

pub use builtin::{BuiltinConfig, BuiltinEmbedder, DIMENSION as BUILTIN_DIMENSION};
pub use hash::HashEmbedder;
pub use openai::{OpenAiConfig, OpenAiEmbedder};

use futures::future::BoxFuture;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The provider is down or overloaded (after retries), or the circuit is open.
    #[error("embedding provider unavailable: {0}")]
    Unavailable(String),
    /// The provider rejected the input or answered nonsense; retrying will not help.
    #[error("embedding failed: {0}")]
    Failed(String),
}

pub trait Embedder: Send + Sync + 'static {
    /// Identifies the model; stored with the table so vectors are never mixed.
    fn model_id(&self) -> &str;
    fn dimension(&self) -> usize;
    /// False while the provider is known to be down (e.g. circuit open).
    fn is_available(&self) -> bool {
        true
    }
    /// Whether the model reads `text` whole. The built-in model reads at most
    /// 256 tokens; ingestion splits chunks that do not fit (chunking's
    /// `chunk_text_fitting`) rather than letting the model cut them.
    fn fits(&self, _text: &str) -> bool {
        true
    }
    /// One vector per input text, in order.
    fn embed<'a>(&'a self, texts: &'a [String])
    -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>>;
}
