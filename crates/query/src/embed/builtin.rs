//! The `builtin` embedder: sentence-transformers/all-MiniLM-L6-v2 run in
//! process on the CPU with candle, computed as sentence-transformers does:
//! the model's WordPiece tokenizer, inputs truncated at 256 tokens, BERT,
//! mean pooling over the attention mask, L2 normalisation.
//!
//! The weights are read from a directory (scripts/fetch-minilm.sh makes one;
//! the query image has one baked in), never downloaded at run time.
//! Inference runs on its own bounded rayon pool, entered from
//! `spawn_blocking`, so tokio's workers keep serving requests meanwhile.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use futures::future::BoxFuture;
use prometheus::IntCounter;
use serde::Deserialize;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};
use tokio::sync::Semaphore;

use super::{EmbedError, Embedder};

/// Model id stored with the table and reported by `/v1/stats` (kbeast-api's
/// `query_contract::BUILTIN_MODEL_ID`, which the operator expects).
pub const MODEL_ID: &str = "minilm-l6-v2";
/// all-MiniLM-L6-v2's vector size.
pub const DIMENSION: usize = 384;

/// Batches embedded at once, so a query's embedding does not wait behind a whole ingest.
const CONCURRENT_BATCHES: usize = 2;

#[derive(Debug, Clone)]
pub struct BuiltinConfig {
    /// Holds model.safetensors, tokenizer.json, config.json, sentence_bert_config.json and
    /// 1_Pooling/config.json, as scripts/fetch-minilm.sh unpacks them.
    pub model_dir: PathBuf,
    /// Threads of the inference pool; 0 means one per CPU.
    pub threads: usize,
    /// Texts per forward pass.
    pub batch_size: usize,
}

struct Model {
    bert: BertModel,
    tokenizer: Tokenizer,
    pool: rayon::ThreadPool,
    batch_size: usize,
    truncated: IntCounter,
}

pub struct BuiltinEmbedder {
    model: Arc<Model>,
    /// Tokenizes without truncation, to tell whether a text fits.
    counter: Tokenizer,
    max_tokens: usize,
    permits: Arc<Semaphore>,
}

/// sentence_bert_config.json
#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: usize,
}

/// 1_Pooling/config.json
#[derive(Deserialize)]
struct PoolingConfig {
    word_embedding_dimension: usize,
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

impl BuiltinEmbedder {
    /// Loads the model from `config.model_dir`. `truncated` counts inputs cut
    /// at the model's token limit.
    pub fn load(config: &BuiltinConfig, truncated: IntCounter) -> Result<Self, EmbedError> {
        let dir = &config.model_dir;
        if !dir.join("model.safetensors").is_file() {
            return Err(EmbedError::Failed(format!(
                "no model.safetensors in {}: run scripts/fetch-minilm.sh and pass the directory \
                 it prints as --builtin-model-dir (KBEAST_BUILTIN_MODEL_DIR)",
                dir.display()
            )));
        }
        let bert_config: BertConfig = read_json(&dir.join("config.json"))?;
        let sentence: SentenceBertConfig = read_json(&dir.join("sentence_bert_config.json"))?;
        let pooling: PoolingConfig = read_json(&dir.join("1_Pooling").join("config.json"))?;
        if !pooling.pooling_mode_mean_tokens
            || pooling.pooling_mode_cls_token
            || pooling.pooling_mode_max_tokens
            || pooling.pooling_mode_mean_sqrt_len_tokens
        {
            return Err(failed(dir, "the model's pooling is not plain mean pooling"));
        }
        if bert_config.hidden_size != DIMENSION || pooling.word_embedding_dimension != DIMENSION {
            return Err(failed(
                dir,
                format!(
                    "the model's vectors have {} dimensions, not all-MiniLM-L6-v2's {DIMENSION}",
                    bert_config.hidden_size
                ),
            ));
        }
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| failed(dir, format!("reading model.safetensors: {e}")))?;
        let vars = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| failed(dir, format!("reading model.safetensors: {e}")))?;
        let bert = BertModel::load(vars, &bert_config)
            .map_err(|e| failed(dir, format!("loading the BERT weights: {e}")))?;

