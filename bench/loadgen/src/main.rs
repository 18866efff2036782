//! `kbeast-loadgen`: the one load generator that drives both kbeast-query and
//! ChromaDB in the benchmark (`bench/run.sh`), so the client's cost is the same
//! for both.
//!
//! - `run`: ingest the deterministic corpus into one system, then measure
//!   search latency and throughput per mode and concurrency, recall@k against
//!   exact search, and the server's memory; writes one JSON file.
//! - `startup`: start kbeast-query on an existing data directory and time it
//!   to ready.
//! - `report`: merge a results directory into `summary.json` with our/Chroma
//!   ratios, and print it as Markdown tables.

mod corpus;
mod machine;
mod report;
mod stats;
mod systems;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use kbeast_client::SearchMode;
use serde::Serialize;
use tokio::sync::Mutex;

use corpus::{Corpus, exact_top_k, hash_embed, recall_at_k};
use machine::{MachineInfo, Memory, memory_of_tree};
use stats::LatencySummary;
use systems::{Hit, System, http_client};

#[derive(Debug, Parser)]
#[command(
    name = "kbeast-loadgen",
    version,
    about = "Benchmark load generator for kbeast-query and ChromaDB"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ingest the corpus into one system and measure it.
    Run(Box<RunArgs>),
    /// Time kbeast-query from start to ready on an existing data directory.
    Startup(StartupArgs),
    /// Merge result files into summary.json and print Markdown tables.
    Report(report::ReportArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SystemKind {
    Kbeast,
    Chroma,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[arg(long, env = "KBEAST_BENCH_SYSTEM", value_enum)]
    system: SystemKind,
    /// Base URL of the server, e.g. http://127.0.0.1:18080.
    #[arg(long, env = "KBEAST_BENCH_URL")]
    url: String,
    /// kbeast API key (admin or read+write).
    #[arg(long, env = "KBEAST_BENCH_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Server process id, for its memory (the process and its descendants).
    #[arg(long, env = "KBEAST_BENCH_PID")]
    pid: u32,
    /// Chunks in the corpus (one chunk per document).
    #[arg(long, env = "KBEAST_BENCH_SIZE")]
    size: usize,
    #[arg(long, env = "KBEAST_BENCH_SEED", default_value_t = 42)]
    seed: u64,
    /// Distinct queries, cycled through.
    #[arg(long, env = "KBEAST_BENCH_QUERIES", default_value_t = 1000)]
    queries: usize,
    #[arg(long, env = "KBEAST_BENCH_DIMENSION", default_value_t = 384)]
    dimension: usize,
    /// Documents per ingest request.
    #[arg(long, env = "KBEAST_BENCH_BATCH", default_value_t = 256)]
    batch: usize,
    /// Ingest requests in flight at once.
    #[arg(long, env = "KBEAST_BENCH_INGEST_CONCURRENCY", default_value_t = 4)]
    ingest_concurrency: usize,
    /// Sequential single-document writes after the ingest, so kbeast's writer
    /// runs its periodic maintenance (which builds the vector index) before
    /// searches start; set it above --optimize-every-commits. Timed separately.
    #[arg(long, env = "KBEAST_BENCH_SETTLE_WRITES", default_value_t = 0)]
    settle_writes: usize,
    /// Measure a server that already holds the corpus (for tuning search
    /// settings between restarts): no ingest, no settle writes; the ingest
    /// figures are then recorded as 0.
    #[arg(long, env = "KBEAST_BENCH_SKIP_INGEST")]
    skip_ingest: bool,
    /// kbeast's --vector-index-min-rows: from this size on, searches wait until
    /// the (background-built) vector index exists.
    #[arg(
        long,
        env = "KBEAST_BENCH_VECTOR_INDEX_MIN_ROWS",
        default_value_t = 100_000
    )]
    vector_index_min_rows: u64,
    /// Queries per mode before measuring (not recorded).
    #[arg(long, env = "KBEAST_BENCH_WARMUP", default_value_t = 200)]
    warmup: usize,
    /// Measured requests per mode at concurrency 1.
    #[arg(long, env = "KBEAST_BENCH_REQUESTS_C1", default_value_t = 1000)]
    requests_c1: usize,
    /// Measured requests per mode at the high concurrency.
    #[arg(long, env = "KBEAST_BENCH_REQUESTS_CN", default_value_t = 3000)]
    requests_cn: usize,
    #[arg(long, env = "KBEAST_BENCH_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    #[arg(long, env = "KBEAST_BENCH_TOP_K", default_value_t = 10)]
    top_k: u32,
    /// Vector queries whose recall@k is checked against exact search.
    #[arg(long, env = "KBEAST_BENCH_RECALL_QUERIES", default_value_t = 200)]
    recall_queries: usize,
    /// Seconds the server is left idle after the searches before its memory
    /// is read (the same for every system; the peak is recorded too).
    #[arg(long, env = "KBEAST_BENCH_MEMORY_SETTLE_SECONDS", default_value_t = 15)]
    memory_settle_seconds: u64,
    /// Chroma collection name.
    #[arg(long, env = "KBEAST_BENCH_COLLECTION", default_value = "kbeast-bench")]
    collection: String,
    /// Profile the server binary was built with (recorded only).
    #[arg(long, env = "KBEAST_BENCH_SERVER_PROFILE", default_value = "release")]
    server_profile: String,
    #[arg(long, env = "KBEAST_BENCH_OUT")]
    out: PathBuf,
}

