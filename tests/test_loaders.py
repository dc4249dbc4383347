"""Loaders of real data and generic sources: row counts on the real files, round trips, bad input."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.loaders import fraud_handbook, movielens, online_retail
from shopml.errors import DataError
from shopml.settings import load_settings

DATASETS = load_settings().datasets_dir


def _needs(relative: str):
    return pytest.mark.skipif(
        not (DATASETS / relative).exists(),
        reason=f"{DATASETS / relative} absent (set SHOPML_DATASETS to the datasets folder)",
    )


# ---------------------------------------------------------------- real data (DATASETS.md counts)


@pytest.fixture(scope="module")
def retail():
    return online_retail.load()


@pytest.mark.realdata
@_needs(online_retail.DEFAULT)
def test_online_retail_keeps_every_line_with_cancellations_and_guests(retail):
    lines = retail.order_lines
    assert len(lines) == online_retail.N_LINES == 541_909
    assert lines["order_id"].nunique() == 25_900
    assert lines["customer_id"].nunique() == 4_372
    assert lines["product_id"].nunique() == 4_070
    assert lines["country"].nunique() == 38
    cancelled = lines["order_id"].str.startswith("C")
    assert cancelled.sum() == 9_288
    assert (lines.loc[cancelled, "quantity"] < 0).all()
    assert lines["customer_id"].isna().mean() == pytest.approx(0.25, abs=0.01)
    assert "17850" in set(lines["customer_id"].dropna().head(5))
    assert lines["timestamp"].min() == pd.Timestamp("2010-12-01 08:26:00")
    assert lines["timestamp"].max() == pd.Timestamp("2011-12-09 12:50:00")
    assert (lines["timestamp"].dt.dayofweek != 5).all()  # the shop sells nothing on Saturdays
    assert (lines["unit_price"] >= 0).all()


@pytest.mark.realdata
@_needs(online_retail.DEFAULT)
def test_online_retail_negative_prices_become_negative_quantities_with_same_value(retail):
    lines = retail.order_lines
    bad_debt = lines[lines["product_id"] == "B"]
    assert len(bad_debt) == 3
    assert (bad_debt["quantity"] < 0).sum() == online_retail.NEGATIVE_PRICE_LINES == 2
    value = (bad_debt["quantity"] * bad_debt["unit_price"]).round(2).tolist()
    assert sorted(value) == [-11062.06, -11062.06, 11062.06]


@pytest.mark.realdata
@_needs(online_retail.DEFAULT)
def test_online_retail_interactions_and_products(retail):
    inter, products = retail.interactions, retail.products
    lines = retail.order_lines
    expected = ((lines["quantity"] > 0) & lines["customer_id"].notna()).sum()
    assert len(inter) == expected
    assert set(inter["event"]) == {"purchase"}
    assert (inter["quantity"] > 0).all()
    assert inter["customer_id"].notna().all()
    assert len(products) == 4_070
    assert products["product_id"].is_unique
    assert (products["price"] >= 0).all()
    by_id = products.set_index("product_id")
    assert by_id.loc["85123A", "name"] == "WHITE HANGING HEART T-LIGHT HOLDER"
    assert by_id.loc["85123A", "price"] == pytest.approx(2.95, abs=0.5)
    excluded = online_retail.non_product_codes(products)
    for code in ("POST", "DOT", "M", "BANK CHARGES", "AMAZONFEE", "C2", "D", "CRUK"):
        assert by_id.loc[code, "category"] == "non_product"
        assert code in excluded
    assert "85123A" not in excluded
    assert products["category"].nunique() >= 5
    assert (products["category"] == "general").mean() < 0.5


@pytest.mark.realdata
@_needs("movielens-100k/u.data")
def test_movielens_counts_and_ratings():
    store = movielens.load()
    inter = store.interactions
    assert len(inter) == 100_000
    assert inter["customer_id"].nunique() == 943
    assert inter["product_id"].nunique() == 1_682
    assert set(inter["event"]) == {"purchase"} and (inter["quantity"] == 1).all()
    assert set(inter["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    first = inter.iloc[0]
    assert (first["customer_id"], first["product_id"], first["rating"]) == ("196", "242", 3.0)
    assert first["timestamp"] == pd.Timestamp(881250949, unit="s")
    products = store.products.set_index("product_id")
    assert len(products) == 1_682
    assert products.loc["1", "name"] == "Toy Story (1995)"
    assert products.loc["1", "category"] == "Animation"
    assert set(inter["product_id"]) <= set(products.index)


@pytest.mark.realdata
@_needs(fraud_handbook.DEFAULT)
def test_fraud_handbook_counts_and_mapping():
    pay = fraud_handbook.load().payments
    assert len(pay) == 1_754_155
    assert int(pay["is_fraud"].sum()) == 14_681
    assert pay["transaction_id"].is_unique
    assert pay["customer_id"].nunique() == 4_990
    assert (pay["card_id"] == pay["customer_id"]).all()
    assert pay["terminal_id"].nunique() <= 10_000
    assert set(pay["currency"]) == {"EUR"}
    assert pay["label_time"].isna().all()
    assert set(pay["fraud_scenario"].unique()) == {0, 1, 2, 3}
    assert ((pay["fraud_scenario"] > 0) == pay["is_fraud"]).all()
    assert pay["timestamp"].min() >= pd.Timestamp("2018-04-01")
    assert pay["timestamp"].max() < pd.Timestamp("2018-10-01")
    assert isinstance(pay["transaction_id"].iloc[0], str)


# ---------------------------------------------------------------- missing files


@pytest.mark.parametrize(
    ("loader", "name"),
    [
        (online_retail.load, "online_retail.csv.gz"),
        (movielens.load, "u.data"),
        (fraud_handbook.load, "transactions.parquet"),
    ],
)
def test_missing_file_names_file_and_env_var(loader, name, tmp_path, monkeypatch):
    monkeypatch.setenv("SHOPML_DATASETS", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="SHOPML_DATASETS") as err:
        loader()
    assert name in str(err.value)
    with pytest.raises(DataError, match=name):
        loader(tmp_path)


# ---------------------------------------------------------------- tiny files with known answers


def _write_retail(path: Path, rows: list[str]) -> Path:
    header = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_online_retail_tiny_file(tmp_path):
    file = _write_retail(
        tmp_path / "retail.csv",
        [
            "1,85123A,WHITE HEART,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom",
            "1,POST,POSTAGE,1,2010-12-01 08:26:00,18.0,17850.0,United Kingdom",
            "2,85123A,WHITE HEART,2,2010-12-02 09:00:00,2.75,,France",
            "C3,85123A,WHITE HEART,-1,2010-12-03 10:00:00,2.55,17850.0,United Kingdom",
            "A4,B,Adjust bad debt,1,2010-12-04 10:00:00,-5.0,,United Kingdom",
        ],
    )
    store = online_retail.load(file)
    lines = store.order_lines
    assert lines["quantity"].tolist() == [6, 1, 2, -1, -1]
    assert lines["unit_price"].tolist() == [2.55, 18.0, 2.75, 2.55, 5.0]
    assert lines["customer_id"].tolist() == ["17850", "17850", None, "17850", None]
    assert store.interactions["product_id"].tolist() == ["85123A", "POST"]
    assert store.interactions["session_id"].tolist() == ["1", "1"]
    products = store.products.set_index("product_id")
    assert products.loc["85123A", "price"] == pytest.approx(2.65)
    assert products.loc["85123A", "category"] == "home_decor"
    assert products.loc["POST", "category"] == "non_product"
    assert online_retail.non_product_codes(store.products) == ["B", "POST"]


def test_online_retail_missing_column_and_bad_date(tmp_path):
    file = tmp_path / "retail.csv"
    file.write_text("InvoiceNo,StockCode,Quantity\n1,A,2\n")
    with pytest.raises(DataError, match="Description"):
        online_retail.load(file)
    _write_retail(file, ["1,A,x,2,yesterday,1.0,1.0,UK"])
    with pytest.raises(DataError, match="InvoiceDate"):
        online_retail.load(file)
