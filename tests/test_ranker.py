"""The LightGBM ranker over the generators' candidates (models/recommenders/ranker.py) and its
one feature definition (features/ranking.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from experiments.recs_bench import Candidate, Protocol, run_protocol
from features.interactions import InteractionConfig, build_matrix
from features.ranking import (
    CustomerProfile,
    RankingState,
    feature_names,
    label_matrix,
    rank_features,
    split_cells,
    split_events_at,
)
from models.recommenders import (
    EASERecommender,
    FallbackRecommender,
    PopularityRecommender,
    RankerRecommender,
)
from models.recommenders.catalog import align_catalog
from models.recommenders.ranker import training_groups
from serving.schemas import RecommendRequest
from serving.storefront import Storefront
from training.recommender_eval import candidate_recall, evaluate, truth_from_events
from training.splits import stratified_split, temporal_split

T0 = pd.Timestamp("2024-01-01")
N_PRODUCTS, N_CUSTOMERS = 60, 160


def purchases(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    """Purchase events of (customer, product, day after T0) triples, ids as `c000` / `p00`."""
    return pd.DataFrame(
        {
            "customer_id": [f"c{c:03d}" for c, _, _ in rows],
            "product_id": [f"p{p:02d}" for _, p, _ in rows],
            "timestamp": [T0 + pd.Timedelta(days=d) for _, _, d in rows],
            "event": "purchase",
            "quantity": 1,
        }
    )


def price_store(seed: int = 0, months: int = 2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customers buy 8 products at random (days 0-59), then each month (days 60-89, 90-119,
    ... `months` of them) the 2 new products whose price is nearest what they usually pay: a
    customer's price level decides the later purchases, and co-purchases carry no sign of it."""
    rng = np.random.default_rng(seed)
    price = np.round(np.exp(rng.normal(3.0, 1.0, N_PRODUCTS)), 2)
    products = pd.DataFrame(
        {
            "product_id": [f"p{i:02d}" for i in range(N_PRODUCTS)],
            "price": price,
            "category": "all",
            "available": True,
        }
    )
    log_price = np.log1p(price)
    rows = []
    for c in range(N_CUSTOMERS):
        owned = list(rng.choice(N_PRODUCTS, 8, replace=False))
        rows += [(c, p, int(rng.integers(0, 60))) for p in owned]
        for start in range(60, 60 + 30 * months, 30):
            level = log_price[owned].mean()
            gap = np.abs(log_price - level)
            gap[owned] = np.inf
            new = np.argsort(gap, kind="stable")[:2]
            rows += [(c, p, start + int(rng.integers(0, 30))) for p in new]
            owned += list(new)
    return purchases(rows), products


def ranker(seed: int = 0) -> RankerRecommender:
    return RankerRecommender(
        [EASERecommender(l2=10.0), PopularityRecommender()],
        n_candidates=N_PRODUCTS,
        label_days=30.0,
        n_estimators=200,
        learning_rate=0.1,
        num_leaves=7,
        min_child_samples=5,
        seed=seed,
    )


@pytest.fixture(scope="module")
def store():
    events, products = price_store()
    split = temporal_split(events, T0 + pd.Timedelta(days=90), only_new=True)
    matrix = build_matrix(split.train, InteractionConfig(event_weights={"purchase": 1.0}))
    return matrix, products, truth_from_events(split.test, matrix)


@pytest.fixture(scope="module")
def fitted(store):
    matrix, products, _ = store
    return ranker().fit(matrix, products)


def test_the_ranker_beats_its_candidates_when_price_level_decides(store, fitted):
    matrix, products, truth = store
    ranked = evaluate(fitted, truth, 5)["ndcg@5"]
    for generator in fitted.generators:
        alone = evaluate(generator, truth, 5)["ndcg@5"]
        assert ranked > alone + 0.2, (generator.kind, ranked, alone)
    assert candidate_recall(fitted, truth)["union"] == 1.0  # every product is a candidate here
    importance = fitted.feature_importance_
    assert next(iter(importance)) == "pair_log_price_ratio"
    assert fitted.validation_["lift"] > 0.2


