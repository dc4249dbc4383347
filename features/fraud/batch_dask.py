"""The batch fraud features on Dask: the same kernels as `batch.py`, the payments cut into hash
buckets of their entity keys by plain tasks (no shuffle, no join).

Every feature depends on the payments of one entity only (`batch.feature_groups`). Each input
partition is cut once (`_split`) into pieces by a hash of its customer's id and by a hash of its
terminal's id: NumPy arrays of only what the kernels read (time, amount in the base currency,
label, the ids factorised within the partition with their distinct values). Each bucket task
(`_bucket`) joins the pieces of one bucket in partition order, codes the ids over the bucket
exactly (from the distinct values themselves, never trusting a hash for equality) and runs
`batch.prepare` and `batch.compute_prepared` for its groups.

The card group is computed in the customers' buckets when every card's payments fall in one of
them (cards belong to one customer in the generator and in most stores, but the data contract
does not promise it): each customer bucket reports its cards, and a card seen in two buckets
makes the card group run again on buckets of its own (`_plan(card_in_customer=False)`).

Bit-identical to the local engine: pieces are joined in partition order and row order, so every
key sees its payments in input order before the stable time sort, and every kernel is per key
(cumulative sums restart per key, window bounds are integer searches, maxima exact).
`gather_columns` puts each bucket's columns in place by row number in the client as the buckets
finish; `feature_frame` brings the other buckets' columns to the customer buckets, on the
cluster, and returns those as a Dask dataframe.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from features.fraud.batch import compute_prepared, feature_groups, prepare
from features.fraud.definition import ID_COLUMNS, FeatureSet
from shopml.errors import DataError

ROW = "_row"
HOME = "customer"  # the partitioning the frame of `feature_frame` is cut by
# what the kernels read of a payment besides its ids (currency: converted in `_split`)
_INPUTS = ("timestamp", "amount", "currency", "is_fraud", "label_time")
# the features of one bucket sent at once (client and workers handle such messages at once;
# a whole entity group of `large` sent in one message never arrived)
BUCKET_BYTES = 256 * 2**20


def bucket_count(n_rows: int, n_features: int, npartitions: int) -> int:
    """Buckets per key: at least `npartitions`, and enough that a bucket's features stay under
    `BUCKET_BYTES`."""
    return max(int(npartitions), math.ceil(n_rows * n_features * 8 / BUCKET_BYTES), 1)


def with_row_numbers(payments):
    """`payments` with `_row`, its 0-based row number in input order (partition after
    partition): the tie order of equal timestamps and the key the results are placed by."""
    if ROW in payments.columns:
        return payments
    one = payments.map_partitions(
        lambda d: pd.Series(np.ones(len(d), dtype="int64"), index=d.index), meta=(ROW, "int64")
    )
    return payments.assign(**{ROW: one.cumsum() - 1})


def _plan(fs: FeatureSet, card_in_customer: bool) -> dict[str, tuple[str, ...]]:
    """Partitioning key -> the feature groups computed on its buckets (the home key first)."""
    plan: dict[str, list[str]] = {HOME: []}
    for group in feature_groups(fs):
        key = HOME if group == "card" and card_in_customer else group
        plan.setdefault(key, []).append(group)
    return {k: tuple(v) for k, v in plan.items() if v}


def _entities(fs: FeatureSet) -> tuple[str, ...]:
    """The entities whose ids the kernels code (`batch.prepare` codes these)."""
    return tuple(dict.fromkeys((*fs.entities, *fs.fraud_entities, "terminal")))


def _key_buckets(uniques: np.ndarray, n: int) -> np.ndarray:
    """The bucket of each distinct id: a hash of its value, the same in every partition."""
    h = pd.util.hash_array(np.asarray(uniques, dtype=object))
    return (h % np.uint64(n)).astype(np.int64)


def _subset_ids(codes: np.ndarray, uniques: np.ndarray, sel: np.ndarray):
    """The rows `sel` of a factorised id: codes 0.. over the ids they use, and those ids."""
    c = codes[sel]
    used = np.zeros(len(uniques), dtype=bool)
    used[c] = True
    remap = np.cumsum(used, dtype=np.int64) - 1
    return remap[c].astype(np.int32), uniques[used]


def _split(
    part: pd.DataFrame,
    fs: FeatureSet,
    keys: tuple[str, ...],
    n: int,
    extra: tuple[str, ...],
) -> tuple[dict, ...]:
    """One input partition cut into `len(keys) * n` pieces: piece `k * n + b` holds its rows
    whose `keys[k]` id hashes to bucket b, in row order, as plain arrays (`extra` columns and
    the home bucket of each row only where they are needed: home pieces, other pieces)."""
    size = len(part)
    t = np.asarray(part["timestamp"], dtype="datetime64[ns]").view("int64")
    amount = fs.amounts_in_base(part)
    fraud = part["is_fraud"].to_numpy(dtype=bool) if "is_fraud" in part else None
    label = None
    if "label_time" in part:
        label = np.asarray(part["label_time"], dtype="datetime64[ns]").view("int64")
    rows = part[ROW].to_numpy(dtype="int64") if ROW in part else None
    ids = {}
    for e in _entities(fs):
        codes, uniques = pd.factorize(part[ID_COLUMNS[e]])
        ids[e] = (codes, np.asarray(uniques, dtype=object))
    bucket = {k: _key_buckets(ids[k][1], n)[ids[k][0]] for k in keys}
    extras = {c: part[c].to_numpy() for c in extra}
    pieces = []
    for k in keys:
        order = np.argsort(bucket[k].astype(np.uint16 if n <= 1 << 16 else np.int64), kind="stable")
        ends = np.cumsum(np.bincount(bucket[k], minlength=n))
        for b in range(n):
            sel = order[ends[b - 1] if b else 0 : ends[b]]
            piece = {"size": size, "pos": sel, "t": t[sel], "amount": amount[sel]}
            if rows is not None:
                piece["row"] = rows[sel]
            if fraud is not None:
                piece["fraud"] = fraud[sel]
            if label is not None:
                piece["label"] = label[sel]
            piece["ids"] = {e: _subset_ids(c, u, sel) for e, (c, u) in ids.items()}
            if k == HOME:
                piece["extra"] = {c: v[sel] for c, v in extras.items()}
            else:
                piece["home"] = bucket[HOME][sel].astype(np.int32) if HOME in bucket else None
            pieces.append(piece)
    return tuple(pieces)


def _joined_ids(pieces: tuple[dict, ...], e: str) -> tuple[np.ndarray, np.ndarray]:
    """The codes of entity `e` over all the pieces' rows (exact: from the ids' values), and
    the distinct ids of the bucket."""
    uniques = [p["ids"][e][1] for p in pieces]
    coded, distinct = pd.factorize(np.concatenate(uniques) if uniques else np.empty(0, object))
    starts = np.cumsum([0, *(len(u) for u in uniques[:-1])])
    codes = [coded[s + p["ids"][e][0]] for s, p in zip(starts, pieces, strict=True)]
    return np.concatenate(codes).astype(np.int64), np.asarray(distinct, dtype=object)


def _rows(pieces: tuple[dict, ...]) -> np.ndarray:
    """The input row numbers of the pieces' rows: their `_row`, else partition offset + position."""
    if pieces and "row" in pieces[0]:
        return np.concatenate([p["row"] for p in pieces])
    offsets = np.cumsum([0, *(p["size"] for p in pieces[:-1])])
    return np.concatenate([o + p["pos"] for o, p in zip(offsets, pieces, strict=True)])