        let max_tokens = sentence.max_seq_length;
        let mut counter = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| failed(dir, format!("reading tokenizer.json: {e}")))?;
        // tokenizer.json carries its own truncation (128) and fixed padding; sentence-transformers
        // replaces both with max_seq_length and padding to the longest text of a batch.
        counter.with_padding(None);
        counter
            .with_truncation(None)
            .map_err(|e| failed(dir, e.to_string()))?;
        let mut tokenizer = counter.clone();
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| failed(dir, e.to_string()))?;

        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads)
            .thread_name(|i| format!("embed-{i}"))
            .build()
            .map_err(|e| EmbedError::Failed(format!("starting the inference threads: {e}")))?;
        Ok(Self {
            model: Arc::new(Model {
                bert,
                tokenizer,
                pool,
                batch_size: config.batch_size.max(1),
                truncated,
            }),
            counter,
            max_tokens,
            permits: Arc::new(Semaphore::new(CONCURRENT_BATCHES)),
        })
    }

    /// Tokens of `text` as the model reads it, [CLS] and [SEP] included.
    pub fn count_tokens(&self, text: &str) -> usize {
        self.counter
            .encode(text, true)
            .map(|encoding| encoding.len())
            .unwrap_or(usize::MAX)
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EmbedError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EmbedError::Failed(format!("reading {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| EmbedError::Failed(format!("parsing {}: {e}", path.display())))
}

fn failed(dir: &Path, message: impl std::fmt::Display) -> EmbedError {
    EmbedError::Failed(format!("built-in model in {}: {message}", dir.display()))
}

impl Model {
    /// Vectors of one batch; runs on the inference pool.
    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError::Failed(format!("tokenizing: {e}")))?;
        let cut = encodings
            .iter()
            .filter(|e| !e.get_overflowing().is_empty())
            .count();
        if cut > 0 {
            self.truncated.inc_by(cut as u64);
            tracing::debug!(
                texts = cut,
                "inputs longer than the model's token limit were truncated"
            );
        }
        let rows = encodings.len();
        let columns = encodings.first().map_or(0, |e| e.len());
        let flat = |field: fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            encodings.iter().flat_map(|e| field(e).to_vec()).collect()
        };
        let tensor = |values: Vec<u32>| {
            Tensor::from_vec(values, (rows, columns), &Device::Cpu).map_err(inference_failed)
        };
        let ids = tensor(flat(tokenizers::Encoding::get_ids))?;
        let type_ids = tensor(flat(tokenizers::Encoding::get_type_ids))?;
        let mask = tensor(flat(tokenizers::Encoding::get_attention_mask))?;
        let hidden = self
            .bert
            .forward(&ids, &type_ids, Some(&mask))
            .map_err(inference_failed)?;
        let pooled = mean_pool(&hidden, &mask).map_err(inference_failed)?;
        l2_normalize(&pooled)
            .and_then(|t| t.to_vec2::<f32>())
            .map_err(inference_failed)
    }
}

fn inference_failed(error: candle_core::Error) -> EmbedError {
    EmbedError::Failed(format!("built-in model inference: {error}"))
}

/// Mean of the token vectors `hidden` (batch × tokens × dim) over the
/// positions where `mask` (batch × tokens) is 1; as sentence-transformers,
/// the divisor is clamped at 1e-9.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?;
    summed.broadcast_div(&counts)
}

/// Rows of `vectors` scaled to unit length; as torch's `F.normalize`, the
/// norm is clamped at 1e-12 so a zero row stays zero.
pub fn l2_normalize(vectors: &Tensor) -> candle_core::Result<Tensor> {
    let norms = vectors
        .sqr()?
        .sum_keepdim(1)?
        .sqrt()?
        .clamp(1e-12f32, f32::MAX)?;
    vectors.broadcast_div(&norms)
}

impl Embedder for BuiltinEmbedder {
    fn model_id(&self) -> &str {
        MODEL_ID
    }

    fn dimension(&self) -> usize {
        DIMENSION
    }

