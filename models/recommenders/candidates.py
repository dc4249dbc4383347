"""Candidate generation for the ranker: the union of each generator's top products.

Generators are fitted recommenders (EASE, ALS, item-kNN, trending, category-popular, ...); each
proposes its `n` best products for a customer (their hidden products excluded), the union is
de-duplicated in the order first proposed, and each generator's score and rank on every
candidate are kept as ranking features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CandidateSet:
    """Products (indices) proposed for one customer, with each generator's score and rank
    (n_generators, n_candidates); `proposed[g]` marks the candidates generator g proposed."""

    items: np.ndarray
    scores: np.ndarray
    ranks: np.ndarray
    proposed: np.ndarray


def generator_name(model) -> str:
    """A readable name of a generator: its kind, and the mode of a popularity model."""
    mode = getattr(model, "mode", None)
    return f"{model.kind}_{mode}" if model.kind == "popularity" and mode else model.kind


def generator_names(models) -> list[str]:
    """Names of the generators, numbered where a name repeats (`ease`, `ease_2`)."""
    out: list[str] = []
    for m in models:
        name = base = generator_name(m)
        i = 2
        while name in out:
            name, i = f"{base}_{i}", i + 1
        out.append(name)
    return out


def candidates(score_rows, n: int, hidden: np.ndarray | None) -> CandidateSet:
    """The union of each score vector's top `n` products (`hidden` indices never proposed).

    `score_rows` is a list of score vectors or a (n_generators, n_products) array. The
    generators are selected together (one copy, one partition and one sort of the block); the
    selection of each row is that of `np.argpartition` on the row alone, so the candidates do
    not depend on how many generators are stacked (a request's path and a batch's agree)."""
    if len(score_rows) == 0:
        empty = np.zeros((0, 0), np.float32)
        return CandidateSet(np.zeros(0, np.int64), empty, empty, np.zeros((0, 0), bool))
    block = np.array(score_rows, dtype=np.float32, ndmin=2)  # a copy: hidden set below
    n_gen, n_items = block.shape
    if hidden is not None and len(hidden):
        block[:, hidden] = -np.inf
    m = min(n, n_items)
    neg = np.negative(block)
    top = np.argpartition(neg, m - 1, axis=1)[:, :m]
    # positions in the flattened block: one fancy index per step, not one call per generator
    offset = (np.arange(n_gen) * n_items)[:, None]
    at = top + offset
    at = at[np.arange(n_gen)[:, None], np.argsort(neg.ravel()[at], axis=1, kind="stable")]
    finite = np.isfinite(neg.ravel()[at])
    if finite.all():
        lengths = np.full(n_gen, m)
        joined_at = at.ravel()
    else:  # a generator with fewer than n finite scores proposes only those (sorted first)
        lengths = finite.sum(axis=1)
        joined_at = at[finite]
    joined = joined_at % n_items
    _, first = np.unique(joined, return_index=True)
    items = joined[np.sort(first)]
    # each generator's rank of every product: 1.. its list length, beyond it length + 1
    rank = np.empty((n_gen, n_items), np.float32)
    rank[:] = (lengths + 1).astype(np.float32)[:, None]
    place = np.broadcast_to(np.arange(1, m + 1, dtype=np.float32), (n_gen, m))
    rank.ravel()[joined_at] = place[finite]  # a view: rank is C-contiguous
    # C order, as the rows were built one by one before: reductions over a row (the features'
    # z-scores) then sum in the same order, to the last bit
    ranks = np.ascontiguousarray(rank[:, items])
    scores = np.ascontiguousarray(block[:, items])  # candidates are never hidden
    proposed = ranks <= lengths[:, None]
    return CandidateSet(items, scores, ranks, proposed)
