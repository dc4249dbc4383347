"""Store folders: atomic writes, read-back equality, fingerprints that track content."""

from __future__ import annotations

import pandas as pd
import pytest

from features.store import Store
from shopml.errors import DataError


def small_store() -> Store:
    products = pd.DataFrame(
        {"product_id": [1, 2, 3], "category": ["a", "a", "b"], "price": [1.0, 2.0, 3.0]}
    )
    interactions = pd.DataFrame(
        {
            "customer_id": [10, 10, 11],
            "product_id": [1, 2, 3],
            "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"]),
            "event": ["view", "purchase", "add_to_cart"],
            "quantity": [1, 2, 1],
        }
    )
    return Store(products=products, interactions=interactions, name="unit")


def test_write_then_read_round_trips(tmp_path):
    store = small_store()
    path = store.write(tmp_path / "s")
    back = Store.read(path)
    assert back.name == "unit"
    assert back.row_counts() == {"products": 3, "interactions": 3}
    assert back.fingerprint_id() == store.validated().fingerprint_id()
    assert back.products["product_id"].tolist() == ["1", "2", "3"]


def test_failed_validation_writes_nothing(tmp_path):
    store = small_store()
    store.interactions.loc[1, "event"] = "wishlist"
    with pytest.raises(DataError, match="interactions.event"):
        store.write(tmp_path / "s")
    assert list(tmp_path.iterdir()) == []


def test_existing_folder_is_not_overwritten_by_default(tmp_path):
    small_store().write(tmp_path / "s")
    with pytest.raises(FileExistsError):
        small_store().write(tmp_path / "s")
    small_store().write(tmp_path / "s", overwrite=True)


def test_fingerprint_changes_with_content():
    a, b = small_store(), small_store()
    assert a.fingerprint_id() == b.fingerprint_id()
    b.products.loc[0, "price"] = 1.5
    assert a.fingerprint_id() != b.fingerprint_id()


def test_require_names_missing_tables():
    with pytest.raises(DataError, match="no payments table"):
        small_store().require("payments")


def test_reading_a_folder_without_tables_fails(tmp_path):
    with pytest.raises(DataError, match="holds no table"):
        Store.read(tmp_path)


def test_read_and_validated_name_every_broken_table(tmp_path):
    """A store with several broken tables gets one error naming each (not only the first)."""
    folder = tmp_path / "s"
    small_store().write(folder)
    (folder / "products.parquet").write_bytes(b"not parquet")
    bad = small_store().interactions.assign(event=["view", "buy", "view"])
    bad.to_parquet(folder / "interactions.parquet")
    with pytest.raises(DataError) as err:
        Store.read(folder)
    text = str(err.value)
    assert "2 tables break the data contract" in text
    assert f"{folder / 'products.parquet'}: not a readable Parquet file" in text
    assert "interactions.event: value not in" in text
    broken = Store(products=small_store().products.assign(price=-1.0), interactions=bad)
    with pytest.raises(DataError, match="2 tables break") as err:
        broken.validated()
    assert "products.price: negative value" in str(err.value)
