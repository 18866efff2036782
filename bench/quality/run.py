#!/usr/bin/env python3
"""Retrieval-quality benchmark of kbeast-query on SciFact (BEIR), not part of CI.

    nice -n 19 python3 bench/quality/run.py [--binary PATH] [--model-dir DIR]
        [--dataset ../shared/ireval/scifact] [--configs default,whole-doc,hash]
    nice -n 19 python3 bench/quality/run.py --url http://127.0.0.1:8080 --key SECRET

For each server configuration it starts `kbeast-query serve --embedder builtin` on a fresh
temporary directory (or uses the running server given by --url/--key), ingests the corpus
(title + "\\n" + text, id = _id), waits until every index covers every row, then runs every
judged test query in the modes vector, keyword and hybrid with top_k 100 (chunk hits are
collapsed to the first hit of each document) and once more with top_k 10, as a client would
ask. It reports nDCG@10, recall@10, MRR@10 and latency per mode, plus reference rows computed
here: Okapi BM25 (k1 0.9, b 0.4) over the same documents and dense-only exact search (the
server's exact vector mode, restricted to each document's first chunk: one vector per document
of its first ~1,000 characters, close to the published protocol of one vector per document cut
at 256 model tokens; and the `whole-doc` configuration's vector mode).

Results go to bench/results/quality-<UTC timestamp>/result.json (metrics and machine info
only; no text of the data set). The candidate lists of every query and mode (ids and scores)
are cached outside the repository, under ~/.cache/kbeast/quality/, for bench/quality/fusion.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ireval  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("KBEAST_CACHE", Path.home() / ".cache" / "kbeast"))
MODES = ("vector", "keyword", "hybrid")

# Published SciFact nDCG@10 figures the goals refer to.
PUBLISHED = {
    "bm25": 0.665,  # BEIR paper (Thakur et al., 2021), Elasticsearch BM25
    "all-MiniLM-L6-v2": 0.645,  # MTEB, sentence-transformers all-MiniLM-L6-v2
}
GOALS = {"hybrid_ndcg@10_at_least": 0.72, "vector_within_of_published_minilm": 0.01}

# Server configurations: extra `serve` flags. `default` is what a deployment runs;
# `whole-doc` asks for one chunk per document (SciFact's longest is ~10k characters); the
# builtin embedder's ingest still halves every chunk the model cannot read whole (over 256
# tokens) until the pieces fit, so documents become one to a few model-sized chunks.
# `hash` swaps the embedder for the feature-hashing one: a deliberately weak vector half, to
# test that hybrid does not fall below its better half (fusion research only).
CONFIGS = {
    "default": ("builtin", []),
    "whole-doc": ("builtin", ["--chunk-size", "100000", "--chunk-overlap", "0"]),
    "hash": ("hash", []),
}


# ---------------------------------------------------------------------------
# HTTP


class Client:
    def __init__(self, url: str, key: str, timeout: float = 300.0):
        self.url, self.key, self.timeout = url.rstrip("/"), key, timeout

    def call(self, method: str, path: str, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return json.load(resp)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=5) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False


# ---------------------------------------------------------------------------
# Machine info


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info(binary: str | None) -> dict:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in open("/proc/meminfo", encoding="utf-8"):
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    os_name = platform.platform()
    try:
        for line in open("/etc/os-release", encoding="utf-8"):
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    info = {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "git_commit": _run(["git", "-C", str(ROOT), "rev-parse", "HEAD"]),
        "git_dirty": bool(_run(["git", "-C", str(ROOT), "status", "--porcelain"])),
        "load_average_at_start": list(os.getloadavg()),
    }
    if binary:
        st = os.stat(binary)
        info["binary"] = {
            "path": binary,
            "bytes": st.st_size,
            "modified": dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc).isoformat(),
            "version": _run([binary, "--version"]),
        }
    return info


# ---------------------------------------------------------------------------
# Server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_model_dir() -> Path:
    for d in sorted((CACHE / "models").glob("all-MiniLM-L6-v2*"), reverse=True):
        for cand in [d, *sorted(p.parent for p in d.rglob("model.safetensors"))]:
            if (cand / "model.safetensors").exists() and (cand / "tokenizer.json").exists():
                return cand
    raise SystemExit(
        "no all-MiniLM-L6-v2 weights under ~/.cache/kbeast/models; run scripts/fetch-minilm.sh "
        "or pass --model-dir"
    )


class Server:
    def __init__(self, binary: str, embedder: str, model_dir: Path | None, extra: list[str],
                 workdir: Path):
        self.data = Path(tempfile.mkdtemp(prefix="data-", dir=workdir))
        self.port = free_port()
        model = ["--builtin-model-dir", str(model_dir)] if embedder == "builtin" else []
        self.args = [
            "--embedder", embedder,
            *model,
            "--request-timeout-secs", "300",
            "--shutdown-delay-ms", "0",
            "--log", "warn",
            *extra,
        ]
        cmd = ["nice", "-n", "19", binary, "serve", "--data", str(self.data),
               "--listen", f"127.0.0.1:{self.port}", *self.args]
        self.log = open(workdir / f"server-{self.port}.log", "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 300
        probe = Client(self.url, "")
        while not probe.ready():
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}; see {self.log.name}")
            if time.time() > deadline:
                self.stop()
                raise SystemExit("server not ready after 300 s")
            time.sleep(0.5)
        key = None
        for line in (self.data / "api-keys.yaml").read_text().splitlines():
            if line.strip().startswith("secret:"):
                key = line.split(":", 1)[1].strip().strip('"').strip("'")
        if not key:
            self.stop()
            raise SystemExit("no secret in the generated api-keys.yaml")
        self.client = Client(self.url, key)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# ---------------------------------------------------------------------------
# Benchmark steps


def ingest(client: Client, corpus: dict, batch: int, workers: int) -> dict:
    ids = sorted(corpus)
    batches = [ids[i : i + batch] for i in range(0, len(ids), batch)]
    retries = 0

    def send(chunk_ids):
        nonlocal retries
        docs = [
            {"id": d, "text": ireval.document_text(*corpus[d]), "source": "bench-quality"}
            for d in chunk_ids
        ]
        for attempt in range(8):
            try:
                r = client.call("POST", "/v1/documents", {"documents": docs})
                return sum(x["chunks"] for x in r["documents"])
            except urllib.error.HTTPError as e:
                if e.code in (408, 429, 503) and attempt < 7:
                    retries += 1
                    time.sleep(2**attempt)
                    continue
                raise SystemExit(f"ingest failed: {e.code} {e.read()[:300]!r}")
        raise AssertionError

    started = time.time()
    chunks, done = 0, 0
    with ThreadPoolExecutor(workers) as pool:
        for n in pool.map(send, batches):
            chunks += n
            done += 1
            if done % 20 == 0 or done == len(batches):
                rate = done * batch / (time.time() - started)
                print(f"  ingested {min(done * batch, len(ids))}/{len(ids)} docs "
                      f"({rate:.1f} docs/s)", file=sys.stderr, flush=True)
    seconds = time.time() - started
    return {"documents": len(ids), "chunks": chunks, "seconds": round(seconds, 1),
            "batch_documents": batch, "concurrent_requests": workers, "retries": retries,
            "documents_per_second": round(len(ids) / seconds, 2)}


def wait_indexed(client: Client, expected_docs: int, timeout: float = 300) -> dict:
    """Waits until every document is in and the indices' coverage has stopped changing for
    10 s (the server folds new rows into its indices in the background once
    --index-every-chunks chunks are unindexed; fewer stay unindexed and are scanned, which
    is how a deployment serves them too). Returns the stats, which also show whether a
    vector index exists."""
    deadline = time.time() + timeout
    last, since = None, time.time()
    while True:
        stats = client.call("GET", "/v1/stats")
        coverage = json.dumps(stats.get("indices"), sort_keys=True)
        if coverage != last:
            last, since = coverage, time.time()
        fts = [i for i in stats.get("indices", []) if i.get("index_type") == "FTS"]
        done = stats.get("documents") == expected_docs and (
            all(i.get("unindexed_rows") == 0 for i in fts) or time.time() - since >= 10
        )
        if done or time.time() > deadline:
            return stats
        time.sleep(1)


def run_queries(client: Client, queries: dict, mode: str, top_k: int) -> tuple[dict, list, list]:
    lists, wall, took = {}, [], []
    for qid in sorted(queries, key=lambda q: (len(q), q)):
        body = {"query": queries[qid], "mode": mode, "top_k": top_k}
        t0 = time.perf_counter()
        r = client.call("POST", "/v1/search", body)
        wall.append((time.perf_counter() - t0) * 1000)
        took.append(r.get("took_ms", float("nan")))
        if r.get("degraded"):
            raise SystemExit(f"search degraded (embedder failing) in mode {mode}")
        lists[qid] = [[h["chunk_id"], h["doc_id"], h["score"]] for h in r["hits"]]
    return lists, wall, took


def row(name: str, runs: dict, qrels: dict, **extra) -> tuple[dict, dict]:
    ev = ireval.evaluate(runs, qrels)
    out = {"name": name, **{k: round(v, 4) for k, v in ev.items() if k not in ("per_query", "queries")},
           "queries": ev["queries"], **extra}
    return out, ev["per_query"]


def latency(values: list[float]) -> dict:
    return {"p50": round(ireval.percentile(values, 50), 2),
            "p99": round(ireval.percentile(values, 99), 2),
            "mean": round(sum(values) / len(values), 2)}


def bench_config(name, client, corpus, queries, qrels, args, server_args):
    print(f"[{name}] ingesting {len(corpus)} documents", file=sys.stderr, flush=True)
    stats0 = client.call("GET", "/v1/stats")
    if stats0.get("documents") == len(corpus) and args.url:
        ingest_info = {"skipped": "the server already held every document"}
    else:
        ingest_info = ingest(client, corpus, args.batch, args.ingest_workers)
    stats = wait_indexed(client, len(corpus))
    vector_index = [i["name"] for i in stats.get("indices", [])
                    if i.get("index_type") not in ("FTS", "BTREE", "INVERTED")]
    print(f"[{name}] {stats.get('chunks')} chunks; searching", file=sys.stderr, flush=True)
    # Warm-up (not measured): load posting lists, the in-memory vector copy, the model.
    warm = dict(list(sorted(queries.items()))[:10])
    for mode in MODES:
        run_queries(client, warm, mode, args.top_k)
    rows, per_query, cache_lists = [], {}, {}
    for top_k in (args.top_k, 10):
        for mode in MODES:
            lists, wall, took = run_queries(client, queries, mode, top_k)
            if top_k == args.top_k:
                cache_lists[mode] = lists
            runs = {q: ireval.collapse(d for _, d, _ in hits) for q, hits in lists.items()}
            distinct = [len(r) for r in runs.values()]
            r, pq = row(
                f"{name}/{mode}" + ("" if top_k == args.top_k else f"@top_k={top_k}"),
                runs, qrels, config=name, mode=mode, top_k=top_k,
                distinct_docs_min=min(distinct), distinct_docs_mean=round(sum(distinct) / len(distinct), 1),
                latency_ms_client=latency(wall), latency_ms_server_took=latency(took),
            )
            rows.append(r)
            if top_k == args.top_k:
                per_query[mode] = pq
            print(f"  {r['name']}: nDCG@10 {r['ndcg@10']:.4f} recall@10 {r['recall@10']:.4f} "
                  f"MRR@10 {r['mrr@10']:.4f} p50 {r['latency_ms_client']['p50']} ms",
                  file=sys.stderr, flush=True)
    info = {"name": name, "server_args": server_args, "ingest": ingest_info,
            "chunks": stats.get("chunks"), "documents": stats.get("documents"),
            "indices_at_search": stats.get("indices"), "vector_index": vector_index or None,
            "vector_search": "exact (no vector index; the in-memory float copy or a flat scan)"
            if not vector_index else "approximate (vector index present)"}
    return info, rows, per_query, cache_lists


def first_chunk_id(doc_id: str) -> str:
    """The server's id of a document's first chunk: hex(sha256(doc_id, 0x00, "0"))[..32]."""
    return hashlib.sha256(doc_id.encode() + b"\x00" + b"0").hexdigest()[:32]


def add_dense_references(result: dict, cache: dict, qrels: dict) -> None:
    """Dense-only exact reference rows, from the cached vector lists (the vector search is
    exact at this size: `configs[].vector_index` is null)."""
    lists = cache["configs"].get("default", {}).get("lists", {}).get("vector")
    if lists:
        runs = {q: [d for c, d, _ in hits if c == first_chunk_id(d)] for q, hits in lists.items()}
        r, _ = row("reference/dense exact, first chunk per document (MiniLM)", runs, qrels,
                   kind="dense", distinct_docs_min=min(len(x) for x in runs.values()),
                   how="the default configuration's vector mode (top 100 chunks, exact cosine) "
                       "keeping only each document's first chunk (~1,000 characters): one vector "
                       "per document of its beginning, close to the published protocol (one "
                       "vector per document, input cut at 256 tokens)")
        result["references"].append(r)
    whole = next((m for m in result["modes"] if m["name"] == "whole-doc/vector"), None)
    if whole:
        ref = {k: v for k, v in whole.items() if k not in ("name", "config", "mode")}
        ref.update(name="reference/dense exact, model-sized chunks (MiniLM, whole-doc config)",
                   kind="dense",
                   how="the whole-doc configuration's vector mode: a document is one chunk when "
                       "it fits the model's 256 tokens, else halved until its pieces fit; "
                       "document score = its best chunk's cosine; exact search")
        result["references"].append(ref)


def write_cache(cache: dict, dataset: str, stamp: str) -> None:
    """Candidate lists (ids and scores) outside the repository, for fusion.py."""
    qdir = CACHE / "quality"
    path = qdir / f"lists-{dataset}-{stamp}.json"
    path.write_text(json.dumps(cache))
    latest = qdir / f"lists-{dataset}-latest.json"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(path.name)
    print(f"cached candidate lists in {path}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "ireval", "scifact"),
                    help="BEIR directory with corpus.jsonl, queries.jsonl, qrels.tsv (or qrels/test.tsv)")
    ap.add_argument("--binary", default=os.environ.get("KBEAST_QUERY_BIN", os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/kbeast/target")), "release", "kbeast-query")))
    ap.add_argument("--build", default=None,
                    help="build type of the binary for the result (default: guessed, 'debug' "
                         "unless the path says release)")
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--configs", default="default,whole-doc,hash",
                    help=f"server configurations to run, of {', '.join(CONFIGS)}")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="extra flag for every started server (repeat; e.g. --server-arg=--chunk-size=800)")
    ap.add_argument("--url", help="use this running server instead (one configuration, 'external')")
    ap.add_argument("--key", help="admin (or read+write) key of --url")
    ap.add_argument("--top-k", type=int, default=100)
    ap.add_argument("--batch", type=int, default=16, help="documents per ingest request")
    ap.add_argument("--ingest-workers", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-cache", action="store_true", help="do not write the candidate-list cache")
    args = ap.parse_args()

    ds = Path(args.dataset)
    qrels_path = ds / "qrels.tsv" if (ds / "qrels.tsv").exists() else ds / "qrels" / "test.tsv"
    corpus = ireval.load_corpus(ds / "corpus.jsonl")
    all_queries = ireval.load_queries(ds / "queries.jsonl")
    qrels = ireval.load_qrels(qrels_path)
    queries = {q: all_queries[q] for q in qrels}
    missing = set(qrels) - set(all_queries)
    if missing:
        raise SystemExit(f"{len(missing)} judged queries have no text")

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"quality-{stamp}"
    workdir = CACHE / "quality" / "work" / stamp
    workdir.mkdir(parents=True, exist_ok=True)
    binary = None if args.url else args.binary
    build = args.build or ("unknown (external server)" if args.url else
                           "release" if "release" in str(Path(binary).resolve()) else
                           "debug (dependencies such as candle compiled optimised; latencies are "
                           "not release numbers)")
    result = {
        "benchmark": "retrieval-quality",
        "started_utc": stamp,
        "build": build,
        "dataset": {"name": ds.name, "split": qrels_path.stem if qrels_path.stem != "qrels" else "test",
                    "documents": len(corpus), "judged_queries": len(queries),
                    "judgments": sum(len(v) for v in qrels.values())},
        "protocol": {
            "document_text": "title + '\\n' + text; id = _id",
            "metrics": "nDCG@10 (graded gains, log2 discount, ideal from qrels; pytrec_eval/BEIR), "
                       "recall@10, MRR@10, averaged over all judged test queries",
            "collapse": "chunk hits -> first hit of each doc_id, in rank order",
            "top_k": args.top_k,
            "latency": "sequential single client over loopback, one request at a time, after a "
                       "10-query warm-up per mode; client = wall time of the HTTP request (JSON "
                       "of top_k hits with their text included), server = took_ms",
        },
        "published": PUBLISHED,
        "goals": GOALS,
        "machine": machine_info(binary),
        "configs": [],
        "modes": [],
        "references": [],
    }

    per_query_all, cache = {}, {"dataset": str(ds), "qrels": str(qrels_path), "stamp": stamp,
                                "git_commit": result["machine"]["git_commit"], "configs": {}}
    if args.url:
        if not args.key:
            raise SystemExit("--url needs --key")
        todo = [("external", None)]
    else:
        todo = [(c, CONFIGS[c]) for c in args.configs.split(",")]
    model_dir = None if args.url else Path(args.model_dir) if args.model_dir else find_model_dir()
    for name, extra in todo:
        server = None
        try:
            if extra is None:
                client, server_args = Client(args.url, args.key), ["(external)"]
            else:
                embedder, flags = extra
                server = Server(binary, embedder, model_dir, [*flags, *args.server_arg], workdir)
                client, server_args = server.client, server.args
            info, rows, pq, lists = bench_config(name, client, corpus, queries, qrels, args, server_args)
        finally:
            if server:
                server.stop()
        result["configs"].append(info)
        result["modes"].extend(rows)
        per_query_all[name] = pq
        cache["configs"][name] = {"server_args": server_args, "chunks": info["chunks"], "lists": lists}
        if not args.no_cache:  # after every configuration, so a failed run keeps what it measured
            write_cache(cache, ds.name, stamp)

    # Reference rows.
    print("[reference] BM25 in Python", file=sys.stderr, flush=True)
    docs = {d: ireval.document_text(*corpus[d]) for d in corpus}
    for label, stop, stem in (("stopwords", True, False), ("stopwords+porter", True, True)):
        t0 = time.time()
        bm25 = ireval.BM25(docs, ireval.Tokenizer(stopwords=stop, stem=stem), k1=0.9, b=0.4)
        runs = {q: [d for d, _ in bm25.search(queries[q], 100)] for q in queries}
        r, pq = row(f"reference/bm25 ({label})", runs, qrels, kind="bm25", k1=0.9, b=0.4,
                    tokenizer=f"lower-case, split on non-alphanumerics, Lucene English stop words"
                              + (", Porter stemmer" if stem else ", no stemming"),
                    seconds=round(time.time() - t0, 1))
        result["references"].append(r)
        per_query_all.setdefault("reference", {})[f"bm25 ({label})"] = pq
        print(f"  {r['name']}: nDCG@10 {r['ndcg@10']:.4f}", file=sys.stderr)
    add_dense_references(result, cache, qrels)

    # Goals.
    by = {m["name"]: m for m in result["modes"]}
    main_cfg = todo[0][0]
    v, k, h = (by.get(f"{main_cfg}/{m}") for m in MODES)
    if h and v and k:
        result["goals_met"] = {
            "hybrid_ndcg@10": h["ndcg@10"],
            "hybrid_at_least_0.72": h["ndcg@10"] >= GOALS["hybrid_ndcg@10_at_least"],
            "hybrid_not_below_better_half": h["ndcg@10"] >= max(v["ndcg@10"], k["ndcg@10"]),
            "vector_within_0.01_of_published": abs(v["ndcg@10"] - PUBLISHED["all-MiniLM-L6-v2"])
            <= GOALS["vector_within_of_published_minilm"],
            "vector_minus_published": round(v["ndcg@10"] - PUBLISHED["all-MiniLM-L6-v2"], 4),
            "config": main_cfg,
        }
        first = next((r for r in result["references"] if "first chunk" in r["name"]), None)
        if first:
            # The embedder itself, on the published protocol's one vector per document.
            result["goals_met"]["dense_first_chunk_within_0.01_of_published"] = (
                abs(first["ndcg@10"] - PUBLISHED["all-MiniLM-L6-v2"])
                <= GOALS["vector_within_of_published_minilm"])
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    result["finished_utc"] = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out / 'result.json'}", file=sys.stderr)

    if not args.no_cache:
        cache["per_query_metrics"] = per_query_all
        write_cache(cache, ds.name, stamp)


if __name__ == "__main__":
    main()
