"""Recommender behaviour beyond the shared contract (`test_estimator_contract.py`: known answer,
save/load, not fitted, unknown ids, seeds, params), on the same tiny matrix: two disjoint
co-purchase blocks (A: a0-a3 bought by c0-c5, B: b0-b3 bought by c6-c11), every customer
missing one product of their own block."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from recommender_blocks import ALL, PERSONAL, PRODUCTS, A, B, block_events

from features.interactions import InteractionConfig, InteractionMatrix, build_matrix
from models.recommenders import (
    EASERecommender,
    FallbackRecommender,
    PopularityRecommender,
    Recommender,
    RecommendFilters,
)
from shopml.errors import DataError, UnknownEntity


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


# ---- what the filters mean (issue 11) ---------------------------------------------------------
def _events_with_views() -> pd.DataFrame:
    """The blocks plus c0 viewing a0 (its missing product) and carting b2, buying neither."""
    extra = pd.DataFrame(
        {
            "customer_id": ["c0", "c0"],
            "product_id": ["a0", "b2"],
            "timestamp": pd.Timestamp("2024-02-01"),
            "event": ["view", "add_to_cart"],
            "quantity": 1,
        }
    )
    return pd.concat([block_events(), extra], ignore_index=True)


def test_the_matrix_keeps_which_interactions_were_purchases(tmp_path):
    m = build_matrix(_events_with_views(), InteractionConfig())
    row = m.customer_index["c0"]
    seen = set(m.product_ids[m.matrix[row].indices])
    bought = set(m.product_ids[m.purchases[row].indices])
    assert seen == {"a0", "a1", "a2", "a3", "b2"} and bought == {"a1", "a2", "a3"}
    m.save(tmp_path)
    again = InteractionMatrix.load(tmp_path)
    assert (again.purchases != m.purchases).nnz == 0


@pytest.mark.parametrize("name", sorted(ALL))
def test_exclude_purchased_hides_purchases_only_and_exclude_seen_every_interaction(name, tmp_path):
    matrix = build_matrix(_events_with_views(), InteractionConfig())
    model = ALL[name]().fit(matrix, PRODUCTS)
    cached = ALL[name]().fit(matrix, PRODUCTS).precompute(8)
    unseen = RecommendFilters(exclude_seen=True)
    for m in (model, cached):
        everything = set(m.recommend_one("c0", k=8).product_ids)
        assert everything == {"a0", "b0", "b1", "b2", "b3"}, name  # a1-a3 were bought
        assert set(m.recommend(["c0"], k=8)[0].product_ids) == everything
        assert set(m.recommend_one("c0", k=8, filters=unseen).product_ids) == {"b0", "b1", "b3"}
        assert set(m.recommend(["c0"], k=8, filters=unseen)[0].product_ids) == {"b0", "b1", "b3"}
    for f in (RecommendFilters(), unseen):  # k=2: answered from the candidate cache
        for a, b in (
            (model.recommend_one("c0", 2, f), cached.recommend_one("c0", 2, f)),
            (model.recommend(["c0"], 2, f)[0], cached.recommend(["c0"], 2, f)[0]),
        ):
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)
            assert set(b.product_ids) <= (everything if f is not unseen else {"b0", "b1", "b3"})
    model.save(tmp_path / "m")
    assert set(Recommender.load(tmp_path / "m").recommend_one("c0", k=8).product_ids) == everything


@pytest.mark.parametrize("name", sorted(PERSONAL))
def test_similar_items_take_the_filters(name, matrix):
    model = PERSONAL[name]().fit(matrix, PRODUCTS)
    assert "a3" in set(model.similar_items(["a1"], k=3)[0].product_ids)  # a3 is discontinued
    avail = model.similar_items(["a1"], k=2, filters=RecommendFilters(only_available=True))[0]
    assert set(avail.product_ids) == {"a0", "a2"}
    books = model.similar_items(["a1"], k=7, filters=RecommendFilters(categories=("books",)))[0]
    assert set(books.product_ids) == set(B)
    excl = model.similar_items(["a1"], k=7, filters=RecommendFilters(exclude_ids=("a0", "b0")))
    assert not {"a0", "a1", "b0"} & set(excl[0].product_ids)


def test_an_unknown_category_is_named(fitted):
    _, model = fitted
    nope = RecommendFilters(categories=("books", "no-such", "toys", "gone"))
    for call in (
        lambda: model.recommend_one("c0", k=3, filters=nope),
        lambda: model.recommend_one("stranger", k=3, filters=nope),
        lambda: model.recommend(["c0"], k=3, filters=nope),
        lambda: model.recommend_for_items(["a0"], k=3, filters=nope),
        lambda: model.similar_items(["a0"], k=3, filters=nope),
        lambda: model.recommend_with_context("c0", 3, nope, recent_product_ids=["b0"]),
    ):
        with pytest.raises(UnknownEntity) as err:
            call()
        assert err.value.kind == "category" and err.value.ids == ["no-such", "gone"]


def test_the_trending_list_answers_the_score_it_is_ranked_by():
    """b0 is bought by 6 customers long ago, a0 by 3 customers lately: a0 trends first."""
    old = [(f"o{i}", "b0", pd.Timestamp("2024-01-01"), "purchase", 1) for i in range(6)]
    new = [(f"n{i}", "a0", pd.Timestamp("2024-03-01"), "purchase", 1) for i in range(3)]
    new += [("n0", "b1", pd.Timestamp("2024-03-01"), "purchase", 1)]
    ev = pd.DataFrame(old + new, columns=block_events().columns)
    model = PopularityRecommender(mode="trending", window_days=7).fit(build_matrix(ev))
    for rec in (model.popular(k=3), model.recommend_one("stranger", k=3)):
        assert rec.product_ids.tolist() == ["a0", "b1", "b0"]
        assert np.all(np.diff(rec.scores) <= 0), rec.scores
        known = model.recommend_one("n1", k=3, filters=RecommendFilters(exclude_purchased=False))
        np.testing.assert_allclose(rec.scores, known.scores)
    chain = FallbackRecommender(EASERecommender(l2=1.0)).fit(build_matrix(ev))
    assert np.all(np.diff(chain.recommend_with_context("stranger", k=3).scores) <= 0)


@pytest.mark.parametrize("name", sorted(PERSONAL))
def test_a_known_customer_s_session_is_blended_in(name, matrix):
    model = PERSONAL[name]().fit(matrix, PRODUCTS).precompute(4)
    plain = model.recommend_one("c1", k=4)
    same = model.recommend_with_context("c1", k=4)
    assert same.product_ids.tolist() == plain.product_ids.tolist() and same.source == model.name
    # c1 bought toys only; a session in books brings books in, ahead of nothing else it had
    session = model.recommend_with_context("c1", k=4, recent_product_ids=["b0", "b1", "nope"])
    assert session.source == f"{model.name}:session"
    assert {"b2", "b3"} <= set(session.product_ids) and "a1" in set(session.product_ids)
    assert not {"a0", "a2", "a3", "b0", "b1"} & set(session.product_ids)
    off = model.recommend_with_context("c1", 4, recent_product_ids=["b0"], session_weight=0.0)
    assert off.product_ids.tolist() == plain.product_ids.tolist()
    only = model.recommend_with_context("c1", 2, recent_product_ids=["b0"], session_weight=1.0)
    assert set(only.product_ids) <= {"b1", "b2", "b3"}
    unknown = model.recommend_with_context("c1", k=4, recent_product_ids=["nope"])
    assert unknown.product_ids.tolist() == plain.product_ids.tolist()
