"""Shared helpers of the generic sources: renaming source columns to contract names."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from features.contract import TABLES
from shopml.errors import DataError

ColumnMap = Mapping[str, Mapping[str, str]]


def check_tables(names, what: str) -> None:
    """Raise a `DataError` for names that are not contract tables."""
    unknown = sorted(set(names) - set(TABLES))
    if unknown:
        raise DataError(f"{what}: unknown table(s) {unknown}; the contract has {list(TABLES)}")


def rename(df: pd.DataFrame, table: str, columns: ColumnMap | None, where: str) -> pd.DataFrame:
    """Rename `df`'s columns by `columns[table]` ({source name: contract name})."""
    mapping = dict((columns or {}).get(table, {}))
    absent = [c for c in mapping if c not in df.columns]
    if absent:
        raise DataError(
            f"{where}: table '{table}' has no column(s) {absent} to rename; "
            f"it has {list(df.columns)}"
        )
    return df.rename(columns=mapping) if mapping else df
