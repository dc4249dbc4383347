"""Loaders of real data and generic sources: row counts on the real files, round trips, bad input."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
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
    head = pay.iloc[:50_000]  # uniqueness of transaction_id is checked by the contract itself
    assert pay["customer_id"].nunique() == 4_990
    assert (head["card_id"] == head["customer_id"]).all()
    assert head["terminal_id"].str.fullmatch(r"\d+").all()
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


# ---------------------------------------------------------------- generic sources: files


def _tiny_store():
    from features.store import Store

    products = pd.DataFrame(
        {"product_id": ["007", "p2"], "category": ["toys", "books"], "price": [9.5, 0.0]}
    )
    customers = pd.DataFrame(
        {
            "customer_id": ["c1", "c2"],
            "signup_at": pd.to_datetime(["2024-01-01 10:00", "2024-02-01 11:30"]),
            "country": ["FR", None],
        }
    )
    interactions = pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c2"],
            "product_id": ["007", "p2", "007"],
            "timestamp": pd.to_datetime(
                ["2024-03-01 10:00", "2024-03-01 10:05", "2024-03-02 00:00"]
            ),
            "event": ["view", "purchase", "add_to_cart"],
            "quantity": [1, 2, 1],
        }
    )
    order_lines = pd.DataFrame(
        {
            "order_id": ["o1", "o2"],
            "customer_id": ["c1", None],
            "product_id": ["p2", "007"],
            "timestamp": pd.to_datetime(["2024-03-01 10:06", "2024-03-03 00:00"]),
            "quantity": [2, -1],
            "unit_price": [4.25, 9.5],
            "country": ["FR", "DE"],
        }
    )
    payments = pd.DataFrame(
        {
            "transaction_id": ["t1", "t2"],
            "timestamp": pd.to_datetime(["2024-03-01 10:06:01", "2024-03-03 00:00:00"]),
            "customer_id": ["c1", "c2"],
            "card_id": ["k1", "k2"],
            "terminal_id": ["web", "web"],
            "amount": [8.5, 9.5],
            "currency": ["EUR", "EUR"],
            "is_fraud": [False, True],
            "label_time": pd.to_datetime([None, "2024-03-10"]),
        }
    )
    promotions = pd.DataFrame(  # known-future tables: a product and a category promotion
        {
            "product_id": ["007", None],
            "category": [None, "books"],
            "start": pd.to_datetime(["2024-03-04", "2024-03-10"]),
            "end": pd.to_datetime(["2024-03-06", "2024-03-10"]),
            "discount": [0.2, None],
            "promo": [True, True],
            "planned_at": pd.to_datetime(["2024-02-20 09:00", None]),
        }
    )
    prices = pd.DataFrame(
        {
            "product_id": ["007", "007"],
            "valid_from": pd.to_datetime(["2024-01-01", "2024-03-15"]),
            "price": [9.5, 8.0],
            "planned_at": pd.to_datetime([None, "2024-03-01"]),
        }
    )
    closures = pd.DataFrame(
        {
            "date": pd.to_datetime(["2024-03-08", "2024-03-09"]),
            "product_id": ["p2", None],
            "location": [None, "north"],
        }
    )
    return Store(
        products,
        customers,
        interactions,
        order_lines,
        payments,
        promotions=promotions,
        prices=prices,
        closures=closures,
        name="tiny",
    ).validated()


def _assert_same(a, b):
    assert set(a.tables()) == set(b.tables())
    for table, df in a.tables().items():
        other = b.tables()[table][df.columns]
        pd.testing.assert_frame_equal(df, other, check_dtype=True)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "csv.gz"])
def test_files_round_trip(tmp_path, fmt):
    from features.loaders import files

    store = _tiny_store()
    files.save(store, tmp_path / "shop", fmt=fmt)
    back = files.load(tmp_path / "shop")
    assert back.name == "shop"
    _assert_same(store, back)
    assert back.products["product_id"].tolist() == ["007", "p2"]  # leading zeros kept


def test_files_rename_and_subset(tmp_path):
    from features.loaders import files

    (tmp_path / "products.csv").write_text("sku,cat,price\nA,x,1.5\nB,y,2\n")
    (tmp_path / "notes.txt").write_text("ignored")
    store = files.load(tmp_path, columns={"products": {"sku": "product_id", "cat": "category"}})
    assert store.products["product_id"].tolist() == ["A", "B"]
    assert store.products["price"].tolist() == [1.5, 2.0]
    assert list(store.tables()) == ["products"]
    with pytest.raises(DataError, match="payments"):
        files.load(tmp_path, tables=["products", "payments"])
    with pytest.raises(DataError, match="'sku_id'"):
        files.load(tmp_path, columns={"products": {"sku_id": "product_id"}})


def test_files_bad_input_names_table_and_column(tmp_path):
    from features.loaders import files

    (tmp_path / "order_lines.csv").write_text(
        "order_id,customer_id,product_id,timestamp,quantity\no1,c1,p1,2024-01-01,1\n"
    )
    with pytest.raises(DataError, match=r"order_lines\.unit_price: required column is missing"):
        files.load(tmp_path)
    (tmp_path / "order_lines.csv").write_text(
        "order_id,customer_id,product_id,timestamp,quantity,unit_price\n"
        "o1,c1,p1,2024-01-01,1,2.0\no2,c1,p1,not a date,1,2.0\n"
    )
    with pytest.raises(DataError, match=r"order_lines\.timestamp: unparseable timestamp in 1 row"):
        files.load(tmp_path)
    (tmp_path / "order_lines.parquet").write_bytes(b"")
    with pytest.raises(DataError, match="several files"):
        files.load(tmp_path)
    with pytest.raises(DataError, match="no table file"):
        files.load(_empty(tmp_path))


def _empty(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir(exist_ok=True)
    return folder


# ---------------------------------------------------------------- generic sources: SQL


def _fill_database(url: str, store) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for table, df in store.tables().items():
            df.rename(columns={"product_id": "sku"} if table == "products" else {}).to_sql(
                f"shop_{table}", conn, index=False, if_exists="replace"
            )
    engine.dispose()


def _check_sql_source(url: str) -> None:
    from features.loaders import sql

    store = _tiny_store()
    _fill_database(url, store)
    queries = {t: f"SELECT * FROM shop_{t}" for t in store.tables() if t != "products"}
    back = sql.load(
        url,
        queries=queries,
        tables={"products": "shop_products"},
        columns={"products": {"sku": "product_id"}},
    )
    _assert_same(store, back)
    only_fraud = sql.load(
        url, queries={"payments": "SELECT * FROM shop_payments WHERE is_fraud ORDER BY 1"}
    )
    assert only_fraud.payments["transaction_id"].tolist() == ["t2"]
    with pytest.raises(DataError, match="'payments'.*failed"):
        sql.load(url, queries={"payments": "SELECT * FROM no_such_table"})
    with pytest.raises(DataError, match=r"payments\.amount: required column is missing"):
        sql.load(url, queries={"payments": "SELECT transaction_id FROM shop_payments"})
    with pytest.raises(DataError, match="2 tables break the data contract") as err:
        sql.load(
            url,
            queries={
                "payments": "SELECT transaction_id FROM shop_payments",
                "customers": "SELECT * FROM no_such_table",
            },
        )
    assert "payments.amount" in str(err.value) and "'customers'" in str(err.value)


def test_sqlite_query_source(tmp_path):
    _check_sql_source(f"sqlite:///{tmp_path / 'shop.db'}")


def test_sql_errors_hide_password_and_name_tables():
    from features.loaders import sql

    with pytest.raises(DataError, match="unknown table"):
        sql.load("sqlite://", queries={"orders": "SELECT 1"})
    with pytest.raises(DataError) as err:
        sql.load("postgresql+psycopg://me:s3cret@127.0.0.1:1/db", queries={"payments": "SELECT 1"})
    assert "s3cret" not in str(err.value) and "***" in str(err.value)


def test_postgresql_query_source(postgres_url):
    _check_sql_source(postgres_url)


# ---------------------------------------------------------------- a real PostgreSQL for the test


def _pg_bin() -> Path | None:
    """The folder of PostgreSQL's server binaries (initdb, pg_ctl), newest version first."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version, reverse=True)
    return Path(candidates[0]).parent if candidates else None