def _bucket_columns(fs: FeatureSet, groups: tuple[str, ...], pieces: tuple[dict, ...]):
    """One bucket's rows: (input row numbers, the features of `groups` by the local kernels,
    name -> float64 column in the bucket's row order, the distinct card ids or None)."""
    rows = _rows(pieces)
    frame: dict[str, np.ndarray] = {
        "timestamp": np.concatenate([p["t"] for p in pieces]).view("datetime64[ns]"),
        "amount": np.concatenate([p["amount"] for p in pieces]),
    }
    if "fraud" in pieces[0]:
        frame["is_fraud"] = np.concatenate([p["fraud"] for p in pieces])
    if "label" in pieces[0]:
        frame["label_time"] = np.concatenate([p["label"] for p in pieces]).view("datetime64[ns]")
    cards = None
    for e in pieces[0]["ids"]:
        frame[ID_COLUMNS[e]], distinct = _joined_ids(pieces, e)
        if e == "card":
            cards = distinct
    names = [n for g in groups for n in feature_groups(fs)[g]]
    if len(rows):
        p = prepare(pd.DataFrame(frame, copy=False), fs)
        cols = compute_prepared(p, fs, target=p.order, groups=groups)
    else:
        cols = {name: np.empty(0, dtype="float64") for name in names}
    return rows, {name: cols[name] for name in names}, cards


