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
    generators are selected together (one negated copy, one partition and one sort of the
    block); the selection of each row is that of `np.argpartition` on the row alone, so the
    candidates do not depend on how many generators are stacked (a request's path and a
    batch's agree). The union keeps each product where it is first proposed: a product is
    kept in generator g's list when no earlier generator proposed it (read off the ranks)."""
    if len(score_rows) == 0:
        empty = np.zeros((0, 0), np.float32)
        return CandidateSet(np.zeros(0, np.int64), empty, empty, np.zeros((0, 0), bool))
    rows = np.asarray(score_rows, dtype=np.float32)
    neg = np.negative(rows if rows.ndim == 2 else rows.reshape(1, -1))  # a copy: hidden below
    n_gen, n_items = neg.shape
    if hidden is not None and len(hidden):
        neg[:, hidden] = np.inf
    m = min(n, n_items)
    top = np.argpartition(neg, m - 1, axis=1)[:, :m]
    # positions in the flattened block: one fancy index per step, not one call per generator
    top += (np.arange(n_gen) * n_items)[:, None]
    flat = neg.ravel()
    vals = flat.take(top)
    order = np.argsort(vals, axis=1, kind="stable")
    order += (np.arange(n_gen) * m)[:, None]
    at = top.ravel().take(order)  # each row's top in order (row g's entries of at, sorted)
    if np.isfinite(vals).all():
        lengths = np.full(n_gen, m)
        joined_at = at.ravel()
        entry_gen = np.repeat(np.arange(n_gen, dtype=np.int32), m)
    else:  # a generator with fewer than n finite scores proposes only those (sorted first)
        finite = np.isfinite(flat.take(at))
        lengths = finite.sum(axis=1)
        joined_at = at[finite]
        entry_gen = np.nonzero(finite)[0].astype(np.int32)
    # each generator's rank of every product: 1.. its list length, beyond it length + 1
    rank = np.empty((n_gen, n_items), np.float32)
    rank[:] = (lengths + 1).astype(np.float32)[:, None]
    place = np.arange(1, m + 1, dtype=np.float32)
    if len(joined_at) == at.size:
        rank.ravel()[at] = place  # a view: rank is C-contiguous; each row's 1..m
    else:
        rank.ravel()[joined_at] = place[np.nonzero(finite)[1]]
    # the union in the order first proposed: an entry is kept where its generator is the first
    # to propose the product (each generator proposes a product at most once)
    proposed_at = joined_at % n_items
    first_by = np.full(n_items, n_gen, np.int32)
    np.minimum.at(first_by, proposed_at, entry_gen)
    items = proposed_at[first_by.take(proposed_at) == entry_gen]
    # C order, as the rows were built one by one before: reductions over a row (the features'
    # z-scores) then sum in the same order, to the last bit
    ranks = rank.take(items, axis=1)
    scores = np.negative(neg.take(items, axis=1))  # candidates are never hidden
    proposed = ranks <= lengths[:, None]
    return CandidateSet(items, scores, ranks, proposed)
