"""Where a job's data comes from: one typed `SourceConfig`, one `load_source(cfg) -> Store`.

Kinds and their fields:
- `generated` (scale, seed): the built-in simulated shop, cached as Parquet under
  `<SHOPML_HOME>/data/<scale>-seed<seed>` and reused next time;
- `store` (path): a folder written by `Store.write`;
- `files` (path, columns): a folder of `<table>.parquet|csv|csv.gz`;
- `sql` (url, queries and/or tables, columns): SQL queries through SQLAlchemy;
- `online_retail`, `movielens`, `fraud_handbook` (path, optional): the public datasets,
  by default from `SHOPML_DATASETS`.
`columns` renames source columns per table: `{table: {source column: contract column}}`.

On the Dask engine `load_frames(cfg, ...)` gives the same tables as Dask dataframes: a folder of
`<table>/part-*.parquet` (the `xlarge` scale) and a `sql` source with `partition_on` (a key or
time column per table) are read piece by piece on the workers, each piece validated; the other
sources are loaded here and cut into partitions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from features.generator import GENERATOR_VERSION, GeneratorConfig, generate
from features.loaders import files, fraud_handbook, movielens, online_retail
from features.store import Store
from shopml.config import ConfigModel
from shopml.errors import DataError
from shopml.settings import Settings, load_settings

Kind = Literal["generated", "store", "files", "sql", "online_retail", "movielens", "fraud_handbook"]
GENERATOR_CONFIG = "generator.json"

# The fields each kind accepts (besides `kind` and `name`), and those it requires.
FIELDS: dict[str, tuple[str, ...]] = {
    "generated": ("scale", "seed"),
    "store": ("path",),
    "files": ("path", "columns"),
    "sql": ("url", "queries", "tables", "columns", "partition_on", "partitions"),
    "online_retail": ("path",),
    "movielens": ("path",),
    "fraud_handbook": ("path",),
}
REQUIRED: dict[str, tuple[str, ...]] = {"store": ("path",), "files": ("path",), "sql": ("url",)}
# the public datasets: each loader takes the file or folder (None: under SHOPML_DATASETS)
DATASET_LOADERS = {
    "online_retail": online_retail.load,
    "movielens": movielens.load,
    "fraud_handbook": fraud_handbook.load,
}


class SourceConfig(ConfigModel):
    """A data source; `kind` says which, and only that kind's fields may be set."""

    kind: Kind = "generated"
    name: str | None = Field(default=None, description="Store name (defaults per kind).")
    scale: Literal["tiny", "small", "medium", "large", "xlarge"] = "small"
    seed: int = Field(default=0, ge=0)
    path: Path | None = None
    url: str | None = Field(default=None, description="SQLAlchemy database URL.")
    queries: dict[str, str] = Field(default_factory=dict, description="table -> SQL query")
    tables: dict[str, str] = Field(default_factory=dict, description="table -> database table")
    columns: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="table -> {source column: contract column}"
    )
    partition_on: dict[str, str] = Field(
        default_factory=dict,
        description="sql on Dask: table -> key or time column its ranges are cut on",
    )
    partitions: int = Field(default=8, ge=1, description="sql on Dask: ranges per table")

    @model_validator(mode="after")
    def _fields_match_kind(self) -> SourceConfig:
        allowed = {"kind", "name", *FIELDS[self.kind]}
        defaults = type(self).model_fields
        # a field set to its default is as good as unset: logged configs (every field) load back
        stray = sorted(
            f
            for f in set(self.model_fields_set) - allowed
            if getattr(self, f) != defaults[f].get_default(call_default_factory=True)
        )
        if stray:
            raise ValueError(
                f"source kind '{self.kind}' does not take {stray}; it takes {list(FIELDS[self.kind])}"
            )
        missing = [f for f in REQUIRED.get(self.kind, ()) if getattr(self, f) is None]
        if missing:
            raise ValueError(f"source kind '{self.kind}' needs {missing}")
        if self.kind == "sql" and not (self.queries or self.tables):
            raise ValueError("source kind 'sql' needs `queries` or `tables` (per contract table)")
        return self

    def describe(self) -> str:
        """A short label for logs (never the database password)."""
        if self.kind == "generated":
            return f"generated {self.scale} seed {self.seed}"
        if self.kind == "sql":
            from features.loaders import sql  # sqlalchemy: 0.09 s, only for sql sources

            return f"sql {sql.safe_url(self.url or '')}"
        return f"{self.kind} {self.path}" if self.path else self.kind


def load_source(cfg: SourceConfig, settings: Settings | None = None) -> Store:
    """Load the store `cfg` describes; every table comes back validated."""
    if cfg.kind == "generated":
        store = generated(cfg.scale, cfg.seed, settings)
    elif cfg.kind == "store":
        store = Store.read(cfg.path)
    elif cfg.kind == "files":
        store = files.load(cfg.path, columns=cfg.columns)
    elif cfg.kind == "sql":
        from features.loaders import sql  # sqlalchemy: 0.09 s, only for sql sources

        store = sql.load(cfg.url, queries=cfg.queries, tables=cfg.tables, columns=cfg.columns)
    else:
        store = DATASET_LOADERS[cfg.kind](cfg.path)
    if cfg.name:
        store.name = cfg.name
    return store