def _version(path: str) -> int:
    part = Path(path).parts[-3]
    return int(part) if part.isdigit() else 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server on a free loopback port, stopped and deleted afterwards.

    Needs the server binaries (Debian: `apt-get install -y postgresql`). PostgreSQL refuses to
    run as root, so as root the server runs as the `postgres` user (or `nobody`) via runuser.
    `SHOPML_TEST_POSTGRES_URL` (a SQLAlchemy URL) uses an existing server instead.
    """
    existing = os.environ.get("SHOPML_TEST_POSTGRES_URL")
    if existing:
        yield existing
        return
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql"
        )
    run_as: list[str] = []
    root = tempfile.mkdtemp(prefix="shopml-pg-")  # under /tmp so another user can reach it
    if os.geteuid() == 0:
        user = "postgres"
        try:
            pwd.getpwnam(user)
        except KeyError:
            user = "nobody"
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        shutil.chown(root, user=user)
        run_as = ["runuser", "-u", user, "--"]
    data, port = os.path.join(root, "data"), _free_port()
    pg_ctl = [*run_as, str(bin_dir / "pg_ctl"), "-D", data]
    try:
        subprocess.run(
            [
                *run_as,
                str(bin_dir / "initdb"),
                "-D",
                data,
                "-A",
                "trust",
                "-U",
                "shopml",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [
                *pg_ctl,
                "-o",
                f"-k {root} -h 127.0.0.1 -p {port} -F",
                "-l",
                os.path.join(root, "log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            check=True,
            capture_output=True,
            timeout=90,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        log = Path(root, "log")
        detail = log.read_text()[-2000:] if log.exists() else getattr(err, "stderr", b"")
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL from {bin_dir}: {err}\n{detail}")
    try:
        yield f"postgresql+psycopg://shopml@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