def test_no_label_from_after_the_cut_reaches_the_features():
    events, products = price_store()
    cut = T0 + pd.Timedelta(days=60)
    late = pd.DataFrame(  # after the cut: c000 buys everything, c001 buys an owned product again
        {
            "customer_id": ["c000"] * N_PRODUCTS + ["c001"],
            "product_id": [f"p{i:02d}" for i in range(N_PRODUCTS)]
            + [events.loc[events["customer_id"] == "c001", "product_id"].iloc[0]],
            "timestamp": cut + pd.Timedelta(days=5),
            "event": "purchase",
            "quantity": 1,
        }
    )
    cfg = InteractionConfig(event_weights={"purchase": 1.0}, as_of=cut.to_pydatetime())
    states, labels = [], []
    for frame in (events, pd.concat([events, late], ignore_index=True)):
        history, pairs = split_events_at(frame, cut)
        assert history["timestamp"].max() < cut
        matrix = build_matrix(history, cfg)
        codes, _, available = align_catalog(matrix.product_ids, products)
        states.append(RankingState.from_matrix(matrix, codes, available, products))
        labels.append(label_matrix(pairs, matrix))
    a, b = states
    for name in ("weights", "last_days"):
        assert (getattr(a, name) != getattr(b, name)).nnz == 0
    np.testing.assert_array_equal(a.item_arrays, b.item_arrays)
    assert a.as_of_days == b.as_of_days == pytest.approx(cut.value / 86400e9)
    # the late purchases are labels (new products only): a repurchase is not one
    assert labels[1].sum() > labels[0].sum()
    row = 1  # c001 (customer ids are sorted)
    owned = set(a.weights[row].indices.tolist())
    assert not owned & set(labels[1][row].indices.tolist())


def test_a_product_s_customers_are_counted_up_to_the_customer_s_own_last_day():
    # product 0 last used by customer 0 on day 10, 1 on day 20, 2 on day 50; product 1 by 2 on
    # day 45: each customer sees the customers of the 30 days up to their own last day only
    days = np.array([[10.0, 0.0], [20.0, 0.0], [50.0, 45.0]])
    last = sp.csr_matrix(days)
    weights = last.copy()
    weights.data[:] = 1.0
    pop = np.log1p(np.array([3.0, 1.0], np.float32))
    state = RankingState(
        weights, last, np.zeros(2, np.int32), 1, np.tile(pop[:, None], (1, 7)),
        np.zeros(2), np.zeros(2), 60.0,
    )  # fmt: skip
    names = feature_names(["g"])
    month = names.index("pair_log_customers_30d_at_last")
    share = names.index("pair_recent_share_30d_at_last")
    week = names.index("pair_log_customers_7d_at_last")
    items, one = np.array([0, 1]), np.ones((1, 2), np.float32)
    got = [
        rank_features(state, state.profile(r), items, one, one, 60.0)[:, [month, week, share]]
        for r in range(3)
    ]
    np.testing.assert_allclose(np.expm1(got[0][:, 0]), [1, 0], atol=1e-5)  # days -20..10
    np.testing.assert_allclose(np.expm1(got[1][:, 0]), [2, 0], atol=1e-5)  # day 50 is later
    np.testing.assert_allclose(np.expm1(got[2][:, 0]), [2, 1], atol=1e-5)  # days 20..50
    np.testing.assert_allclose(np.expm1(got[2][:, 1]), [1, 1], atol=1e-5)  # days 43..50
    np.testing.assert_allclose(got[2][:, 2], [2 / 3, 1.0], rtol=1e-5)
    session = CustomerProfile.session(np.array([1]), np.ones(1), 60.0)  # now: days 30..60
    np.testing.assert_allclose(
        np.expm1(rank_features(state, session, items, one, one, 60.0)[:, month]), [1, 1], atol=1e-5
    )