def _bucket(fs: FeatureSet, groups: tuple[str, ...], report_cards: bool, *pieces: dict) -> dict:
    """One bucket: the pieces of every input partition joined in input order, the features of
    `groups` (name -> float64 column, in the bucket's row order) by the local kernels."""
    rows, cols, cards = _bucket_columns(fs, groups, pieces)
    out: dict = {"rows": rows, "cols": cols}
    if report_cards and cards is not None:  # checked across buckets: see `_cards_nest`
        out["cards"] = pd.util.hash_array(cards)
    return out


def _routed_bucket(fs: FeatureSet, groups: tuple[str, ...], n: int, *pieces: dict) -> tuple:
    """A bucket of a key other than the home key, its features cut by the home bucket of each
    row (`n` pieces, each its own arrays: one is freed as soon as its home bucket is built)."""
    rows, cols, _ = _bucket_columns(fs, groups, pieces)
    home = np.concatenate([p["home"] for p in pieces])
    order = np.argsort(home, kind="stable")
    ends = np.cumsum(np.bincount(home, minlength=n))
    out = []
    for b in range(n):
        sel = order[ends[b - 1] if b else 0 : ends[b]]
        out.append({"rows": rows[sel], "cols": {k: v[sel] for k, v in cols.items()}})
    del cols
    release_memory()
    return tuple(out)


def _home_task(
    fs: FeatureSet,
    groups: tuple[str, ...],
    keep: str | None,
    carry: tuple[str, ...],
    n_parts: int,
    *pieces: dict,
) -> pd.DataFrame:
    """A home bucket: its features (the first `n_parts` pieces: its rows of every input
    partition) and the other keys' features routed to it (the rest), as the bucket's frame."""
    home = pieces[:n_parts]
    rows, cols, _ = _bucket_columns(fs, groups, home)
    extra = {c: np.concatenate([p["extra"][c] for p in home]) for c in home[0]["extra"]}
    frame = _home_frame(fs, keep, carry, rows, cols, extra, pieces[n_parts:])
    del cols
    release_memory()
    return frame


