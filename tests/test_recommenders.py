"""Recommender behaviour beyond the shared contract (`test_estimator_contract.py`: known answer,
save/load, not fitted, unknown ids, seeds, params), on the same tiny matrix: two disjoint
co-purchase blocks (A: a0-a3 bought by c0-c5, B: b0-b3 bought by c6-c11), every customer
missing one product of their own block."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from recommender_blocks import ALL, PERSONAL, PRODUCTS, A, B, block_events

from features.interactions import InteractionConfig, build_matrix
from models.recommenders import (
    EASERecommender,
    FallbackRecommender,
    PopularityRecommender,
    Recommender,
    RecommendFilters,
)
from shopml.errors import DataError


@pytest.fixture(scope="module")
def matrix():
    return build_matrix(block_events(), InteractionConfig(event_weights={"purchase": 1.0}))


@pytest.fixture(scope="module", params=sorted(ALL))
def fitted(request, matrix):
    return request.param, ALL[request.param]().fit(matrix, PRODUCTS)


def _block(cid: str) -> list[str]:
    return A if int(cid[1:]) < 6 else B


def test_batch_and_single_agree(fitted):
    _, model = fitted
    ids = ["c0", "c5", "c8", "nobody"]
    batch = model.recommend(ids, k=3)
    for cid, rec in zip(ids, batch, strict=True):
        one = model.recommend_one(cid, k=3)
        assert rec.product_ids.tolist() == one.product_ids.tolist()
        np.testing.assert_allclose(rec.scores, one.scores, rtol=1e-4, atol=1e-5)


def test_filters_are_respected(fitted):
    _, model = fitted
    bought = set(block_events().query("customer_id == 'c1'")["product_id"])
    rec = model.recommend_one("c1", k=8)
    assert not bought & set(rec.product_ids)
    only_books = model.recommend_one("c1", k=8, filters=RecommendFilters(categories=("books",)))
    assert set(only_books.product_ids) <= set(B)
    avail = model.recommend_one("c0", k=8, filters=RecommendFilters(only_available=True))
    assert "a3" not in set(avail.product_ids)
    excl = model.recommend_one("c0", k=8, filters=RecommendFilters(exclude_ids=("a0", "b0")))
    assert not {"a0", "b0"} & set(excl.product_ids)
    everything = model.recommend_one("c1", k=8, filters=RecommendFilters(exclude_purchased=False))
    assert len(everything) == 8


@pytest.mark.parametrize("k", [0, -1])
def test_k_must_be_positive(fitted, k):
    _, model = fitted
    with pytest.raises(ValueError, match="k="):
        model.recommend_one("c0", k=k)
    with pytest.raises(ValueError, match="k="):
        model.recommend(["c0"], k=k)
    with pytest.raises(ValueError, match="k="):
        model.similar_items(["a0"], k=k)


@pytest.mark.parametrize("name", sorted(PERSONAL))
def test_fold_in_for_a_new_customer(name, matrix):
    model = PERSONAL[name]().fit(matrix, PRODUCTS)
    rec = model.recommend_for_items(["b0", "b1"], k=2)
    assert set(rec.product_ids) <= set(B) - {"b0", "b1"}
    assert "fold-in" in rec.source
    cold = model.recommend_for_items(["not-a-product"], k=2)
    assert cold.source.startswith("popularity")


@pytest.mark.parametrize("name", sorted(PERSONAL))
def test_similar_items_stay_in_block(name, matrix):
    model = PERSONAL[name]().fit(matrix, PRODUCTS)  # category popularity: same category first
    rec = model.similar_items(["a1"], k=3)[0]
    assert set(rec.product_ids) <= set(A) - {"a1"}
    assert rec.source == model.name


def test_empty_and_single_product_training_sets_raise(matrix):
    empty = pd.DataFrame(columns=["customer_id", "product_id", "timestamp", "event", "quantity"])
    one = block_events().query("product_id == 'a1'")
    for name in ("ease", "als"):
        with pytest.raises(DataError, match="empty"):
            ALL[name]().fit(build_matrix(empty, InteractionConfig()))
        with pytest.raises(DataError, match="1 product"):
            ALL[name]().fit(build_matrix(one, InteractionConfig()))


def test_fallback_chain_names_its_source(matrix):
    model = FallbackRecommender(EASERecommender(l2=1.0)).fit(matrix, PRODUCTS)
    assert model.recommend_with_context("c0", k=2).source == "ease"
    assert model.recommend_with_context("new", k=2, recent_product_ids=["b0"]).source == (
        "ease:fold-in"
    )
    by_cat = model.recommend_with_context("new", k=2, category="books")
    assert by_cat.source == "popularity:category" and set(by_cat.product_ids) <= set(B)
    assert model.recommend_with_context("new", k=2).source == "popularity:trending"


def test_popularity_ranks_by_customers():
    ev = block_events()
    extra = pd.DataFrame(
        {
            "customer_id": ["c0", "c1", "c2"],
            "product_id": ["b3"] * 3,
            "timestamp": pd.Timestamp("2024-02-01"),
            "event": "purchase",
            "quantity": 1,
        }
    )
    m = build_matrix(pd.concat([ev, extra]), InteractionConfig())
    model = PopularityRecommender().fit(m)
    assert model.popular(k=1).product_ids.tolist() == ["b3"]


def test_candidate_cache_gives_the_same_answers(matrix, tmp_path):
    plain = EASERecommender(l2=1.0).fit(matrix, PRODUCTS)
    cached = EASERecommender(l2=1.0).fit(matrix, PRODUCTS).precompute(n=3)
    filters = [
        RecommendFilters(),
        RecommendFilters(categories=("books",)),
        RecommendFilters(only_available=True, exclude_ids=("a1",)),
    ]
    ids = [f"c{i}" for i in range(12)] + ["stranger"]

    def same(a, b):  # equal scores; equal ids except among tied scores (cross-block zeros)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)
        if len(a):
            untied = a.scores > a.scores[-1] + 1e-6
            assert a.product_ids[untied].tolist() == b.product_ids[untied].tolist()

    for f in filters:
        for k in (1, 2, 5):  # k=5 > n: falls back to full scoring
            for a, b in zip(plain.recommend(ids, k, f), cached.recommend(ids, k, f), strict=True):
                same(a, b)
            for cid in ids:
                same(plain.recommend_one(cid, k, f), cached.recommend_one(cid, k, f))
    cached.save(tmp_path / "m")
    again = Recommender.load(tmp_path / "m")
    assert again.candidates_ is not None
    assert again.recommend_one("c0", 2).product_ids.tolist() == (
        cached.recommend_one("c0", 2).product_ids.tolist()
    )
