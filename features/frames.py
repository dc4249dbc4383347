"""Contract tables as Dask dataframes: partitioned Parquet folders and SQL read in pieces.

A table too big for one process is a folder `<table>/part-*.parquet` (what the `xlarge`
generator writes) or a SQL table cut into ranges of a key or time column. Each piece is read
and validated by the worker that needs it (`features.contract.validate`), so a bad piece fails
with the table, column, problem and rows *and the partition* it was found in; nothing is
gathered in the client. `FrameStore` is the Dask side of `features.store.Store`: the same
fingerprint (rows and sha256 per table, streamed partition by partition), never the whole table
in one process.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.contract import SCHEMAS, TABLES, validate
from shopml.errors import DataError

PART_GLOB = "part-*.parquet"


def _dd():
    """dask.dataframe, imported on use (0.5 s, and only Dask jobs need it)."""
    import dask.dataframe as dd

    return dd


def table_parts(path: str | Path, table: str) -> list[Path]:
    """The Parquet files of `table` under a store folder: `<table>/part-*.parquet` in name order,
    else the single `<table>.parquet`; empty when the folder holds neither."""
    path = Path(path)
    folder = path / table
    if folder.is_dir():
        return sorted(folder.glob(PART_GLOB))
    single = path / f"{table}.parquet"
    return [single] if single.is_file() else []


def _read_part(file: str, table: str, subset: tuple[str, ...] | None) -> pd.DataFrame:
    """One partition: read and validated; a `DataError` names the table and the partition.

    (Not named `columns`: Dask would push its column projection into it, and a partition is
    validated whole, every required column present.)"""
    where = f"{table} partition {Path(file).parent.name}/{Path(file).name}"
    try:
        arrow = pq.read_table(file, columns=list(subset) if subset else None)
        checked = arrow_checked(table, arrow)
        if checked is not None:
            return checked
        df = arrow.to_pandas()
    except (OSError, ValueError, pa.ArrowException) as err:
        raise DataError(f"{where}: not a readable Parquet file ({err})") from None
    try:
        return validate(table, df)
    except DataError as err:
        raise DataError(f"{where} (rows counted within the partition): {err}") from None


# ----------------------------------------------------------------- a partition checked in Arrow
_STRINGS = (pa.string(), pa.large_string())
# tables `validate` post-processes beyond its column checks (row checks, added columns)
_POST_PROCESSED = ("promotions", "prices", "products")
_EXACT_INT = 2**53  # int ids/counts pass through float64 in `validate`: exact up to here


def arrow_checked(table: str, arrow: pa.Table) -> pd.DataFrame | None:
    """What `validate(table, arrow.to_pandas())` returns (then as Dask converts it: strings as
    `string[pyarrow]` when Dask's `dataframe.convert-string` is on), when the Arrow table
    provably passes the contract with nothing to convert; else None, and the caller runs
    `validate` (its converted copy, its exact error naming column, problem and rows).

    Why: a partition's ids are checked here in Arrow's vectorised kernels, and never turned
    into Python strings only to be validated and turned back into Arrow strings by Dask (three
    passes over every id of every payment). Only plain types are taken: string ids without
    blanks, timestamp[ns] without a time zone, float64, int64 (not nullable), bool without
    nulls; anything else (or any value `validate` would flag or change) goes to `validate`."""
    schema = SCHEMAS.get(table)
    names = arrow.column_names
    if schema is None or table in _POST_PROCESSED or len(set(names)) != len(names):
        return None
    if any(c not in names for c in schema.required):
        return None
    for col in schema.columns:
        if col.name in names and not _arrow_passes(col, arrow.column(col.name)):
            return None
    for name in schema.unique:
        if name in names:
            ids = arrow.column(name)
            distinct = pc.count_distinct(ids, mode="only_valid").as_py()
            if distinct != len(ids) - ids.null_count:
                return None
    from dask.dataframe.utils import pyarrow_strings_enabled

    strings = pd.StringDtype("pyarrow")
    mapper = {t: strings for t in _STRINGS}.get if pyarrow_strings_enabled() else None
    df = arrow.to_pandas(types_mapper=mapper)
    if not (isinstance(df.index, pd.RangeIndex) and df.index.start == 0 and df.index.step == 1):
        df = df.reset_index(drop=True)
    return df


def _arrow_passes(col, values: pa.ChunkedArray) -> bool:
    """True when `validate` finds no problem in the column and keeps its values and dtype."""
    kind, typ, nulls = col.kind, values.type, values.null_count
    if nulls and not col.nullable:
        return False
    if kind in ("id", "string"):
        if typ not in _STRINGS:
            return False
        if kind == "id":  # blank ids are a problem, or become null where nullable
            blank = pc.equal(pc.utf8_trim_whitespace(values), "")
            return not pc.any(blank).as_py()
        if col.allowed is not None:
            inside = pc.sum(pc.is_in(values, value_set=pa.array(col.allowed))).as_py() or 0
            return inside == len(values) - nulls
        return True
    if kind == "timestamp":
        return pa.types.is_timestamp(typ) and typ.unit == "ns" and typ.tz is None
    if kind == "bool":
        return typ == pa.bool_() and not nulls
    if kind == "float":
        if typ != pa.float64():
            return False
        x = values.to_numpy()
        if np.isinf(x).any() or (not col.nullable and np.isnan(x).any()):
            return False
        return not (col.non_negative and (x < 0).any())
    if kind == "int":  # `validate` makes nullable ints Int64: not this type
        if typ != pa.int64() or col.nullable:
            return False
        if not len(values):
            return True
        lo, hi = pc.min_max(values).values()
        lo, hi = lo.as_py(), hi.as_py()
        if max(abs(lo), abs(hi)) > _EXACT_INT:
            return False
        return not (col.non_negative and lo < 0)
    return False


def _meta(file: Path, table: str, columns: tuple[str, ...] | None) -> pd.DataFrame:
    """The validated, empty frame of a partition's schema (the dataframe's meta)."""
    try:
        schema = pq.read_schema(file)
    except (OSError, ValueError, pa.ArrowException) as err:
        raise DataError(
            f"{table} partition {file.name}: not a readable Parquet file ({err})"
        ) from None
    empty = schema.empty_table().to_pandas()
    if columns:
        empty = empty[[c for c in columns if c in empty.columns]]
    return validate(table, empty)


def read_parquet_table(path: str | Path, table: str, columns: Sequence[str] | None = None):
    """`table` of the store folder `path` as a Dask dataframe, one partition per Parquet file,
    each validated when it is read (a `DataError` naming the partition)."""
    if table not in TABLES:
        raise DataError(f"unknown table '{table}'; the contract has {list(TABLES)}")
    files = table_parts(path, table)
    if not files:
        raise DataError(f"{path}: no {table}/{PART_GLOB} nor {table}.parquet")
    cols = tuple(columns) if columns else None
    meta = _meta(files[0], table, cols)
    return _dd().from_map(
        _read_part,
        [str(f) for f in files],
        table=table,
        subset=cols,
        meta=meta,
        enforce_metadata=False,
        label=f"read-{table}",
    )


def from_pandas(df: pd.DataFrame, npartitions: int):
    """A validated in-memory table cut into `npartitions` row ranges (order kept)."""
    return _dd().from_pandas(df, npartitions=max(1, int(npartitions)), sort=False)


# ----------------------------------------------------------------- SQL in ranges
def sql_ranges(lo, hi, n: int) -> list[tuple[object, object]]:
    """`n` half-open ranges [a, b) covering [lo, hi] of a number or a time (the last one closed)."""
    n = max(1, int(n))
    if isinstance(lo, pd.Timestamp | np.datetime64) or hasattr(lo, "isoformat"):
        lo_us, hi_us = pd.Timestamp(lo).value // 1000, pd.Timestamp(hi).value // 1000
        edges = np.linspace(lo_us, hi_us, n + 1).astype("int64")  # databases keep microseconds
        edges = [pd.Timestamp(int(e), unit="us").to_pydatetime() for e in np.unique(edges)]
    else:
        raw = np.linspace(float(lo), float(hi), n + 1)
        edges = list(np.unique(raw.astype("int64") if float(lo).is_integer() else raw))
        edges = [e.item() if hasattr(e, "item") else e for e in edges]
    if len(edges) == 1:
        edges = [edges[0], edges[0]]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _text_ranges(lo: str, hi: str, n: int) -> list[tuple[str, str]]:
    """`sql_ranges` of times stored as ISO text, the edges written as the stored values are (the
    first and last edge are the stored minimum and maximum themselves)."""
    sep = "T" if "T" in hi else " "
    fmt = f"%Y-%m-%d{sep}%H:%M:%S" + (".%f" if "." in hi else "")
    ranges = sql_ranges(pd.Timestamp(lo), pd.Timestamp(hi), n)
    edges = [lo, *(b.strftime(fmt) for _, b in ranges[:-1]), hi]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _sql_part(
    url: str, table: str, query: str, key: str, lo, hi, last: bool, columns
) -> pd.DataFrame:
    """One range of a SQL table: rows with lo <= key < hi (<= hi for the last range), validated."""
    import sqlalchemy as sa

    from features.loaders import sql
    from features.loaders._columns import rename

    op = "<=" if last else "<"
    text = sa.text(f"SELECT * FROM ({query}) AS q WHERE q.{key} >= :lo AND q.{key} {op} :hi")
    where = f"{table} partition {key} in [{lo}, {hi}{']' if last else ')'}"
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            df = pd.read_sql(text, conn, params={"lo": lo, "hi": hi})
    except sa.exc.SQLAlchemyError as err:
        raise DataError(
            f"sql: {where} failed on {sql.safe_url(url)}: {getattr(err, 'orig', None) or err}"
        ) from None
    finally:
        engine.dispose()
    df = rename(df, table, columns, f"sql: {sql.safe_url(url)}")
    try:
        return validate(table, df)
    except DataError as err:
        raise DataError(f"{where} (rows counted within the partition): {err}") from None


def read_sql_table(
    url: str,
    table: str,
    source: str,
    partition_on: str,
    npartitions: int,
    columns: dict | None = None,
):
    """A contract table from SQL as a Dask dataframe: the query (or database table) `source`
    cut into `npartitions` ranges of the key or time column `partition_on`, each read and
    validated by a worker (a `DataError` naming the range)."""
    import sqlalchemy as sa

    from features.loaders import sql

    if not partition_on.isidentifier():
        raise DataError(f"sql: partition_on.{table}: {partition_on!r} is not a column name")
    query = source if " " in source.strip() else f"SELECT * FROM {source}"
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            lo, hi = conn.execute(
                sa.text(f"SELECT MIN(q.{partition_on}), MAX(q.{partition_on}) FROM ({query}) AS q")
            ).one()
            head = pd.read_sql(sa.text(f"SELECT * FROM ({query}) AS q LIMIT 0"), conn)
    except sa.exc.SQLAlchemyError as err:
        raise DataError(
            f"sql: table '{table}' on {sql.safe_url(url)}: {getattr(err, 'orig', None) or err}"
        ) from None
    finally:
        engine.dispose()
    if lo is None:
        raise DataError(f"sql: table '{table}' is empty (no {partition_on} to cut ranges of)")
    if isinstance(lo, str):  # times stored as text (SQLite): bounds compared as that text
        ranges = _text_ranges(lo, hi, npartitions)
    else:
        ranges = sql_ranges(lo, hi, npartitions)
    from features.loaders._columns import rename

    meta = validate(table, rename(head, table, columns, "sql"))
    args = [(lo_, hi_, i == len(ranges) - 1) for i, (lo_, hi_) in enumerate(ranges)]
    return _dd().from_map(
        lambda a: _sql_part(url, table, query, partition_on, a[0], a[1], a[2], columns),
        args,
        meta=meta,
        enforce_metadata=False,
        label=f"sql-{table}",
    )


# ----------------------------------------------------------------- ids unique across partitions
def _id_hashes(values: pd.Series) -> pd.DataFrame:
    """One partition's ids: each distinct 64-bit hash of an id and how often it occurs."""
    h = np.sort(pd.util.hash_array(np.asarray(values, dtype=object)))
    return _counted(h, np.ones(h.shape[0], dtype="int64"))


