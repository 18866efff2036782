//! The `builtin` embedder (all-MiniLM-L6-v2) through the real HTTP server: a question finds
//! its paraphrased answer by meaning, which the `hash` embedder cannot do; the model is
//! reported in `/v1/stats`; overlong chunks are split rather than cut.
//!
//! The weights come from `$KBEAST_BUILTIN_MODEL_DIR` (scripts/test.sh sets it), else from
//! scripts/fetch-minilm.sh, which downloads them once into ~/.cache/kbeast/models.

mod common;

use std::path::{Path, PathBuf};

use common::{Server, doc, ingest_request};
use kbeast_client::{SearchMode, SearchRequest};

fn model_dir() -> String {
    if let Ok(dir) = std::env::var("KBEAST_BUILTIN_MODEL_DIR") {
        return dir;
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
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

async fn builtin_server(extra: &[&str]) -> Server {
    let dir = model_dir();
    let mut args = vec!["--embedder", "builtin", "--builtin-model-dir", &dir];
    args.extend_from_slice(extra);
    Server::start(&args).await
}

/// The answer to the question shares no word with it; the distractor shares several.
const ANSWER: &str = "To regain access to your account, choose 'forgot login' on the sign-in \
                      page and follow the emailed link.";
const QUESTION: &str = "How do I reset my password?";
const DISTRACTOR: &str = "I do not know how my grandmother bakes her bread.";
const PASSAGES: [(&str, &str); 5] = [
    ("account", ANSWER),
    ("bread", DISTRACTOR),
    (
        "outage",
        "The service was unavailable for two hours after a database server failed.",
    ),
    (
        "hiring",
        "The company is recruiting three software engineers for the Berlin office.",
    ),
    (
        "weather",
        "Heavy rain and strong winds are expected along the coast tomorrow.",
    ),
];

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

async fn top_hit_for_question(server: &Server) -> String {
    let client = server.admin();
    let documents = PASSAGES.iter().map(|(id, text)| doc(id, text)).collect();
    client.ingest(&ingest_request(documents)).await.unwrap();
    let result = client
        .search(&SearchRequest::new(QUESTION, SearchMode::Vector, 3))
        .await
        .unwrap();
    assert!(!result.degraded);
    result.hits[0].doc_id.clone()
}

#[tokio::test]
async fn a_question_finds_its_paraphrased_answer_with_builtin_but_not_with_hash() {
    let question = words(QUESTION);
    assert!(
        words(ANSWER).iter().all(|w| !question.contains(w)),
        "the answer must share no word with the question"
    );

    let builtin = builtin_server(&[]).await;
    assert_eq!(top_hit_for_question(&builtin).await, "account");
    let stats = builtin.admin().stats().await.unwrap();
    assert_eq!(stats.model, "minilm-l6-v2");
    assert_eq!(stats.dimension, 384);

    let hash = Server::start(&["--embedder", "hash"]).await;
    assert_eq!(top_hit_for_question(&hash).await, "bread");
}

#[tokio::test]
async fn chunks_longer_than_the_model_reads_are_split_not_truncated() {
    // 400 short words fit one 4000-character chunk but are far more than 256 tokens.
    let text: String = (0..400).map(|i| format!("w{} ", i % 10)).collect();
    let server = builtin_server(&["--chunk-size", "4000", "--chunk-overlap", "0"]).await;
    let client = server.admin();
    let response = client
        .ingest(&ingest_request(vec![doc("long", &text)]))
        .await
        .unwrap();
    assert!(response.documents[0].chunks >= 2, "{response:?}");
    let metrics = server
        .http()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("kb_embedding_truncated_inputs_total 0"),
        "{metrics}"
    );
    // A query is one text: cut at 256 tokens, and counted.
    let long_query: String = (0..300).map(|_| "w1 ").collect();
    client
        .search(&SearchRequest::new(long_query, SearchMode::Vector, 1))
        .await
        .unwrap();
    let metrics = server
        .http()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("kb_embedding_truncated_inputs_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_missing_model_directory_stops_the_server_with_a_message_naming_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let absent: PathBuf = dir.path().join("no-model");
    let output = common::run_cli(&[
        "serve",
        "--data",
        &dir.path().join("data").to_string_lossy(),
        "--listen",
        "127.0.0.1:0",
        "--embedder",
        "builtin",
        "--builtin-model-dir",
        &absent.to_string_lossy(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = format!("{stderr}\n{}", String::from_utf8_lossy(&output.stdout));
    assert!(stderr.contains("--builtin-model-dir"), "{stderr}");
    assert!(stderr.contains("scripts/fetch-minilm.sh"), "{stderr}");
}

#[tokio::test]
async fn an_empty_table_changes_its_model_but_one_with_data_refuses_naming_the_fields() {
    let mut server = builtin_server(&[]).await;
    assert_eq!(server.admin().stats().await.unwrap().model, "minilm-l6-v2");
    server.terminate();

    // No chunk is stored yet: the table is made again for the new model.
    server.args = vec!["--embedder".into(), "hash".into()];
    server.restart().await;
    assert_eq!(server.admin().stats().await.unwrap().model, "hash-v1");
    server
        .admin()
        .ingest(&ingest_request(vec![doc("kept", "a chunk under hash-v1")]))
        .await
        .unwrap();
    server.terminate();

    let output = common::run_cli(&[
        "serve",
        "--data",
        &server.data,
        "--listen",
        "127.0.0.1:0",
        "--embedder",
        "builtin",
        "--builtin-model-dir",
        &model_dir(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = format!("{stderr}\n{}", String::from_utf8_lossy(&output.stdout));
    for named in [
        "hash-v1",
        "minilm-l6-v2",
        "spec.embedding.provider",
        "spec.embedding.model",
        "spec.embedding.dimension",
    ] {
        assert!(stderr.contains(named), "{named} not in: {stderr}");
    }
    // The refused start left the data alone.
    server.restart().await;
    assert_eq!(server.admin().stats().await.unwrap().documents, 1);
}
