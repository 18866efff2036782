#!/usr/bin/env python3
"""Offline hybrid-fusion experiments on the candidate lists cached by run.py.

    python3 bench/quality/fusion.py [--lists ~/.cache/kbeast/quality/lists-scifact-latest.json]
                                    [--out bench/results/quality-<stamp>/fusion.json]

Per query, run.py cached the server's top-100 chunks (id, document, score) of the vector and the
keyword mode for each server configuration (default chunking, whole-document chunks, and the
feature-hashing embedder as a deliberately weak vector half). Here each fusion method is
applied to those two lists the way the server would (fuse chunks, then collapse the fused chunk
ranking to documents) and scored with nDCG@10, recall@10 and MRR@10.

Honesty about tuning: every method is reported (1) at its a-priori parameter (the customary
default, chosen before looking at any result), (2) at the best parameter on all queries (an
optimistic, overfitted number), and (3) cross-validated: over 50 random halvings of the queries
the parameter is tuned on one half and scored on the other. Robustness: the spread of nDCG@10
over each parameter grid, per-query wins/losses against the better single mode, a paired
bootstrap of "fusion below the better single mode", the transfer of SciFact-tuned parameters to
the other configurations, and a degradation sweep in which one mode's list is replaced, for a
growing share of queries, by the list of an unrelated query.

The output holds aggregate metrics only (nothing of the data set).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ireval  # noqa: E402
from ireval import rrf, score_fusion  # noqa: E402

CACHE = Path.home() / ".cache" / "kbeast" / "quality"
ALPHAS = [round(i * 0.05, 2) for i in range(21)]  # weight of the vector list


def convex(method, **kw):
    def fuse(vec, key, alpha):
        return score_fusion([vec, key], method=method, weights=[alpha, 1 - alpha], **kw)
    return fuse


# name -> (description, parameter name, grid, a-priori value, fuse(vec, key, p) -> fused chunks)
METHODS = {
    "rrf": ("reciprocal-rank fusion, sum 1/(k + rank)", "k",
            [1, 2, 5, 10, 20, 30, 40, 60, 80, 100, 150, 200, 500], 60,
            lambda v, k, p: rrf([v, k], k=p)),
    "rrf-weighted": ("weighted RRF (k = 60), w·1/(60+rank_vec) + (1-w)·1/(60+rank_kw)", "w",
                     ALPHAS, 0.5, lambda v, k, p: rrf([v, k], k=60, weights=[p, 1 - p])),
    "minmax": ("convex combination of min-max normalised scores (missing = 0)", "alpha",
               ALPHAS, 0.5, convex("minmax")),
    "tmm": ("convex combination, theoretical min-max: (s - floor)/(max - floor), floors "
            "cosine 0, BM25 0 (missing = 0 / list minimum)", "alpha", ALPHAS, 0.5,
            convex("tmm", floors=[0.0, 0.0])),
    "recommended": ("tmm as proposed for hybrid.rs: s/max with negatives clamped to 0; absent "
                    "from a cut list = that list's last score, from an exhausted list = 0",
                    "alpha", ALPHAS, 0.5,
                    lambda v, k, p: score_fusion([v, k], method="tmm", weights=[p, 1 - p],
                                                 floors=[0.0, 0.0], depth=100,
                                                 missing="floor-unless-exhausted")),
    "tmm-missing0": ("as tmm, but a candidate absent from a list scores 0 there", "alpha",
                     ALPHAS, 0.5, convex("tmm", floors=[0.0, 0.0], missing="zero")),
    "tmm-cos-1": ("as tmm but with the cosine floor at its theoretical -1", "alpha", ALPHAS, 0.5,
                  convex("tmm", floors=[-1.0, 0.0])),
    "maxnorm": ("convex combination of s / max(s) (missing = list minimum)", "alpha", ALPHAS, 0.5,
                convex("max")),
    "zscore": ("convex combination of z-scores (missing = list minimum)", "alpha", ALPHAS, 0.5,
               convex("zscore")),
    "zscore-missing0": ("convex combination of z-scores (missing = 0, the list mean)", "alpha",
                        ALPHAS, 0.5, convex("zscore", missing="zero")),
    "dbsf": ("distribution-based score fusion: [mean-3sd, mean+3sd] -> [0,1], convex "
             "(missing = list minimum)", "alpha", ALPHAS, 0.5, convex("dbsf")),
    "combmnz": ("CombMNZ over min-max scores: weighted sum x number of lists that found it",
                "alpha", ALPHAS, 0.5, convex("minmax", combine="mnz")),
    "combmax": ("CombMAX over min-max scores (weighted)", "alpha", ALPHAS, 0.5,
                convex("minmax", combine="max")),
    "borda": ("Borda (linear rank score 1 - i/n), convex", "alpha", ALPHAS, 0.5, convex("rank")),
}


def doc_level(lst):
    """Collapse a chunk list to its documents (first = best chunk), keeping that chunk."""
    seen, out = set(), []
    for cid, did, s in lst:
        if did not in seen:
            seen.add(did)
            out.append((did, did, s))
    return out


class Bench:
    def __init__(self, lists: dict, qrels: dict, depth: int = 100, granularity: str = "chunk"):
        self.qrels = qrels
        self.qids = sorted(qrels)
        self.depth = depth
        self.granularity = granularity
        self.vec = {q: [tuple(x) for x in lists["vector"].get(q, [])][:depth] for q in self.qids}
        self.key = {q: [tuple(x) for x in lists["keyword"].get(q, [])][:depth] for q in self.qids}
        if granularity == "doc":
            self.vec = {q: doc_level(v) for q, v in self.vec.items()}
            self.key = {q: doc_level(v) for q, v in self.key.items()}
        self.single = {m: self.per_query_of(lambda v, k, _m=m: v if _m == "vector" else k)
                       for m in ("vector", "keyword")}

    def per_query_of(self, fuse, vec=None, key=None) -> dict[str, list[float]]:
        vec, key = vec or self.vec, key or self.key
        out = {"ndcg@10": [], "recall@10": [], "mrr@10": []}
        for q in self.qids:
            fused = fuse(vec[q], key[q])
            ranked = ireval.collapse(d for _, d, _ in fused)
            m = ireval.per_query_metrics(ranked, self.qrels[q])
            for name in out:
                out[name].append(m[name])
        return out


def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def bootstrap_below(fused: list[float], better: list[float], n: int = 2000, seed: int = 7) -> float:
    """Paired bootstrap: share of resamples of queries in which fusion's mean is below."""
    rng = random.Random(seed)
    diffs = [f - b for f, b in zip(fused, better)]
    size, below = len(diffs), 0
    for _ in range(n):
        if sum(diffs[rng.randrange(size)] for _ in range(size)) < 0:
            below += 1
    return below / n


