"""Point-in-time fraud features for a whole payments table, vectorised (sort + cumulative sums).

Every payment gets the features the online path would have produced when it arrived: the stream
order is by timestamp, ties kept in input order; tile-aligned windows (definition.py) are found
with `searchsorted` on a (key, time) composite, sums with cumulative sums (extended precision, so the two paths agree to
~1e-12), maxima with a sparse-table range maximum, labels by the time they became known.
Amounts are converted to the base currency first (`FeatureSet.amounts_in_base`).
"""

from __future__ import annotations

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


class _Entity:
    """One key's payments sorted by (key, stream position), with window boundary helpers."""

    def __init__(self, codes, n_codes: int, t_ms, amount, span: int, pad: int):
        self.perm = argsort_codes(codes, n_codes)
        self.keys = codes[self.perm]
        self.t = t_ms[self.perm]
        self.amount = amount[self.perm]
        self.t0 = int(t_ms[0]) if t_ms.size else 0
        self.span, self.pad = span, pad
        self.c = self.keys * span + (self.t - self.t0 + pad)
        self.pos = np.arange(codes.shape[0], dtype="int64")
        # per-key running sums (small magnitudes, so window differences keep ~1e-13 precision)
        self.cum = pd.Series(self.amount).groupby(self.keys, sort=True).cumsum().to_numpy()
        same = np.zeros(self.keys.shape[0], dtype=bool)  # same key as the position before
        same[1:] = self.keys[1:] == self.keys[:-1]
        self.seg0 = np.maximum.accumulate(np.where(same, 0, self.pos))  # the key's first position
        # the running sum before each position (0 at a key's first): the same stored values
        self.cum_before = np.zeros_like(self.cum)
        inner = np.flatnonzero(same)
        self.cum_before[inner] = self.cum[inner - 1]
        self._starts: dict[tuple[int, int], np.ndarray] = {}
        self._aligned: dict[int, np.ndarray] = {}
        self._rmax: RangeMax | None = None

    def rmax(self) -> RangeMax:
        if self._rmax is None:
            self._rmax = RangeMax(self.amount)
        return self._rmax

    def start(self, back_ms: int, tile_ms: int) -> np.ndarray:
        """First sorted position of the same key with time >= T - back_ms, T the start of the
        payment's tile of `tile_ms`."""
        if (back_ms, tile_ms) not in self._starts:
            self._starts[back_ms, tile_ms] = _search_sorted(self.c, self.aligned(tile_ms) - back_ms)
        return self._starts[back_ms, tile_ms]

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

    def int_window(self, flags: np.ndarray, start: np.ndarray) -> np.ndarray:
        """Windowed count of `flags` (sorted order) over [start, pos]."""
        cs = np.zeros(flags.shape[0] + 1, dtype="int64")
        np.cumsum(flags, out=cs[1:])
        return (cs[self.pos + 1] - cs[start]).astype("float64")


def compute_batch(payments: pd.DataFrame, fs: FeatureSet | None = None) -> pd.DataFrame:
    """Feature frame (one row per payment, same index and order as `payments`)."""
    fs = fs or FeatureSet()
    cols = compute_columns(payments, fs)
    return pd.DataFrame(cols, index=payments.index, columns=list(fs.names), copy=False)


def compute_columns(
    payments: pd.DataFrame, fs: FeatureSet | None = None, compute=None
) -> dict[str, np.ndarray]:
    """Feature columns (name -> float64 array) in the row order of `payments`.

    `compute` (a `shopml.compute.Compute`) on Dask cuts the table into its partitions and runs
    the same kernels there (`batch_dask.feature_frame`): the same values, bit for bit.
    """
    fs = fs or FeatureSet()
    if compute is not None and compute.is_dask:
        from features.frames import from_pandas
        from features.fraud import batch_dask

        frame = from_pandas(payments, compute.n_partitions)
        return batch_dask.gather_columns(frame, fs, len(payments))
    p = prepare(payments, fs)
    return compute_prepared(p, fs, target=p.order)


def to_matrix(cols: dict[str, np.ndarray], names, rows: np.ndarray | None = None) -> np.ndarray:
    """Stack the named columns (optionally only `rows`) into a C-ordered float64 matrix."""
    names = list(names)
    n = len(next(iter(cols.values()))) if rows is None else len(rows)
    out = np.empty((n, len(names)), dtype="float64")
    for j, name in enumerate(names):
        out[:, j] = cols[name] if rows is None else cols[name][rows]
    return out


class _Columns(dict):
    """Output columns; `put(name, dest, values)` scatters values to output rows `dest`."""

    def __init__(self, n: int, target: np.ndarray | None):
        super().__init__()
        self.n, self.target = n, target

    def put(self, name: str, dest: np.ndarray | None, values) -> None:
        values = np.asarray(values, dtype="float64")
        if dest is None:
            dest = self.target
        if dest is None:
            self[name] = values.copy()
        else:
            out = np.empty(self.n, dtype="float64")
            out[dest] = values
            self[name] = out


