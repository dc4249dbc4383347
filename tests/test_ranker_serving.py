"""The ranker's per-request path (issue 17): a session's or a customer's scores computed one at
a time (one block of generator rows, features written in place, one LightGBM C call) are the
scores of the batch path, to the last bit; candidates are each generator's top products as
defined; the C call predicts what `Booster.predict` does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_ranker import purchases

from features.interactions import InteractionConfig, build_matrix
from features.ranking import (
    ITEM_FEATURES,
    PRODUCT_WINDOWS,
    CustomerProfile,
    feature_names,
    rank_features,
    zscore_rows,
)
from models.recommenders import (
    ALSRecommender,
    EASERecommender,
    FallbackRecommender,
    PopularityRecommender,
    RankerRecommender,
)
from models.recommenders.candidates import candidates
from models.recommenders.selection import RecommendFilters

N_PRODUCTS, N_CUSTOMERS = 80, 200


def store(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customers of four categories buying mostly in their own over 120 days, with prices."""
    rng = np.random.default_rng(seed)
    cats = np.array(["a", "b", "c", "d"])[np.arange(N_PRODUCTS) % 4]
    products = pd.DataFrame(
        {
            "product_id": [f"p{i:02d}" for i in range(N_PRODUCTS)],
            "category": cats,
            "price": np.round(np.exp(rng.normal(3.0, 1.0, N_PRODUCTS)), 2),
            "available": rng.random(N_PRODUCTS) > 0.1,
        }
    )
    rows = []
    for c in range(N_CUSTOMERS):
        own = np.flatnonzero(cats == cats[c % 4])
        for _ in range(int(rng.integers(4, 12))):
            pool = own if rng.random() < 0.8 else np.arange(N_PRODUCTS)
            rows.append((c, int(rng.choice(pool)), int(rng.integers(0, 120))))
    return purchases(rows), products


@pytest.fixture(scope="module")
def served():
    """A fallback chain over a ranker of four generators proposing 12 products each (fewer
    than the catalog: the union, hidden products and ties at the edge all matter)."""
    events, products = store()
    matrix = build_matrix(events, InteractionConfig(event_weights={"purchase": 1.0}))
    ranker = RankerRecommender(
        [
            EASERecommender(l2=10.0),
            ALSRecommender(factors=8, iterations=3, random_state=0),
            PopularityRecommender(mode="trending"),
            PopularityRecommender(mode="category"),
        ],
        n_candidates=12,
        label_days=30.0,
        n_estimators=40,
        num_leaves=7,
        min_child_samples=5,
        gate=False,
    )
    return FallbackRecommender(ranker).fit(matrix, products)


