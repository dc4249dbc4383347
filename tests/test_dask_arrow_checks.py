"""A Parquet partition checked in Arrow (`features.frames.arrow_checked`) is exactly what the
contract's `validate` makes of it, and anything `validate` would flag or convert is left to it."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from features.contract import validate
from features.frames import arrow_checked
from features.generator import GeneratorConfig, generate


@pytest.fixture(scope="module")
def tiny():
    return generate(GeneratorConfig(scale="tiny", seed=1)).validated()


def _as_dask_reads(df: pd.DataFrame) -> pd.DataFrame:
    from dask.dataframe._pyarrow import to_pyarrow_string
    from dask.dataframe.utils import pyarrow_strings_enabled

    return to_pyarrow_string(df) if pyarrow_strings_enabled() else df


@pytest.mark.parametrize("table", ["payments", "interactions", "order_lines", "customers"])
def test_a_clean_partition_checked_in_arrow_equals_the_validated_one(tiny, table):
    frame = getattr(tiny, table)
    arrow = pa.Table.from_pandas(frame.iloc[3:400], preserve_index=False)
    checked = arrow_checked(table, arrow)
    assert checked is not None  # the generator's tables take the fast path
    expected = _as_dask_reads(validate(table, arrow.to_pandas()))
    pd.testing.assert_frame_equal(checked, expected, check_exact=True)


def _broken(payments: pd.DataFrame, how: str) -> pd.DataFrame:
    df = payments.iloc[:200].copy()
    if how == "blank id":
        df.loc[df.index[7], "customer_id"] = "  "
    elif how == "null id":
        df.loc[df.index[7], "terminal_id"] = None
    elif how == "currency":
        df.loc[df.index[7], "currency"] = "XYZ"
    elif how == "negative amount":
        df.loc[df.index[7], "amount"] = -1.0
    elif how == "duplicate id":
        df.loc[df.index[9], "transaction_id"] = df["transaction_id"].iloc[3]
    elif how == "int ids":
        df["card_id"] = range(len(df))  # valid, but converted to strings by `validate`
    elif how == "tz-aware":
        df["timestamp"] = df["timestamp"].dt.tz_localize("UTC")
    elif how == "missing column":
        df = df.drop(columns="amount")
    return df


@pytest.mark.parametrize(
    "how",
    [
        "blank id",
        "null id",
        "currency",
        "negative amount",
        "duplicate id",
        "int ids",
        "tz-aware",
        "missing column",
    ],
)
def test_anything_validate_flags_or_converts_is_left_to_validate(tiny, how):
    arrow = pa.Table.from_pandas(_broken(tiny.payments, how), preserve_index=False)
    assert arrow_checked("payments", arrow) is None
