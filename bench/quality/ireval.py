"""Small IR-evaluation toolkit for the retrieval-quality benchmark (standard library only).

- BEIR loading (corpus.jsonl, queries.jsonl, qrels/*.tsv), read from where the data lives:
  nothing of a data set is ever written into the repository.
- Metrics as BEIR reports them through pytrec_eval: nDCG@k with graded gains (gain = qrel
  grade, discount 1/log2(rank + 1), ideal DCG from the judged grades), recall@k (relevant
  retrieved in the top k / all relevant), MRR@k (1 / rank of the first relevant in the top k).
- A reference Okapi BM25 (Lucene/Anserini form) with an optional Porter stemmer.
- Fusion functions over two scored candidate lists, shared by run.py and fusion.py.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter, defaultdict
from pathlib import Path

# ---------------------------------------------------------------------------
# Data


def load_corpus(path: Path) -> dict[str, tuple[str, str]]:
    """_id -> (title, text)."""
    corpus = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                corpus[str(d["_id"])] = (d.get("title") or "", d.get("text") or "")
    return corpus


def load_queries(path: Path) -> dict[str, str]:
    queries = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                queries[str(d["_id"])] = d["text"]
    return queries


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """query id -> {doc id: grade}; the header line (query-id corpus-id score) is skipped."""
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with open(path, encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) < 3 or row[0] == "query-id":
                continue
            qrels[row[0]][row[1]] = int(row[2])
    return dict(qrels)


def document_text(title: str, text: str) -> str:
    """What the benchmark ingests and what the reference BM25 indexes."""
    return f"{title}\n{text}" if title else text


# ---------------------------------------------------------------------------
# Metrics


def collapse(doc_ids, k: int | None = None) -> list[str]:
    """First occurrence of each document in a ranked list of (chunk-level) doc ids."""
    seen, out = set(), []
    for d in doc_ids:
        if d not in seen:
            seen.add(d)
            out.append(d)
            if k is not None and len(out) >= k:
                break
    return out


def ndcg_at(ranked: list[str], rels: dict[str, int], k: int = 10) -> float:
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((g for g in rels.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: list[str], rels: dict[str, int], k: int = 10) -> float:
    relevant = {d for d, g in rels.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def mrr_at(ranked: list[str], rels: dict[str, int], k: int = 10) -> float:
    for i, d in enumerate(ranked[:k]):
        if rels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def per_query_metrics(ranked: list[str], rels: dict[str, int], k: int = 10) -> dict[str, float]:
    return {
        f"ndcg@{k}": ndcg_at(ranked, rels, k),
        f"recall@{k}": recall_at(ranked, rels, k),
        f"mrr@{k}": mrr_at(ranked, rels, k),
    }


def evaluate(run: dict[str, list[str]], qrels: dict[str, dict[str, int]], k: int = 10) -> dict:
    """run: query id -> ranked doc ids (already collapsed). Averages over the judged queries;
    a judged query missing from the run counts as 0."""
    sums: Counter = Counter()
    per_query = {}
    for qid, rels in qrels.items():
        m = per_query_metrics(run.get(qid, []), rels, k)
        per_query[qid] = m
        sums.update(m)
    n = max(len(qrels), 1)
    return {"queries": len(qrels), **{name: sums[name] / n for name in sums}, "per_query": per_query}


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    s = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(s)))
    return s[rank - 1]


# ---------------------------------------------------------------------------
# Reference BM25

# Lucene's EnglishAnalyzer default stop set (also Anserini's default).
LUCENE_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their "
    "then there these they this to was will with".split()
)

_TOKEN = re.compile(r"[^\W_]+")


class PorterStemmer:
    """M. F. Porter's algorithm (1980), as in the reference C implementation that Lucene's
    PorterStemFilter follows (including its 'bli' and 'logi' departures)."""

    def __init__(self):
        self.cache: dict[str, str] = {}

    @staticmethod
    def _cons(w: str, i: int) -> bool:
        c = w[i]
        if c in "aeiou":
            return False
        if c == "y":
            return i == 0 or not PorterStemmer._cons(w, i - 1)
        return True

    def _m(self, s: str) -> int:
        n, i, size = 0, 0, len(s)
        while i < size and self._cons(s, i):
            i += 1
        while i < size:
            while i < size and not self._cons(s, i):
                i += 1
            if i >= size:
                break
            while i < size and self._cons(s, i):
                i += 1
            n += 1
        return n

    def _vowel_in(self, s: str) -> bool:
        return any(not self._cons(s, i) for i in range(len(s)))

    def _doublec(self, s: str) -> bool:
        return len(s) >= 2 and s[-1] == s[-2] and self._cons(s, len(s) - 1)

    def _cvc(self, s: str) -> bool:
        if len(s) < 3:
            return False
        n = len(s)
        return (
            self._cons(s, n - 3)
            and not self._cons(s, n - 2)
            and self._cons(s, n - 1)
            and s[-1] not in "wxy"
        )

    def _replace(self, w: str, rules, min_m: int) -> str:
        for suffix, repl in rules:
            if w.endswith(suffix):
                stem = w[: len(w) - len(suffix)]
                return stem + repl if self._m(stem) > min_m else w
        return w

    _STEP2 = [
        ("ational", "ate"), ("tional", "tion"), ("enci", "ence"), ("anci", "ance"),
        ("izer", "ize"), ("bli", "ble"), ("alli", "al"), ("entli", "ent"), ("eli", "e"),
        ("ousli", "ous"), ("ization", "ize"), ("ation", "ate"), ("ator", "ate"),
        ("alism", "al"), ("iveness", "ive"), ("fulness", "ful"), ("ousness", "ous"),
        ("aliti", "al"), ("iviti", "ive"), ("biliti", "ble"), ("logi", "log"),
    ]
    _STEP3 = [
        ("icate", "ic"), ("ative", ""), ("alize", "al"), ("iciti", "ic"), ("ical", "ic"),
        ("ful", ""), ("ness", ""),
    ]
    _STEP4 = [
        "al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent",
        "ion", "ou", "ism", "ate", "iti", "ous", "ive", "ize",
    ]

    def _step2(self, w: str) -> str:
        # The reference implementation picks the rule by the penultimate letter and takes the
        # first suffix that matches; a longest-first scan over the same table is equivalent.
        for suffix, repl in sorted(self._STEP2, key=lambda r: -len(r[0])):
            if w.endswith(suffix):
                stem = w[: len(w) - len(suffix)]
                return stem + repl if self._m(stem) > 0 else w
        return w

    def _step4(self, w: str) -> str:
        for suffix in sorted(self._STEP4, key=len, reverse=True):
            if w.endswith(suffix):
                stem = w[: len(w) - len(suffix)]
                if suffix == "ion" and not (stem and stem[-1] in "st"):
                    continue
                return stem if self._m(stem) > 1 else w
        return w

    def stem(self, w: str) -> str:
        if len(w) <= 2:
            return w
        cached = self.cache.get(w)
        if cached is not None:
            return cached
        orig = w
        # step 1a
        if w.endswith("sses"):
            w = w[:-2]
        elif w.endswith("ies"):
            w = w[:-2]
        elif w.endswith("ss"):
            pass
        elif w.endswith("s"):
            w = w[:-1]
        # step 1b
        if w.endswith("eed"):
            if self._m(w[:-3]) > 0:
                w = w[:-1]
        else:
            for suffix in ("ed", "ing"):
                if w.endswith(suffix) and self._vowel_in(w[: -len(suffix)]):
                    w = w[: -len(suffix)]
                    if w.endswith(("at", "bl", "iz")):
                        w += "e"
                    elif self._doublec(w) and w[-1] not in "lsz":
                        w = w[:-1]
                    elif self._m(w) == 1 and self._cvc(w):
                        w += "e"
                    break
        # step 1c
        if w.endswith("y") and self._vowel_in(w[:-1]):
            w = w[:-1] + "i"
        w = self._step2(w)
        w = self._replace(w, self._STEP3, 0)
        w = self._step4(w)
        # step 5a
        if w.endswith("e"):
            m = self._m(w[:-1])
            if m > 1 or (m == 1 and not self._cvc(w[:-1])):
                w = w[:-1]
        # step 5b
        if w.endswith("ll") and self._m(w) > 1:
            w = w[:-1]
        self.cache[orig] = w
        return w


class Tokenizer:
    """Lower-case, split on anything not a letter or digit; optional stop words and stemming."""

    def __init__(self, stopwords: bool = True, stem: bool = False):
        self.stopwords = LUCENE_STOPWORDS if stopwords else frozenset()
        self.stemmer = PorterStemmer() if stem else None

    def __call__(self, text: str) -> list[str]:
        tokens = [t for t in _TOKEN.findall(text.lower()) if t not in self.stopwords]
        if self.stemmer:
            tokens = [self.stemmer.stem(t) for t in tokens]
        return tokens


class BM25:
    """Okapi BM25 as Lucene (and so Anserini) scores it:
    idf = ln(1 + (N - df + 0.5) / (df + 0.5)), tf part = tf·(k1+1) / (tf + k1·(1 - b + b·dl/avgdl));
    a query is a bag of its tokens (a repeated token counts again)."""

    def __init__(self, docs: dict[str, str], tokenizer: Tokenizer, k1: float = 0.9, b: float = 0.4):
        self.k1, self.b, self.tokenizer = k1, b, tokenizer
        self.postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self.ids: list[str] = []
        self.lengths: list[int] = []
        for doc_id, text in docs.items():
            tokens = tokenizer(text)
            idx = len(self.ids)
            self.ids.append(doc_id)
            self.lengths.append(len(tokens))
            for term, tf in Counter(tokens).items():
                self.postings[term].append((idx, tf))
        n = len(self.ids)
        self.avgdl = sum(self.lengths) / max(n, 1)
        self.idf = {t: math.log(1 + (n - len(p) + 0.5) / (len(p) + 0.5)) for t, p in self.postings.items()}
        self.norm = [k1 * (1 - b + b * dl / self.avgdl) for dl in self.lengths]

    def search(self, query: str, k: int = 100) -> list[tuple[str, float]]:
        scores: dict[int, float] = defaultdict(float)
        k1 = self.k1
        for term in self.tokenizer(query):
            postings = self.postings.get(term)
            if not postings:
                continue
            idf = self.idf[term]
            for idx, tf in postings:
                scores[idx] += idf * tf * (k1 + 1) / (tf + self.norm[idx])
        # Ties broken by doc id, so runs are deterministic.
        best = sorted(scores.items(), key=lambda kv: (-kv[1], self.ids[kv[0]]))[:k]
        return [(self.ids[i], s) for i, s in best]


# ---------------------------------------------------------------------------
# Fusion of two scored lists (each best first: [(chunk_id, doc_id, score), ...])


def _ranked(fused: dict, docs: dict) -> list[tuple[str, str, float]]:
    rows = [(cid, docs[cid], s) for cid, s in fused.items()]
    rows.sort(key=lambda r: (-r[2], r[0]))
    return rows


def _docs_of(*lists) -> dict:
    docs = {}
    for lst in lists:
        for cid, did, _ in lst:
            docs[cid] = did
    return docs


def rrf(lists, k: float = 60.0, weights=None, depth: int | None = None):
    """Weighted reciprocal-rank fusion: sum over lists of w / (k + rank), rank from 1."""
    weights = weights or [1.0] * len(lists)
    fused: dict[str, float] = defaultdict(float)
    for lst, w in zip(lists, weights):
        for rank, (cid, _, _) in enumerate(lst[:depth], start=1):
            fused[cid] += w / (k + rank)
    return _ranked(fused, _docs_of(*lists))


def _normalise(scores: list[float], method: str, floor: float | None = None) -> list[float]:
    if not scores:
        return []
    if method == "minmax":
        lo, hi = min(scores), max(scores)
        return [(s - lo) / (hi - lo) if hi > lo else 1.0 for s in scores]
    if method == "max":  # divide by the top score (scores >= 0)
        hi = max(scores)
        return [s / hi if hi > 0 else 0.0 for s in scores]
    if method == "tmm":  # theoretical min-max: fixed lower bound, observed max
        lo, hi = floor, max(scores)
        return [(max(s, lo) - lo) / (hi - lo) if hi > lo else 0.0 for s in scores]
    if method == "zscore":
        mean = sum(scores) / len(scores)
        sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
        return [(s - mean) / sd if sd > 0 else 0.0 for s in scores]
    if method == "dbsf":  # distribution-based: [mean - 3sd, mean + 3sd] mapped to [0, 1]
        mean = sum(scores) / len(scores)
        sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
        lo, hi = mean - 3 * sd, mean + 3 * sd
        return [(s - lo) / (hi - lo) if hi > lo else 1.0 for s in scores]
    if method == "rank":  # 1 for the top, falling linearly (Borda-like)
        n = len(scores)
        return [1.0 - i / n for i in range(n)]
    raise ValueError(method)


def score_fusion(
    lists,
    method: str = "minmax",
    weights=None,
    depth: int | None = None,
    missing: str = "floor",
    combine: str = "sum",
    floors=None,
):
    """Normalise each list's scores, then combine with weights.

    missing: 'floor' scores a candidate absent from a list as that list's lowest normalised
    score (0 for min-max); 'zero' as 0; 'skip' adds nothing (same as zero for sum);
    'floor-unless-exhausted' as 'floor' when the list is `depth` long (it was cut, so an absent
    candidate scores at most its last entry) and as 0 when it is shorter (the search found
    nothing more: an absent candidate did not match at all).
    combine: 'sum' (CombSUM / convex combination), 'mnz' (CombMNZ: sum times the number of
    lists that found the candidate), 'max' (CombMAX)."""
    weights = weights or [1.0] * len(lists)
    floors = floors or [None] * len(lists)
    fused: dict[str, float] = defaultdict(float)
    hits: Counter = Counter()
    normalised = []
    for lst, floor in zip(lists, floors):
        lst = lst[:depth]
        ns = _normalise([s for _, _, s in lst], method, floor)
        lowest = min(ns) if ns else 0.0
        if missing == "floor-unless-exhausted" and (depth is None or len(lst) < depth):
            lowest = 0.0
        normalised.append(({cid: n for (cid, _, _), n in zip(lst, ns)}, lowest))
    candidates = set()
    for scores, _ in normalised:
        candidates.update(scores)
    for cid in candidates:
        parts = []
        for (scores, lowest), w in zip(normalised, weights):
            if cid in scores:
                hits[cid] += 1
                parts.append(w * scores[cid])
            elif missing in ("floor", "floor-unless-exhausted"):
                parts.append(w * lowest)
            else:
                parts.append(0.0)
        if combine == "max":
            fused[cid] = max(parts)
        else:
            fused[cid] = sum(parts)
            if combine == "mnz":
                fused[cid] *= hits[cid]
    return _ranked(fused, _docs_of(*lists))