def load_frames(
    cfg: SourceConfig,
    settings: Settings | None = None,
    npartitions: int = 2,
    tables: tuple[str, ...] | None = None,
):
    """The tables of `cfg` as Dask dataframes (`features.frames.FrameStore`), each partition
    validated where it is read; `tables` limits which are read."""
    from features import frames

    if cfg.kind == "generated" and GeneratorConfig(scale=cfg.scale).spec().chunks > 1:
        store = frames.read_store(generated_partitioned(cfg.scale, cfg.seed, settings), tables)
    elif cfg.kind in ("store", "files") and _partitioned(cfg.path, tables):
        store = frames.read_store(cfg.path, tables)
    elif cfg.kind == "sql" and cfg.partition_on:
        store = frames.FrameStore(_sql_frames(cfg, tables), name="sql")
    elif cfg.kind == "store" and tables is not None:  # only the wanted tables leave the disk
        local = Store.read(cfg.path, tuple(tables))
        found = {t: frames.from_pandas(df, npartitions) for t, df in local.tables().items()}
        manifest = Path(cfg.path) / "manifest.json"
        saved = (
            json.loads(manifest.read_text()).get("fingerprint", {}) if manifest.is_file() else {}
        )
        known = {t: v for t, v in saved.items() if t not in found}
        store = frames.FrameStore(found, name=local.name, known=known)
    else:
        local = load_source(cfg, settings)
        wanted = {t: df for t, df in local.tables().items() if tables is None or t in tables}
        found = {t: frames.from_pandas(df, npartitions) for t, df in wanted.items()}
        known = {t: v for t, v in local.fingerprint().items() if t not in found}
        store = frames.FrameStore(found, name=local.name, known=known)
    if cfg.name:
        store.name = cfg.name
    return store


def _partitioned(path: Path | None, tables: tuple[str, ...] | None) -> bool:
    """Whether a store folder holds any wanted table as `<table>/part-*.parquet`."""
    from features.contract import TABLES

    return path is not None and any((Path(path) / t).is_dir() for t in tables or TABLES)


def _sql_frames(cfg: SourceConfig, tables: tuple[str, ...] | None) -> dict:
    """Each wanted table of a `sql` source: in ranges of its `partition_on` column when it has
    one, else read whole here and cut."""
    from features import frames
    from features.loaders import sql

    sources = {**cfg.queries, **cfg.tables}
    out = {}
    for table, source in sources.items():
        if tables is not None and table not in tables:
            continue
        if table in cfg.partition_on:
            out[table] = frames.read_sql_table(
                cfg.url, table, source, cfg.partition_on[table], cfg.partitions, cfg.columns
            )
            continue
        kind = "queries" if table in cfg.queries else "tables"
        one = sql.load(cfg.url, columns=cfg.columns, **{kind: {table: source}})
        out[table] = frames.from_pandas(getattr(one, table), cfg.partitions)
    return out


def generated_partitioned(scale: str, seed: int, settings: Settings | None = None) -> Path:
    """The cache folder of a generated store written in chunks (`xlarge`): reused when it was
    made from the same config and generator version, else (re)generated chunk by chunk."""
    from features.generator import generate_partitioned

    cfg = GeneratorConfig(scale=scale, seed=seed)
    folder = generated_dir(scale, seed, settings)
    wanted = cfg.model_dump(mode="json") | {"generator_version": GENERATOR_VERSION}
    if (folder / GENERATOR_CONFIG).is_file():
        try:
            if json.loads((folder / GENERATOR_CONFIG).read_text()) == wanted:
                return folder
        except (ValueError, OSError):
            pass
    generate_partitioned(cfg, folder, overwrite=True)
    (folder / GENERATOR_CONFIG).write_text(json.dumps(wanted, indent=2, sort_keys=True))
    return folder


def generated_dir(scale: str, seed: int, settings: Settings | None = None) -> Path:
    """The cache folder of a generated store."""
    return (settings or load_settings()).data_dir / f"{scale}-seed{seed}"


def generated(scale: str, seed: int, settings: Settings | None = None) -> Store:
    """The generated store for (scale, seed): read from the cache, or generated and cached.

    The cache is reused only if it was made from the same generator config and generator version
    (both saved beside it): bump `GENERATOR_VERSION` whenever the simulation changes.
    """
    cfg = GeneratorConfig(scale=scale, seed=seed)
    if cfg.spec().chunks > 1:  # the local engine reads it whole (as much memory as that takes)
        return Store.read(generated_partitioned(scale, seed, settings))
    folder = generated_dir(scale, seed, settings)
    wanted = cfg.model_dump(mode="json") | {"generator_version": GENERATOR_VERSION}
    if (folder / GENERATOR_CONFIG).is_file():
        try:
            if json.loads((folder / GENERATOR_CONFIG).read_text()) == wanted:
                return Store.read(folder)
        except (DataError, ValueError, OSError):
            pass  # unreadable or stale cache: generate again below
    store = generate(cfg).validated()
    try:
        store.write(folder, overwrite=True)
        (folder / GENERATOR_CONFIG).write_text(json.dumps(wanted, indent=2, sort_keys=True))
    except OSError:
        pass  # a read-only home (or a concurrent writer) still gets its data, just not cached
    return store
