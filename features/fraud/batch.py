"""Point-in-time fraud features for a whole payments table, vectorised (sort + cumulative sums).

Every payment gets the features the online path would have produced when it arrived: the stream
order is by timestamp, ties kept in input order; tile-aligned windows (definition.py) are found
with `searchsorted` on a (key, time) composite, sums with cumulative sums (extended precision, so the two paths agree to
~1e-12), maxima with a sparse-table range maximum, labels by the time they became known.
Amounts are converted to the base currency first (`FeatureSet.amounts_in_base`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.fraud.definition import ENTITIES, ID_COLUMNS, FeatureSet, window_label
from shopml.clock import epoch_ms_array
from shopml.errors import DataError

MS = 1000
_REQUIRED = ("timestamp", "amount", "customer_id", "terminal_id")


@dataclass
class PreparedPayments:
    """Payments as plain arrays in stream order (`order[i]` = input row of stream position i)."""

    order: np.ndarray
    t_ms: np.ndarray
    amount: np.ndarray
    codes: dict[str, np.ndarray]
    n_codes: dict[str, int]
    is_fraud: np.ndarray
    known_ms: np.ndarray


def label_known_ms(t_ms: np.ndarray, label_time: pd.Series | None, delay_s: int) -> np.ndarray:
    """When each label became known: `label_time`, else `timestamp + delay`; never before t + 1 ms."""
    known = t_ms + int(delay_s) * MS
    if label_time is not None:
        lt = np.asarray(label_time, dtype="datetime64[ns]")
        has = ~np.isnat(lt)
        known = np.where(has, epoch_ms_array(lt), known)
    return np.maximum(known, t_ms + 1)


def prepare(payments: pd.DataFrame, fs: FeatureSet) -> PreparedPayments:
    missing = [c for c in _REQUIRED if c not in payments.columns]
    if "card" in fs.entities and "card_id" not in payments.columns:
        missing.append("card_id")
    if missing:
        raise DataError(f"payments: required column(s) missing for fraud features: {missing}")
    t_all = epoch_ms_array(payments["timestamp"])
    order = np.argsort(t_all, kind="stable")
    t_ms = t_all[order]
    amount = fs.amounts_in_base(payments)[order]
    codes: dict[str, np.ndarray] = {}
    n_codes: dict[str, int] = {}
    for e in dict.fromkeys((*fs.entities, *fs.fraud_entities, "terminal")):
        col = payments[ID_COLUMNS[e]]
        if e == "card" and "customer" in codes and col.equals(payments["customer_id"]):
            codes[e], n_codes[e] = codes["customer"], n_codes["customer"]
            continue
        c, uniques = pd.factorize(col)
        codes[e], n_codes[e] = c.astype("int64")[order], len(uniques)
    if "is_fraud" in payments.columns:
        is_fraud = payments["is_fraud"].to_numpy(dtype=bool)[order]
    else:
        is_fraud = np.zeros(len(order), dtype=bool)
    label_time = payments["label_time"].to_numpy()[order] if "label_time" in payments else None
    known = label_known_ms(t_ms, label_time, fs.label_delay)
    return PreparedPayments(order, t_ms, amount, codes, n_codes, is_fraud, known)


class RangeMax:
    """Range maxima over one array: level k holds the max of the 2^k values ending at each
    position, built lazily; a query [lo, hi] is max(level_k[hi], level_k[lo + 2^k - 1])."""

    def __init__(self, values: np.ndarray):
        self.levels = [np.asarray(values, dtype="float64")]

    def _level(self, j: int) -> np.ndarray:
        while len(self.levels) <= j:
            prev, step = self.levels[-1], 1 << (len(self.levels) - 1)
            nxt = prev.copy()
            np.maximum(prev[step:], prev[:-step], out=nxt[step:])
            self.levels.append(nxt)
        return self.levels[j]

    def query(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """max(values[lo:hi + 1]) for every query (lo <= hi)."""
        out = np.empty(lo.shape[0], dtype="float64")
        if not lo.size:
            return out
        k = (np.frexp((hi - lo + 1).astype("float64"))[1] - 1).astype("int8")  # floor(log2)
        for j in range(int(k.max()) + 1):
            sel = np.flatnonzero(k == j)
            if sel.size:
                level = self._level(j)
                out[sel] = np.maximum(level[hi[sel]], level[lo[sel] + ((1 << j) - 1)])
        return out

    def query_to_here(self, lo: np.ndarray) -> np.ndarray:
        """`query(lo, positions)`: max(values[lo[i]:i + 1]) at every position i (lo <= i)."""
        n = lo.shape[0]
        out = np.empty(n, dtype="float64")
        if not n:
            return out
        length = np.arange(1, n + 1, dtype="int64")
        length -= lo
        k = (np.frexp(length.astype("float64"))[1] - 1).astype("int8")  # floor(log2)
        np.copyto(out, self.levels[0], where=k == 0)  # one value: itself
        for j in range(1, int(k.max()) + 1):
            sel = np.flatnonzero(k == j)
            if sel.size:
                level = self._level(j)
                out[sel] = np.maximum(level[sel], level[lo[sel] + ((1 << j) - 1)])
        return out


def range_max(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """max(values[lo:hi + 1]) for every query (lo <= hi)."""
    return RangeMax(values).query(lo, hi)


def argsort_codes(codes: np.ndarray, n_codes: int) -> np.ndarray:
    """Stable argsort of small non-negative int codes with 16-bit radix passes (fast in numpy)."""
    if n_codes <= 1 << 16:
        return np.argsort(codes.astype(np.uint16), kind="stable")
    lo = np.argsort((codes & 0xFFFF).astype(np.uint16), kind="stable")
    if n_codes <= 1 << 32:
        hi = np.argsort((codes[lo] >> 16).astype(np.uint16), kind="stable")
        return lo[hi]
    return np.argsort(codes, kind="stable")


def _search_sorted(values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """`searchsorted(values, queries, "left")` for non-decreasing `queries`, searching each
    distinct query once (payments of one key in one tile share their window's start)."""
    if queries.shape[0] < 2:
        return np.searchsorted(values, queries, side="left")
    new = np.empty(queries.shape[0], dtype=bool)
    new[0] = True
    np.not_equal(queries[1:], queries[:-1], out=new[1:])
    distinct = np.flatnonzero(new)
    if 4 * distinct.shape[0] > 3 * queries.shape[0]:  # mostly distinct: search them all
        return np.searchsorted(values, queries, side="left")
    found = np.searchsorted(values, queries[distinct], side="left")
    return found[np.cumsum(new) - 1]


def _rank(values: np.ndarray, queries: np.ndarray, side: str) -> np.ndarray:
    """`searchsorted(values, queries, side)` for non-decreasing `queries` and a shorter sorted
    `values` (the known frauds against every payment): each value is searched among the
    queries instead, and a running count of those positions gives every query's rank."""
    if values.shape[0] > queries.shape[0]:
        return np.searchsorted(values, queries, side=side)
    return np.cumsum(_rank_steps(values, queries, side))


def _rank_steps(values: np.ndarray, queries: np.ndarray, side: str) -> np.ndarray:
    """How much `_rank` grows at each query: values[j] < q[i] (side left) holds from the
    first i with q[i] > values[j] on."""
    at = np.searchsorted(queries, values, side="right" if side == "left" else "left")
    return np.bincount(at, minlength=queries.shape[0] + 1)[:-1]


def _rank_between(values: np.ndarray, back: int, queries: np.ndarray, side: str) -> np.ndarray:
    """`_rank(values, queries, side) - _rank(values, queries - back, side)`: the values in the
    window of length `back` ending at each query (`values + back` searched, not n shifted
    queries)."""
    if values.shape[0] > queries.shape[0]:
        return _rank(values, queries, side) - _rank(values + back, queries, side)
    steps = _rank_steps(values, queries, side)
    steps -= _rank_steps(values + back, queries, side)
    return np.cumsum(steps, out=steps)


def _grid_cap(n: int) -> int:
    """Most cells a (key, tile) grid of `n` payments may have (memory stays O(payments))."""
    return 2 * n + 4096


class _Entity:
    """One key's payments sorted by (key, stream position), with window boundary helpers;
    `rows` puts a column of that order into the output rows (one gather)."""

    def __init__(self, codes, n_codes: int, t_ms, amount, span: int, pad: int, target):
        self.perm = argsort_codes(codes, n_codes)
        self.keys = codes[self.perm]
        self.t = t_ms[self.perm]
        self.amount = amount[self.perm]
        self.t0 = int(t_ms[0]) if t_ms.size else 0
        self.t_last = int(t_ms[-1]) if t_ms.size else 0
        self.n_codes, self.span, self.pad = n_codes, span, pad
        self.c = self.keys * span
        self.c += self.t
        self.c += pad - self.t0
        self.pos = np.arange(codes.shape[0], dtype="int64")
        dest = self.perm if target is None else target[self.perm]
        self.source = np.empty_like(self.pos)  # output row r comes from sorted position source[r]
        self.source[dest] = self.pos
        # per-key running sums (small magnitudes, so window differences keep ~1e-13 precision)
        self.cum = pd.Series(self.amount).groupby(self.keys, sort=True).cumsum().to_numpy()
        same = np.zeros(self.keys.shape[0], dtype=bool)  # same key as the position before
        same[1:] = self.keys[1:] == self.keys[:-1]
        self.same = same
        self.seg0 = np.maximum.accumulate(np.where(same, 0, self.pos))  # the key's first position
        # the running sum before each position (0 at a key's first): the same stored values
        self.cum_before = np.zeros_like(self.cum)
        inner = np.flatnonzero(same)
        self.cum_before[inner] = self.cum[inner - 1]
        self._starts: dict[tuple[int, int], np.ndarray] = {}
        self._aligned: dict[int, np.ndarray] = {}
        self._grids: dict[int, tuple[np.ndarray, np.ndarray] | None] = {}
        self._rmax: RangeMax | None = None

    def rows(self, values) -> np.ndarray:
        """A column in sorted order, as float64 in the output's row order."""
        return np.asarray(values, dtype="float64")[self.source]

    def rmax(self) -> RangeMax:
        if self._rmax is None:
            self._rmax = RangeMax(self.amount)
        return self._rmax

    def start(self, back_ms: int, tile_ms: int) -> np.ndarray:
        """First sorted position of the same key with time >= T - back_ms, T the start of the
        payment's tile of `tile_ms` (`back_ms` a multiple of it)."""
        if (back_ms, tile_ms) not in self._starts:
            grid = self._grid(tile_ms)
            if grid is None:
                found = _search_sorted(self.c, self.aligned(tile_ms) - back_ms)
            else:
                cell, first = grid
                found = first[cell - back_ms // tile_ms]
            self._starts[back_ms, tile_ms] = found
        return self._starts[back_ms, tile_ms]

    def _grid(self, tile_ms: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(cell of each position, first position of each cell) on the grid of keys x tiles,
        tiles padded in front by the longest look-back: a window's start is then a lookup
        `first[cell - tiles back]` instead of a search. None when the grid would hold more
        cells than twice the payments (short tiles, many keys): those windows are searched."""
        if tile_ms not in self._grids:
            n = self.keys.shape[0]
            margin = self.pad // tile_ms + 1  # more tiles than any window looks back
            u0 = self.t0 // tile_ms - margin
            width = self.t_last // tile_ms - u0 + 1
            grid = None
            if self.n_codes * width <= _grid_cap(n):
                cell = self.keys * width
                cell += self.t // tile_ms
                cell -= u0
                counts = np.bincount(cell, minlength=self.n_codes * width)
                first = np.cumsum(counts)
                first -= counts
                grid = (cell, first)
            self._grids[tile_ms] = grid
        return self._grids[tile_ms]

    def aligned(self, tile_ms: int) -> np.ndarray:
        """The (key, time) composite of each payment's tile start."""
        if tile_ms not in self._aligned:
            self._aligned[tile_ms] = self.c - (self.t - (self.t // tile_ms) * tile_ms)
        return self._aligned[tile_ms]

    def window(self, fs: FeatureSet, w: int, delay: int = 0) -> np.ndarray:
        """Start of window `w` s (with `delay`: of [T - delay - w, ...)) per sorted position."""
        return self.start((w + delay) * MS, fs.window_tile(w, delay) * MS)

    def delayed_end(self, fs: FeatureSet, w: int, delay: int) -> np.ndarray:
        """End (exclusive) of the delayed window [T - delay - w, T - delay) per position."""
        return np.minimum(self.start(delay * MS, fs.window_tile(w, delay) * MS), self.pos + 1)

    def window_sum(self, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Sum of amounts over sorted positions [start, end] (same key, start <= end)."""
        return self.cum[end] - self.cum_before[start]

    def sum_to_here(self, start: np.ndarray) -> np.ndarray:
        """`window_sum(start, pos)`: the sum of amounts over [start, pos] at every position."""
        return self.cum - self.cum_before[start]

    def int_window(self, flags: np.ndarray, start: np.ndarray) -> np.ndarray:
        """Windowed count of `flags` (sorted order) over [start, pos]."""
        cs = np.zeros(flags.shape[0] + 1, dtype="int64")
        np.cumsum(flags, out=cs[1:])
        counted = cs[1:] - cs[start]
        return counted.astype("float64")


def compute_batch(payments: pd.DataFrame, fs: FeatureSet | None = None) -> pd.DataFrame:
    """Feature frame (one row per payment, same index and order as `payments`)."""
    fs = fs or FeatureSet()
    cols = compute_columns(payments, fs)
    return pd.DataFrame(cols, index=payments.index, columns=list(fs.names), copy=False)


def local_threads() -> int:
    """Threads the local engine gives the entity groups: one per core this process may use.
    On an idle 2-core machine 2 threads featurise the handbook in 2.2-2.3 s against 3.0-3.3 s;
    at load ~20 they were even in wall time (and 15-40% more CPU). A load-average rule was
    tried and dropped: the job's own threads raise the average it reads, so repeated runs
    flip between 1 and 2. The values never depend on it."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def compute_columns(
    payments: pd.DataFrame, fs: FeatureSet | None = None, compute=None
) -> dict[str, np.ndarray]:
    """Feature columns (name -> float64 array) in the row order of `payments`.

    `compute` (a `shopml.compute.Compute`) on Dask cuts the table into its partitions and runs
    the same kernels there (`batch_dask.feature_frame`): the same values, bit for bit. The
    local engine computes the entity groups in threads, one per core (`local_threads`).
    """
    fs = fs or FeatureSet()
    if compute is not None and compute.is_dask:
        from features.fraud import batch_dask

        return batch_dask.gather_columns(payments, fs, len(payments), compute.n_partitions)
    p = prepare(payments, fs)
    return compute_prepared(p, fs, target=p.order, threads=local_threads())


def to_matrix(cols: dict[str, np.ndarray], names, rows: np.ndarray | None = None) -> np.ndarray:
    """Stack the named columns (optionally only `rows`) into a C-ordered float64 matrix."""
    names = list(names)
    n = len(next(iter(cols.values()))) if rows is None else len(rows)
    out = np.empty((n, len(names)), dtype="float64")
    for j, name in enumerate(names):
        out[:, j] = cols[name] if rows is None else cols[name][rows]
    return out


def feature_groups(fs: FeatureSet) -> dict[str, tuple[str, ...]]:
    """The feature names each entity's payments alone determine, by entity: the payment's own
    features (amount, calendar) go with the customer's. A group is computed from any subset of
    payments holding all of its entity's keys' payments (the Dask engine's partitions)."""
    groups: dict[str, list[str]] = {e: [] for e in ENTITIES}
    for name in fs.names:
        owner = next((e for e in ENTITIES if name.startswith(f"{e}_")), "customer")
        groups[owner].append(name)
    return {e: tuple(names) for e, names in groups.items() if names}


@dataclass
class _Run:
    """What every entity's kernels share: the payments, the definition and the composite
    key's layout (key * `span` + time - `base`, ms)."""

    p: PreparedPayments
    fs: FeatureSet
    target: np.ndarray | None
    span: int
    pad: int
    base: int


def compute_prepared(
    p: PreparedPayments,
    fs: FeatureSet,
    target: np.ndarray | None = None,
    groups: tuple[str, ...] | None = None,
    threads: int = 1,
) -> dict[str, np.ndarray]:
    """Feature columns in `fs.names` order; row i of stream order goes to row `target[i]`
    (`target` a permutation; stream order itself when None). `groups` (entities of
    `feature_groups`) restricts the columns to those groups' features; None: every feature.

    Entities with the same codes (a card per customer) are sorted and computed once and their
    columns copied; distinct ones run in up to `threads` threads (NumPy's sorts, searches and
    gathers release the GIL). The values do not depend on `threads`."""
    wanted = feature_groups(fs)
    groups = tuple(wanted) if groups is None else tuple(g for g in groups if g in wanted)
    names = [n for g in groups for n in wanted[g]]
    names = [n for n in fs.names if n in set(names)]
    n = p.t_ms.shape[0]
    if n == 0:
        return {name: np.empty(0) for name in names}
    t = p.t_ms
    t0 = int(t[0])
    pad = (fs.horizon + max(fs.tile_sizes)) * MS + 1
    fraud_known = p.known_ms[p.is_fraud]
    t_max = max(int(t[-1]), int(fraud_known.max(initial=t[-1])))
    span = t_max - t0 + 2 * pad + 1
    if max(p.n_codes.values()) * span >= 2**62:
        raise DataError("payments span too long a time for millisecond window keys")
    run = _Run(p, fs, target, span, pad, t0 - pad)
    homes: dict[str, list[str]] = {}  # entity sorted once -> the entities with its codes
    for e in dict.fromkeys((*fs.entities, *fs.fraud_entities)):
        if e in groups:
            home = next((h for h in homes if p.codes[h] is p.codes[e]), e)
            homes.setdefault(home, []).append(e)
    cols: dict[str, np.ndarray] = {}
    if "customer" in groups:
        cols.update(_calendar(t, p.amount, fs, target))
    jobs = sorted(homes, key=lambda h: -len(homes[h]))  # the larger jobs first
    if threads > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(min(threads, len(jobs)), thread_name_prefix="fraud-batch") as ex:
            for part in ex.map(lambda h: _entity_columns(run, h, homes[h]), jobs):
                cols.update(part)
    else:
        for h in jobs:
            cols.update(_entity_columns(run, h, homes[h]))
    return {name: cols[name] for name in names}


def _stream_rows(values, target: np.ndarray | None) -> np.ndarray:
    """A column in stream order, as float64 in the output's row order."""
    values = np.asarray(values, dtype="float64")
    if target is None:
        return values.copy()
    out = np.empty(values.shape[0], dtype="float64")
    out[target] = values
    return out


def _entity_columns(run: _Run, home: str, members: list[str]) -> dict[str, np.ndarray]:
    """Every feature of the entities `members` (sharing `home`'s codes), named per entity: the
    kernels run once on `home`'s sort and the other members get copies of the columns."""
    p, fs = run.p, run.fs
    ent = _Entity(p.codes[home], p.n_codes[home], p.t_ms, p.amount, run.span, run.pad, run.target)
    out: dict[str, np.ndarray] = {}

    def emit(entities, columns: dict[str, np.ndarray]) -> None:
        for i, e in enumerate(entities):
            for suffix, values in columns.items():
                out[f"{e}_{suffix}"] = values if i == 0 else values.copy()

    stats = [e for e in members if e in fs.entities]
    if stats:
        emit(stats, _window_stats(ent, fs))
    pairs = [e for e in members if e in fs.pair_entities]
    if pairs:
        emit(pairs, _terminal_novelty(ent, p, home, fs, run.target))
    if "customer" in members:
        out.update(_amount_ratios(ent, fs))
    risk = [e for e in members if e in fs.fraud_entities]
    if risk:
        if "customer" in risk:
            out.update(_delayed_mean(ent, fs))
        emit(risk, _fraud_risk(ent, p, home, fs, run.span, run.base))
    return out


def _calendar(t: np.ndarray, a: np.ndarray, fs: FeatureSet, target) -> dict[str, np.ndarray]:
    """The payment's own features: amount, hour, night, weekend."""
    hours = t // (3600 * MS)
    return {
        "amount": _stream_rows(a, target),
        "hour": _stream_rows(hours % 24, target),
        "is_night": _stream_rows((hours % 24) <= fs.night_last_hour, target),
        "is_weekend": _stream_rows(((t // (86400 * MS)) + 3) % 7 >= 5, target),
    }


def _window_stats(ent: _Entity, fs: FeatureSet) -> dict[str, np.ndarray]:
    """Count, mean and max amount of the key's payments in each window."""
    pos = ent.pos
    starts = {w: ent.window(fs, w) for w in fs.windows}
    rmax = ent.rmax()
    out = {}
    for w, start in starts.items():
        lab = _lab(w)
        count = (pos - start + 1).astype("float64")
        out[f"count_{lab}"] = ent.rows(count)
        out[f"amount_mean_{lab}"] = ent.rows(ent.sum_to_here(start) / count)
        out[f"amount_max_{lab}"] = ent.rows(rmax.query_to_here(start))
    return out


def _terminal_novelty(
    ent: _Entity, p: PreparedPayments, e: str, fs: FeatureSet, target
) -> dict[str, np.ndarray]:
    """Time since the previous payment; new terminal, terminals ever, new ones per window."""
    n = ent.keys.shape[0]
    since = np.full(n, np.nan)
    since[1:] = (ent.t[1:] - ent.t[:-1]) / MS
    since[~ent.same] = np.nan
    out = {"secs_since_prev": ent.rows(since)}
    first = _first_pairs(p.codes[e], p.n_codes[e], p.codes["terminal"], p.n_codes["terminal"])
    out["new_terminal"] = _stream_rows(first, target)
    fs_sorted = first[ent.perm].astype("int64")
    cs = np.cumsum(fs_sorted)
    seg0 = ent.seg0
    out["terminals_ever"] = ent.rows(cs - cs[seg0] + fs_sorted[seg0])
    for w in fs.pair_windows:
        out[f"new_terminals_{_lab(w)}"] = ent.rows(ent.int_window(fs_sorted, ent.window(fs, w)))
    return out


def _amount_ratios(cust: _Entity, fs: FeatureSet) -> dict[str, np.ndarray]:
    """Customer only: amount against the usual and the previous maximum; spikes per window."""
    n = cust.keys.shape[0]
    pos = cust.pos
    start = cust.window(fs, fs.usual_window)
    n_prev = pos - start
    s_prev = cust.sum_to_here(start) - cust.amount
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        usual = np.where(n_prev > 0, s_prev / np.maximum(n_prev, 1), np.nan)
        to_usual = np.where(usual > 0, cust.amount / usual, np.nan)
        has_prev = n_prev > 0
        prev_max = np.full(n, np.nan)
        prev_max[has_prev] = cust.rmax().query(start[has_prev], pos[has_prev] - 1)
        to_prev_max = np.where(prev_max > 0, cust.amount / prev_max, np.nan)
    out = {
        "customer_amount_to_usual": cust.rows(to_usual),
        "customer_amount_to_prev_max": cust.rows(to_prev_max),
    }
    spikes = (to_usual > fs.spike_ratio).astype("int64")  # NaN compares False
    for w in fs.spike_windows:
        counted = cust.int_window(spikes, cust.window(fs, w))
        out[f"customer_spikes_{_lab(w)}"] = cust.rows(counted)
    return out


def _delayed_mean(cust: _Entity, fs: FeatureSet) -> dict[str, np.ndarray]:
    """Customer only: the amount against the mean of the payments old enough to be labelled."""
    n = cust.keys.shape[0]
    back, delay = max(fs.fraud_windows), fs.label_delay
    lo, end = cust.window(fs, back, delay), cust.delayed_end(fs, back, delay)
    cnt = end - lo
    has = cnt > 0
    mean = np.full(n, np.nan)
    mean[has] = cust.window_sum(lo[has], end[has] - 1) / cnt[has]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = np.where(mean > 0, cust.amount / mean, np.nan)
    return {"customer_amount_to_delayed_mean": cust.rows(ratio)}


def _fraud_risk(
    ent: _Entity, p: PreparedPayments, e: str, fs: FeatureSet, span: int, base: int
) -> dict[str, np.ndarray]:
    """Payments old enough to be labelled, known frauds and their rate per window, the time
    since the last and first known fraud.

    Known frauds are located on the same (key, time) composite as the payments: key * `span` +
    (time - `base`)."""
    n = ent.keys.shape[0]
    delay = fs.label_delay
    out: dict[str, np.ndarray] = {}
    fk = p.codes[e][p.is_fraud]
    fo = np.lexsort((p.known_ms[p.is_fraud], fk))
    cf = fk[fo] * span + (p.known_ms[p.is_fraud][fo] - base)
    ftx = p.t_ms[p.is_fraud][fo].astype("float64")
    if fs.fraud_windows:
        known_end = _rank(cf, ent.c, side="right")
        lo = _rank(cf + max(fs.fraud_windows) * MS, ent.c, side="right")
        has = known_end > lo
        last = np.full(n, np.nan)
        first = np.full(n, np.nan)
        if has.any() and ftx.size:
            last[has] = range_max(ftx, lo[has], known_end[has] - 1)
            first[has] = -range_max(-ftx, lo[has], known_end[has] - 1)
        out["secs_since_last_fraud"] = ent.rows((ent.t - last) / MS)
        out["secs_since_first_fraud"] = ent.rows((ent.t - first) / MS)
    for w in fs.fraud_windows:
        lab = _lab(w)
        cnt = (ent.delayed_end(fs, w, delay) - ent.window(fs, w, delay)).astype("float64")
        frauds = _rank_between(cf, w * MS, ent.c, side="right").astype("float64")
        out[f"delayed_count_{lab}"] = ent.rows(cnt)
        out[f"known_frauds_{lab}"] = ent.rows(frauds)
        # the rate's frauds: known in [T - w, T), the delayed window's payments for default labels
        ca = ent.aligned(fs.window_tile(w, delay) * MS)
        rated = _rank_between(cf, w * MS, ca, side="left")
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"fraud_rate_{lab}"] = ent.rows(np.where(cnt > 0, rated / cnt, 0.0))
    return out


def _first_pairs(codes: np.ndarray, n_codes: int, term: np.ndarray, n_term: int) -> np.ndarray:
    """True where a (key, terminal) pair occurs for the first time in the stream."""
    o = argsort_codes(term, n_term)
    o = o[argsort_codes(codes[o], n_codes)]
    k, tt = codes[o], term[o]
    first = np.ones(codes.shape[0], dtype=bool)
    first[o[1:]] = (k[1:] != k[:-1]) | (tt[1:] != tt[:-1])
    return first


_lab = window_label