def test_training_and_serving_features_agree(store, fitted):
    matrix, products, _ = store
    labels = sp.csr_matrix(matrix.matrix.shape, dtype=np.float32).tolil()
    customer = fitted.customer_ids_[3]
    row = fitted.customer_index_[customer]
    wanted = [i for i in range(matrix.shape[1]) if matrix.purchased[row, i] == 0][:5]
    for i in wanted:
        labels[row, i] = 1.0
    groups, _ = training_groups(
        fitted, fitted.generators, fitted.state_, fitted.purchased_, labels.tocsr()
    )
    X = groups.X
    assert groups.sizes == [X.shape[0]] and groups.totals == [5]
    served = fitted.features_for(customer, fitted.product_ids_[groups.items[0]])
    trained = X
    np.testing.assert_array_equal(np.isnan(served), np.isnan(trained))
    # a generator score is a float32 sum of O(1) terms, by a matrix product in training and a
    # vector product when served: BLAS kernels round those differently (EASE 1.1e-7 apart with
    # OPENBLAS_CORETYPE=Haswell), hence the absolute tolerance beside the relative one
    np.testing.assert_allclose(np.nan_to_num(served), np.nan_to_num(trained), rtol=1e-6, atol=1e-6)
    assert X.shape[1] == len(feature_names(fitted.generator_names_))


def test_the_same_seed_gives_the_same_selection(store, fitted):
    matrix, products, _ = store
    again = ranker(seed=0).fit(matrix, products)
    assert again.rounds_ == fitted.rounds_
    assert again.validation_ == fitted.validation_
    for c in fitted.customer_ids_[:20]:
        a, b = fitted.recommend_one(c, k=5), again.recommend_one(c, k=5)
        assert a.product_ids.tolist() == b.product_ids.tolist()
        assert a.scores.tolist() == b.scores.tolist()


def test_a_session_is_ranked_per_request_and_says_so(fitted):
    rec = fitted.recommend_with_context(None, k=3, recent_product_ids=["p01", "p02"])
    assert rec.source == "ranker:fold-in"
    assert len(rec) == 3 and not {"p01", "p02"} & set(rec.product_ids.tolist())