def _sessions(model, n: int, seed: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        items = np.unique(rng.integers(0, model.n_items, int(rng.integers(1, 9)))).astype(np.int32)
        out.append((items, rng.integers(1, 4, len(items)).astype(np.float32)))
    return out


def _generator_rows(ranker, sessions) -> list[np.ndarray]:
    """Each generator's (n_sessions, n_items) scores, from its per-request scoring."""
    return [
        np.stack([g._score_weights(items, w) for items, w in sessions]) for g in ranker.generators
    ]


def test_a_request_is_ranked_as_the_batch_ranks_it(served):
    """The per-request path and the batch path on the same generator scores (the generators'
    own batch and single scorings may differ in the last bit: BLAS sums in another order)."""
    ranker = served.primary
    assert ranker.fallback_ is None  # the ranker itself answers
    sessions = _sessions(ranker, 40)
    now = ranker.state_.as_of_days
    profiles = [CustomerProfile.session(items, w, now) for items, w in sessions]
    gens = _generator_rows(ranker, sessions)
    batch = ranker._rank(gens, profiles, [items for items, _ in sessions])
    for i, (items, weights) in enumerate(sessions):
        one = ranker._rank_one([g[i] for g in gens], profiles[i], items)
        assert one.dtype == np.float32
        np.testing.assert_array_equal(one, batch[i])
        np.testing.assert_array_equal(ranker._score_weights(items, weights), one)
    known = np.arange(0, len(ranker.customer_ids_), 7)
    gens = [np.asarray(g._scores_known(known), np.float32) for g in ranker.generators]
    block = ranker._known(known, gens)
    for j, row in enumerate(known):
        hidden = ranker._bought_indices[ranker._bought_indptr[row] : ranker._bought_indptr[row + 1]]
        one = ranker._rank_one([g[j] for g in gens], ranker.state_.profile(int(row)), hidden)
        np.testing.assert_array_equal(one, block[j])


def test_a_session_answer_is_the_top_of_the_batch_scores_after_the_filters(served):
    ranker = served.primary
    filters = RecommendFilters(exclude_purchased=True, only_available=True, exclude_ids=("p03",))
    now = ranker.state_.as_of_days
    for items, _ in _sessions(ranker, 10, seed=2):
        ids = served.product_ids_[items].tolist()
        rec = served.recommend_with_context("", 10, filters, recent_product_ids=ids)
        assert rec.source == "ranker:fold-in"
        ones = np.ones(len(items), np.float32)
        gens = _generator_rows(ranker, [(items, ones)])
        scores = ranker._rank(gens, [CustomerProfile.session(items, ones, now)], [items])[0]
        scores[items] = -np.inf
        scores[served._blocked(filters)] = -np.inf
        want = served._finish(scores, 10, "batch")
        assert rec.product_ids.tolist() == want.product_ids.tolist()
        np.testing.assert_array_equal(rec.scores, want.scores)


def _reference_candidates(rows, n, hidden):
    """Each row's top n by score (finite, not hidden), the union in first-proposed order."""
    tops = []
    for s in rows:
        s = s.astype(np.float64).copy()
        s[hidden] = -np.inf
        order = [int(i) for i in np.argsort(-s, kind="stable")[:n] if np.isfinite(s[i])]
        tops.append(order)
    items = list(dict.fromkeys(i for top in tops for i in top))
    ranks = [[top.index(i) + 1 if i in top else len(top) + 1 for i in items] for top in tops]
    return np.array(items), np.array(ranks, np.float32), np.array([len(t) for t in tops])


def test_candidates_are_each_generator_s_top_products():
    rng = np.random.default_rng(3)
    for _ in range(30):
        rows = rng.normal(size=(3, 50)).astype(np.float32)
        rows[1, rng.integers(0, 50, 45)] = -np.inf  # a generator with few finite scores
        hidden = rng.integers(0, 50, int(rng.integers(0, 6)))
        c = candidates(list(rows), 8, hidden)
        items, ranks, lengths = _reference_candidates(rows, 8, hidden)
        np.testing.assert_array_equal(c.items, items)
        np.testing.assert_array_equal(c.ranks, ranks)
        np.testing.assert_array_equal(c.scores, rows[:, items])
        np.testing.assert_array_equal(c.proposed, ranks <= lengths[:, None])
        # the same answer from a stacked block (the request's path) and in C order (the
        # features' z-scores sum a row in one order)
        b = candidates(rows, 8, hidden)
        for name in ("items", "scores", "ranks", "proposed"):
            np.testing.assert_array_equal(getattr(b, name), getattr(c, name))
        assert c.scores.flags.c_contiguous and c.ranks.flags.c_contiguous
        assert not set(c.items.tolist()) & set(hidden.tolist())


def test_the_c_call_predicts_what_booster_predict_does(served):
    ranker = served.primary
    state, now = ranker.state_, ranker.state_.as_of_days
    for items, weights in _sessions(ranker, 5, seed=4):
        gens = [np.asarray(g._score_weights(items, weights), np.float32) for g in ranker.generators]
        c = candidates(gens, ranker.n_candidates, items)
        profile = CustomerProfile.session(items, weights, now)
        X = rank_features(state, profile, c.items, c.scores, c.ranks, now)
        np.testing.assert_array_equal(ranker._predict(X), ranker.booster_.predict(X, num_threads=1))


def test_a_window_ending_now_counts_what_a_search_per_product_counts(served):
    # sessions' windows end at the state's as_of: counted once for the catalog, then looked up
    state = served.primary.state_
    now = state.as_of_days
    products = np.random.default_rng(3).integers(0, state.weights.shape[1], 40)
    for lo in [now - d for d in (7.0, 30.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 9.0, 30.0)]:
        for _ in range(2):  # computed, then from the cache (and past its 8 windows)
            got = state.customers_between(products, lo, now)
            np.testing.assert_array_equal(got, state._count_between(products, lo, now))
    assert state.customers_between(products, now - 30.0, now).sum() > 0  # not all empty
    earlier = state.customers_between(products, now - 40.0, now - 10.0)  # not cached: searched
    np.testing.assert_array_equal(earlier, state._count_between(products, now - 40.0, now - 10.0))


def test_z_scores_are_numpy_s_mean_and_std_to_the_last_bit():
    rng = np.random.default_rng(6)
    for n in (1, 2, 7, 9, 100, 129, 307, 2000):
        a = rng.normal(3.0, 2.0, size=(4, n)).astype(np.float32)
        a[1] = np.round(a[1])  # ties
        a[2] = 5.0  # a constant row: its spread floored at 1e-9
        want = (a - a.mean(axis=1, keepdims=True)) / np.maximum(a.std(axis=1, keepdims=True), 1e-9)
        got = zscore_rows(a)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


def test_a_session_s_product_columns_are_the_windows_and_items_up_to_now(served):
    """A session's product columns come from the state's block computed once for the catalog:
    they are what the per-candidate path (any other customer's) computes for a last day of
    now, and the features of a known customer last active earlier take that other path."""
    ranker = served.primary
    state, now = ranker.state_, ranker.state_.as_of_days
    names = feature_names(ranker.generator_names_)
    cols = [names.index(f) for f in (*PRODUCT_WINDOWS, *ITEM_FEATURES)]
    for items, weights in _sessions(ranker, 8, seed=7):
        gens = [np.asarray(g._score_weights(items, weights), np.float32) for g in ranker.generators]
        c = candidates(gens, ranker.n_candidates, items)
        X = rank_features(
            state, CustomerProfile.session(items, weights, now), c.items, c.scores, c.ranks, now
        )
        want = np.empty((len(c.items), len(PRODUCT_WINDOWS)), np.float32)
        state.windows_up_to(now, c.items, want)
        np.testing.assert_array_equal(X[:, cols[: len(PRODUCT_WINDOWS)]], want)
        items_now = state.item_arrays[c.items].copy()
        items_now[:, ITEM_FEATURES.index("item_age_days")] = now - state.launch_days[c.items]
        np.testing.assert_array_equal(X[:, cols[len(PRODUCT_WINDOWS) :]], items_now)
    row = int(np.argmin([state.profile(r).last_days.max() for r in range(20)]))
    profile = state.profile(row)
    then = float(profile.last_days.max())
    assert then < now  # a customer last active before now: the windows end at their last day
    gens = [np.asarray(g._score_one(row), np.float32) for g in ranker.generators]
    c = candidates(gens, ranker.n_candidates, None)
    X = rank_features(state, profile, c.items, c.scores, c.ranks, now)
    want = np.empty((len(c.items), len(PRODUCT_WINDOWS)), np.float32)
    state.windows_up_to(then, c.items, want)
    np.testing.assert_array_equal(X[:, cols[: len(PRODUCT_WINDOWS)]], want)
    assert not np.array_equal(want, state.products_now()[c.items, : len(PRODUCT_WINDOWS)])
