"""Partitioned sources for the Dask engine: a store written a chunk at a time as
`<table>/part-*.parquet`, SQL tables read in ranges of a key or time column; every partition
validated where it is read, and a bad one named in the error."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from dask_cluster import dask_client  # noqa: F401 (fixture)
from test_loaders import postgres_url  # noqa: F401 (fixture)

from features.frames import read_parquet_table, read_sql_table, read_store, sql_ranges
from features.generator import GeneratorConfig, generate_partitioned
from features.sources import SourceConfig, load_frames
from features.store import Store
from shopml.errors import DataError


@pytest.fixture(scope="module")
def tiny_parts(tmp_path_factory):
    out = tmp_path_factory.mktemp("parts") / "tiny"
    from features.generator import partitioned

    partitioned.write(GeneratorConfig(scale="tiny", seed=2), out, rows_per_file=3000)
    return out


def test_partitioned_store_is_deterministic_and_reads_the_same_both_ways(
    tiny_parts,
    tmp_path,
    dask_client,  # noqa: F811
):
    again = tmp_path / "again"
    generate_partitioned(GeneratorConfig(scale="tiny", seed=2), again)
    first = json.loads((tiny_parts / "manifest.json").read_text())
    assert first["partitions"]["payments"] >= 3  # really cut into pieces
    # other file sizes, the same rows: the fingerprint streams rows, not files
    assert json.loads((again / "manifest.json").read_text())["fingerprint"] == first["fingerprint"]
    whole = Store.read(tiny_parts)  # the local engine reads the pieces whole
    assert whole.fingerprint() == first["fingerprint"]
    assert whole.payments["transaction_id"].is_unique
    frames = read_store(tiny_parts)
    assert frames.payments.npartitions == first["partitions"]["payments"]
    assert frames.fingerprint() == first["fingerprint"]
    # one column asked for: each partition is still read and validated whole
    assert frames.payments["timestamp"].min().compute() == whole.payments["timestamp"].min()
    via_source = load_frames(SourceConfig(kind="store", path=tiny_parts), tables=("payments",))
    assert via_source.fingerprint_id() == whole.fingerprint_id()  # others from the manifest


def test_a_bad_partition_is_named_with_table_column_problem_and_rows(
    tiny_parts,
    tmp_path,
    dask_client,  # noqa: F811
):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_parts, bad)
    victim = sorted((bad / "payments").glob("part-*.parquet"))[1]
    df = pd.read_parquet(victim)
    df.loc[[3, 7], "amount"] = -5.0
    df.to_parquet(victim, index=False)
    frame = read_parquet_table(bad, "payments")
    with pytest.raises(DataError) as err:
        frame.compute()
    message = str(err.value)
    assert f"payments partition payments/{victim.name}" in message
    assert "payments.amount: negative value in 2 rows (e.g. rows [3, 7])" in message


def _payments_sql(url: str, df: pd.DataFrame) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        df.to_sql("pay", engine, index=False, if_exists="replace")
    finally:
        engine.dispose()


def _sample_payments(n: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "transaction_id": [f"T{i:05d}" for i in range(n)],
            "timestamp": pd.Timestamp("2024-01-01")
            + pd.to_timedelta(np.sort(rng.integers(0, 86_400 * 30, n)), unit="s"),
            "customer_id": rng.integers(0, 40, n).astype(str),
            "card_id": rng.integers(0, 50, n).astype(str),
            "terminal_id": rng.integers(0, 30, n).astype(str),
            "amount": rng.uniform(1, 100, n).round(2),
            "currency": "EUR",
            "is_fraud": rng.random(n) < 0.05,
            "label_time": pd.NaT,
        }
    )


@pytest.mark.parametrize("key", ["timestamp", "amount"])
def test_sql_in_ranges_of_a_key_or_time_column(tmp_path, key, dask_client):  # noqa: F811
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    df = _sample_payments()
    _payments_sql(url, df)
    frame = read_sql_table(url, "payments", "pay", key, 4)
    assert frame.npartitions == 4
    got = frame.compute().sort_values("transaction_id").reset_index(drop=True)
    assert len(got) == len(df)  # every row once: ranges are half-open, the last one closed
    assert got["transaction_id"].tolist() == df["transaction_id"].tolist()
    assert np.array_equal(got["amount"].to_numpy(), df["amount"].to_numpy())


def test_sql_source_on_postgres_names_the_bad_range(postgres_url, dask_client):  # noqa: F811
    df = _sample_payments()
    df.loc[df.index[-3:], "amount"] = -1.0  # the last days hold the bad rows
    _payments_sql(postgres_url, df)
    cfg = SourceConfig(
        kind="sql",
        url=postgres_url,
        tables={"payments": "pay"},
        partition_on={"payments": "timestamp"},
        partitions=3,
    )
    frames = load_frames(cfg, tables=("payments",))
    assert frames.payments.npartitions == 3
    with pytest.raises(DataError) as err:
        frames.payments.compute()
    message = str(err.value)
    assert "payments partition timestamp in [" in message and "]" in message
    assert "payments.amount: negative value in 3 rows" in message
    assert "password" not in message


def test_sql_ranges_cover_numbers_and_times():
    assert sql_ranges(0, 10, 2) == [(0, 5), (5, 10)]
    lo, hi = pd.Timestamp("2024-01-01"), pd.Timestamp("2024-01-03")
    ranges = sql_ranges(lo, hi, 2)
    assert ranges[0][0] == lo and ranges[-1][1] == hi and len(ranges) == 2
    assert sql_ranges(3, 3, 4) == [(3, 3)]  # one value: one closed range