#[derive(Debug, clap::Args)]
struct StartupArgs {
    /// The kbeast-query binary.
    #[arg(long, env = "KBEAST_BENCH_BIN")]
    bin: PathBuf,
    #[arg(long, env = "KBEAST_BENCH_DATA")]
    data: PathBuf,
    #[arg(long, env = "KBEAST_BENCH_API_KEYS")]
    api_keys: PathBuf,
    #[arg(long, env = "KBEAST_BENCH_PORT", default_value_t = 18090)]
    port: u16,
    /// Starts to time; the median is reported.
    #[arg(long, env = "KBEAST_BENCH_REPEAT", default_value_t = 3)]
    repeat: usize,
    /// Chunks on disk (recorded only).
    #[arg(long, env = "KBEAST_BENCH_SIZE")]
    size: usize,
    #[arg(long, env = "KBEAST_BENCH_SERVER_PROFILE", default_value = "release")]
    server_profile: String,
    #[arg(long, env = "KBEAST_BENCH_OUT")]
    out: PathBuf,
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ModeResult {
    pub mode: String,
    pub concurrency: usize,
    #[serde(flatten)]
    pub latency: LatencySummary,
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct RunResult {
    pub kind: String,
    pub system: String,
    pub size: usize,
    pub seed: u64,
    pub dimension: usize,
    pub top_k: u32,
    pub ingest: IngestResult,
    pub searches: Vec<ModeResult>,
    /// Mean tie-aware recall@k of vector search against exact search.
    pub vector_recall_at_k: f64,
    pub recall_queries: usize,
    /// Largest difference between a vector hit's reported similarity and the
    /// one computed from the load generator's vectors (checks both systems
    /// search the same vectors).
    pub max_score_difference: f64,
    pub memory_after: Memory,
    pub machine: MachineInfo,
    pub settings: serde_json::Value,
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct IngestResult {
    pub chunks: usize,
    pub seconds: f64,
    pub chunks_per_sec: f64,
    pub batch: usize,
    pub concurrency: usize,
    /// The settle writes (see --settle-writes), not part of the rate.
    pub settle_writes: usize,
    pub settle_seconds: f64,
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct StartupResult {
    pub kind: String,
    pub system: String,
    pub size: usize,
    /// Each start: process spawn to the first 200 from /readyz.
    pub ready_ms: Vec<f64>,
    pub median_ready_ms: f64,
    /// Memory once ready after the last start, before any search.
    pub memory_when_ready: Memory,
    pub machine: MachineInfo,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(*args).await,
            Command::Startup(args) => startup(args).await,
            Command::Report(args) => report::run(args),
        }
    })
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    ensure!(
        args.size > 0 && args.queries > 0,
        "--size and --queries must be positive"
    );
    let http = http_client()?;
    let system = match args.system {
        SystemKind::Kbeast => System::kbeast(http, &args.url, args.api_key.clone()),
        SystemKind::Chroma => System::chroma(http, &args.url, &args.collection).await?,
    };
    let system = Arc::new(system);
    eprintln!(
        "[{}] generating {} documents (seed {})",
        system.name(),
        args.size,
        args.seed
    );
    let corpus = Arc::new(Corpus::generate(args.seed, args.size, args.queries));
    let doc_vectors: Arc<Vec<Vec<f32>>> = Arc::new(
        corpus
            .documents
            .iter()
            .map(|d| hash_embed(&d.text, args.dimension))
            .collect(),
    );
    let query_vectors: Arc<Vec<Vec<f32>>> = Arc::new(
        corpus
            .queries
            .iter()
            .map(|q| hash_embed(q, args.dimension))
            .collect(),
    );

    // Ingest.
    eprintln!("[{}] ingesting", system.name());
    let started = Instant::now();
    let batches: Vec<(usize, usize)> = (0..if args.skip_ingest { 0 } else { args.size })
        .step_by(args.batch)
        .map(|start| (start, (start + args.batch).min(args.size)))
        .collect();
    let mut results = futures::stream::iter(batches)
        .map(|(start, end)| {
            let (system, corpus, vectors) = (system.clone(), corpus.clone(), doc_vectors.clone());
            async move {
                system
                    .ingest(&corpus.documents[start..end], &vectors[start..end])
                    .await
            }
        })
        .buffer_unordered(args.ingest_concurrency.max(1));
    while let Some(result) = results.next().await {
        result.context("ingest request")?;
    }
    let ingest_seconds = if args.skip_ingest {
        0.0
    } else {
        started.elapsed().as_secs_f64()
    };
    let count = system.count().await?;
    ensure!(
        count == args.size as u64,
        "{} holds {count} rows after ingesting {}",
        system.name(),
        args.size
    );
    eprintln!(
        "[{}] ingested {} chunks in {ingest_seconds:.1} s ({:.0}/s)",
        system.name(),
        args.size,
        args.size as f64 / ingest_seconds
    );
    let started = Instant::now();
    for _ in 0..if args.skip_ingest {
        0
    } else {
        args.settle_writes
    } {
        system
            .ingest(&corpus.documents[..1], &doc_vectors[..1])
            .await
            .context("settle write")?;
    }
    let settle_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    system
        .wait_for_vector_index(args.size as u64, args.vector_index_min_rows)
        .await?;
    let vector_index_wait_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "[{}] waited {vector_index_wait_seconds:.1} s for the vector index",
        system.name()
    );

