//! The deterministic benchmark corpus: documents of synthetic words with a
//! skewed (roughly Zipfian) word frequency, queries made of words from those
//! documents, and their 384-dimension vectors.
//!
//! Everything derives from one seed through SplitMix64, so every run (and both
//! systems) sees byte-identical texts and bit-identical vectors.

/// SplitMix64 (Steele et al.): tiny, fast, and identical on every platform,
/// unlike `rand`'s generators whose streams may change between releases.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [low, high] (inclusive).
    pub fn range(&mut self, low: usize, high: usize) -> usize {
        low + (self.next_u64() % (high - low + 1) as u64) as usize
    }
}

pub const VOCABULARY: usize = 20_000;
const SYLLABLES: [&str; 24] = [
    "ka", "lo", "mi", "ra", "ten", "so", "vu", "ne", "pil", "dor", "an", "ex", "qui", "ber", "sa",
    "tor", "um", "li", "fa", "gor", "ze", "ho", "wy", "ci",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub id: String,
    pub text: String,
    /// Small categorical metadata, sent to both systems alike.
    pub group: u32,
}

#[derive(Debug, Clone)]
pub struct Corpus {
    pub documents: Vec<Document>,
    pub queries: Vec<String>,
}

/// Word `rank` of the vocabulary: distinct for distinct ranks (base-24 digits
/// as syllables, at least two of them).
pub fn word(rank: usize) -> String {
    let mut n = rank;
    let mut out = String::new();
    loop {
        out.push_str(SYLLABLES[n % SYLLABLES.len()]);
        n /= SYLLABLES.len();
        if n == 0 {
            break;
        }
    }
    if rank < SYLLABLES.len() {
        out.push_str("ta");
    }
    out
}

/// Ranks are drawn log-uniformly, so word frequency falls off like 1/rank.
fn skewed_rank(rng: &mut SplitMix64) -> usize {
    let r = (VOCABULARY as f64).powf(rng.next_f64()) as usize;
    r.saturating_sub(1).min(VOCABULARY - 1)
}

impl Corpus {
    /// `documents` documents of 30 to 80 words (one chunk each at the default
    /// chunk size of 1000 characters) and `queries` queries of 2 to 5 words.
    pub fn generate(seed: u64, documents: usize, queries: usize) -> Self {
        let words: Vec<String> = (0..VOCABULARY).map(word).collect();
        let mut rng = SplitMix64::new(seed);
        let documents: Vec<Document> = (0..documents)
            .map(|i| {
                let len = rng.range(30, 80);
                let text = (0..len)
                    .map(|_| words[skewed_rank(&mut rng)].as_str())
                    .collect::<Vec<_>>()
                    .join(" ");
                Document {
                    id: format!("doc-{i:07}"),
                    text,
                    group: (i % 10) as u32,
                }
            })
            .collect();
        // Queries from a separate stream, so their words do not depend on the corpus size.
        let mut qrng = SplitMix64::new(seed ^ 0x5155_4552_5953);
        let queries = (0..queries)
            .map(|_| {
                // Words of one document, so keyword search finds something.
                let doc = &documents[qrng.range(0, documents.len() - 1)];
                let doc_words: Vec<&str> = doc.text.split(' ').collect();
                let n = qrng.range(2, 5);
                (0..n)
                    .map(|_| doc_words[qrng.range(0, doc_words.len() - 1)])
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        Self { documents, queries }
    }
}

/// A copy of kbeast-query's built-in `hash` embedder (`crates/query/src/embed/hash.rs`,
/// model `hash-v1`): lower-cased alphanumeric tokens, FNV-1a 64 into `dimension`
/// buckets with a hash-derived sign, L2-normalised. The benchmark checks at run
/// time that the server's scores agree with these vectors.
pub fn hash_embed(text: &str, dimension: usize) -> Vec<f32> {
    let mut vector = vec![0f32; dimension];
    for token in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
    {
        let hash = fnv1a64(token.to_lowercase().as_bytes());
        let index = (hash % dimension as u64) as usize;
        let sign = if (hash >> 63) == 1 { -1.0 } else { 1.0 };
        vector[index] += sign;
    }
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm == 0.0 {
        vector[0] = 1.0;
    } else {
        vector.iter_mut().for_each(|v| *v /= norm);
    }
    vector
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Exact top-`k` document indexes by cosine similarity (vectors are unit
/// length, so the dot product), best first, with their similarities.
pub fn exact_top_k(vectors: &[Vec<f32>], query: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut scored: Vec<(usize, f32)> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| (i, dot(v, query)))
        .collect();
    let k = k.min(scored.len());
    if k == 0 {
        return Vec::new();
    }
    scored.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
    scored.truncate(k);
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored
}

/// Recall@k that does not punish ties: a returned item counts if its true
/// similarity reaches the k-th best true similarity (less a rounding slack).
pub fn recall_at_k(returned_scores: &[f32], kth_best: f32, k: usize) -> f64 {
    let hits = returned_scores
        .iter()
        .take(k)
        .filter(|s| **s >= kth_best - 1e-5)
        .count();
    hits as f64 / k as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_is_deterministic_per_seed() {
        let a = Corpus::generate(42, 200, 20);
        let b = Corpus::generate(42, 200, 20);
        assert_eq!(a.documents, b.documents);
        assert_eq!(a.queries, b.queries);
        let c = Corpus::generate(43, 200, 20);
        assert_ne!(a.documents, c.documents);
    }

    #[test]
    fn a_larger_corpus_extends_a_smaller_one() {
        // The 10k documents are the first 10k of the 100k corpus.
        let small = Corpus::generate(7, 50, 0);
        let large = Corpus::generate(7, 120, 0);
        assert_eq!(small.documents[..], large.documents[..50]);
    }

    #[test]
    fn documents_fit_one_chunk_and_queries_use_their_words() {
        let corpus = Corpus::generate(1, 500, 50);
        for doc in &corpus.documents {
            assert!(doc.text.len() < 1000, "{} chars", doc.text.len());
            let n = doc.text.split(' ').count();
            assert!((30..=80).contains(&n));
        }
        for query in &corpus.queries {
            assert!((2..=5).contains(&query.split(' ').count()), "{query}");
        }
    }

    #[test]
    fn pinned_first_values() {
        // Changing the generator changes every published number; this pins it.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(word(0), "kata");
        assert_eq!(word(25), "lolo");
        let words: std::collections::HashSet<String> = (0..VOCABULARY).map(word).collect();
        assert_eq!(words.len(), VOCABULARY, "words are distinct");
    }

    #[test]
    fn hash_embedding_matches_the_servers_definition() {
        // Same pinned values as crates/query/src/embed/hash.rs.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        let v = hash_embed("Rust operators", 384);
        assert_eq!(v, hash_embed("rust OPERATORS", 384));
        assert!((dot(&v, &v) - 1.0).abs() < 1e-6);
        assert_eq!(hash_embed("!!!", 4), vec![1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn exact_top_k_and_tie_aware_recall() {
        let vectors = vec![
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![0.6, 0.8],
            vec![0.8, 0.6],
        ];
        let top = exact_top_k(&vectors, &[1.0, 0.0], 2);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![0, 3]);
        assert_eq!(recall_at_k(&[1.0, 0.8], 0.8, 2), 1.0);
        assert_eq!(recall_at_k(&[1.0, 0.6], 0.8, 2), 0.5);
        // A different item with the same score as the k-th counts.
        assert_eq!(recall_at_k(&[0.8, 0.8], 0.8, 2), 1.0);
        assert!(exact_top_k(&vectors, &[1.0, 0.0], 0).is_empty());
    }
}
