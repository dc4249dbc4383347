"""The data contract: every kind of bad input is reported with table, column, count and rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from features.contract import SCHEMAS, validate
from shopml.errors import DataError


def payments(n: int = 4) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(n)],
            "timestamp": pd.date_range("2024-01-01", periods=n, freq="h"),
            "customer_id": ["c1"] * n,
            "card_id": ["k1"] * n,
            "terminal_id": ["m1"] * n,
            "amount": np.linspace(1, 100, n),
            "currency": ["EUR"] * n,
            "is_fraud": [False] * n,
            "label_time": [pd.NaT] * n,
        }
    )


def test_valid_table_passes_and_keeps_rows():
    out = validate("payments", payments())
    assert len(out) == 4
    assert out["timestamp"].dtype == "datetime64[ns]"


def test_missing_required_column_is_named():
    with pytest.raises(DataError, match=r"payments\.amount: required column is missing"):
        validate("payments", payments().drop(columns="amount"))


def test_null_keys_are_counted_with_example_rows():
    df = payments(6)
    df.loc[[1, 4], "customer_id"] = None
    with pytest.raises(DataError) as err:
        validate("payments", df)
    assert "payments.customer_id: null or empty id in 2 rows (e.g. rows [1, 4])" in str(err.value)


def test_unparseable_timestamp_names_rows():
    df = payments().astype({"timestamp": str})
    df.loc[2, "timestamp"] = "yesterday-ish"
    with pytest.raises(
        DataError,
        match=r"payments\.timestamp: unparseable timestamp in 1 row \(e\.g\. rows \[2\]\)",
    ):
        validate("payments", df)


def test_duplicate_ids_and_negative_amounts_are_all_reported_at_once():
    df = payments()
    df.loc[3, "transaction_id"] = "t0"
    df.loc[1, "amount"] = -5.0
    with pytest.raises(DataError) as err:
        validate("payments", df)
    text = str(err.value)
    assert "2 problems" in text
    assert "payments.transaction_id: duplicate id in 1 row (e.g. rows [3])" in text
    assert "payments.amount: negative value in 1 row (e.g. rows [1])" in text


def test_wrong_type_is_reported():
    df = payments().astype({"amount": object})
    df.loc[0, "amount"] = "twelve"
    with pytest.raises(DataError, match=r"payments\.amount: not a number in 1 row"):
        validate("payments", df)


def test_unknown_currency_and_event_are_rejected():
    df = payments()
    df.loc[0, "currency"] = "XYZ"
    with pytest.raises(DataError, match="currency: value not in"):
        validate("payments", df)
    events = pd.DataFrame(
        {
            "customer_id": ["1"],
            "product_id": ["2"],
            "timestamp": ["2024-01-01"],
            "event": ["like"],
            "quantity": [1],
        }
    )
    with pytest.raises(DataError, match=r"interactions\.event: value not in .* \(saw \['like'\]\)"):
        validate("interactions", events)


def test_convertible_inputs_are_converted():
    df = payments()
    df["customer_id"] = [17850.0, 17850.0, 12.0, 13.0]  # how Online Retail writes ids
    df["timestamp"] = df["timestamp"].dt.tz_localize("Europe/Paris")
    df["is_fraud"] = ["0", "1", "false", "true"]
    out = validate("payments", df)
    assert out["customer_id"].tolist() == ["17850", "17850", "12", "13"]
    assert out["timestamp"].iloc[0] == pd.Timestamp("2023-12-31 23:00")
    assert out["is_fraud"].tolist() == [False, True, False, True]


def test_fractional_ids_are_rejected():
    df = payments()
    df["customer_id"] = [1.5, 2.0, 3.0, 4.0]
    with pytest.raises(DataError, match="fractional"):
        validate("payments", df)


def test_returns_are_negative_quantities_but_prices_are_not():
    lines = pd.DataFrame(
        {
            "order_id": ["o1", "C2"],
            "customer_id": ["1", None],
            "product_id": ["p", "p"],
            "timestamp": ["2024-01-01", "2024-01-02"],
            "quantity": [3, -3],
            "unit_price": [2.5, 2.5],
        }
    )
    out = validate("order_lines", lines)
    assert out["quantity"].tolist() == [3, -3]
    assert out["customer_id"].isna().tolist() == [False, True]  # guest checkout allowed
    lines.loc[1, "unit_price"] = -1.0
    with pytest.raises(DataError, match="order_lines.unit_price: negative value"):
        validate("order_lines", lines)


def test_input_frame_is_not_modified():
    df = payments()
    df["customer_id"] = [1, 2, 3, 4]
    before = df.copy()
    validate("payments", df)
    pd.testing.assert_frame_equal(df, before)


def test_unknown_table():
    with pytest.raises(DataError, match="unknown table 'orders'"):
        validate("orders", payments())


@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=30))
def test_integer_ids_round_trip_to_their_decimal_strings(ids):
    df = pd.DataFrame({"product_id": ids, "category": "a", "price": 1.0})
    df = df.drop_duplicates("product_id")
    out = validate("products", df)
    assert out["product_id"].tolist() == [str(i) for i in df["product_id"]]


def test_every_schema_documents_its_columns():
    for schema in SCHEMAS.values():
        assert schema.doc
        assert all(c.doc for c in schema.columns)


def test_known_future_tables_name_their_bad_rows():
    promotions = pd.DataFrame(
        {
            "product_id": ["p1", None, "p3", None],
            "category": [None, None, "toys", "toys"],
            "start": ["2024-03-01", "2024-03-05", "2024-03-01", "2024-03-09"],
            "end": ["2024-03-03", "2024-03-04", "2024-03-02", "2024-03-10"],
            "discount": [0.2, 0.1, 1.0, None],
        }
    )
    with pytest.raises(DataError) as err:
        validate("promotions", promotions)
    text = str(err.value)
    assert (
        "promotions.product_id: neither product_id nor category given in 1 row (e.g. rows [1])"
        in text
    )
    assert (
        "promotions.category: both product_id and category given in 1 row (e.g. rows [2])" in text
    )
    assert "promotions.end: end before start in 1 row (e.g. rows [1])" in text
    assert "promotions.discount: discount of 1 or more in 1 row (e.g. rows [2])" in text
    ok = validate("promotions", promotions.drop(index=[1, 2]))
    assert ok["promo"].all() and ok["start"].dtype == "datetime64[ns]"
    prices = pd.DataFrame(
        {
            "product_id": ["p1", "p1"],
            "valid_from": ["2024-03-01 08:00", "2024-03-01"],
            "price": [2, -1],
        }
    )
    with pytest.raises(DataError) as err:
        validate("prices", prices)
    assert "prices.valid_from: two prices for the same product and day in 1 row" in str(err.value)
    assert "prices.price: negative value in 1 row (e.g. rows [1])" in str(err.value)
    with pytest.raises(DataError, match=r"closures\.date: unparseable timestamp in 1 row"):
        validate("closures", pd.DataFrame({"date": ["2024-12-25", "Christmas"]}))
    with pytest.raises(DataError, match="promotions.product_id: required column is missing"):
        validate("promotions", promotions[["start", "end"]])