def _counted(h: np.ndarray, counts: np.ndarray) -> pd.DataFrame:
    """Sorted hashes with counts -> one row per distinct hash with the summed count."""
    if not h.shape[0]:
        return pd.DataFrame({"h": h.astype("uint64"), "n": counts.astype("int64")})
    first = np.ones(h.shape[0], dtype=bool)
    first[1:] = h[1:] != h[:-1]
    starts = np.flatnonzero(first)
    return pd.DataFrame({"h": h[starts], "n": np.add.reduceat(counts, starts)})


def _merge_hashes(parts: pd.DataFrame) -> pd.DataFrame:
    order = np.argsort(parts["h"].to_numpy(), kind="stable")
    return _counted(parts["h"].to_numpy()[order], parts["n"].to_numpy()[order])


def _repeated_hashes(parts: pd.DataFrame) -> pd.DataFrame:
    merged = _merge_hashes(parts)
    return merged[merged["n"].to_numpy() > 1].reset_index(drop=True)


def repeated_id_hashes(frame, column: str):
    """A lazy (Dask) frame of the hashes of `column`'s values seen in more than one row of
    `frame`, over all its partitions (8 bytes a distinct id travel, in a tree of merges):
    usually empty. Compute it with the job's other figures, then `check_unique_ids`."""
    return frame[column].reduction(
        _id_hashes,
        aggregate=_repeated_hashes,
        combine=_merge_hashes,
        meta=pd.DataFrame({"h": np.empty(0, "uint64"), "n": np.empty(0, "int64")}),
        split_every=8,
    )


