"""The session path's faster steps (issue 17) compute what the code before them computed, to the
last bit: the candidates' union (one first-proposer array instead of an OR chain over the
catalog), the ALS fold-in (np.linalg.solve's gufunc called directly), the category popularity
(its tie-break term precomputed), the lead's clipped z-score and the cached context row. Each is
compared with the definition it replaced, written out here."""

from __future__ import annotations

import numpy as np
import pytest
from test_ranker_serving import _sessions, served  # noqa: F401  (the fitted ranker fixture)

from features.ranking import _context, _context_of, zscore_rows
from models.recommenders.candidates import candidates
from models.recommenders.ranker import LOW, _outside


def _candidates_before(score_rows, n, hidden):
    """`candidates` as it was before the first-proposer array (commit 33298ab)."""
    rows = np.asarray(score_rows, dtype=np.float32)
    neg = np.negative(rows if rows.ndim == 2 else rows.reshape(1, -1))
    n_gen, n_items = neg.shape
    if hidden is not None and len(hidden):
        neg[:, hidden] = np.inf
    m = min(n, n_items)
    top = np.argpartition(neg, m - 1, axis=1)[:, :m]
    at = top + (np.arange(n_gen) * n_items)[:, None]
    flat = neg.ravel()
    order = np.argsort(flat.take(at), axis=1, kind="stable")
    order += (np.arange(n_gen) * m)[:, None]
    at = at.ravel().take(order)
    finite = np.isfinite(flat.take(at))
    if finite.all():
        lengths = np.full(n_gen, m)
        joined_at = at.ravel()
    else:
        lengths = finite.sum(axis=1)
        joined_at = at[finite]
    rank = np.empty((n_gen, n_items), np.float32)
    rank[:] = (lengths + 1).astype(np.float32)[:, None]
    place = np.arange(1, m + 1, dtype=np.float32)
    if len(joined_at) == at.size:
        rank.ravel()[at] = place
    else:
        rank.ravel()[joined_at] = place[np.nonzero(finite)[1]]
    listed = rank <= lengths[:, None]
    earlier = np.zeros(listed.shape, bool)
    for g in range(1, n_gen):
        np.logical_or(earlier[g - 1], listed[g - 1], out=earlier[g])
    first = joined_at[~earlier.ravel().take(joined_at)]
    items = first % n_items
    ranks = rank.take(items, axis=1)
    scores = np.negative(neg.take(items, axis=1))
    return items, scores, ranks, ranks <= lengths[:, None]


def _blocks(seed: int = 0):
    """Score blocks with ties (few distinct values), hidden products, and generators with
    fewer finite scores than `n` (-inf and NaN), of 1 to 5 generators."""
    rng = np.random.default_rng(seed)
    for case in range(120):
        n_gen, n_items = int(rng.integers(1, 6)), int(rng.integers(5, 90))
        if case % 3 == 0:  # many ties: small integers
            block = rng.integers(0, 4, (n_gen, n_items)).astype(np.float32)
        else:
            block = rng.normal(size=(n_gen, n_items)).astype(np.float32)
        if case % 5 == 0:
            block[0, rng.integers(0, n_items, n_items // 2)] = -np.inf
        if case % 7 == 0:
            block[-1, rng.integers(0, n_items, 3)] = np.nan
        hidden = np.unique(rng.integers(0, n_items, int(rng.integers(0, 6)))).astype(np.int32)
        yield block, int(rng.integers(1, n_items + 10)), hidden if case % 4 else None


def _same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


def test_candidates_are_those_of_the_code_before():
    seen_short = 0
    for block, n, hidden in _blocks():
        got = candidates(block, n, hidden)
        items, scores, ranks, proposed = _candidates_before(block, n, hidden)
        _same_bits(got.items, items)
        _same_bits(got.scores, scores)
        _same_bits(got.ranks, ranks)
        _same_bits(got.proposed, proposed)
        seen_short += int((~np.isfinite(block)).any())
    assert seen_short  # the path with fewer finite scores than n ran too


def test_als_fold_in_is_np_linalg_solve_s(served):  # noqa: F811
    als = served.primary.generators[1]
    assert als.kind == "als"
    Y = als.item_factors_.astype(np.float64)
    gram = Y.T @ Y + als.regularization * np.eye(Y.shape[1])
    for items, weights in _sessions(served.primary, 30, seed=3):
        Yi = als.item_factors_[items].astype(np.float64)
        c = als.alpha * np.asarray(weights, dtype=np.float64)
        want = np.linalg.solve(gram + (Yi.T * (c - 1.0)) @ Yi, Yi.T @ c).astype(np.float32)
        _same_bits(als._fold_in_one(items, weights), want)


def test_category_popularity_is_the_formula_before(served):  # noqa: F811
    cat = served.primary.generators[3]
    assert cat.mode == "category"
    for items, weights in _sessions(served.primary, 30, seed=4):
        share = np.bincount(cat._codes[items], weights=weights, minlength=cat._n_cat)
        share /= max(share.sum(), 1e-12)
        want = (share[cat._codes] * cat._within + 1e-3 * cat.scores_).astype(np.float32)
        _same_bits(cat._score_weights(items, weights), want)


@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_outside_is_the_clipped_z_score_plus_low(scale):
    rng = np.random.default_rng(5)
    lead = (rng.normal(size=(3, 3000)) * scale).astype(np.float32)
    lead[0, 7], lead[2, 9] = 1e4 * scale, -1e4 * scale  # z ~ +-55 in 3,000 products: clipped
    lead[1, :5] = np.nan
    want = zscore_rows(lead)
    np.clip(want, -50, 50, out=want)
    want += LOW
    got = _outside(lead)
    _same_bits(got, want)
    assert (np.abs(zscore_rows(lead)[[0, 2]]) > 50).any()  # the clip mattered


def test_the_cached_context_row_is_the_fresh_one():
    for day in (0.0, 19_000.25, 20_423.999, 20_424.0):
        first = _context(day)
        _same_bits(first, _context_of(day))
        assert _context(day) is first and not first.flags.writeable