    fn fits(&self, text: &str) -> bool {
        self.count_tokens(text) <= self.max_tokens
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        Box::pin(async move {
            // Texts of similar length share a batch, so little of it is padding.
            let mut order: Vec<usize> = (0..texts.len()).collect();
            order.sort_by_key(|&i| texts[i].len());
            let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
            for indices in order.chunks(self.model.batch_size) {
                let batch: Vec<String> = indices.iter().map(|&i| texts[i].clone()).collect();
                let _permit =
                    self.permits.acquire().await.map_err(|_| {
                        EmbedError::Unavailable("the built-in model is closed".into())
                    })?;
                let model = self.model.clone();
                let embedded = tokio::task::spawn_blocking(move || {
                    model.pool.install(|| model.embed_batch(&batch))
                })
                .await
                .map_err(|e| EmbedError::Failed(format!("built-in model task: {e}")))??;
                for (&i, vector) in indices.iter().zip(embedded) {
                    vectors[i] = vector;
                }
            }
            Ok(vectors)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor2(rows: &[&[f32]]) -> Tensor {
        let columns = rows[0].len();
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.to_vec()).collect();
        Tensor::from_vec(flat, (rows.len(), columns), &Device::Cpu).unwrap()
    }

    #[test]
    fn mean_pooling_averages_only_the_unmasked_tokens() {
        // Two texts of three tokens × two dimensions; the second has one padding token.
        let hidden = Tensor::from_vec(
            vec![
                1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, //
                1.0, 1.0, 3.0, 3.0, 100.0, -100.0,
            ],
            (2, 3, 2),
            &Device::Cpu,
        )
        .unwrap();
        let mask = Tensor::from_vec(vec![1u32, 1, 1, 1, 1, 0], (2, 3), &Device::Cpu).unwrap();
        let pooled = mean_pool(&hidden, &mask).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(pooled, vec![vec![3.0, 4.0], vec![2.0, 2.0]]);
    }

    #[test]
    fn mean_pooling_of_a_fully_masked_text_is_zero_not_nan() {
        let hidden = Tensor::ones((1, 2, 3), DType::F32, &Device::Cpu).unwrap();
        let mask = Tensor::zeros((1, 2), DType::U32, &Device::Cpu).unwrap();
        let pooled = mean_pool(&hidden, &mask).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(pooled, vec![vec![0.0, 0.0, 0.0]]);
    }

    #[test]
    fn normalisation_gives_unit_rows_and_keeps_zero_rows_zero() {
        let vectors = tensor2(&[&[3.0, 4.0], &[0.0, 0.0], &[-1e-3, 0.0]]);
        let normalised = l2_normalize(&vectors).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(normalised[0], vec![0.6, 0.8]);
        assert_eq!(normalised[1], vec![0.0, 0.0]);
        assert_eq!(normalised[2], vec![-1.0, 0.0]);
    }

    #[test]
    fn model_id_is_the_one_the_operator_expects() {
        assert_eq!(MODEL_ID, kbeast_api::query_contract::BUILTIN_MODEL_ID);
        assert_eq!(DIMENSION, kbeast_api::query_contract::BUILTIN_DIMENSION);
    }

    #[test]
    fn a_missing_model_directory_names_the_flag_and_the_script() {
        let dir = tempfile::tempdir().unwrap();
        let config = BuiltinConfig {
            model_dir: dir.path().join("absent"),
            threads: 1,
            batch_size: 8,
        };
        let error = BuiltinEmbedder::load(&config, IntCounter::new("t", "t").unwrap())
            .err()
            .expect("loading must fail")
            .to_string();
        assert!(error.contains("--builtin-model-dir"), "{error}");
        assert!(error.contains("KBEAST_BUILTIN_MODEL_DIR"), "{error}");
        assert!(error.contains("scripts/fetch-minilm.sh"), "{error}");
    }

    /// The weights: `$KBEAST_BUILTIN_MODEL_DIR` (scripts/test.sh sets it), else what
    /// scripts/fetch-minilm.sh prints (it downloads them once into ~/.cache/kbeast/models).
    fn model_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("KBEAST_BUILTIN_MODEL_DIR") {
            return PathBuf::from(dir);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-minilm.sh");
        let output = std::process::Command::new(&script)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            output.status.success(),
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
    }

    fn load_model(batch_size: usize) -> (BuiltinEmbedder, IntCounter) {
        let truncated = IntCounter::new("truncated", "truncated").unwrap();
        let config = BuiltinConfig {
            model_dir: model_dir(),
            threads: 2,
            batch_size,
        };
        (
            BuiltinEmbedder::load(&config, truncated.clone()).unwrap(),
            truncated,
        )
    }

    #[derive(Deserialize)]
    struct Reference {
        cases: Vec<ReferenceCase>,
    }

    #[derive(Deserialize)]
    struct ReferenceCase {
        text: String,
        tokens: usize,
        vector: Vec<f32>,
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (norm(a) * norm(b))
    }

    /// Vectors of sentence-transformers' computation (tests/data/minilm-reference.json, made by
    /// scripts/minilm-reference.py), in one batch of mixed lengths and one text at a time.
    #[tokio::test]
    async fn vectors_match_the_sentence_transformers_reference() {
        let reference: Reference =
            serde_json::from_str(include_str!("../../tests/data/minilm-reference.json")).unwrap();
        let texts: Vec<String> = reference.cases.iter().map(|c| c.text.clone()).collect();
        let (embedder, truncated) = load_model(3);
        let batched = embedder.embed(&texts).await.unwrap();
        for (case, vector) in reference.cases.iter().zip(&batched) {
            assert_eq!(vector.len(), DIMENSION);
            let similarity = cosine(vector, &case.vector);
            assert!(
                similarity >= 0.999,
                "{:?}: cosine {similarity} to the reference",
                case.text
            );
            let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "{:?}: norm {norm}", case.text);
            let alone = &embedder
                .embed(std::slice::from_ref(&case.text))
                .await
                .unwrap()[0];
            assert!(
                cosine(alone, vector) >= 0.9999,
                "{:?}: padding changed it",
                case.text
            );
        }
        // Only the reference's one text longer than 256 tokens was cut, once per embedding.
        let long = reference.cases.iter().filter(|c| c.tokens == 256).count();
        assert_eq!(long, 1);
        assert_eq!(truncated.get(), 2);
    }

    #[tokio::test]
    async fn fits_counts_the_tokens_the_model_reads() {
        let (embedder, _) = load_model(8);
        assert_eq!(embedder.count_tokens("The cat sits on the mat."), 9);
        let words = |n: usize| vec!["cat"; n].join(" ");
        // [CLS] and [SEP] take two of the 256 positions.
        assert!(embedder.fits(&words(254)));
        assert!(!embedder.fits(&words(255)));
    }
}
