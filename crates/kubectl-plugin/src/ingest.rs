//! `kubectl kbeast ingest`: documents from files, a directory or standard input, sent in
//! batches with the project's write key. Every input is read and checked before the first
//! request, so a bad line stops the command before anything is written. Ingest replaces a
//! document of the same id, so running the command again after a failure is safe.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use kbeast_client::Scope;
use kbeast_client::{DocumentInput, IngestRequest, IngestResponse};
use serde::Serialize;
use tokio::io::AsyncReadExt;

use crate::cli::Output;
use crate::output::print;
use crate::query_proxy::QueryProxy;
use crate::target::Target;

/// At most this many bytes of documents per request (the query server's default body limit is
/// larger; the API server's proxy buffers each request).
const BATCH_BYTES: usize = 4 << 20;
const TEXT_EXTENSIONS: [&str; 3] = ["txt", "md", "markdown"];
const JSON_LINES_EXTENSIONS: [&str; 2] = ["jsonl", "ndjson"];

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestSummary {
    pub documents: usize,
    pub chunks: u64,
    pub skipped_files: Vec<String>,
    pub table_version: u64,
    pub seconds: f64,
}

pub async fn run(
    target: &Target,
    name: &str,
    path: &Path,
    batch: usize,
    key: Option<String>,
    output: Output,
) -> Result<()> {
    let (documents, skipped_files) = read_input(path).await?;
    if documents.is_empty() {
        bail!(
            "no documents in {} (read: .txt, .md, .markdown, .jsonl, .ndjson)",
            path.display()
        );
    }
    let project = target.project(name).await?;
    let proxy = QueryProxy::connect(target, &project, Scope::Write, key).await?;
    let started = Instant::now();
    let progress = ProgressBar::new(documents.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} documents {elapsed}")
            .expect("a valid template"),
    );
    let (mut chunks, mut table_version, mut sent) = (0u64, 0u64, 0usize);
    for batch in batches(documents, batch.max(1)) {
        let count = batch.len();
        let response: IngestResponse = proxy
            .post("/v1/documents", &IngestRequest { documents: batch })
            .await
            .with_context(|| {
                format!("after {sent} documents were ingested; running the command again is safe")
            })?;
        chunks += response
            .documents
            .iter()
            .map(|d| u64::from(d.chunks))
            .sum::<u64>();
        table_version = response.version;
        sent += count;
        progress.inc(count as u64);
    }
    progress.finish_and_clear();
    let summary = IngestSummary {
        documents: sent,
        chunks,
        skipped_files,
        table_version,
        seconds: started.elapsed().as_secs_f64(),
    };
    if output != Output::Table {
        return print(output, &summary);
    }
    println!(
        "{name}: ingested {} documents ({} chunks) in {:.1} s; table version {}",
        summary.documents, summary.chunks, summary.seconds, summary.table_version
    );
    if !summary.skipped_files.is_empty() {
        println!(
            "skipped {} files of other types: {}",
            summary.skipped_files.len(),
            summary.skipped_files.join(", ")
        );
    }
    Ok(())
}

/// The documents of `path` (a file, a directory read recursively in name order, or `-` for
/// JSON Lines on standard input) and the files skipped for their type.
pub async fn read_input(path: &Path) -> Result<(Vec<DocumentInput>, Vec<String>)> {
    if path == Path::new("-") {
        let mut text = String::new();
        tokio::io::stdin()
            .read_to_string(&mut text)
            .await
            .context("reading standard input")?;
        return Ok((json_lines(&text, "<stdin>")?, Vec::new()));
    }
    let metadata =
        std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let (root, files) = if metadata.is_dir() {
        (path.to_path_buf(), files_under(path)?)
    } else {
        let parent = path.parent().unwrap_or(Path::new("")).to_path_buf();
        (parent, vec![path.to_path_buf()])
    };
    let mut documents = Vec::new();
    let mut skipped = Vec::new();
    for file in files {
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        let extension = file
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        let is_text = TEXT_EXTENSIONS.contains(&extension.as_str());
        let is_lines = JSON_LINES_EXTENSIONS.contains(&extension.as_str());
        if !is_text && !is_lines {
            skipped.push(shown);
            continue;
        }
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {} (not UTF-8 text?)", file.display()))?;
        if is_lines {
            documents.extend(json_lines(&text, &shown)?);
        } else if !text.trim().is_empty() {
            documents.push(DocumentInput {
                id: Some(shown.clone()),
                text,
                source: Some(shown),
                metadata: None,
            });
        }
    }
    Ok((documents, skipped))
}

/// One document per non-empty line: `{"id", "text", "source", "metadata"}`, as the query API
/// takes them. An error names the file and line.
fn json_lines(text: &str, file: &str) -> Result<Vec<DocumentInput>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str::<DocumentInput>(line).with_context(|| {
                format!(
                    "{file}:{}: not a document ({{\"id\", \"text\", ...}})",
                    n + 1
                )
            })
        })
        .collect()
}

fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Batches of at most `count` documents and about [`BATCH_BYTES`] of text.
fn batches(documents: Vec<DocumentInput>, count: usize) -> Vec<Vec<DocumentInput>> {
    let mut batches: Vec<Vec<DocumentInput>> = Vec::new();
    let mut bytes = 0;
    for document in documents {
        let size = document.text.len();
        match batches.last_mut() {
            Some(last) if last.len() < count && bytes + size <= BATCH_BYTES => {
                bytes += size;
                last.push(document);
            }
            _ => {
                bytes = size;
                batches.push(vec![document]);
            }
        }
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_directory_gives_text_documents_and_json_lines_and_skips_other_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("guides")).unwrap();
        std::fs::write(dir.path().join("guides/setup.md"), "# Setup\nRun it.").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "plain").unwrap();
        std::fs::write(dir.path().join("empty.txt"), "  \n").unwrap();
        std::fs::write(dir.path().join("logo.png"), [0u8, 1]).unwrap();
        std::fs::write(
            dir.path().join("faq.jsonl"),
            "{\"id\": \"q1\", \"text\": \"one\"}\n\n{\"id\": \"q2\", \"text\": \"two\", \"metadata\": {\"lang\": \"en\"}}\n",
        )
        .unwrap();
        let (documents, skipped) = read_input(dir.path()).await.unwrap();
        let ids: Vec<_> = documents.iter().map(|d| d.id.clone().unwrap()).collect();
        assert_eq!(ids, ["q1", "q2", "guides/setup.md", "notes.txt"]);
        assert_eq!(documents[2].source.as_deref(), Some("guides/setup.md"));
        assert_eq!(skipped, ["logo.png"]);
    }

    #[tokio::test]
    async fn a_bad_line_names_its_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("docs.jsonl");
        std::fs::write(&file, "{\"id\": \"a\", \"text\": \"x\"}\n{\"id\": \"b\"}\n").unwrap();
        let error = read_input(&file).await.unwrap_err();
        assert!(format!("{error:#}").contains("docs.jsonl:2"), "{error:#}");
    }

    #[test]
    fn batches_respect_count_and_bytes() {
        let doc = |n: usize| DocumentInput {
            id: None,
            text: "x".repeat(n),
            source: None,
            metadata: None,
        };
        let sizes = |b: Vec<Vec<DocumentInput>>| b.iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(
            sizes(batches((0..5).map(|_| doc(1)).collect(), 2)),
            [2, 2, 1]
        );
        let big = BATCH_BYTES / 2 + 1;
        assert_eq!(sizes(batches(vec![doc(big), doc(big), doc(1)], 10)), [1, 2]);
    }
}
