"""Offline evaluation of a fitted recommender: ranking metrics at k and inference speed.

The test truth is a CSR matrix over the training customers and the training products followed
by test-only products (those can never be recommended but still count in recall's denominator).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.interactions import InteractionMatrix
from models.recommenders import Recommender, RecommendFilters
from training.ranking_metrics import ranking_metrics_dense

# every training interaction hidden (as before purchases and views were told apart): the
# protocol, and so the metrics, of earlier runs stay comparable
EVAL_FILTERS = RecommendFilters(exclude_seen=True)
SERVED_FILTERS = RecommendFilters()  # speed is timed as served: purchases hidden, not views


@dataclass
class Truth:
    """Relevant products per training customer, in the model's index space plus extra columns."""

    matrix: sp.csr_matrix
    n_catalog: int

    @property
    def rows(self) -> np.ndarray:
        return np.flatnonzero(np.diff(self.matrix.indptr) > 0)


def truth_from_events(test: pd.DataFrame, train: InteractionMatrix) -> Truth:
    """Test events of customers known in training, as a binary (customers x products+) matrix."""
    test = test[test["customer_id"].isin(train.customer_index)]
    pairs = test[["customer_id", "product_id"]].drop_duplicates()
    extra = np.sort(np.setdiff1d(pairs["product_id"].unique().astype(str), train.product_ids))
    columns = pd.Index(np.concatenate([train.product_ids, extra]))
    rows = pd.Index(train.customer_ids).get_indexer(pairs["customer_id"])
    cols = columns.get_indexer(pairs["product_id"].astype(str))
    m = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)),
        shape=(len(train.customer_ids), len(columns)),
    )
    return Truth(m, n_catalog=len(train.product_ids))


def evaluate(model: Recommender, truth: Truth, k: int, block: int = 2048) -> dict[str, float]:
    """precision/recall/ndcg/map/map@k/hit_rate/coverage at k over customers with test items."""
    rows = truth.rows
    tops = []
    for start in range(0, len(rows), block):
        idx, scores = model.top_k_block(rows[start : start + block], k, EVAL_FILTERS)
        tops.append(np.where(scores > -np.inf, idx, -1))
    top = np.concatenate(tops) if tops else np.zeros((0, k), np.int64)
    full = np.full((truth.matrix.shape[0], k), -1, dtype=np.int64)
    full[rows, : top.shape[1]] = top
    return ranking_metrics_dense(full, truth.matrix, k, catalog_size=truth.n_catalog)


def candidate_recall(ranker, truth: Truth, block: int = 512) -> dict[str, float]:
    """Share of each test customer's products inside the ranker's candidates, per generator
    and for their union (mean over customers; test-only products count as missed)."""
    rows = truth.rows
    n_rel = np.diff(truth.matrix.indptr)
    names = ranker.generator_names_
    hits = dict.fromkeys([*names, "union"], 0.0)
    bought_ptr, bought = ranker.purchased_.indptr, ranker.purchased_.indices
    for start in range(0, len(rows), block):
        chunk = rows[start : start + block]
        scores = [np.asarray(g._scores_known(chunk), np.float32) for g in ranker.generators]
        hidden = [bought[bought_ptr[r] : bought_ptr[r + 1]] for r in chunk]
        for r, c in zip(chunk, ranker.candidate_sets(scores, hidden), strict=True):
            rel = np.isin(
                c.items, truth.matrix.indices[truth.matrix.indptr[r] : truth.matrix.indptr[r + 1]]
            )
            hits["union"] += rel.sum() / n_rel[r]
            for g, name in enumerate(names):
                hits[name] += (rel & c.proposed[g]).sum() / n_rel[r]
    return {name: round(float(h / max(len(rows), 1)), 4) for name, h in hits.items()}


def recall_curve(model: Recommender, truth: Truth, ks=(1, 5, 10, 20, 50)) -> dict[int, dict]:
    """Metrics at several k (for the recall@k and coverage plots)."""
    return {k: evaluate(model, truth, k) for k in ks}


def measure_speed(
    model: Recommender, k: int, n_single: int = 2000, seed: int = 0, block: int = 2048
) -> dict[str, float]:
    """Batch throughput over every known customer and single-customer latency percentiles.

    Wall-clock numbers suffer from other processes on a shared machine; the CPU-time variants
    (process/thread time) show what the code itself costs.
    """
    n = len(model.customer_ids_)
    rows = np.arange(n)
    start, cpu_start = time.perf_counter(), time.process_time()
    for s in range(0, n, block):
        model.top_k_block(rows[s : s + block], k, SERVED_FILTERS)
    batch_s = time.perf_counter() - start
    batch_cpu = time.process_time() - cpu_start
    rng = np.random.default_rng(seed)
    ids = model.customer_ids_[rng.integers(0, n, size=n_single)].tolist()
    for c in ids[:50]:  # warm caches
        model.recommend_one(c, k, SERVED_FILTERS)
    lat = np.empty(len(ids))
    cpu = np.empty(len(ids))
    for i, c in enumerate(ids):
        t0, c0 = time.perf_counter(), time.thread_time()
        model.recommend_one(c, k, SERVED_FILTERS)
        lat[i] = time.perf_counter() - t0
        cpu[i] = time.thread_time() - c0
    return {
        "batch_customers_per_s": n / max(batch_s, 1e-9),
        "batch_customers_per_cpu_s": n / max(batch_cpu, 1e-9),
        "single_p50_ms": float(np.percentile(lat, 50) * 1e3),
        "single_p99_ms": float(np.percentile(lat, 99) * 1e3),
        "single_cpu_p50_ms": float(np.percentile(cpu, 50) * 1e3),
    }