def _rows_of(part: pd.DataFrame, column: str, hashes: np.ndarray, partition_info=None):
    values = part[column]
    hit = np.isin(pd.util.hash_array(np.asarray(values, dtype=object)), hashes)
    number = partition_info["number"] if partition_info else -1
    return pd.DataFrame(
        {
            "partition": np.full(int(hit.sum()), number, dtype="int64"),
            "row": np.flatnonzero(hit).astype("int64"),
            "value": values.to_numpy(dtype=object)[hit],
        }
    )


def check_unique_ids(
    frame,
    table: str,
    column: str,
    repeated: pd.DataFrame,
    names: Sequence[str] | None = None,
) -> None:
    """Raise the contract's `DataError` (table, column, problem, rows and their partitions)
    when an id of `column` is in two rows of `frame`, within or across partitions. `repeated`
    is the computed `repeated_id_hashes`: only when it is not empty are the rows holding those
    hashes read again to compare the ids themselves (a hash collision is no duplicate)."""
    if not len(repeated):
        return
    hashes = repeated["h"].to_numpy()
    meta = pd.DataFrame({"partition": [0], "row": [0], "value": [""]}).iloc[:0]
    found = frame.map_partitions(_rows_of, column, hashes, meta=meta).compute()
    found = found.sort_values(["partition", "row"], kind="stable")
    dup = found[found["value"].duplicated(keep="first")]  # the later rows, as `validate` counts
    if not len(dup):
        return
    first = found.drop_duplicates("value", keep="first").set_index("value")

    def at(p: int, r: int) -> str:
        return f"{names[p] if names is not None else f'partition {p}'} row {r}"

    where = [
        f"{at(p, r)} repeats {at(*first.loc[v, ['partition', 'row']])}"
        for p, r, v in zip(
            dup["partition"].head(3), dup["row"].head(3), dup["value"].head(3), strict=True
        )
    ]
    rows = "row" if len(dup) == 1 else "rows"
    raise DataError(
        f"table '{table}' breaks the data contract (1 problem):\n  - {table}.{column}: "
        f"duplicate id in {len(dup)} {rows} across partitions (e.g. {', '.join(where)}; "
        "rows counted within each partition)"
    )


