"""A store's data: the canonical tables it provides, validated, with read/write and fingerprint.

A source may provide only some tables (MovieLens has no payments; the fraud handbook has
only payments). Writing is all-or-nothing: every table is validated first, then Parquet files
go to a temporary folder that is renamed into place, so a failed write leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd
import pyarrow as pa

from features.contract import TABLES, TableErrors, validate, validate_tables
from shopml.errors import DataError

MANIFEST = "manifest.json"


@dataclass
class Store:
    """The canonical tables of one store; `None` for tables the source does not provide."""

    products: pd.DataFrame | None = None
    customers: pd.DataFrame | None = None
    interactions: pd.DataFrame | None = None
    order_lines: pd.DataFrame | None = None
    payments: pd.DataFrame | None = None
    promotions: pd.DataFrame | None = None  # known-future inputs (optional, see contract)
    prices: pd.DataFrame | None = None
    closures: pd.DataFrame | None = None
    name: str = "store"

    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables present, by contract name."""
        return {t: getattr(self, t) for t in TABLES if getattr(self, t) is not None}

    def require(self, *names: str) -> None:
        """Raise a `DataError` naming the tables a job needs that this store lacks."""
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise DataError(
                f"store '{self.name}' has no {', '.join(missing)} table; "
                f"it provides {list(self.tables())}"
            )

    def validated(self) -> Store:
        """A copy with every table checked and converted (one `DataError` naming each bad one)."""
        return Store(**validate_tables(self.tables()), name=self.name)

    def row_counts(self) -> dict[str, int]:
        return {t: int(len(df)) for t, df in self.tables().items()}

    def fingerprint(self) -> dict[str, dict[str, object]]:
        """Content hash and row count per table: two stores with equal fingerprints hold equal data."""
        return {
            t: {"rows": int(len(df)), "sha256": table_hash(df)} for t, df in self.tables().items()
        }

    def fingerprint_id(self) -> str:
        """One short id for the whole store's content (used to tell whether runs saw the same data)."""
        blob = json.dumps(self.fingerprint(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def write(self, path: str | Path, overwrite: bool = False) -> Path:
        """Validate every table, then write them as Parquet into `path` atomically."""
        path = Path(path)
        checked = self.validated()
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            for table, df in checked.tables().items():
                df.to_parquet(tmp / f"{table}.parquet", index=False)
            manifest = {"name": self.name, "fingerprint": checked.fingerprint()}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def read(cls, path: str | Path, tables: tuple[str, ...] | None = None) -> Store:
        """Read a folder written by `write` (or any folder of `<table>.parquet` files) and validate it."""
        path = Path(path)
        if not path.is_dir():
            raise DataError(f"store folder {path} does not exist")
        found, errors = {}, TableErrors()
        for table in tables or TABLES:
            file = path / f"{table}.parquet"
            if file.exists():
                with errors.collect(str(file)):
                    found[table] = validate(table, _read_parquet(file))
            elif (path / table).is_dir():  # partitioned (`features.frames`): read whole here
                parts = sorted((path / table).glob("part-*.parquet"))
                with errors.collect(str(path / table)):
                    frames = [_read_parquet(p) for p in parts]
                    found[table] = validate(table, pd.concat(frames, ignore_index=True))
        errors.raise_if_any()
        if not found:
            raise DataError(
                f"{path} holds no table of the contract ({', '.join(TABLES)}.parquet); "
                "for CSV files use the `files` source"
            )
        name = path.name
        manifest = path / MANIFEST
        if manifest.exists():
            name = json.loads(manifest.read_text()).get("name", name)
        return cls(**found, name=name)


def _read_parquet(file: Path) -> pd.DataFrame:
    """One Parquet file as a DataFrame; a `DataError` when it cannot be read (the caller names
    the file)."""
    try:
        return pd.read_parquet(file)
    except (OSError, ValueError, pa.ArrowException) as err:
        raise DataError(f"not a readable Parquet file ({err})") from None


def table_hash(df: pd.DataFrame) -> str:
    """sha256 over column names and row hashes, stable across runs and machines."""
    h = hashlib.sha256()
    h.update(json.dumps([str(c) for c in df.columns]).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def folder_mb(path: str | Path) -> float:
    """Size on disk of a store folder (every file under it), in MB."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e6


STORE_FIELDS = tuple(f.name for f in fields(Store))