    // Warm up every mode, then measure.
    let mut searches = Vec::new();
    let mut recall_hits: Vec<Vec<Hit>> = Vec::new();
    for &mode in system.modes() {
        eprintln!("[{}] {} search", system.name(), mode.as_str());
        measure(
            &system,
            &corpus,
            &query_vectors,
            mode,
            args.top_k,
            1,
            args.warmup,
            0,
        )
        .await?;
        let (summary, hits) = measure(
            &system,
            &corpus,
            &query_vectors,
            mode,
            args.top_k,
            1,
            args.requests_c1,
            if mode == SearchMode::Vector {
                args.recall_queries
            } else {
                0
            },
        )
        .await?;
        if mode == SearchMode::Vector {
            recall_hits = hits;
        }
        searches.push(ModeResult {
            mode: mode.as_str().into(),
            concurrency: 1,
            latency: summary,
        });
        let (summary, _) = measure(
            &system,
            &corpus,
            &query_vectors,
            mode,
            args.top_k,
            args.concurrency,
            args.requests_cn,
            0,
        )
        .await?;
        searches.push(ModeResult {
            mode: mode.as_str().into(),
            concurrency: args.concurrency,
            latency: summary,
        });
    }
    tokio::time::sleep(std::time::Duration::from_secs(args.memory_settle_seconds)).await;
    let memory_after = memory_of_tree(args.pid);

    // Recall and the same-vectors check.
    eprintln!(
        "[{}] recall@{} over {} queries",
        system.name(),
        args.top_k,
        recall_hits.len()
    );
    let mut recall_sum = 0.0;
    let mut max_difference = 0f64;
    for (q, hits) in recall_hits.iter().enumerate() {
        let query = &query_vectors[q];
        let exact = exact_top_k(&doc_vectors, query, args.top_k as usize);
        let kth = exact.last().map_or(f32::NEG_INFINITY, |e| e.1);
        let mut true_scores = Vec::new();
        for hit in hits {
            let index = doc_index(&hit.doc_id)
                .filter(|i| *i < doc_vectors.len())
                .with_context(|| format!("unknown document id {:?} in a hit", hit.doc_id))?;
            let truth = corpus::dot(&doc_vectors[index], query);
            max_difference = max_difference.max(f64::from((truth - hit.score).abs()));
            true_scores.push(truth);
        }
        recall_sum += recall_at_k(&true_scores, kth, exact.len().min(args.top_k as usize));
    }
    let recall = if recall_hits.is_empty() {
        f64::NAN
    } else {
        recall_sum / recall_hits.len() as f64
    };
    eprintln!(
        "[{}] recall@{}: {recall:.4}; max score difference {max_difference:.2e}",
        system.name(),
        args.top_k
    );

    let result = RunResult {
        kind: "run".into(),
        system: system.name().into(),
        size: args.size,
        seed: args.seed,
        dimension: args.dimension,
        top_k: args.top_k,
        ingest: IngestResult {
            chunks: args.size,
            seconds: ingest_seconds,
            chunks_per_sec: if args.skip_ingest {
                0.0
            } else {
                args.size as f64 / ingest_seconds
            },
            batch: args.batch,
            concurrency: args.ingest_concurrency,
            settle_writes: args.settle_writes,
            settle_seconds,
        },
        searches,
        vector_recall_at_k: recall,
        recall_queries: recall_hits.len(),
        max_score_difference: max_difference,
        memory_after,
        machine: MachineInfo::collect(&args.server_profile),
        settings: serde_json::json!({
            "queries": args.queries,
            "warmup": args.warmup,
            "requests_c1": args.requests_c1,
            "requests_cn": args.requests_cn,
            "memory_settle_seconds": args.memory_settle_seconds,
        }),
    };
    write_json(&args.out, &result)
}

