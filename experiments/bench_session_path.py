"""In-process timing of a session's `/recommend` path (issue 17), step by step.

An anonymous visitor with five recent products, k=20 and the filters of `shopml bench serve`'s
`recommend_session` bodies (two excluded products, available only, purchased hidden), answered
by a saved recommender (a fallback chain over the ranker, as `shopml build` serves it):

    python experiments/bench_session_path.py MODEL_DIR --sessions 400 --rounds 4

prints JSON: the p50 / p90 (ms) of the whole answer (`recommend_with_context`) and of its steps
(the generators' fold-ins, the lead's order outside the candidates, candidate selection,
features, trees and final score, scattering into the catalog; timed by calling those steps one
by one, so their sum is a little above the answer's), the load average, and with `--dump F`
the answers and the ranker's full score vectors of the sessions (`.npz`), to compare code
versions bit for bit (`--compare A.npz B.npz`).

Two versions of the code, interleaved (one process of one round per tree, A B B A then
B A A B, `--pairs` times; the medians of the rounds and B over A):

    python experiments/bench_session_path.py MODEL_DIR --ab TREE_A TREE_B --pairs 2

`--evict-mb 8` reads an 8 MB buffer before each answer and each step's timing, so the caches
are as cold as a server's between requests (the client and the event loop run in between):
the answer's time then is closer to what `shopml bench serve` adds over a known customer.
Figures are comparable as ratios only inside one interleaved run (report the load beside them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

STEPS = ("generators", "outside", "candidates", "features", "trees", "scatter")


def sessions(model, n: int, seed: int = 1, recent: int = 5) -> list[dict]:
    """`n` bodies as `experiments/bench_serve.session_bodies` draws them."""
    rng = np.random.default_rng(seed)
    products = np.asarray(model.product_ids_)
    out = []
    for _ in range(n):
        ids = [str(p) for p in products[rng.integers(len(products), size=recent)]]
        exclude = [str(p) for p in products[rng.integers(len(products), size=2)]]
        out.append({"recent": ids, "exclude": exclude})
    return out


def _filters(body):
    from models.recommenders.selection import RecommendFilters

    return RecommendFilters(
        exclude_purchased=True, exclude_ids=tuple(body["exclude"]), only_available=True
    )


def _steps(ranker, items, weights) -> dict[str, float]:
    """Seconds of each step of `RankerRecommender._rank_one` on one session, called one by one
    (the same calls as the served path)."""
    from features.ranking import CustomerProfile, rank_features
    from models.recommenders.candidates import candidates
    from models.recommenders.ranker import TIE, _outside

    t = [time.perf_counter()]
    profile = CustomerProfile.session(items, weights, ranker.state_.as_of_days)
    gens = ranker._each(lambda g: g._score_weights(items, weights))
    t.append(time.perf_counter())
    block = np.array(gens, dtype=np.float32, ndmin=2)
    out = _outside(block[:1])[0]
    t.append(time.perf_counter())
    c = candidates(block, ranker.n_candidates, items)
    t.append(time.perf_counter())
    X = rank_features(ranker.state_, profile, c.items, c.scores, c.ranks, ranker.state_.as_of_days)
    t.append(time.perf_counter())
    pred = ranker._final_scores(X)
    t.append(time.perf_counter())
    out[c.items] = pred - TIE * c.ranks[0] / (ranker.n_candidates + 1)
    t.append(time.perf_counter())
    return dict(zip(STEPS, np.diff(t).tolist(), strict=True))


def run(model_dir: Path, n: int, rounds: int, dump: Path | None, evict_mb: float = 0.0) -> dict:
    from models.recommenders import Recommender

    model = Recommender.load(model_dir)
    ranker = getattr(model, "primary", model)
    bodies = sessions(model, n)
    filters = [_filters(b) for b in bodies]
    rows = [ranker._session_row(b["recent"], None) for b in bodies]
    for b, f in zip(bodies[:50], filters[:50], strict=True):  # warm-up: caches, first calls
        model.recommend_with_context("", 20, f, recent_product_ids=b["recent"])
    total, steps = [], {s: [] for s in STEPS}
    # read before each answer (`--evict-mb`): caches as cold as a server's between requests
    evict = np.ones(max(int(evict_mb * 2**20) // 8, 1))
    for _ in range(rounds):
        for b, f, (items, w) in zip(bodies, filters, rows, strict=True):
            if evict_mb:
                evict.sum()
            t0 = time.perf_counter()
            model.recommend_with_context("", 20, f, recent_product_ids=b["recent"])
            total.append(time.perf_counter() - t0)
            if evict_mb:
                evict.sum()
            for s, v in _steps(ranker, items, w).items():
                steps[s].append(v)

    def q(v, p):
        return round(float(np.percentile(v, p)) * 1e3, 4)

    result = {
        "code": str(Path(sys.modules["models"].__file__).parent.parent),
        "sessions": n,
        "rounds": rounds,
        "n_candidates": ranker.n_candidates,
        "answer_p50_ms": q(total, 50),
        "answer_p90_ms": q(total, 90),
        "steps_p50_ms": {s: q(v, 50) for s, v in steps.items()},
        "steps_sum_p50_ms": round(sum(q(v, 50) for v in steps.values()), 4),
        "evict_mb": evict_mb,
        "load": os.getloadavg()[0],
    }
    if dump is not None:
        answers = [
            model.recommend_with_context("", 20, f, recent_product_ids=b["recent"])
            for b, f in zip(bodies, filters, strict=True)
        ]
        np.savez(
            dump,
            ids=np.array([list(a.product_ids) for a in answers], dtype=object),
            scores=np.array([np.asarray(a.scores, np.float64) for a in answers], dtype=object),
            sources=np.array([a.source for a in answers]),
            full=np.stack([ranker._score_weights(items, w) for items, w in rows]),
        )
    return result


def compare(a: Path, b: Path) -> dict:
    """Whether two dumps hold the same answers and score vectors, bit for bit."""
    x, y = np.load(a, allow_pickle=True), np.load(b, allow_pickle=True)
    same_ids = all(list(p) == list(q) for p, q in zip(x["ids"], y["ids"], strict=True))
    same_scores = all(
        np.array_equal(
            np.asarray(p, np.float64).view(np.uint64), np.asarray(q, np.float64).view(np.uint64)
        )
        for p, q in zip(x["scores"], y["scores"], strict=True)
    )
    full = np.array_equal(x["full"].view(np.uint32), y["full"].view(np.uint32))
    return {
        "sessions": len(x["ids"]),
        "same_items_and_order": same_ids,
        "same_answer_scores_bits": same_scores,
        "same_full_scores_bits": full,
        "same_sources": bool((x["sources"] == y["sources"]).all()),
    }


def interleaved(trees: list[Path], model_dir: Path, n: int, pairs: int, evict_mb: float) -> dict:
    """One round of `n` sessions per process, code A and B run A B B A `pairs` times: each
    step's p50 per round, and B's over A's (the median of the pairs' ratios)."""
    a, b = trees
    rounds = []
    for i in range(pairs):
        for tree in (a, b, b, a) if i % 2 == 0 else (b, a, a, b):
            env = {**os.environ, "PYTHONPATH": str(tree), "OPENBLAS_NUM_THREADS": "1"}
            cmd = [sys.executable, str(Path(__file__).resolve()), str(model_dir)]
            cmd += ["--sessions", str(n), "--evict-mb", str(evict_mb)]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            rounds.append({"tree": str(tree), **json.loads(out.stdout.splitlines()[-1])})

    def med(tree, key, step=None):
        v = [r["steps_p50_ms"][step] if step else r[key] for r in rounds if r["tree"] == str(tree)]
        return round(float(np.median(v)), 4)

    keys = ["answer_p50_ms", "steps_sum_p50_ms"]
    summary = {
        t: {k: med(t, k) for k in keys} | {s: med(t, None, s) for s in STEPS} for t in (a, b)
    }
    ratio = {k: round(summary[b][k] / summary[a][k], 3) for k in summary[a]}
    pairs_ratio = []  # adjacent rounds (A B, B A, ...): each pair ran at about one load
    for x, y in zip(rounds[0::2], rounds[1::2], strict=True):
        ra, rb = (x, y) if x["tree"] == str(a) else (y, x)
        pairs_ratio.append(rb["answer_p50_ms"] / ra["answer_p50_ms"])
    ratio["answer_p50_median_pair_ratio"] = round(float(np.median(pairs_ratio)), 3)
    loads = [r["load"] for r in rounds]
    return {
        "A": str(a),
        "B": str(b),
        "median_of_rounds_ms": {str(t): v for t, v in summary.items()},
        "B_over_A": ratio,
        "load": [round(min(loads), 2), round(max(loads), 2)],
        "rounds": rounds,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", type=Path, nargs="?")
    p.add_argument("--sessions", type=int, default=400)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--dump", type=Path)
    p.add_argument("--compare", type=Path, nargs=2)
    p.add_argument("--ab", type=Path, nargs=2, help="two code trees, run interleaved")
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--evict-mb", type=float, default=0.0, help="MB read before each session")
    args = p.parse_args()
    if args.ab:
        result = interleaved(args.ab, args.model_dir, args.sessions, args.pairs, args.evict_mb)
        print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=1))
        return
    if args.compare:
        print(json.dumps(compare(*args.compare)))
        return
    print(json.dumps(run(args.model_dir, args.sessions, args.rounds, args.dump, args.evict_mb)))


if __name__ == "__main__":
    main()
