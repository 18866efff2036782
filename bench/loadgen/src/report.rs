//! Merges the result files of one benchmark run into `summary.json` (with
//! kbeast/Chroma ratios and the targets, met or missed) and prints
//! Markdown tables for `docs/performance.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use crate::{ModeResult, RunResult, StartupResult};

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Directory holding the run's `*.json` result files.
    #[arg(long, env = "KBEAST_BENCH_DIR")]
    dir: PathBuf,
}

#[derive(Debug, Serialize)]
struct Ratios {
    /// kbeast / Chroma: below 1 means kbeast is faster.
    vector_p50_c1: Option<f64>,
    vector_p99_c1: Option<f64>,
    vector_p50_cn: Option<f64>,
    vector_p99_cn: Option<f64>,
    /// kbeast / Chroma: above 1 means kbeast serves more.
    vector_qps_cn: Option<f64>,
    /// kbeast / Chroma: above 1 means kbeast ingests faster.
    ingest: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Target {
    size: usize,
    name: String,
    target: String,
    measured: String,
    met: Option<bool>,
}

#[derive(Debug, Serialize)]
struct Summary {
    machine: Option<crate::machine::MachineInfo>,
    ratios: BTreeMap<usize, Ratios>,
    targets: Vec<Target>,
    runs: Vec<RunResult>,
    startups: Vec<StartupResult>,
}

fn find<'a>(run: &'a RunResult, mode: &str, concurrency: usize) -> Option<&'a ModeResult> {
    run.searches
        .iter()
        .find(|s| s.mode == mode && s.concurrency == concurrency)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    let mut startups = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&args.dir)
        .with_context(|| format!("reading {}", args.dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_name().is_some_and(|n| n != "summary.json")
        })
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path)?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        match value["kind"].as_str() {
            Some("run") => runs.push(serde_json::from_value::<RunResult>(value)?),
            Some("startup") => startups.push(serde_json::from_value::<StartupResult>(value)?),
            _ => {}
        }
    }
    anyhow::ensure!(!runs.is_empty(), "no run results in {}", args.dir.display());

    let sizes: Vec<usize> = {
        let mut s: Vec<usize> = runs.iter().map(|r| r.size).collect();
        s.sort_unstable();
        s.dedup();
        s
    };
    let get =
        |system: &str, size: usize| runs.iter().find(|r| r.system == system && r.size == size);
    let mut ratios = BTreeMap::new();
    let mut targets = Vec::new();
    let mut md = String::new();
    for &size in &sizes {
        let ours = get("kbeast", size);
        let chroma = get("chroma", size);
        let metric = |run: Option<&RunResult>, mode: &str, c: usize, f: fn(&ModeResult) -> f64| {
            run.and_then(|r| find(r, mode, c)).map(f)
        };
        let cn = ours
            .or(chroma)
            .and_then(|r| r.searches.iter().map(|s| s.concurrency).max())
            .unwrap_or(16);
        let p50 = |m: &ModeResult| m.latency.p50_ms;
        let p99 = |m: &ModeResult| m.latency.p99_ms;
        let qps = |m: &ModeResult| m.latency.qps;
        let r = Ratios {
            vector_p50_c1: ratio(
                metric(ours, "vector", 1, p50),
                metric(chroma, "vector", 1, p50),
            ),
            vector_p99_c1: ratio(
                metric(ours, "vector", 1, p99),
                metric(chroma, "vector", 1, p99),
            ),
            vector_p50_cn: ratio(
                metric(ours, "vector", cn, p50),
                metric(chroma, "vector", cn, p50),
            ),
            vector_p99_cn: ratio(
                metric(ours, "vector", cn, p99),
                metric(chroma, "vector", cn, p99),
            ),
            vector_qps_cn: ratio(
                metric(ours, "vector", cn, qps),
                metric(chroma, "vector", cn, qps),
            ),
            ingest: ratio(
                ours.map(|r| r.ingest.chunks_per_sec),
                chroma.map(|r| r.ingest.chunks_per_sec),
            ),
        };

        let _ = writeln!(md, "### {size} chunks\n");
        let _ = writeln!(
            md,
            "| System | Mode | Concurrency | p50 ms | p90 ms | p99 ms | QPS | Errors |\n|---|---|---|---|---|---|---|---|"
        );
        for run in [ours, chroma].into_iter().flatten() {
            for s in &run.searches {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.0} | {} |",
                    run.system,
                    s.mode,
                    s.concurrency,
                    s.latency.p50_ms,
                    s.latency.p90_ms,
                    s.latency.p99_ms,
                    s.latency.qps,
                    s.latency.errors
                );
            }
        }
        let _ = writeln!(
            md,
            "\n| System | Ingest chunks/s | Ingest s | recall@10 (vector) | RSS after searches MiB | of it own (anon) / mapped files MiB | Peak RSS MiB |\n|---|---|---|---|---|---|---|"
        );
        let mib = |bytes: u64| bytes as f64 / 1048576.0;
        for run in [ours, chroma].into_iter().flatten() {
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.1} | {:.4} | {:.0} | {:.0} / {:.0} | {:.0} |",
                run.system,
                run.ingest.chunks_per_sec,
                run.ingest.seconds,
                run.vector_recall_at_k,
                mib(run.memory_after.rss_bytes),
                mib(run.memory_after.rss_anon_bytes),
                mib(run.memory_after.rss_file_bytes),
                mib(run.memory_after.peak_rss_bytes)
            );
        }
        let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.2}"));
        let _ = writeln!(
            md,
            "\nkbeast / Chroma (vector): p50 {} (c1), p99 {} (c1), p50 {} (c{cn}), p99 {} (c{cn}), QPS {} (c{cn}), ingest {}\n",
            fmt(r.vector_p50_c1),
            fmt(r.vector_p99_c1),
            fmt(r.vector_p50_cn),
            fmt(r.vector_p99_cn),
            fmt(r.vector_qps_cn),
            fmt(r.ingest)
        );

        // The targets that apply to this size.
        let mut target =
            |name: &str, goal: &str, measured: Option<f64>, unit: &str, met: Option<bool>| {
                targets.push(Target {
                    size,
                    name: name.into(),
                    target: goal.into(),
                    measured: measured.map_or("not measured".into(), |m| format!("{m:.2}{unit}")),
                    met,
                })
            };
        let v_p50 = metric(ours, "vector", 1, p50);
        let v_p99 = metric(ours, "vector", 1, p99);
        if size <= 10_000 {
            target(
                "vector p50, c1",
                "≤ 1.5 ms",
                v_p50,
                " ms",
                v_p50.map(|v| v <= 1.5),
            );
            target(
                "vector p99, c1",
                "≤ 4 ms",
                v_p99,
                " ms",
                v_p99.map(|v| v <= 4.0),
            );
            let h99 = metric(ours, "hybrid", 1, p99);
            target(
                "hybrid p99, c1",
                "≤ 10 ms",
                h99,
                " ms",
                h99.map(|v| v <= 10.0),
            );
            target(
                &format!("vector QPS c{cn} / Chroma"),
                "≥ 2×",
                r.vector_qps_cn,
                "×",
                r.vector_qps_cn.map(|v| v >= 2.0),
            );
        } else {
            let recall = ours.map(|r| r.vector_recall_at_k);
            target(
                "vector p99, c1",
                "≤ 6 ms",
                v_p99,
                " ms",
                v_p99.map(|v| v <= 6.0),
            );
            target(
                "vector recall@10",
                "≥ 0.95",
                recall,
                "",
                recall.map(|v| v >= 0.95),
            );
        }
        let ingest = ours.map(|r| r.ingest.chunks_per_sec);
        target(
            "ingest",
            "≥ 5,000 chunks/s",
            ingest,
            " chunks/s",
            ingest.map(|v| v >= 5000.0),
        );
        target(
            "ingest / Chroma",
            "≥ 2×",
            r.ingest,
            "×",
            r.ingest.map(|v| v >= 2.0),
        );
        if size >= 100_000 {
            let startup = startups
                .iter()
                .find(|s| s.size == size)
                .map(|s| s.median_ready_ms);
            target(
                "startup to ready",
                "≤ 2000 ms",
                startup,
                " ms",
                startup.map(|v| v <= 2000.0),
            );
            let rss = ours.map(|r| r.memory_after.rss_bytes as f64 / 1048576.0);
            target(
                "RSS after searches",
                "≤ 256 MiB",
                rss,
                " MiB",
                rss.map(|v| v <= 256.0),
            );
        }
        ratios.insert(size, r);
    }
    for s in &startups {
        let _ = writeln!(
            md,
            "Startup with {} chunks on disk: {:.0} ms to ready (median of {:?}), RSS when ready {:.0} MiB\n",
            s.size,
            s.median_ready_ms,
            s.ready_ms.iter().map(|v| v.round()).collect::<Vec<_>>(),
            s.memory_when_ready.rss_bytes as f64 / 1048576.0
        );
    }
    let _ = writeln!(
        md,
        "| Size | Target | Goal | Measured | Met |\n|---|---|---|---|---|"
    );
    for t in &targets {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "n/a",
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {met} |",
            t.size, t.name, t.target, t.measured
        );
    }
    let machine = runs.first().map(|r| r.machine.clone());
    if let Some(m) = &machine {
        let _ = writeln!(
            md,
            "\nMachine: {} ({} cores), {:.1} GiB, Linux {}, {}, commit {}{}, server {} build, load generator {} build.",
            m.cpu_model,
            m.cores,
            m.memory_bytes as f64 / 1073741824.0,
            m.kernel,
            m.rustc,
            m.git_commit,
            if m.git_dirty { " (dirty)" } else { "" },
            m.server_profile,
            m.loadgen_profile
        );
    }
    let summary = Summary {
        machine,
        ratios,
        targets,
        runs,
        startups,
    };
    let out = args.dir.join("summary.json");
    std::fs::write(&out, serde_json::to_string_pretty(&summary)? + "\n")?;
    std::fs::write(args.dir.join("summary.md"), &md)?;
    print!("{md}");
    eprintln!("wrote {}", out.display());
    Ok(())
}
