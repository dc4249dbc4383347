"""A simulated store written as a partitioned Parquet dataset, one customer chunk at a time.

    out/manifest.json                      name, fingerprint (as `Store.fingerprint`), parts
    out/products.parquet                   the shared tables: products, promotions, prices
    out/payments/part-00003-00001.parquet  chunk 3, its second file of <= `rows_per_file` rows

Only one chunk (`ScaleSpec.chunks`: 30k customers at `xlarge`) is in memory at a time; each is
validated before it is written (the contract per partition) and the fingerprint is streamed, so
it equals the fingerprint of the same tables read whole. The folder appears complete or not at
all (written beside it, then renamed into place). Same config, same files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from features.contract import validate_tables
from features.generator import GeneratorConfig, _simulate, _streams
from features.generator.chunks import Chunk, IdOffsets
from features.generator.payments import compromised_terminal_days
from features.store import MANIFEST

SHARED_TABLES = ("products", "promotions", "prices")
ROWS_PER_FILE = 1_000_000


class _TableHash:
    """`features.store.table_hash` fed one partition at a time (rows in partition order)."""

    def __init__(self, columns) -> None:
        self.h = hashlib.sha256(json.dumps([str(c) for c in columns]).encode())
        self.rows = 0

    def update(self, df: pd.DataFrame) -> None:
        self.h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
        self.rows += len(df)

    def result(self) -> dict[str, object]:
        return {"rows": self.rows, "sha256": self.h.hexdigest()}


def write(
    cfg: GeneratorConfig,
    out: str | Path,
    progress: bool = False,
    overwrite: bool = False,
    rows_per_file: int = ROWS_PER_FILE,
) -> dict[str, int]:
    """Simulate `cfg` chunk by chunk into the folder `out`; returns rows per table."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
    spec = cfg.spec()
    per_chunk = math.ceil(spec.customers / spec.chunks)
    # terminals serve every chunk: their compromised days are the shop's, drawn once
    bad = compromised_terminal_days(_streams(cfg.seed)["payments"], cfg, spec.days, spec.terminals)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    hashes: dict[str, _TableHash] = {}
    parts: dict[str, int] = {}
    try:
        ids = IdOffsets()
        for k in range(spec.chunks):
            n_k = min(per_chunk, spec.customers - k * per_chunk)
            if n_k <= 0:
                break
            chunk = Chunk(k, n_k, ids, _streams(cfg.seed), bad)
            store = _simulate(cfg, _streams(cfg.seed, k), chunk, progress)
            tables = validate_tables(store.tables())
            del store
            for table, df in tables.items():
                hashes.setdefault(table, _TableHash(df.columns)).update(df)
                if table in SHARED_TABLES:
                    df.to_parquet(tmp / f"{table}.parquet", index=False)
                    continue
                (tmp / table).mkdir(exist_ok=True)
                for j, start in enumerate(range(0, max(len(df), 1), rows_per_file)):
                    piece = df.iloc[start : start + rows_per_file]
                    piece.to_parquet(tmp / table / f"part-{k:05d}-{j:05d}.parquet", index=False)
                    parts[table] = parts.get(table, 0) + 1
            del tables
            ids = ids + chunk.counts
        manifest = {
            "name": f"generated-{cfg.scale}-seed{cfg.seed}",
            "fingerprint": {t: h.result() for t, h in hashes.items()},
            "partitions": parts,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {t: int(h.rows) for t, h in hashes.items()}