def feature_groups(fs: FeatureSet) -> dict[str, tuple[str, ...]]:
    """The feature names each entity's payments alone determine, by entity: the payment's own
    features (amount, calendar) go with the customer's. A group is computed from any subset of
    payments holding all of its entity's keys' payments (the Dask engine's partitions)."""
    groups: dict[str, list[str]] = {e: [] for e in ENTITIES}
    for name in fs.names:
        owner = next((e for e in ENTITIES if name.startswith(f"{e}_")), "customer")
        groups[owner].append(name)
    return {e: tuple(names) for e, names in groups.items() if names}


def compute_prepared(
    p: PreparedPayments,
    fs: FeatureSet,
    target: np.ndarray | None = None,
    groups: tuple[str, ...] | None = None,
) -> dict[str, np.ndarray]:
    """Feature columns in `fs.names` order; row i of stream order goes to row `target[i]`
    (stream order itself when `target` is None). `groups` (entities of `feature_groups`)
    restricts the columns to those groups' features; None: every feature."""
    wanted = feature_groups(fs)
    groups = tuple(wanted) if groups is None else tuple(g for g in groups if g in wanted)
    names = [n for g in groups for n in wanted[g]]
    names = [n for n in fs.names if n in set(names)]
    n = p.t_ms.shape[0]
    X = _Columns(n, target)
    if n == 0:
        return {name: np.empty(0) for name in names}
    t, a = p.t_ms, p.amount
    t0 = int(t[0])
    pad = (fs.horizon + max(fs.tile_sizes)) * MS + 1
    fraud_known = p.known_ms[p.is_fraud]
    t_max = max(int(t[-1]), int(fraud_known.max(initial=t[-1])))
    span = t_max - t0 + 2 * pad + 1
    if max(p.n_codes.values()) * span >= 2**62:
        raise DataError("payments span too long a time for millisecond window keys")
    if "customer" in groups:
        _calendar(X, t, a, fs)
    ents: dict[str, _Entity] = {}
    for e in dict.fromkeys((*fs.entities, *fs.fraud_entities)):
        if e not in groups:
            continue
        same = [o for o in ents if p.codes[o] is p.codes[e]]
        ents[e] = ents[same[0]] if same else _Entity(p.codes[e], p.n_codes[e], t, a, span, pad)
    for ent in ents.values():
        ent.dest = ent.perm if target is None else target[ent.perm]
    for e in fs.entities:
        if e in ents:
            _window_stats(X, e, ents[e], fs)
    firsts: dict[int, np.ndarray] = {}  # first (key, terminal) pairs, shared by equal codes
    for e in fs.pair_entities:
        if e in ents:
            _terminal_novelty(X, e, ents[e], p, fs, firsts)
    if "customer" in ents:
        _amount_ratios(X, ents["customer"], fs)
    for e in fs.fraud_entities:
        if e in ents:
            _fraud_risk(X, e, ents[e], p, fs, span, t0 - pad)
    return {name: X[name] for name in names}