fn doc_index(id: &str) -> Option<usize> {
    id.strip_prefix("doc-")?.parse().ok()
}

/// Sends `requests` searches with `concurrency` clients, each taking the next
/// query in turn. Returns the latency summary and the hits of the first
/// `keep_hits` queries (in query order).
#[allow(clippy::too_many_arguments)]
async fn measure(
    system: &Arc<System>,
    corpus: &Arc<Corpus>,
    query_vectors: &Arc<Vec<Vec<f32>>>,
    mode: SearchMode,
    top_k: u32,
    concurrency: usize,
    requests: usize,
    keep_hits: usize,
) -> anyhow::Result<(LatencySummary, Vec<Vec<Hit>>)> {
    let next = Arc::new(AtomicUsize::new(0));
    let kept: Arc<Mutex<Vec<Option<Vec<Hit>>>>> =
        Arc::new(Mutex::new(vec![None; keep_hits.min(requests)]));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (system, corpus, vectors, next, kept) = (
            system.clone(),
            corpus.clone(),
            query_vectors.clone(),
            next.clone(),
            kept.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut first_error = None;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= requests {
                    break;
                }
                let q = n % corpus.queries.len();
                let sent = Instant::now();
                match system
                    .search(&corpus.queries[q], &vectors[q], mode, top_k)
                    .await
                {
                    Ok(hits) => {
                        latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                        if let Some(slot) = kept.lock().await.get_mut(n) {
                            *slot = Some(hits);
                        }
                    }
                    Err(error) => {
                        errors += 1;
                        first_error.get_or_insert(error);
                    }
                }
            }
            (latencies, errors, first_error)
        }));
    }
    let mut latencies = Vec::with_capacity(requests);
    let mut errors = 0;
    for worker in workers {
        let (l, e, first_error) = worker.await?;
        if let Some(error) = first_error {
            eprintln!("search error ({}): {error:#}", mode.as_str());
        }
        latencies.extend(l);
        errors += e;
    }
    let wall = started.elapsed().as_secs_f64();
    ensure!(
        errors * 100 <= requests,
        "{errors} of {requests} {} searches failed",
        mode.as_str()
    );
    let kept = std::mem::take(&mut *kept.lock().await);
    Ok((
        LatencySummary::from_samples(latencies, errors, wall),
        kept.into_iter().flatten().collect(),
    ))
}

async fn startup(args: StartupArgs) -> anyhow::Result<()> {
    let http = http_client()?;
    let url = format!("http://127.0.0.1:{}/readyz", args.port);
    let mut ready_ms = Vec::new();
    let mut memory_when_ready = Memory::default();
    for attempt in 0..args.repeat.max(1) {
        let started = Instant::now();
        let mut child = std::process::Command::new(&args.bin)
            .arg("serve")
            .arg("--data")
            .arg(&args.data)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", args.port))
            .arg("--api-keys")
            .arg(&args.api_keys)
            .env("KBEAST_LOG", "warn")
            // Its 503s while starting are expected; keep them out of the report.
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", args.bin.display()))?;
        let pid = child.id();
        loop {
            if let Ok(response) = http.get(&url).send().await
                && response.status().is_success()
            {
                break;
            }
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("kbeast-query exited with {status} before it was ready");
            }
            if started.elapsed() > Duration::from_secs(300) {
                let _ = child.kill();
                anyhow::bail!("kbeast-query was not ready after 300 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let ms = started.elapsed().as_secs_f64() * 1e3;
        eprintln!("[startup] attempt {attempt}: ready after {ms:.0} ms");
        ready_ms.push(ms);
        memory_when_ready = memory_of_tree(pid);
        // SIGTERM for an orderly shutdown, so the next start finds a clean table.
        // SAFETY: kill(2) with a pid we spawned and still own.
        #[allow(unsafe_code)] // kill(2) has no safe wrapper in std.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM)
        };
        let stopping = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if stopping.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                anyhow::bail!("kbeast-query did not stop within 60 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        ensure!(status.success(), "kbeast-query exited with {status}");
    }
    let mut sorted = ready_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let result = StartupResult {
        kind: "startup".into(),
        system: "kbeast".into(),
        size: args.size,
        median_ready_ms: stats::percentile(&sorted, 50.0).unwrap_or(f64::NAN),
        ready_ms,
        memory_when_ready,
        machine: MachineInfo::collect(&args.server_profile),
    };
    write_json(&args.out, &result)
}

fn write_json(path: &PathBuf, value: &impl Serialize) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
