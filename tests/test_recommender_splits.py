"""Splits: the stratified protocol keeps 75% of each product's events in train; the temporal
split never leaks the future; the interaction matrix drops returns and weights events."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.interactions import InteractionConfig, build_matrix, events_frame
from features.store import Store
from training.splits import relevant_sets, stratified_split, temporal_split


def _events(n_products=20, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_products):
        n = int(rng.integers(1, 30))
        for c in rng.choice(200, size=n, replace=False):
            rows.append(
                (
                    f"c{c}",
                    f"p{p}",
                    pd.Timestamp("2024-01-01") + pd.Timedelta(hours=int(rng.integers(0, 2000))),
                    "purchase",
                    1,
                )
            )
    return pd.DataFrame(
        rows, columns=["customer_id", "product_id", "timestamp", "event", "quantity"]
    )


def test_stratified_split_is_75_25_per_product_and_disjoint():
    ev = _events()
    s = stratified_split(ev, ratio=0.75, seed=42)
    assert len(s.train) + len(s.test) == len(ev)
    assert not set(s.train.index) & set(s.test.index)
    counts = ev["product_id"].value_counts()
    train_counts = s.train["product_id"].value_counts().reindex(counts.index, fill_value=0)
    np.testing.assert_array_equal(train_counts.to_numpy(), np.round(0.75 * counts.to_numpy()))


def test_stratified_split_is_seeded():
    ev = _events()
    a, b = stratified_split(ev, seed=42), stratified_split(ev, seed=42)
    assert a.test.index.tolist() == b.test.index.tolist()
    assert a.test.index.tolist() != stratified_split(ev, seed=1).test.index.tolist()


def test_stratified_split_reproduces_the_reference_draw():
    # recommenders: np.random.seed(42); rand(n); sort by (item, draw); first round(0.75 n) train
    ev = _events(n_products=3)
    np.random.seed(42)
    draw = np.random.rand(len(ev))
    expected = set()
    for _p, idx in ev.groupby("product_id").indices.items():
        order = idx[np.argsort(draw[idx])]
        expected.update(order[: int(np.round(0.75 * len(idx)))].tolist())
    assert set(stratified_split(ev).train.index) == expected


def test_temporal_split_never_leaks_the_future():
    ev = _events()
    cut = pd.Timestamp("2024-02-01")
    s = temporal_split(ev, cut)
    assert (s.train["timestamp"] < cut).all()
    assert (s.test["timestamp"] >= cut).all()
    assert set(s.test["customer_id"]) <= set(s.train["customer_id"])
    bought = set(zip(s.train["customer_id"], s.train["product_id"], strict=True))
    assert not bought & set(zip(s.test["customer_id"], s.test["product_id"], strict=True))
    rel = relevant_sets(s.test)
    assert sum(len(v) for v in rel.values()) == len(
        s.test.drop_duplicates(["customer_id", "product_id"])
    )


def test_matrix_weights_dedupes_and_ignores_returns():
    t = pd.Timestamp("2024-03-01")
    interactions = pd.DataFrame(
        {
            "customer_id": ["u1", "u1", "u1", "u2"],
            "product_id": ["p1", "p1", "p2", "p1"],
            "timestamp": [t, t, t, t],
            "event": ["view", "view", "add_to_cart", "purchase"],
            "quantity": [1, 1, 1, 1],
        }
    )
    lines = pd.DataFrame(
        {
            "order_id": ["o1", "o2", "o3"],
            "customer_id": ["u1", "u1", None],
            "product_id": ["p3", "p2", "p1"],
            "timestamp": [t, t, t],
            "quantity": [2, -1, 5],
            "unit_price": [1.0, 1.0, 1.0],
        }
    )
    store = Store(interactions=interactions, order_lines=lines)
    cfg = InteractionConfig(event_weights={"view": 1, "add_to_cart": 3, "purchase": 5})
    ev = events_frame(store, cfg)
    assert len(ev.query("event == 'view'")) == 1  # exact duplicate counted once
    assert (ev["quantity"] > 0).all()  # the return of p2 is no interest
    assert "u2" not in set(ev["customer_id"])  # purchases come from order_lines here
    m = build_matrix(store, cfg)
    dense = pd.DataFrame(m.matrix.toarray(), index=m.customer_ids, columns=m.product_ids)
    assert dense.loc["u1", "p1"] == 1 and dense.loc["u1", "p2"] == 3 and dense.loc["u1", "p3"] == 5
    logq = build_matrix(store, cfg.model_copy(update={"quantity_weighting": "linear"}))
    assert logq.matrix[logq.customer_index["u1"], logq.product_index["p3"]] == 10


def test_half_life_halves_weight_per_half_life():
    ev = pd.DataFrame(
        {
            "customer_id": ["u", "u"],
            "product_id": ["old", "new"],
            "timestamp": [pd.Timestamp("2024-01-01"), pd.Timestamp("2024-01-11")],
            "event": "purchase",
            "quantity": 1,
        }
    )
    m = build_matrix(ev, InteractionConfig(event_weights={"purchase": 1}, half_life_days=10))
    row = dict(zip(m.product_ids, m.matrix.toarray()[0], strict=True))
    assert row["new"] == pytest.approx(1.0) and row["old"] == pytest.approx(0.5)


def test_min_counts_and_matrix_round_trip(tmp_path):
    ev = _events()
    m = build_matrix(ev, InteractionConfig(min_product_customers=10))
    per_product = np.diff(m.matrix.tocsc().indptr)
    assert (per_product >= 10).all()
    m.save(tmp_path)
    again = type(m).load(tmp_path)
    assert (again.matrix != m.matrix).nnz == 0
    assert again.product_ids.tolist() == m.product_ids.tolist()


@st.composite
def _event_frames(draw):
    n = draw(st.integers(1, 40))
    customers = draw(st.lists(st.sampled_from(["u1", "u2", "u3", "u4"]), min_size=n, max_size=n))
    products = draw(st.lists(st.sampled_from(["p1", "p2", "p3"]), min_size=n, max_size=n))
    events = draw(
        st.lists(st.sampled_from(["view", "add_to_cart", "purchase"]), min_size=n, max_size=n)
    )
    days = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    return pd.DataFrame(
        {
            "customer_id": customers,
            "product_id": products,
            "timestamp": [pd.Timestamp("2024-01-01") + pd.Timedelta(days=d) for d in days],
            "event": events,
            "quantity": 1,
        }
    )


@settings(max_examples=40, deadline=None)
@given(_event_frames())
def test_matrix_total_weight_equals_event_weights(ev):
    cfg = InteractionConfig(event_weights={"view": 1.0, "add_to_cart": 3.0, "purchase": 5.0})
    m = build_matrix(ev, cfg)
    expected = ev["event"].map(cfg.event_weights).sum()
    assert float(m.matrix.sum()) == pytest.approx(expected)
    assert m.customer_ids.tolist() == sorted(set(ev["customer_id"]))
    assert m.product_ids.tolist() == sorted(set(ev["product_id"]))
    binary = build_matrix(ev, cfg.model_copy(update={"binary": True}))
    assert set(binary.matrix.data.tolist()) == {1.0}
    assert binary.nnz == len(ev[["customer_id", "product_id"]].drop_duplicates())