def _calendar(X: _Columns, t: np.ndarray, a: np.ndarray, fs: FeatureSet) -> None:
    """The payment's own features: amount, hour, night, weekend."""
    hours = t // (3600 * MS)
    X.put("amount", None, a)
    X.put("hour", None, hours % 24)
    X.put("is_night", None, (hours % 24) <= fs.night_last_hour)
    X.put("is_weekend", None, ((t // (86400 * MS)) + 3) % 7 >= 5)


def _window_stats(X: _Columns, e: str, ent: _Entity, fs: FeatureSet) -> None:
    """Count, mean and max amount of the key's payments in each window."""
    perm, pos = ent.dest, ent.pos
    rmax = ent.rmax()
    for w in fs.windows:
        lab = _lab(w)
        start = ent.window(fs, w)
        count = (pos - start + 1).astype("float64")
        X.put(f"{e}_count_{lab}", perm, count)
        X.put(f"{e}_amount_mean_{lab}", perm, ent.window_sum(start, pos) / count)
        X.put(f"{e}_amount_max_{lab}", perm, rmax.query(start, pos))


def _terminal_novelty(
    X: _Columns, e: str, ent: _Entity, p: PreparedPayments, fs: FeatureSet, firsts: dict
) -> None:
    """Time since the previous payment; new terminal, terminals ever, new ones per window."""
    n = ent.keys.shape[0]
    perm = ent.dest
    prev_same = np.zeros(n, dtype=bool)
    prev_same[1:] = ent.keys[1:] == ent.keys[:-1]
    since = np.full(n, np.nan)
    since[1:] = (ent.t[1:] - ent.t[:-1]) / MS
    since[~prev_same] = np.nan
    X.put(f"{e}_secs_since_prev", perm, since)
    if id(p.codes[e]) not in firsts:
        firsts[id(p.codes[e])] = _first_pairs(
            p.codes[e], p.n_codes[e], p.codes["terminal"], p.n_codes["terminal"]
        )
    first = firsts[id(p.codes[e])]
    X.put(f"{e}_new_terminal", None, first)
    fs_sorted = first[ent.perm].astype("int64")
    cs = np.cumsum(fs_sorted)
    seg0 = ent.seg0
    X.put(f"{e}_terminals_ever", perm, cs - cs[seg0] + fs_sorted[seg0])
    for w in fs.pair_windows:
        X.put(f"{e}_new_terminals_{_lab(w)}", perm, ent.int_window(fs_sorted, ent.window(fs, w)))


def _amount_ratios(X: _Columns, cust: _Entity, fs: FeatureSet) -> None:
    """Customer only: amount against the usual and the previous maximum; spikes per window."""
    n = cust.keys.shape[0]
    perm, pos = cust.dest, cust.pos
    start = cust.window(fs, fs.usual_window)
    n_prev = pos - start
    s_prev = cust.window_sum(start, pos) - cust.amount
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        usual = np.where(n_prev > 0, s_prev / np.maximum(n_prev, 1), np.nan)
        to_usual = np.where(usual > 0, cust.amount / usual, np.nan)
        has_prev = n_prev > 0
        prev_max = np.full(n, np.nan)
        prev_max[has_prev] = cust.rmax().query(start[has_prev], pos[has_prev] - 1)
        to_prev_max = np.where(prev_max > 0, cust.amount / prev_max, np.nan)
    X.put("customer_amount_to_usual", perm, to_usual)
    X.put("customer_amount_to_prev_max", perm, to_prev_max)
    spikes = (to_usual > fs.spike_ratio).astype("int64")  # NaN compares False
    for w in fs.spike_windows:
        X.put(f"customer_spikes_{_lab(w)}", perm, cust.int_window(spikes, cust.window(fs, w)))


def _fraud_risk(
    X: _Columns, e: str, ent: _Entity, p: PreparedPayments, fs: FeatureSet, span: int, base: int
) -> None:
    """Payments old enough to be labelled, known frauds and their rate per window, the time
    since the last and first known fraud (customer: amount against the labelled payments' mean).

    Known frauds are located on the same (key, time) composite as the payments: key * `span` +
    (time - `base`)."""
    n = ent.keys.shape[0]
    perm = ent.dest
    delay = fs.label_delay
    if e == "customer":
        back = max(fs.fraud_windows)
        lo, end = ent.window(fs, back, delay), ent.delayed_end(fs, back, delay)
        cnt = end - lo
        has = cnt > 0
        mean = np.full(n, np.nan)
        mean[has] = ent.window_sum(lo[has], end[has] - 1) / cnt[has]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ratio = np.where(mean > 0, ent.amount / mean, np.nan)
        X.put("customer_amount_to_delayed_mean", perm, ratio)
    fk = p.codes[e][p.is_fraud]
    fo = np.lexsort((p.known_ms[p.is_fraud], fk))
    cf = fk[fo] * span + (p.known_ms[p.is_fraud][fo] - base)
    ftx = p.t_ms[p.is_fraud][fo].astype("float64")
    known_end = np.searchsorted(cf, ent.c, side="right")
    if fs.fraud_windows:
        lo = np.searchsorted(cf, ent.c - max(fs.fraud_windows) * MS, side="right")
        known_start = {max(fs.fraud_windows): lo}
        has = known_end > lo
        last = np.full(n, np.nan)
        first = np.full(n, np.nan)
        if has.any() and ftx.size:
            last[has] = range_max(ftx, lo[has], known_end[has] - 1)
            first[has] = -range_max(-ftx, lo[has], known_end[has] - 1)
        X.put(f"{e}_secs_since_last_fraud", perm, (ent.t - last) / MS)
        X.put(f"{e}_secs_since_first_fraud", perm, (ent.t - first) / MS)
    for w in fs.fraud_windows:
        lab = _lab(w)
        cnt = (ent.delayed_end(fs, w, delay) - ent.window(fs, w, delay)).astype("float64")
        if w not in known_start:
            known_start[w] = np.searchsorted(cf, ent.c - w * MS, side="right")
        frauds = (known_end - known_start[w]).astype("float64")
        X.put(f"{e}_delayed_count_{lab}", perm, cnt)
        X.put(f"{e}_known_frauds_{lab}", perm, frauds)
        # the rate's frauds: known in [T - w, T), the delayed window's payments for default labels
        ca = ent.aligned(fs.window_tile(w, delay) * MS)
        rated = np.searchsorted(cf, ca, side="left") - np.searchsorted(cf, ca - w * MS, "left")
        with np.errstate(divide="ignore", invalid="ignore"):
            X.put(f"{e}_fraud_rate_{lab}", perm, np.where(cnt > 0, rated / cnt, 0.0))


def _first_pairs(codes: np.ndarray, n_codes: int, term: np.ndarray, n_term: int) -> np.ndarray:
    """True where a (key, terminal) pair occurs for the first time in the stream."""
    o = argsort_codes(term, n_term)
    o = o[argsort_codes(codes[o], n_codes)]
    k, tt = codes[o], term[o]
    first = np.ones(codes.shape[0], dtype=bool)
    first[o[1:]] = (k[1:] != k[:-1]) | (tt[1:] != tt[:-1])
    return first


_lab = window_label