# ----------------------------------------------------------------- the store of frames
def _row_hashes(df: pd.DataFrame) -> np.ndarray:
    """Per-row hashes as `features.store.table_hash` feeds them (strings as Python objects, so
    an Arrow string column hashes as the object column of the local engine does)."""
    obj = df.copy()
    for c in obj.columns:
        if isinstance(obj[c].dtype, pd.StringDtype) or str(obj[c].dtype).startswith("string"):
            obj[c] = obj[c].astype(object).where(obj[c].notna(), None)
    return pd.util.hash_pandas_object(obj, index=False).to_numpy()


@dataclass
class FrameStore:
    """Tables as Dask dataframes, with `Store`'s name and fingerprint (equal to the local
    store's for equal data: the row hashes are streamed into one sha256 per table)."""

    tables: dict = field(default_factory=dict)
    name: str = "store"
    known: dict = field(default_factory=dict)  # fingerprints of the source's tables not read
    _fingerprint: dict | None = field(default=None, repr=False)

    def __getattr__(self, table: str):
        if table in TABLES:
            return self.tables.get(table)
        raise AttributeError(table)

    def require(self, *names: str) -> None:
        missing = [n for n in names if n not in self.tables]
        if missing:
            raise DataError(
                f"store '{self.name}' has no {', '.join(missing)} table; "
                f"it provides {list(self.tables)}"
            )

    def fingerprint(self) -> dict[str, dict[str, object]]:
        """Rows and content hash per table, computed on the workers one partition at a time."""
        if self._fingerprint is None:  # a table changed after this is not seen: set it first
            out = {t: v for t, v in self.known.items() if t not in self.tables}
            for t, frame in self.tables.items():
                import dask

                h = hashlib.sha256()
                h.update(json.dumps([str(c) for c in frame.columns]).encode())
                parts = frame.map_partitions(_row_hashes, meta=(None, "u8")).to_delayed()
                rows = 0
                for hashes in dask.compute(*parts):  # 8 bytes a row reach the client, in order
                    rows += len(hashes)
                    h.update(np.asarray(hashes).tobytes())
                out[t] = {"rows": rows, "sha256": h.hexdigest()}
            self._fingerprint = out
        return self._fingerprint

    def fingerprint_id(self) -> str:
        blob = json.dumps(self.fingerprint(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def row_counts(self) -> dict[str, int]:
        return {t: int(v["rows"]) for t, v in self.fingerprint().items()}


def read_store(path: str | Path, tables: Sequence[str] | None = None) -> FrameStore:
    """Every contract table found in a store folder (partitioned or single files) as frames."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"store folder {path} does not exist")
    found = {t: read_parquet_table(path, t) for t in tables or TABLES if table_parts(path, t)}
    if not found:
        raise DataError(f"{path} holds no table of the contract ({', '.join(TABLES)})")
    name, known = path.name, {}
    manifest = path / "manifest.json"
    if manifest.is_file():  # written with the store: the fingerprint of the tables not read
        saved = json.loads(manifest.read_text())
        name, known = saved.get("name", name), saved.get("fingerprint", {})
        known = {t: v for t, v in known.items() if table_parts(path, t)}
    return FrameStore(found, name=name, known=known)


def validate_store(path: str | Path, tables: Sequence[str] | None = None) -> dict[str, int]:
    """Check every partition of a store folder against the contract (each read and validated
    on its own, on the current Dask scheduler), and the unique ids across partitions; rows per
    table. The first bad partition found raises its `DataError` (table, column, problem, rows
    and the partition); an id in two partitions names both."""
    import dask

    store = read_store(path, tables)
    counts = [
        frame.map_partitions(len, meta=(None, "int64")).sum() for frame in store.tables.values()
    ]
    unique = [  # ids unique over the whole table, not only within each partition
        (t, c) for t, frame in store.tables.items() for c in SCHEMAS[t].unique if c in frame.columns
    ]
    repeated = [repeated_id_hashes(store.tables[t], c) for t, c in unique]
    done = dask.compute(*counts, *repeated)
    for (t, c), rep in zip(unique, done[len(counts) :], strict=True):
        names = [f"partition {p.parent.name}/{p.name}" for p in table_parts(path, t)]
        check_unique_ids(store.tables[t], t, c, rep, names)
    return dict(zip(store.tables, (int(n) for n in done[: len(counts)]), strict=True))
