"""One contract over every model kind of every family, parametrised from the families' tables
(`models.family.FAMILIES[...].estimators`), so a new kind is tested as soon as it is listed.

Each family gives a tiny case whose right answer is known in advance; every kind (and the
variants listed in `VARIANTS`) must: give that answer after fit, give identical answers after a
save/load round trip through the family's table, raise `NotFittedError` naming its class before
fit, handle unknown ids as its interface documents, give the same answers when fitted twice with
the same seed, and round-trip its parameters through `get_params` / `clone` / `set_params`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from recommender_blocks import ALL, PRODUCTS, block_events

from features.demand import DemandPanel
from features.interactions import InteractionConfig, build_matrix
from models.base import Estimator, clone, load_kind
from models.family import FAMILIES
from models.forecast import LightGBMForecaster
from models.fraud import Calibrator, FraudScorer
from models.recommenders import RecommendFilters
from shopml.errors import ConfigError, DataError, NotFittedError, UnknownEntity


class RecommenderCase:
    """Fit on the two blocks (`recommender_blocks`); the answer is each customer's missing
    product of their own block."""

    def data(self):
        matrix = build_matrix(block_events(), InteractionConfig(event_weights={"purchase": 1.0}))
        return matrix, PRODUCTS

    def fit(self, model, data):
        return model.fit(*data)

    def check_known_answer(self, model) -> None:
        if model.kind == "popularity" and model.mode != "category":
            # no personal signal: products ranked by their number of customers
            counts = dict(block_events().groupby("product_id")["customer_id"].nunique())
            top = model.popular(k=8)
            assert [counts[p] for p in top.product_ids] == sorted(counts.values(), reverse=True)
            return
        for cid, missing in (("c0", "a0"), ("c3", "a3"), ("c7", "b1"), ("c11", "b1")):
            rec = model.recommend_one(cid, k=1)
            assert rec.product_ids.tolist() == [missing], cid
            assert rec.source == model.name

    def answers(self, model) -> Any:
        recs = model.recommend(["c0", "c5", "c8", "nobody"], k=3)
        recs += model.similar_items(["a0", "b2"], k=3)
        recs += [model.recommend_for_items(["b0"], k=2), model.popular(k=3)]
        recs += [model.recommend_with_context("c1", k=3, recent_product_ids=["b0"])]
        recs += model.similar_items(["a1"], k=2, filters=RecommendFilters(only_available=True))
        return [(r.product_ids.tolist(), r.scores.tolist(), r.source) for r in recs]

    def unfitted_calls(self, model) -> list[Callable[[], Any]]:
        return [
            lambda: model.recommend_one("c0", k=2),
            lambda: model.recommend(["c0"], k=2),
            lambda: model.recommend_with_context("c0", k=2),
            lambda: model.recommend_session("c0", ["a0"], k=2),
            lambda: model.similar_items(["a0"], k=2),
            lambda: model.popular(k=2),
        ]

    def check_unknown_ids(self, model) -> None:
        """Unknown customers and products get the popular list; similar_items names them."""
        for rec in (
            model.recommend_one("never-seen", k=3),
            model.recommend(["never-seen"], k=3)[0],
            model.recommend_for_items(["not-a-product"], k=3),
        ):
            assert len(rec) == 3 and rec.source.startswith("popularity")
        with pytest.raises(UnknownEntity, match="zz9"):
            model.similar_items(["a0", "zz9"], k=2)


# ---- forecasters: constant demand per product -------------------------------------------------
LEVELS = np.array([2.0, 5.0, 9.0, 1.0])


class ForecastCase:
    """Each product sells the same number of units every open day (Sundays closed): every
    forecaster's P50 is that level on open days and 0 on closed ones."""

    horizon = 7

    def data(self) -> DemandPanel:
        dates = pd.date_range("2024-01-01", periods=126)
        open_ = dates.dayofweek != 6
        units = np.repeat(LEVELS[:, None], len(dates), axis=1)
        units[:, ~open_] = np.nan
        price = np.where(np.isnan(units), np.nan, 3.0)
        ids = np.array([f"p{i}" for i in range(len(LEVELS))], dtype=object)
        cats = np.array(["x", "y", "x", "y"], dtype=object)
        return DemandPanel(ids, cats, dates, units, price, open_, (6,), "GB", None)

    def fit(self, model, data):
        return model.fit(data)

    def check_known_answer(self, model) -> None:
        fc = model.predict(self.horizon)
        open_days = fc[fc["flag"] != "closed"]
        level = open_days["product_id"].map(lambda p: LEVELS[int(p[1:])])
        np.testing.assert_allclose(open_days["p50"], level, rtol=0.15)
        assert (fc.loc[fc["flag"] == "closed", "p50"] == 0).all()

    def answers(self, model) -> Any:
        return [model.predict(self.horizon), model.predict(3, product_ids=["p2", "p0"])]

    def unfitted_calls(self, model) -> list[Callable[[], Any]]:
        return [lambda: model.predict(3)]

    def check_unknown_ids(self, model) -> None:
        """An unknown product is an error naming it."""
        with pytest.raises(UnknownEntity, match="nope"):
            model.predict(3, product_ids=["p0", "nope"])


