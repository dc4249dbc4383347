"""The data profile: known answers on a tiny store, JSON-ready, flat metrics."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from features.profile import flat_metrics, profile
from features.store import Store


def _store() -> Store:
    t = pd.Timestamp("2024-03-01 10:00")
    return Store(
        products=pd.DataFrame(
            {"product_id": ["a", "b", "c"], "category": ["x", "x", "y"], "price": [1.0, 2.0, 9.0]}
        ),
        interactions=pd.DataFrame(
            {
                "customer_id": ["u1", "u1", "u1", "u2"],
                "product_id": ["a", "a", "b", "c"],
                "timestamp": [t, t, t, t + pd.Timedelta(days=2)],
                "event": ["view", "view", "purchase", "view"],
                "quantity": [1, 1, 2, 1],
            }
        ),
        order_lines=pd.DataFrame(
            {
                "order_id": ["o1", "o1", "o2", "o3"],
                "customer_id": ["u1", "u1", None, "u1"],
                "product_id": ["a", "b", "c", "a"],
                "timestamp": [t] * 4,
                "quantity": [2, 1, 1, -1],
                "unit_price": [1.0, 2.0, 9.0, 1.0],
            }
        ),
        payments=pd.DataFrame(
            {
                "transaction_id": ["t1", "t2", "t3", "t4"],
                "timestamp": [t] * 4,
                "customer_id": ["u1", "u1", "u2", "u2"],
                "card_id": ["k1", "k1", "k2", "k2"],
                "terminal_id": ["w"] * 4,
                "amount": [10.0, 30.0, 20.0, 40.0],
                "currency": ["EUR"] * 4,
                "is_fraud": [False, True, False, True],
                "label_time": [pd.NaT, t + pd.Timedelta(hours=24), pd.NaT, pd.NaT],
            }
        ),
        name="tiny",
    ).validated()


def test_profile_known_answers():
    p = profile(_store())
    assert p["rows"] == {"products": 3, "interactions": 4, "order_lines": 4, "payments": 4}
    inter = p["tables"]["interactions"]
    assert inter["columns"]["timestamp"] == "datetime64[ns]"
    assert inter["distinct"] == {"customer_id": 2, "product_id": 3}
    assert inter["time_range"]["timestamp"] == ["2024-03-01T10:00:00", "2024-03-03T10:00:00"]
    assert inter["domain"]["events"] == {"view": 3, "purchase": 1}
    assert inter["domain"]["purchase_share"] == 0.25
    orders = p["tables"]["order_lines"]
    assert orders["nulls"] == {"customer_id": 1}
    assert orders["domain"]["return_share"] == 0.25
    assert orders["domain"]["guest_share"] == 0.25
    assert orders["domain"]["revenue"] == pytest.approx(2 + 2 + 9 - 1)
    pay = p["tables"]["payments"]["domain"]
    assert pay["fraud_rate"] == 0.5 and pay["frauds"] == 2
    assert pay["frauds_with_label_time"] == 1
    assert pay["label_delay_hours_median"] == 24.0
    assert pay["fraud_amount_share"] == pytest.approx(70 / 100)
    assert p["tables"]["products"]["domain"]["top_categories"] == {"x": 2, "y": 1}
    json.dumps(p)  # JSON-ready as it is


def test_flat_metrics_are_floats_with_table_prefix():
    m = flat_metrics(profile(_store()))
    assert m["payments.fraud_rate"] == 0.5
    assert m["interactions.rows"] == 4.0
    assert m["interactions.distinct.customer_id"] == 2.0
    assert all(isinstance(v, float) for v in m.values())


def test_profile_of_partial_and_empty_tables():
    store = _store()
    empty = Store(payments=store.payments.iloc[:0], name="empty")
    p = profile(empty)
    assert p["tables"]["payments"]["rows"] == 0
    assert p["tables"]["payments"]["domain"]["fraud_rate"] is None
    json.dumps(p)


def test_profile_of_the_known_future_tables():
    from features.contract import validate

    store = Store(
        promotions=validate(
            "promotions",
            pd.DataFrame(
                {
                    "product_id": ["a", None],
                    "category": [None, "x"],
                    "start": ["2024-03-10", "2024-03-20"],
                    "end": ["2024-03-12", "2024-03-20"],
                    "discount": [0.2, 0.4],
                    "planned_at": ["2024-03-01", "2024-03-10"],
                }
            ),
        ),
        prices=validate(
            "prices",
            pd.DataFrame(
                {
                    "product_id": ["a", "a"],
                    "valid_from": ["2024-01-01", "2024-04-01"],
                    "price": [2, 1],
                }
            ),
        ),
        closures=validate(
            "closures",
            pd.DataFrame({"date": ["2024-12-25", "2024-12-26"], "location": [None, "north"]}),
        ),
        name="plans",
    )
    p = profile(store)["tables"]
    assert p["promotions"]["domain"] == {
        "category_share": 0.5,
        "mean_days": 2.0,
        "mean_discount": pytest.approx(0.3),
        "median_lead_days": 9.5,
    }
    assert p["prices"]["domain"]["changes"] == 1
    assert p["closures"]["domain"]["shop_wide"] == 1
    json.dumps(profile(store))
