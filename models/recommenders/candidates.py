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


def candidates(score_rows: list[np.ndarray], n: int, hidden: np.ndarray | None) -> CandidateSet:
    """The union of each score vector's top `n` products (`hidden` indices never proposed)."""
    tops = []
    for s in score_rows:
        s = s.astype(np.float32, copy=True)
        if hidden is not None and len(hidden):
            s[hidden] = -np.inf
        m = min(n, len(s))
        top = np.argpartition(-s, m - 1)[:m]
        top = top[np.argsort(-s[top], kind="stable")]
        tops.append(top[np.isfinite(s[top])])
    joined = np.concatenate(tops) if tops else np.zeros(0, np.int64)
    _, first = np.unique(joined, return_index=True)
    items = joined[np.sort(first)]
    n_gen = len(score_rows)
    scores = np.empty((n_gen, len(items)), np.float32)
    ranks = np.empty((n_gen, len(items)), np.float32)
    proposed = np.zeros((n_gen, len(items)), bool)
    for g, (s, top) in enumerate(zip(score_rows, tops, strict=True)):
        scores[g] = s[items]
        rank = np.full(len(s), len(top) + 1, np.float32)
        rank[top] = np.arange(1, len(top) + 1)
        ranks[g] = rank[items]
        proposed[g] = rank[items] <= len(top)
    return CandidateSet(items, scores, ranks, proposed)
