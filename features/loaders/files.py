"""A folder of files, one per table: `<table>.parquet`, `<table>.csv` or `<table>.csv.gz`
(or one such file alone).

CSV cells are read as text and converted by the contract (so ids like "007" keep their zeros);
an optional mapping renames source columns to contract names per table. `save` writes a store in
the same layout, for exchanging data with other tools.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa

from features.contract import TABLES, TableErrors, validate
from features.loaders._columns import ColumnMap, check_tables, rename
from features.store import Store
from shopml.errors import DataError

SUFFIXES = (".parquet", ".csv", ".csv.gz")


def find(folder: Path, table: str) -> Path | None:
    """The one file holding `table` in `folder`, or None; two candidates are an error."""
    found = [folder / f"{table}{s}" for s in SUFFIXES if (folder / f"{table}{s}").is_file()]
    if len(found) > 1:
        raise DataError(
            f"files: table '{table}' is in several files {[f.name for f in found]}; keep one"
        )
    return found[0] if found else None


def table_of(file: Path) -> str:
    """The contract table a file holds, from its name `<table><suffix>` (else a `DataError`)."""
    for suffix in SUFFIXES:
        stem = file.name.removesuffix(suffix)
        if stem != file.name and stem in TABLES:
            return stem
    raise DataError(
        f"files: {file} is not named <table>.parquet, <table>.csv or <table>.csv.gz "
        f"with table in {list(TABLES)}"
    )


def read_file(file: Path) -> pd.DataFrame:
    """One table file as a DataFrame (CSV cells as text; empty cells as missing)."""
    try:
        if file.name.endswith(".parquet"):
            return pd.read_parquet(file)
        return pd.read_csv(file, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, ValueError, pd.errors.ParserError, pa.ArrowException) as err:
        raise DataError(f"files: cannot read {file}: {err}") from err


def load(
    path: str | Path,
    tables: tuple[str, ...] | list[str] | None = None,
    columns: ColumnMap | None = None,
    name: str | None = None,
) -> Store:
    """Read the tables found in `path` (or exactly `tables`, each then required) and validate them.

    `path` may also be one `<table>.<suffix>` file: a store of that table alone.
    """
    folder = Path(path).expanduser()
    single = table_of(folder) if folder.is_file() else None
    if single is None and not folder.is_dir():
        raise DataError(f"files: folder {folder} does not exist")
    if tables is not None:
        check_tables(tables, "files")
    check_tables(columns or {}, "files: columns")
    if single is not None:
        located, folder = {single: folder}, folder.parent
    else:
        located = {t: find(folder, t) for t in tables or TABLES}
    absent = [t for t, file in located.items() if file is None]
    if tables is not None and absent:
        raise DataError(
            f"files: table(s) {absent} not found in {folder} (expected "
            f"<table>{' or <table>'.join(SUFFIXES)})"
        )
    found: dict[str, pd.DataFrame] = {}
    errors = TableErrors()  # every broken file is named, not only the first
    for table, file in located.items():
        if file is None:
            continue
        with errors.collect():
            df = rename(read_file(file), table, columns, f"files: {file}")
            with errors.collect(str(file)):
                found[table] = validate(table, df)
    errors.raise_if_any()
    if not found:
        raise DataError(
            f"files: {folder} holds no table file; name them <table>.parquet, "
            f"<table>.csv or <table>.csv.gz with table in {list(TABLES)}"
        )
    return Store(**found, name=name or folder.name)


def save(
    store: Store, path: str | Path, fmt: Literal["parquet", "csv", "csv.gz"] = "parquet"
) -> Path:
    """Validate `store` and write one `<table>.<fmt>` per table into `path` (created if needed)."""
    if fmt not in ("parquet", "csv", "csv.gz"):
        raise DataError(f"files: unknown format {fmt!r}; use parquet, csv or csv.gz")
    checked = store.validated()
    folder = Path(path).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    for table, df in checked.tables().items():
        file = folder / f"{table}.{fmt}"
        if fmt == "parquet":
            df.to_parquet(file, index=False)
        else:
            df.to_csv(file, index=False, date_format="%Y-%m-%dT%H:%M:%S.%f")
    return folder