def study(bench: Bench, methods=METHODS, splits: int = 50, seed: int = 11) -> dict:
    if bench.granularity == "doc":
        # Collapsed lists are shorter than the depth asked of the server, which the
        # recommended rule would take for exhausted lists: not meaningful there.
        methods = {n: m for n, m in methods.items() if n != "recommended"}
    vec_nd, key_nd = bench.single["vector"]["ndcg@10"], bench.single["keyword"]["ndcg@10"]
    better_name = "vector" if mean(vec_nd) >= mean(key_nd) else "keyword"
    better = bench.single[better_name]["ndcg@10"]
    per_query_best = [max(a, b) for a, b in zip(vec_nd, key_nd)]
    out = {"queries": len(bench.qids), "depth": bench.depth, "granularity": bench.granularity,
           "vector": {k: round(mean(v), 4) for k, v in bench.single["vector"].items()},
           "keyword": {k: round(mean(v), 4) for k, v in bench.single["keyword"].items()},
           "better_half": better_name, "methods": {}}
    rng = random.Random(seed)
    halvings = []
    for _ in range(splits):
        idx = list(range(len(bench.qids)))
        rng.shuffle(idx)
        halvings.append((idx[: len(idx) // 2], idx[len(idx) // 2:]))
    for name, (desc, pname, grid, apriori, fuse) in methods.items():
        curves = {}
        for p in grid:
            curves[p] = bench.per_query_of(lambda v, k, _p=p: fuse(v, k, _p))
        nd = {p: mean(c["ndcg@10"]) for p, c in curves.items()}
        best_p = max(grid, key=lambda p: (nd[p], -abs(grid.index(p) - grid.index(apriori))))
        a = curves[apriori]
        # Cross-validation: tune on one half, score the other (both directions).
        cv_test, cv_gain = [], []
        for h1, h2 in halvings:
            for train, test in ((h1, h2), (h2, h1)):
                tuned = max(grid, key=lambda p: mean([curves[p]["ndcg@10"][i] for i in train]))
                t = mean([curves[tuned]["ndcg@10"][i] for i in test])
                cv_test.append(t)
                cv_gain.append(t - mean([a["ndcg@10"][i] for i in test]))
        wins = sum(f > b + 1e-9 for f, b in zip(a["ndcg@10"], better))
        losses = sum(f < b - 1e-9 for f, b in zip(a["ndcg@10"], better))
        below_any = sum(f < pb - 1e-9 for f, pb in zip(a["ndcg@10"], per_query_best))
        flat = [p for p in grid if nd[p] >= nd[best_p] - 0.005]
        out["methods"][name] = {
            "description": desc, "parameter": pname, "apriori": apriori,
            "apriori_ndcg@10": round(nd[apriori], 4),
            "apriori_recall@10": round(mean(a["recall@10"]), 4),
            "apriori_mrr@10": round(mean(a["mrr@10"]), 4),
            "tuned": best_p, "tuned_ndcg@10": round(nd[best_p], 4),
            "cv_test_ndcg@10_mean": round(mean(cv_test), 4),
            "cv_test_ndcg@10_sd": round(statistics.pstdev(cv_test), 4),
            "cv_gain_over_apriori": round(mean(cv_gain), 4),
            "grid_ndcg@10": {str(p): round(v, 4) for p, v in nd.items()},
            "grid_min": round(min(nd.values()), 4), "grid_max": round(max(nd.values()), 4),
            "within_0.005_of_best": [flat[0], flat[-1]],
            "apriori_vs_better_half": {"wins": wins, "ties": len(better) - wins - losses,
                                       "losses": losses,
                                       "mean_delta": round(mean(a["ndcg@10"]) - mean(better), 4),
                                       "p_below_bootstrap": bootstrap_below(a["ndcg@10"], better)},
            "apriori_queries_below_their_own_best_half": below_any,
        }
    return out


def degrade(bench: Bench, side: str, share: float, seed: int = 5):
    """Replaces `side`'s list of `share` of the queries by the list of another query."""
    rng = random.Random(seed)
    qids = bench.qids
    chosen = set(rng.sample(qids, int(round(share * len(qids)))))
    donors = qids[:]
    rng.shuffle(donors)
    src = bench.vec if side == "vector" else bench.key
    new = {}
    for i, q in enumerate(qids):
        if q in chosen:
            d = donors[i] if donors[i] != q else donors[(i + 1) % len(donors)]
            new[q] = src[d]
        else:
            new[q] = src[q]
    return (new, bench.key) if side == "vector" else (bench.vec, new)


def sweep(bench: Bench, params: dict, shares=(0.0, 0.2, 0.4, 0.6, 0.8)) -> list:
    rows = []
    for side in ("vector", "keyword"):
        for share in shares:
            vec, key = degrade(bench, side, share)
            v = mean(bench.per_query_of(lambda a, b: a, vec, key)["ndcg@10"])
            k = mean(bench.per_query_of(lambda a, b: b, vec, key)["ndcg@10"])
            row = {"degraded": side, "share": share, "vector": round(v, 4), "keyword": round(k, 4)}
            for name, p in params.items():
                fuse = METHODS[name][4]
                row[f"{name}={p}"] = round(mean(bench.per_query_of(
                    lambda a, b, _f=fuse, _p=p: _f(a, b, _p), vec, key)["ndcg@10"]), 4)
            rows.append(row)
    return rows


def table(study_out: dict) -> str:
    lines = ["| method | a priori | nDCG@10 a priori | tuned (all queries) | nDCG@10 tuned | "
             "CV test (tune on half) | grid min-max | W/T/L vs better half | P(below) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, m in study_out["methods"].items():
        wl = m["apriori_vs_better_half"]
        lines.append(
            f"| {name} | {m['parameter']}={m['apriori']} | {m['apriori_ndcg@10']:.4f} | "
            f"{m['parameter']}={m['tuned']} | {m['tuned_ndcg@10']:.4f} | "
            f"{m['cv_test_ndcg@10_mean']:.4f} ± {m['cv_test_ndcg@10_sd']:.4f} | "
            f"{m['grid_min']:.3f}–{m['grid_max']:.3f} | {wl['wins']}/{wl['ties']}/{wl['losses']} | "
            f"{wl['p_below_bootstrap']:.3f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lists", default=str(CACHE / "lists-scifact-latest.json"))
    ap.add_argument("--out", default=None, help="default: fusion.json beside the run's result.json")
    ap.add_argument("--splits", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="main configuration only, no sweeps")
    args = ap.parse_args()

    cache = json.loads(Path(args.lists).read_text())
    qrels = ireval.load_qrels(Path(cache["qrels"]))
    result = {"lists": Path(args.lists).resolve().name, "git_commit": cache.get("git_commit"),
              "studies": {}, "depth": {}, "transfer": {}, "sweeps": {}}
    configs = list(cache["configs"])
    for cfg in configs:
        for gran in ("chunk",) if args.quick else ("chunk", "doc"):
            key = f"{cfg}/{gran}"
            print(f"[{key}]", file=sys.stderr, flush=True)
            bench = Bench(cache["configs"][cfg]["lists"], qrels, 100, gran)
            s = study(bench, splits=args.splits)
            result["studies"][key] = s
            print(f"vector {s['vector']['ndcg@10']:.4f}  keyword {s['keyword']['ndcg@10']:.4f}",
                  file=sys.stderr)
            print(table(s), file=sys.stderr, flush=True)
        if args.quick:
            break
    main_cfg = configs[0]
    if not args.quick:
        # Candidate depth, at the a-priori parameters.
        for depth in (10, 20, 30, 50, 100):
            bench = Bench(cache["configs"][main_cfg]["lists"], qrels, depth, "chunk")
            row = {}
            for name in ("rrf", "minmax", "tmm", "zscore", "dbsf"):
                fuse, p = METHODS[name][4], METHODS[name][3]
                row[f"{name}={p}"] = round(mean(bench.per_query_of(
                    lambda a, b, _f=fuse, _p=p: _f(a, b, _p))["ndcg@10"]), 4)
            row["recommended=0.5"] = round(mean(bench.per_query_of(
                lambda a, b, _d=depth: score_fusion(
                    [a, b], method="tmm", weights=[0.5, 0.5], floors=[0.0, 0.0], depth=_d,
                    missing="floor-unless-exhausted"))["ndcg@10"]), 4)
            row["vector"] = round(mean(bench.single["vector"]["ndcg@10"]), 4)
            row["keyword"] = round(mean(bench.single["keyword"]["ndcg@10"]), 4)
            result["depth"][str(depth)] = row
        print("depth:", json.dumps(result["depth"], indent=1), file=sys.stderr)
        # Transfer: parameters tuned on the main configuration, applied to the others.
        tuned = {n: m["tuned"] for n, m in result["studies"][f"{main_cfg}/chunk"]["methods"].items()}
        for cfg in configs[1:]:
            s = result["studies"][f"{cfg}/chunk"]
            result["transfer"][cfg] = {
                n: {"param": tuned[n], "ndcg@10": s["methods"][n]["grid_ndcg@10"][str(tuned[n])],
                    "apriori_ndcg@10": s["methods"][n]["apriori_ndcg@10"],
                    "better_half": max(s["vector"]["ndcg@10"], s["keyword"]["ndcg@10"])}
                for n in tuned}
        print("transfer:", json.dumps(result["transfer"], indent=1), file=sys.stderr)
        # Degradation sweeps on the main configuration.
        bench = Bench(cache["configs"][main_cfg]["lists"], qrels, 100, "chunk")
        params = {n: METHODS[n][3] for n in ("rrf", "minmax", "tmm", "zscore", "dbsf", "combmnz",
                                              "recommended")}
        params_t = {n: tuned[n] for n in ("minmax", "tmm")}
        result["sweeps"][main_cfg] = sweep(bench, {**params})
        result["sweeps"][main_cfg + "/tuned"] = sweep(bench, params_t)
        for r in result["sweeps"][main_cfg]:
            print(r, file=sys.stderr)
    if not args.quick:
        # Robustness summary: a-priori nDCG@10 minus the better single mode, per scenario.
        scen = {}
        for key, s in result["studies"].items():
            if key.endswith("/chunk"):
                better = max(s["vector"]["ndcg@10"], s["keyword"]["ndcg@10"])
                scen[key.split("/")[0]] = {n: round(m["apriori_ndcg@10"] - better, 4)
                                           for n, m in s["methods"].items()}
        for r in result["sweeps"].get(main_cfg, []):
            if r["share"] in (0.2, 0.4):
                better = max(r["vector"], r["keyword"])
                scen[f"{r['degraded']} junk for {int(r['share'] * 100)}% of queries"] = {
                    k.split("=")[0]: round(v - better, 4) for k, v in r.items()
                    if "=" in k}
        result["robustness_delta_vs_better_half"] = scen
        print("robustness:", json.dumps(scen, indent=1), file=sys.stderr)
    out = Path(args.out) if args.out else None
    if out is None:
        stamp = cache.get("stamp")
        root = Path(__file__).resolve().parents[2]
        out = root / "bench" / "results" / f"quality-{stamp}" / "fusion.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