# ---- fraud scorers: fraud driven by the first two features ------------------------------------
def _payments(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = rng.random(n) < 1 / (1 + np.exp(-(-3.0 + 2.0 * X[:, 0] + 1.0 * X[:, 1])))
    return X, y


class FraudCase:
    """Fraud odds grow with features 0 and 1: scores rank frauds first (AUC) and a payment
    high on both scores above one low on both."""

    def data(self):
        return (*_payments(3000, 0), *_payments(2000, 1))

    def fit(self, model, data):
        return model.fit(*data)

    def check_known_answer(self, model) -> None:
        X, y = _payments(2000, 2)
        p = model.predict_proba(X)
        ranks = np.argsort(np.argsort(p)) + 1
        auc = (ranks[y].sum() - y.sum() * (y.sum() + 1) / 2) / (y.sum() * (~y).sum())
        assert auc > 0.8
        high, low = model.predict_proba(np.array([[2.5, 2.0, 0, 0], [-2.5, -2.0, 0, 0]]))
        assert high > 0.5 > low

    def answers(self, model) -> Any:
        X, _ = _payments(40, 3)
        one = [model.predict_one(np.ascontiguousarray(x)) for x in X]
        return [model.predict_proba(X), np.array(one)]

    def unfitted_calls(self, model) -> list[Callable[[], Any]]:
        return [lambda: model.predict_proba(np.zeros((1, 4)))]

    def check_unknown_ids(self, model) -> None:
        """Payments carry no ids the scorer knows; a wrong feature count is named."""
        with pytest.raises(DataError, match="3 features"):
            model.predict_proba(np.zeros((2, 3)))


CASES = {"recommender": RecommenderCase(), "forecast": ForecastCase(), "fraud": FraudCase()}

# kinds whose defaults do not suit the tiny cases (or that need parts): how to build them
VARIANTS: dict[str, list[Callable[[], Estimator]]] = {
    "forecast/lightgbm": [
        lambda: LightGBMForecaster(
            horizon=7, n_estimators=30, min_child_samples=10, origin_step=7, min_origin_history=14
        )
    ],
    "fraud/scorer": [lambda: FraudScorer(["a", "b", "c", "d"], num_boost_round=40, num_threads=1)],
}
for _factory in ALL.values():  # the recommender settings that find the blocks' answer
    VARIANTS.setdefault(f"recommender/{_factory().kind}", []).append(_factory)

KINDS = [(name, kind) for name, fam in FAMILIES.items() for kind in fam.estimators]
BUILDS = [
    pytest.param(name, kind, i, id=f"{name}-{kind}-{i}")
    for name, kind in KINDS
    for i in range(len(VARIANTS.get(f"{name}/{kind}", [None])))
]


def build(name: str, kind: str, variant: int) -> Estimator:
    """A new, unfitted model of `kind` (its defaults unless `VARIANTS` says otherwise)."""
    factories = VARIANTS.get(f"{name}/{kind}", [FAMILIES[name].estimators[kind]])
    return factories[variant]()


@functools.cache
def data(name: str):
    return CASES[name].data()


@functools.cache
def fitted(name: str, kind: str, variant: int) -> Estimator:
    return CASES[name].fit(build(name, kind, variant), data(name))


def assert_same(a: Any, b: Any) -> None:
    """Exactly equal answers: frames, arrays, and nested lists / tuples of them."""
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b


# ---- the tables -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_has_a_table_of_estimator_kinds_and_a_case(name):
    table = getattr(FAMILIES[name], "estimators", None)
    assert table, f"family {name!r} has no table of estimator kinds (Family.estimators)"
    for kind, cls in table.items():
        assert issubclass(cls, Estimator) and cls.kind == kind, (kind, cls)
    assert name in CASES, f"family {name!r} has no case in the estimator contract"


# ---- the contract, for every kind -------------------------------------------------------------
@pytest.mark.parametrize(("name", "kind", "variant"), BUILDS)
def test_fit_gives_the_known_answer(name, kind, variant):
    CASES[name].check_known_answer(fitted(name, kind, variant))


@pytest.mark.parametrize(("name", "kind", "variant"), BUILDS)
def test_save_load_round_trip_gives_identical_answers(name, kind, variant, tmp_path):
    model = fitted(name, kind, variant)
    folder = model.save(tmp_path / kind)
    assert not list(folder.rglob("*.pkl"))
    again = load_kind(FAMILIES[name].estimators, folder, type(model).meta_file)
    assert type(again) is type(model)
    assert_same(CASES[name].answers(model), CASES[name].answers(again))


@pytest.mark.parametrize(("name", "kind", "variant"), BUILDS)
def test_unfitted_model_raises_not_fitted_naming_its_class(name, kind, variant, tmp_path):
    model = build(name, kind, variant)
    assert not model.is_fitted
    for call in CASES[name].unfitted_calls(model):
        with pytest.raises(NotFittedError, match=type(model).__name__):
            call()
    with pytest.raises(NotFittedError, match=type(model).__name__):
        model.save(tmp_path / "unfitted")


@pytest.mark.parametrize(("name", "kind", "variant"), BUILDS)
def test_unknown_ids_are_handled_as_documented(name, kind, variant):
    CASES[name].check_unknown_ids(fitted(name, kind, variant))


@pytest.mark.parametrize(("name", "kind", "variant"), BUILDS)
def test_same_seed_same_answers(name, kind, variant):
    again = CASES[name].fit(build(name, kind, variant), data(name))
    assert_same(CASES[name].answers(fitted(name, kind, variant)), CASES[name].answers(again))


@pytest.mark.parametrize(("name", "kind", "variant"), BUILDS)
def test_params_round_trip_through_get_params_clone_and_set_params(name, kind, variant):
    model = fitted(name, kind, variant)
    cls = type(model)
    params = model.get_params()
    assert list(params) == list(cls.param_names())
    assert set(cls.default_params()) <= set(params)
    copy = clone(model)
    assert type(copy) is cls and not copy.is_fitted
    assert repr(copy) == repr(cls(**params)) and repr(copy).startswith(cls.__name__ + "(")
    for value, copied in zip(params.values(), copy.get_params().values(), strict=True):
        if isinstance(value, Estimator | list) and value:
            assert copied is not value  # nested estimators are cloned, never shared
    assert repr(copy.set_params(**copy.get_params())) == repr(copy)
    with pytest.raises(ConfigError, match="no parameter 'not_a_param'"):
        copy.set_params(not_a_param=1)


def test_a_folder_of_another_kind_is_refused(tmp_path):
    model = fitted("recommender", "ease", 0)
    folder = model.save(tmp_path / "ease")
    with pytest.raises(DataError, match="'ease' model, not a 'als'"):
        FAMILIES["recommender"].estimators["als"].load(folder)


@pytest.mark.parametrize("method", ["platt", "isotonic", "none"])
def test_the_fraud_calibrator_keeps_the_estimator_contract(method, tmp_path):
    """The scorer's calibrator is a component, not a kind: it keeps the same habits."""
    raw = np.linspace(-4, 4, 200)
    y = np.random.default_rng(0).random(200) < 1 / (1 + np.exp(-raw))
    cal = Calibrator(method)
    with pytest.raises(NotFittedError, match="Calibrator"):
        cal.transform(raw)
    cal.fit(raw, y)
    assert np.all(np.diff(cal.transform(raw)) >= 0)  # a higher raw score is never less risky
    again = Calibrator.load(cal.save(tmp_path / method))
    assert_same(cal.transform(raw), again.transform(raw))
    assert [again.one(r) for r in raw[::20]] == [cal.one(r) for r in raw[::20]]
    assert repr(clone(cal)) == f"Calibrator(method={method!r})"
