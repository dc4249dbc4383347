"""The batch engine's fast paths give the very values of the plain ones, bit for bit: window
starts from the (key, tile) grid or from searches, entities sharing codes computed once or
apart, entity groups in threads or not, known-fraud ranks counted or searched."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.fraud import batch
from features.fraud.definition import FeatureSet

pytest_plugins = ["fraud_helpers"]


def _columns(payments: pd.DataFrame, threads: int = 1) -> dict[str, np.ndarray]:
    fs = FeatureSet()
    p = batch.prepare(payments, fs)
    return batch.compute_prepared(p, fs, target=p.order, threads=threads)


def _assert_identical(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype == np.float64, name
        # same bytes: NaN where NaN, and every value equal to the last bit
        assert a[name].tobytes() == b[name].tobytes(), name


@pytest.fixture(scope="module")
def payments():
    from fraud_helpers import synthetic_payments

    return synthetic_payments(n=6000, days=70, customers=40, terminals=60, seed=3)


@pytest.mark.parametrize("cap", [lambda n: -1, lambda n: 10**9])
def test_grid_and_searched_window_starts_give_the_same_columns(payments, monkeypatch, cap):
    default = _columns(payments)
    monkeypatch.setattr(batch, "_grid_cap", cap)  # never / always the grid
    _assert_identical(_columns(payments), default)


def test_threads_do_not_change_any_value(payments):
    _assert_identical(_columns(payments, threads=4), _columns(payments, threads=1))


def test_local_threads_are_the_usable_cores(monkeypatch):
    monkeypatch.setattr(batch.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(batch.os, "getloadavg", lambda: (25.0, 0.0, 0.0))
    assert batch.local_threads() == 4  # a loaded machine does not change it


def test_a_card_per_customer_computed_once_equals_computed_apart(payments):
    one_card = payments.assign(card_id=payments["customer_id"])  # codes shared: computed once
    renamed = one_card.assign(card_id="K" + one_card["customer_id"])  # same keys, other codes
    shared, apart = _columns(one_card), _columns(renamed)
    _assert_identical(shared, apart)
    for name in shared:
        if name.startswith("card_"):
            twin = shared[name.replace("card_", "customer_", 1)]
            assert shared[name] is not twin  # copies: changing one never changes the other
            assert shared[name].tobytes() == twin.tobytes()


@pytest.mark.parametrize("side", ["left", "right"])
def test_fraud_ranks_equal_searchsorted(side):
    rng = np.random.default_rng(1)
    queries = np.sort(rng.integers(0, 500, 5000))  # many ties
    for m in (0, 1, 300, 6000):  # fewer and more values than queries
        values = np.sort(rng.integers(-5, 505, m))
        expect = np.searchsorted(values, queries, side=side)
        assert np.array_equal(batch._rank(values, queries, side), expect)
        in_window = expect - np.searchsorted(values, queries - 40, side=side)
        assert np.array_equal(batch._rank_between(values, 40, queries, side), in_window)


def test_the_input_row_order_only_permutes_the_rows(payments):
    distinct = payments.drop_duplicates("timestamp").reset_index(drop=True)  # no ties to order
    cols = _columns(distinct)
    order = np.random.default_rng(5).permutation(len(distinct))
    shuffled = _columns(distinct.iloc[order].reset_index(drop=True))
    for name, values in cols.items():
        assert values[order].tobytes() == shuffled[name].tobytes(), name
