"""Ranking metrics at k over ranked lists and sets of relevant products (binary relevance).

Conventions (those of the microsoft/recommenders benchmark, see ../shared/DATASETS.md):
averages are over customers with at least one relevant product; nDCG uses gains 1/log2(rank+1)
and an ideal list of min(|relevant|, k); `map` divides the sum of precision at each hit by
|relevant| (recommenders' "MAP"), `map_at_k` by min(|relevant|, k) (the usual MAP@k).
Catalog coverage is the share of the catalog that appears in at least one list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def _hits(ranked: Sequence, relevant: set, k: int) -> np.ndarray:
    return np.array(
        [1.0 if p in relevant else 0.0 for p in list(ranked)[:k]] + [0.0] * max(0, k - len(ranked)),
        dtype=np.float64,
    )


def _check(k: int) -> None:
    if not isinstance(k, int | np.integer) or k <= 0:
        raise ValueError(f"k must be a positive integer, got k={k!r}")


def per_user_metrics(ranked: Sequence, relevant, k: int) -> dict[str, float]:
    """All metrics for one customer's list (relevant must be non-empty)."""
    _check(k)
    rel = set(relevant)
    if not rel:
        raise ValueError("relevant set is empty: the customer cannot be evaluated")
    h = _hits(ranked, rel, k)
    n_hit = h.sum()
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    idcg = disc[: min(len(rel), k)].sum()
    prec_at_hits = np.cumsum(h) / np.arange(1, k + 1) * h
    return {
        "precision": n_hit / k,
        "recall": n_hit / len(rel),
        "ndcg": float(h @ disc / idcg),
        "map": prec_at_hits.sum() / len(rel),
        "map_at_k": prec_at_hits.sum() / min(len(rel), k),
        "hit_rate": float(n_hit > 0),
    }


def ranking_metrics(
    recommendations: Mapping[str, Sequence],
    relevant: Mapping[str, set],
    k: int,
    catalog_size: int | None = None,
) -> dict[str, float]:
    """Mean metrics over customers in `relevant` (a missing list counts as an empty one).

    Keys: precision@k, recall@k, ndcg@k, map, map@k, hit_rate@k, coverage@k (when the catalog
    size is given), users.
    """
    _check(k)
    rows = []
    shown: set = set()
    for user, rel in relevant.items():
        if not rel:
            continue
        ranked = list(recommendations.get(user, []))[:k]
        shown.update(ranked)
        rows.append(per_user_metrics(ranked, rel, k))
    if not rows:
        raise ValueError("no customer with relevant products to evaluate")
    mean = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
    out = {
        f"precision@{k}": mean["precision"],
        f"recall@{k}": mean["recall"],
        f"ndcg@{k}": mean["ndcg"],
        "map": mean["map"],
        f"map@{k}": mean["map_at_k"],
        f"hit_rate@{k}": mean["hit_rate"],
        "users": float(len(rows)),
    }
    if catalog_size is not None:
        out[f"coverage@{k}"] = catalog_coverage(recommendations.values(), catalog_size, k)
    return out


def catalog_coverage(lists, catalog_size: int, k: int) -> float:
    """Share of the catalog appearing in at least one top-k list."""
    _check(k)
    if catalog_size <= 0:
        raise ValueError(f"catalog_size must be > 0, got {catalog_size}")
    shown: set = set()
    for ranked in lists:
        shown.update(list(ranked)[:k])
    return len(shown) / catalog_size


def ranking_metrics_dense(top: np.ndarray, truth, k: int, catalog_size: int | None = None):
    """Fast path for evaluation loops: `top` is (n, >=k) item indices, `truth` a CSR matrix
    (n, n_items) of relevant items; rows without relevant items are skipped."""
    _check(k)
    top = np.asarray(top)[:, :k]
    n_rel = np.diff(truth.indptr)
    keep = n_rel > 0
    dense = truth[keep].toarray() > 0
    t = top[keep]
    valid = t >= 0
    h = np.take_along_axis(dense, np.where(valid, t, 0), axis=1) & valid
    h = h.astype(np.float64)
    if h.shape[1] < k:
        h = np.pad(h, ((0, 0), (0, k - h.shape[1])))
    nr = n_rel[keep].astype(np.float64)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    cum = np.concatenate(([0.0], np.cumsum(disc)))
    idcg = cum[np.minimum(nr, k).astype(int)]
    prec_at_hits = (np.cumsum(h, axis=1) / np.arange(1, k + 1) * h).sum(axis=1)
    out = {
        f"precision@{k}": float((h.sum(1) / k).mean()),
        f"recall@{k}": float((h.sum(1) / nr).mean()),
        f"ndcg@{k}": float(((h @ disc) / idcg).mean()),
        "map": float((prec_at_hits / nr).mean()),
        f"map@{k}": float((prec_at_hits / np.minimum(nr, k)).mean()),
        f"hit_rate@{k}": float((h.sum(1) > 0).mean()),
        "users": float(keep.sum()),
    }
    if catalog_size is not None:
        shown = np.unique(t[valid])
        out[f"coverage@{k}"] = len(shown) / catalog_size
    return out
