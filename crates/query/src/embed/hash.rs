//! The built-in `hash` embedder: deterministic feature hashing of lower-cased
//! word tokens into N dimensions, L2-normalised. No model, no network; texts
//! sharing words get a positive cosine similarity, which is all tests and small
//! deployments need.

use futures::future::BoxFuture;

use super::{EmbedError, Embedder};

pub struct HashEmbedder {
    dimension: usize,
    model_id: String,
}

impl HashEmbedder {
    pub const DEFAULT_DIMENSION: usize = 384;

    pub fn new(dimension: usize) -> Self {
        assert!(dimension > 0, "dimension must be positive");
        Self {
            dimension,
            model_id: "hash-v1".to_string(),
        }
    }

    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut vector = vec![0f32; self.dimension];
        for token in tokens(text) {
            let hash = fnv1a64(token.as_bytes());
            let index = (hash % self.dimension as u64) as usize;
            // A hash-derived sign keeps collisions from always adding up.
            let sign = if (hash >> 63) == 1 { -1.0 } else { 1.0 };
            vector[index] += sign;
        }
        let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm == 0.0 {
            // No tokens: a fixed unit vector, because cosine distance to a zero vector is undefined.
            vector[0] = 1.0;
        } else {
            vector.iter_mut().for_each(|v| *v /= norm);
        }
        vector
    }
}

/// Lower-cased runs of alphanumeric characters.
fn tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(|t| t.to_lowercase())
}

/// FNV-1a: stable across platforms and releases, unlike `std`'s hasher.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

impl Embedder for HashEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        // Hashing megabytes of text is CPU work: keep it off the async workers.
        let embedder = Self::new(self.dimension);
        let texts = texts.to_vec();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                texts.iter().map(|t| embedder.embed_one(t)).collect()
            })
            .await
            .map_err(|e| EmbedError::Failed(format!("the embedding task failed: {e}")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn vectors_have_the_dimension_and_unit_length() {
        let embedder = HashEmbedder::new(64);
        for text in ["hello world", "", "!!!", "Ünïcödé テキスト words"] {
            let v = embedder.embed_one(text);
            assert_eq!(v.len(), 64);
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{text:?} has norm {norm}");
        }
    }

    #[test]
    fn embedding_is_deterministic_and_case_insensitive() {
        let a = HashEmbedder::new(384);
        let b = HashEmbedder::new(384);
        assert_eq!(a.embed_one("Rust operators"), b.embed_one("rust OPERATORS"));
    }

    #[test]
    fn shared_words_are_more_similar_than_disjoint_ones() {
        let e = HashEmbedder::new(384);
        let query = e.embed_one("kubernetes operator");
        let related = e.embed_one("a kubernetes operator written in rust");
        let unrelated = e.embed_one("banana bread recipe with walnuts");
        assert!(cosine(&query, &related) > 0.5);
        assert!(cosine(&query, &related) > cosine(&query, &unrelated) + 0.3);
    }

    #[test]
    fn known_hash_values_stay_stable() {
        // Stored vectors depend on this function; changing it needs a new model id.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
