"""Batch recommendation export: every known customer's top-k, filtered, as Parquet files for
e-mail and push campaigns (`shopml recommend export --out DIR`).

The customers of the model (its sorted `customer_ids_`) are cut into fixed blocks of
`block_customers`; block i becomes `part-<i:05d>.parquet` (customer_id, rank, product_id, score),
so the file layout depends on the model and the block size only, never on the engine or the
number of workers. Each block is scored by the model's own batch path (`top_k_block`, the same
answers as `recommend_one`) and written by pyarrow with fixed settings: the local engine and a
Dask cluster write the same bytes. On Dask the model is sent once to every worker and the blocks
are scored there, a bounded number at a time; workers hand back the encoded files, so the
cluster needs no shared file system with the caller.

Nothing is half-written: the files and `_manifest.json` (model, k, filters, counts, per-file
rows) go to a hidden folder beside DIR, which replaces DIR only when every block is written.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.recommenders import Recommender
from models.recommenders.selection import DEFAULT_FILTERS, RecommendFilters, check_k
from shopml.compute import Compute
from shopml.errors import ConfigError, ShopmlError

MANIFEST = "_manifest.json"
DEFAULT_BLOCK_CUSTOMERS = 50_000
SCORE_ROWS = 1024  # customers scored at once inside a block (a float32 row per product each)
SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("rank", pa.int16()),
        ("product_id", pa.string()),
        ("score", pa.float32()),
    ]
)


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: the folder, its files, customers and rows, and the seconds."""

    out: str
    files: int
    customers: int
    rows: int
    seconds: float
    engine: str


def part_name(block: int) -> str:
    return f"part-{block:05d}.parquet"


def blocks(n_customers: int, block_customers: int) -> list[tuple[int, int]]:
    """[start, stop) row ranges of the fixed customer blocks."""
    if block_customers < 1:
        raise ConfigError(f"block_customers must be >= 1, got {block_customers}")
    return [
        (start, min(start + block_customers, n_customers))
        for start in range(0, n_customers, block_customers)
    ]


def block_parquet(
    model: Recommender, start: int, stop: int, k: int, filters: RecommendFilters
) -> tuple[bytes, int]:
    """The Parquet bytes of customer rows [start, stop) and their row count (ranks 1..k;
    a customer with fewer than k eligible products gets fewer rows)."""
    rows = np.arange(start, stop, dtype=np.int64)
    parts = [  # a dense score block is customers x products: scored SCORE_ROWS at a time
        model.top_k_block(rows[i : i + SCORE_ROWS], k, filters)
        for i in range(0, len(rows), SCORE_ROWS)
    ]
    width = max(p[0].shape[1] for p in parts)
    idx = np.concatenate([_pad(p[0], width, 0) for p in parts])
    scores = np.concatenate([_pad(p[1], width, -np.inf) for p in parts])
    ok = scores > -np.inf  # best first: missing slots are at the end of each row
    counts = ok.sum(axis=1)
    rank = np.broadcast_to(np.arange(1, idx.shape[1] + 1, dtype=np.int16), idx.shape)[ok]
    table = pa.table(
        {
            "customer_id": np.repeat(np.asarray(model.customer_ids_)[rows], counts).astype(str),
            "rank": rank,
            "product_id": np.asarray(model.product_ids_)[idx[ok]].astype(str),
            "score": scores[ok].astype(np.float32),
        },
        schema=SCHEMA,
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", write_statistics=True)
    return buf.getvalue(), len(table)


def _pad(block: np.ndarray, width: int, value) -> np.ndarray:
    if block.shape[1] == width:
        return block
    out = np.full((block.shape[0], width), value, dtype=block.dtype)
    out[:, : block.shape[1]] = block
    return out


def export_recommendations(
    model: Recommender,
    out: str | Path,
    *,
    k: int = 20,
    filters: RecommendFilters = DEFAULT_FILTERS,
    compute: Compute | None = None,
    block_customers: int = DEFAULT_BLOCK_CUSTOMERS,
    force: bool = False,
    model_ref: dict | None = None,
) -> ExportResult:
    """Write every known customer's top-k under `out` (see the module docstring)."""
    k = check_k(k)
    out = Path(out)
    if out.exists() and not force:
        raise ShopmlError(f"--out {out} exists; pass --force to replace it")
    n = len(model.customer_ids_)
    if n == 0:
        raise ShopmlError("the model knows no customer: nothing to export")
    model.top_k_block(np.zeros(1, np.int64), k, filters)  # bad filters fail here, named
    spans = blocks(n, block_customers)
    t0 = time.perf_counter()
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        counts = _write_blocks(model, spans, k, filters, compute, tmp)
        manifest = {
            "model": model_ref or {"kind": model.kind},
            "k": k,
            "filters": asdict(filters),
            "customers": n,
            "rows": int(sum(counts)),
            "block_customers": block_customers,
            "files": [
                {"name": part_name(i), "first_row": a, "customers": b - a, "rows": int(c)}
                for i, ((a, b), c) in enumerate(zip(spans, counts, strict=True))
            ],
            "columns": SCHEMA.names,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=list))
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    engine = "local" if compute is None else compute.engine
    seconds = time.perf_counter() - t0
    return ExportResult(str(out), len(spans), n, int(sum(counts)), seconds, engine)


def _write_blocks(model, spans, k, filters, compute: Compute | None, folder: Path) -> list[int]:
    """Score and write every block; its row counts, in block order."""
    counts = [0] * len(spans)
    if compute is None or not compute.is_dask:
        for i, (a, b) in enumerate(spans):
            data, counts[i] = block_parquet(model, a, b, k, filters)
            (folder / part_name(i)).write_bytes(data)
        return counts
    from distributed import as_completed

    client = compute.client
    shared = client.scatter(model, broadcast=True)
    window = max(2 * sum(client.nthreads().values()), 2)  # blocks in flight (memory bound)
    pending = iter(enumerate(spans))
    token = uuid.uuid4().hex
    block_of: dict[str, int] = {}

    def submit(i: int, a: int, b: int):
        key = f"export-block-{i}-{token}"
        block_of[key] = i
        return client.submit(block_parquet, shared, a, b, k, filters, key=key)

    running = as_completed([submit(i, a, b) for i, (a, b) in _take(pending, window)])
    for future in running:
        data, rows = future.result()
        i = block_of.pop(future.key)
        counts[i] = rows
        (folder / part_name(i)).write_bytes(data)
        future.release()
        for j, (a, b) in _take(pending, 1):
            running.add(submit(j, a, b))
    return counts


def _take(it, n: int):
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished folder into place; an old `out` is removed only after that."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


def read_export(out: str | Path):
    """The exported rows as one pandas frame in file order (for checks and small stores)."""
    import pandas as pd

    out = Path(out)
    manifest = json.loads((out / MANIFEST).read_text())
    frames = [pd.read_parquet(out / f["name"]) for f in manifest["files"]]
    return pd.concat(frames, ignore_index=True)