def test_save_and_load_keep_the_ranker(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    assert (tmp_path / "m" / "ranker.txt").is_file()
    loaded = RankerRecommender.load(tmp_path / "m")
    for c in fitted.customer_ids_[:10]:
        assert loaded.recommend_one(c, k=5).product_ids.tolist() == (
            fitted.recommend_one(c, k=5).product_ids.tolist()
        )
    assert loaded.feature_importance_ == fitted.feature_importance_


def test_the_storefront_answers_a_session_from_the_ranker_with_filters_after_ranking(store):
    matrix, products, _ = store
    chain = FallbackRecommender(ranker()).fit(matrix, products)
    front = Storefront(chain, "shopml-recommender/1")
    req = RecommendRequest(recent_product_ids=["p01", "p02"], k=4, exclude=["p03", "p04"])
    answer = front.recommend(req)
    assert answer["source"] == "ranker:fold-in" and answer["fallback"] is False
    shown = [item["product_id"] for item in answer["items"]]
    assert len(shown) == 4 and not {"p01", "p02", "p03", "p04"} & set(shown)
    known = front.recommend(RecommendRequest(customer_id=chain.customer_ids_[0], k=3))
    assert known["source"] == "ranker" and known["model"] == "ranker"


def test_the_ranker_learns_on_earlier_windows_and_is_judged_on_the_latest():
    events, products = price_store(months=3)  # train to day 120: windows cut at days 59 and 89
    split = temporal_split(events, T0 + pd.Timedelta(days=120), only_new=True)
    matrix = build_matrix(split.train, InteractionConfig(event_weights={"purchase": 1.0}))
    model = ranker()
    cuts = model._cuts(matrix)
    newest = float(matrix.last_seen_days.data.max())
    assert cuts == [newest - 60.0, newest - 30.0]
    fitted = model.fit(matrix, products)
    assert fitted.validation_["windows"] == 2
    assert fitted.validation_["judged_on"] == "latest window"
    assert fitted.validation_["lift"] > 0.2 and fitted.validation_["gate_open"]
    assert fitted.name == "ranker" and fitted.fallback_ is None
    truth = truth_from_events(split.test, matrix)
    ease = evaluate(fitted.generators[0], truth, 5)["ndcg@5"]
    assert evaluate(fitted, truth, 5)["ndcg@5"] > ease + 0.2


def test_a_window_s_labels_end_at_the_next_cut():
    events, _ = price_store(months=3)
    cut, end = T0 + pd.Timedelta(days=60), T0 + pd.Timedelta(days=90)
    history, pairs = split_events_at(events, cut, end)
    assert history["timestamp"].max() < cut
    bought = events.merge(pairs, on=["customer_id", "product_id"])
    first = bought.groupby(["customer_id", "product_id"])["timestamp"].min()
    assert len(pairs) and first.between(cut, end, inclusive="left").all()
    _, unbounded = split_events_at(events, cut)
    assert len(unbounded) > len(pairs)  # the purchases after `end` are left out
    matrix = build_matrix(events, InteractionConfig(event_weights={"purchase": 1.0}))
    cut_d, end_d = cut.value / 86400e9, end.value / 86400e9
    hist, labels = split_cells(matrix, cut_d, end_d)
    days = matrix.last_seen_days.multiply(labels > 0).tocsr()
    assert labels.nnz and ((days.data >= cut_d) & (days.data < end_d)).all()
    assert hist.last_seen_days.data.max() < cut_d


def test_the_gate_serves_the_best_generator_when_the_ranker_loses_on_validation(store):
    matrix, products, truth = store
    # a ranker forced to rank EASE's order upside down (a huge negative anchor on the lead's
    # score) loses to its generators on validation
    losing = RankerRecommender(
        [EASERecommender(l2=10.0), PopularityRecommender()],
        n_candidates=N_PRODUCTS,
        n_estimators=1,
        penalties=(0.0,),
        anchors=(-50.0,),
        seed=0,
    ).fit(matrix, products)
    report = losing.validation_
    assert report["lift"] < 0 and not report["gate_open"]
    best = report["best_generator"]
    assert losing.name == f"ranker:{best}"
    generator = losing.generators[losing.generator_names_.index(best)]
    for c in losing.customer_ids_[:10]:
        got, alone = losing.recommend_one(c, k=5), generator.recommend_one(c, k=5)
        assert got.product_ids.tolist() == alone.product_ids.tolist()
        assert got.source == f"ranker:{best}"
    assert evaluate(losing, truth, 5) == evaluate(generator, truth, 5)
    again = RankerRecommender.load(_saved(losing))
    assert again.name == losing.name and again.fallback_ == losing.fallback_
    session = losing.recommend_with_context(None, k=3, recent_product_ids=["p01", "p02"])
    assert session.source == f"ranker:{best}:fold-in"


@pytest.mark.parametrize("split", ["random", "temporal"])
def test_the_ranker_s_earlier_windows_follow_the_protocol_s_split(split):
    """A random protocol's earlier windows are folds of the validation training part (each
    drawn from all of it, with its fold number); a temporal one's are cut one before the
    other (each from the previous one's training events). Never from validation or test."""
    events, _ = price_store(months=2)
    outer = stratified_split(events, 0.75, seed=42)
    inner = stratified_split(outer.train, 0.75, seed=42)
    seen = []

    def earlier(part, as_of, fold):
        seen.append((part.index, fold))
        return stratified_split(part, 0.75, seed=42 + fold), as_of

    proto = Protocol.from_splits(
        "tiny",
        5,
        InteractionConfig(event_weights={"purchase": 1.0}),
        outer,
        inner,
        None,
        earlier=earlier,
        split=split,
        ranker_windows=3,
        log=lambda *_: None,
    )
    report = run_protocol(proto, {"ease": [Candidate("ease", {"l2": 10.0})]})
    assert [fold for _, fold in seen] == [0, 1] and report["ranker"]["windows"] == 3
    first, second = seen[0][0], seen[1][0]
    assert first.equals(inner.train.index)
    held_out = inner.test.index.union(outer.test.index)
    assert not first.intersection(held_out).size and not second.intersection(held_out).size
    if split == "random":
        assert second.equals(inner.train.index)
    else:  # the second window is cut from the first one's training events
        assert second.equals(stratified_split(inner.train, 0.75, seed=42).train.index)
    with pytest.raises(ValueError, match="split='weekly'"):
        replace(proto, split="weekly")


def _saved(model) -> str:
    import tempfile

    path = tempfile.mkdtemp(prefix="ranker-gate-")
    model.save(path)
    return path