def release_memory() -> None:
    """Give the freed heap back to the operating system (glibc's `malloc_trim`) after a bucket.

    The workers keep glibc's adaptive thresholds (`shopml.compute.WORKER_MALLOC`: fast kernels),
    so a bucket's freed temporaries stay in the heap: on a lone worker holding the persisted
    features that reads as unmanaged memory and drives it into spilling and pausing. Once per
    task, not per allocation; a no-op where glibc is not the allocator."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _malloc_trim():
    global _TRIM
    if _TRIM is False:
        import ctypes
        import ctypes.util

        try:
            _TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = None
    return _TRIM


_TRIM: object = False  # the C function once looked up (None: not available)


def _cards_nest(*card_lists: np.ndarray) -> bool:
    """True when no card (by a hash of its id) is in two customer buckets: then every card's
    payments are in one bucket and its features there are the card's. (Two cards of equal
    hash in two buckets only send the card group to buckets of its own: slower, as exact.)"""
    cards = np.concatenate(card_lists) if card_lists else np.empty(0, np.uint64)
    return bool(np.unique(cards).shape[0] == cards.shape[0])


def _columns(payments, fs: FeatureSet, extra: tuple[str, ...]) -> list[str]:
    """The columns of `payments` the split reads; a `DataError` when a required one is missing."""
    needed = ("timestamp", "amount", *(ID_COLUMNS[e] for e in _entities(fs)))
    missing = [c for c in needed if c not in payments.columns]
    if missing:
        raise DataError(f"payments: required column(s) missing for fraud features: {missing}")
    wanted = [ROW, *_INPUTS, *(ID_COLUMNS[e] for e in _entities(fs)), *extra]
    return [c for c in dict.fromkeys(wanted) if c in payments.columns]


def _parts(payments, fs: FeatureSet, npartitions: int, extra: tuple[str, ...] = ()) -> list:
    """The input partitions, only the columns the split reads: a Dask dataframe's partitions,
    or an in-memory table cut into `npartitions` row ranges sent straight to the workers
    (scattered: not embedded in the graph, which the scheduler would hold and forward)."""
    cols = _columns(payments, fs, extra)
    if not isinstance(payments, pd.DataFrame):
        return payments[cols].to_delayed()
    from distributed import get_client

    edges = np.linspace(0, len(payments), max(1, int(npartitions)) + 1).astype("int64")
    table = payments[cols]
    pieces = [table.iloc[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return get_client().scatter(pieces, hash=False)


def _graph(parts: list, fs: FeatureSet, n: int, card_in_customer: bool, extra=()):
    """The split tasks over the input `parts` (`_parts`): (the plan, per input part a delayed
    tuple of its `len(plan) * n` pieces: piece `k * n + b` is bucket b of the plan's k-th key)."""
    from dask import delayed

    plan = _plan(fs, card_in_customer)
    split = delayed(_split, pure=True, nout=len(plan) * n)
    return plan, [split(part, fs, tuple(plan), n, tuple(extra)) for part in parts]


def _gather_tasks(parts: list, fs: FeatureSet, n: int, card_in_customer: bool):
    """The bucket tasks of `gather_columns`: (key -> delayed bucket results, delayed card
    check or None)."""
    from dask import delayed

    plan, pieces = _graph(parts, fs, n, card_in_customer)
    report = card_in_customer and "card" in plan.get(HOME, ())
    buckets = {}
    for k, key in enumerate(plan):
        task = delayed(_bucket, pure=True)
        buckets[key] = [
            task(fs, plan[key], report and key == HOME, *(p[k * n + b] for p in pieces))
            for b in range(n)
        ]
    check = None
    if report:
        check = delayed(_cards_nest, pure=True)(*(delayed(_get)(r, "cards") for r in buckets[HOME]))
    return buckets, check


def _get(result: dict, name: str):
    return result[name]


def gather_columns(payments, fs: FeatureSet, n_rows: int, npartitions: int | None = None):
    """Every payment's features in the client, in input row order (name -> float64 column),
    of a Dask dataframe or an in-memory table (cut into `npartitions`): each bucket's columns
    put in place by row number as it finishes (one bucket's features in a message, never a
    whole group), no join on the cluster."""
    npartitions = int(npartitions or payments.npartitions)
    n = bucket_count(n_rows, len(fs.names), npartitions)
    cols = {name: np.empty(n_rows, dtype="float64") for name in fs.names}
    parts = _parts(payments, fs, npartitions)
    buckets, check = _gather_tasks(parts, fs, n, card_in_customer=True)
    tasks = [t for ts in buckets.values() for t in ts]
    seen = _fill(cols, tasks, check, n_rows)
    if seen.get("nested") is False:  # a card in two customer buckets: cards on their own
        buckets, _ = _gather_tasks(parts, fs, n, card_in_customer=False)
        seen = _fill(cols, buckets["card"], None, n_rows)
    return cols


def _fill(cols: dict, tasks: list, check, n_rows: int) -> dict:
    """Compute `tasks` (and `check`), writing each result's columns at its rows as it arrives;
    every group must come back for all `n_rows` rows."""
    from distributed import as_completed, get_client

    client = get_client()
    futures = client.compute(tasks + ([check] if check is not None else []))
    check_future = futures[-1] if check is not None else None
    seen: dict = {}
    for future, result in as_completed(futures, with_results=True):
        if future is check_future:
            seen["nested"] = result
            continue
        rows = result["rows"]
        for name, values in result["cols"].items():
            cols[name][rows] = values
            seen[name] = seen.get(name, 0) + len(rows)
        future.release()
    short = {k: v for k, v in seen.items() if k != "nested" and v != n_rows}
    if short:
        name, got = next(iter(short.items()))
        raise RuntimeError(f"fraud feature {name} came back for {got} of {n_rows} payments")
    return seen


def _home_frame(
    fs: FeatureSet,
    keep: str | None,
    carry: tuple[str, ...],
    rows: np.ndarray,
    cols: dict[str, np.ndarray],
    extra: dict[str, np.ndarray],
    routed: tuple[dict, ...],
) -> pd.DataFrame:
    """A home bucket's frame: `_row`, every feature, the `carry` columns; the columns of the
    other keys' buckets (`routed` to this bucket) put at its rows by row number; only the rows
    flagged `keep` when given. The features are written once, into the frame's own block (no
    consolidating copy of a dict of columns)."""
    take = None if keep is None else np.flatnonzero(extra[keep].astype(bool))
    size = len(rows) if take is None else len(take)
    block = np.empty((len(fs.names), size), dtype="float64")  # one row per feature
    at = {name: j for j, name in enumerate(fs.names)}
    for name in list(cols):  # each column freed once written (the dict is the task's own)
        values = cols.pop(name)
        block[at[name]] = values if take is None else values[take]
        del values
    groups: dict[tuple[str, ...], list[dict]] = {}
    for piece in routed:  # one group of pieces per other key (they hold the same columns)
        groups.setdefault(tuple(piece["cols"]), []).append(piece)
    for names, pieces in groups.items():
        got = np.concatenate([p["rows"] for p in pieces])
        order = np.argsort(got, kind="stable")
        if not np.array_equal(got[order], rows):
            raise RuntimeError("fraud feature buckets do not cover the same payments")
        if take is not None:
            order = order[take]
        for name in names:
            block[at[name]] = np.concatenate([p["cols"][name] for p in pieces])[order]
    out = pd.DataFrame(block.T, columns=list(fs.names), copy=False)
    out.insert(0, ROW, rows if take is None else rows[take])
    for c in carry:
        out[c] = extra[c] if take is None else extra[c][take]
    return out


def _bucket_cards(*pieces: dict) -> np.ndarray:
    """The hashes of the distinct cards of a home bucket's pieces (see `_cards_nest`)."""
    return pd.util.hash_array(_joined_ids(pieces, "card")[1])


def feature_frame(
    payments,
    fs: FeatureSet | None = None,
    npartitions: int | None = None,
    keep: str | None = None,
    carry: tuple[str, ...] = (),
    n_rows: int | None = None,
):
    """Fraud features of a Dask dataframe of payments, persisted on the cluster: a Dask
    dataframe of `_row` (input row number, see `with_row_numbers`), `fs.names` and the `carry`
    columns, one partition per customer bucket, rows in input order within a partition (only
    the rows flagged in `keep` when given; every payment still counts in the windows)."""
    from distributed import get_client, wait

    fs = fs or FeatureSet()
    client = get_client()
    n = int(npartitions or payments.npartitions)
    if n_rows is not None:
        n = bucket_count(n_rows, len(fs.names), n)
    meta = pd.DataFrame({ROW: np.empty(0, "int64"), **{c: np.empty(0) for c in fs.names}})
    for c in carry:
        meta[c] = payments._meta[c]
    frame, check = _home_frames(payments, fs, n, True, keep, carry, meta)
    if check is not None:  # sent in one graph: the check reads the pieces the frame reads
        frame, check = client.persist([frame, check])
        if not check.compute():  # a card in two customer buckets: cards on buckets of their own
            del frame
            frame, _ = _home_frames(payments, fs, n, False, keep, carry, meta)
    frame = client.persist(frame)
    wait(frame)
    return frame


def _home_frames(payments, fs, n, card_in_customer, keep, carry, meta):
    """The frame of the home buckets (as Dask tasks) and the card check (or None).

    The other keys' buckets run first (every home bucket needs a piece of each), each cut by
    home bucket as it ends; a home bucket's task then computes its own features and writes
    the frame at once, so no home bucket's columns wait in memory beside the frames."""
    import dask.dataframe as dd
    from dask import delayed

    extra = tuple(dict.fromkeys(c for c in (keep, *carry) if c))
    plan, pieces = _graph(_parts(payments, fs, n, extra), fs, n, card_in_customer, extra)
    keys = tuple(plan)
    routed = []
    for k, key in enumerate(keys):
        if key != HOME:
            task = delayed(_routed_bucket, pure=True, nout=n)
            routed += [task(fs, plan[key], n, *(p[k * n + b] for p in pieces)) for b in range(n)]
    h = keys.index(HOME)
    home = [[p[h * n + b] for p in pieces] for b in range(n)]
    task = delayed(_home_task, pure=True)
    parts = [
        task(fs, plan[HOME], keep, carry, len(pieces), *home[b], *(r[b] for r in routed))
        for b in range(n)
    ]
    check = None
    if card_in_customer and "card" in plan[HOME]:
        cards = [delayed(_bucket_cards, pure=True)(*home[b]) for b in range(n)]
        check = delayed(_cards_nest, pure=True)(*cards)
    return dd.from_delayed(parts, meta=meta, verify_meta=False), check
