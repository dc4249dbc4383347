"""Ranking metrics against values computed by hand on tiny lists."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from training.ranking_metrics import (
    catalog_coverage,
    per_user_metrics,
    ranking_metrics,
    ranking_metrics_dense,
)


def test_one_user_by_hand():
    # hits at ranks 1 and 3 of k=4; 3 relevant items in total
    m = per_user_metrics(["x", "n1", "y", "n2"], {"x", "y", "z"}, k=4)
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 3)
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg"] == pytest.approx(dcg / idcg)
    assert m["map"] == pytest.approx((1 / 1 + 2 / 3) / 3)
    assert m["map_at_k"] == pytest.approx((1 / 1 + 2 / 3) / 3)
    assert m["hit_rate"] == 1.0


def test_ideal_list_is_capped_at_k():
    # 5 relevant items, k=2, both slots hit: nDCG is 1 and MAP@k is 1, recommenders' MAP is 2/5
    m = per_user_metrics(["a", "b"], {"a", "b", "c", "d", "e"}, k=2)
    assert m["ndcg"] == pytest.approx(1.0)
    assert m["map_at_k"] == pytest.approx(1.0)
    assert m["map"] == pytest.approx(2 / 5)


def test_mean_over_users_with_relevant_items_only():
    recs = {"u1": ["a", "b"], "u2": ["c", "d"], "u3": ["a"]}
    rel = {"u1": {"b"}, "u2": {"x"}, "u3": set()}
    m = ranking_metrics(recs, rel, k=2, catalog_size=8)
    assert m["users"] == 2
    assert m["hit_rate@2"] == pytest.approx(0.5)
    assert m["precision@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["ndcg@2"] == pytest.approx((1 / math.log2(3)) / 2)
    assert m["coverage@2"] == pytest.approx(4 / 8)  # a, b, c, d (u3 has nothing to evaluate)


def test_coverage_counts_distinct_products():
    assert catalog_coverage([["a", "b"], ["b", "c"], ["d"]], catalog_size=8, k=1) == 3 / 8


def test_dense_path_matches_reference():
    rng = np.random.default_rng(0)
    n_users, n_items, k = 30, 40, 5
    truth = sp.csr_matrix((rng.random((n_users, n_items)) < 0.1).astype(np.float32))
    top = np.array([rng.permutation(n_items)[:k] for _ in range(n_users)])
    fast = ranking_metrics_dense(top, truth, k, catalog_size=n_items)
    recs = {u: top[u].tolist() for u in range(n_users)}
    rel = {u: set(truth[u].indices.tolist()) for u in range(n_users)}
    slow = ranking_metrics(recs, rel, k)
    for key in ("precision@5", "recall@5", "ndcg@5", "map", "map@5", "hit_rate@5", "users"):
        assert fast[key] == pytest.approx(slow[key]), key


def test_k_must_be_positive():
    with pytest.raises(ValueError, match="k=0"):
        ranking_metrics({"u": ["a"]}, {"u": {"a"}}, k=0)
