"""The benchmark engine on a tiny synthetic shop: tuning on validation, the JSON shape, and
evaluation that counts test-only products in recall's denominator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments.recs_bench import Candidate, Protocol, run_protocol
from features.interactions import InteractionConfig, build_matrix
from models.recommenders import PopularityRecommender
from training.recommender_eval import evaluate, measure_speed, truth_from_events
from training.splits import stratified_split


def _events(seed=0, n_customers=60, n_products=30):
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_customers):
        group = c % 3  # three taste groups, each buying from its own 10 products
        for p in rng.choice(10, size=6, replace=False):
            rows.append((f"c{c}", f"p{group * 10 + p}", pd.Timestamp("2024-01-01"), "purchase", 1))
    return pd.DataFrame(
        rows, columns=["customer_id", "product_id", "timestamp", "event", "quantity"]
    )


def test_run_protocol_reports_every_model_and_the_best():
    ev = _events()
    outer = stratified_split(ev, 0.75, seed=42)
    inner = stratified_split(outer.train, 0.75, seed=42)
    proto = Protocol(
        name="tiny",
        k=5,
        base_interactions=InteractionConfig(event_weights={"purchase": 1.0}),
        train=outer.train,
        test=outer.test,
        fit=inner.train,
        val=inner.test,
        products=None,
        log=lambda *_: None,
    )
    grids = {
        "popularity": [Candidate("popularity", {})],
        "ease": [Candidate("ease", {"l2": l2}) for l2 in (1.0, 10.0)],
        "item_knn": [Candidate("item_knn", {"similarity": "cosine", "K": 10})],
    }
    report = run_protocol(proto, grids)
    names = [row["model"] for row in report["models"]]
    assert names[:3] == ["popularity", "ease", "item_knn"]
    for row in report["models"]:
        for key in (
            "ndcg@5",
            "recall@5",
            "map",
            "map@5",
            "coverage@5",
            "train_seconds",
            "batch_customers_per_s",
            "single_p50_ms",
            "single_p99_ms",
        ):
            assert key in row, key
    best = report["best"]
    assert best["model"] in names
    assert (
        best["ndcg@5"] > next(r for r in report["models"] if r["model"] == "popularity")["ndcg@5"]
    )


def test_test_only_products_count_in_recall():
    train = pd.DataFrame(
        {
            "customer_id": ["u", "u", "v"],
            "product_id": ["a", "b", "a"],
            "timestamp": pd.Timestamp("2024-01-01"),
            "event": "purchase",
            "quantity": 1,
        }
    )
    test = pd.DataFrame({"customer_id": ["v", "v", "stranger"], "product_id": ["b", "new", "a"]})
    m = build_matrix(train, InteractionConfig())
    truth = truth_from_events(test, m)
    model = PopularityRecommender().fit(m)
    metrics = evaluate(model, truth, k=2)
    assert metrics["users"] == 1  # the stranger is not a known customer
    assert metrics["recall@2"] == pytest.approx(0.5)  # b found, "new" can never be
    assert metrics["coverage@2"] == pytest.approx(0.5)  # one of the two known products shown
    speed = measure_speed(model, k=1, n_single=20)
    assert speed["batch_customers_per_s"] > 0 and speed["single_p50_ms"] > 0
