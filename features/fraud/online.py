"""Fraud features for one new payment from per-key state: the online twin of `batch.py`.

For each of the payment's keys (customer, card, terminal) the store keeps time tiles
(`features.fraud.tiles`): a window is a bounded slice of tiles found by binary search, so a
payment costs the same whatever the key's history. Features are computed from one read of the
keys, then the payment is recorded in one atomic, idempotent store operation
(`StateStore.record`). Everything is plain Python lists and floats: no pandas, no numpy scalars.
"""

from __future__ import annotations

import math
import uuid
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import count

import numpy as np
import pandas as pd

from features.fraud.batch import label_known_ms, prepare
from features.fraud.definition import DAY, ENTITIES, ID_COLUMNS, FeatureSet, window_label
from features.fraud.state_store import InMemoryStateStore, Recording, StateStore, entity_key
from features.fraud.tiles import KeyState, Tiles, plan_ms
from shopml.clock import epoch_ms_array

NAN = math.nan
_MS = 1000
_HOUR_MS = 3600 * _MS
_DAY_MS = 86400 * _MS

UNSEEN = {e: 1 << i for i, e in enumerate(ENTITIES)}  # bits of the `unseen` mask


class OnlineFeatures:
    """Computes the feature vector of one payment and records it in the state store.

    `late_s` (default the label delay) is how late a payment may arrive and still find the
    tiles its windows need."""

    def __init__(self, fs: FeatureSet | None = None, store: StateStore | None = None, late_s=None):
        self.fs = fs or FeatureSet()
        self.store = store if store is not None else InMemoryStateStore()
        fs = self.fs
        ix = fs.index
        self.plan = plan_ms(fs, late_s)
        self._sizes = tuple(g // _MS for g, _ in self.plan)
        self._n_levels = len(self.plan)
        late = fs.label_delay if late_s is None else late_s
        self._ttl_s = fs.horizon + late + DAY
        # how long a fraud label can matter: the longest fraud window, its tile, the lateness
        back = max(fs.fraud_windows, default=0)
        tile = fs.window_tile(back, fs.label_delay) if back else 0
        self._fraud_keep = (back + tile + late) * _MS
        self._ents = tuple(dict.fromkeys((*fs.entities, *fs.fraud_entities)))
        self._slot = tuple(ENTITIES.index(e) for e in self._ents)
        self._key_slots = tuple(
            (self.key_prefix(e), s) for e, s in zip(self._ents, self._slot, strict=True)
        )
        self._pairs = tuple(e in fs.pair_entities for e in self._ents)
        self._fraud_keys = tuple(j for j, e in enumerate(self._ents) if e in fs.fraud_entities)
        self._hour, self._night, self._weekend = ix("hour"), ix("is_night"), ix("is_weekend")
        self._amount = ix("amount")
        self._plan = tuple(self._plan_steps(e) for e in self._ents)
        self._offsets = self._tile_offsets()
        self._wants_tiles = bool(getattr(self.store, "wants_tiles", False))
        self._empty = KeyState(self._n_levels)
        self._anon = f"~{uuid.uuid4().hex[:12]}:"  # ids of labels filed without a payment id
        self._counter = count()

    def new_vector(self) -> np.ndarray:
        """A preallocated float64 feature vector to pass as `out`."""
        return np.zeros(self.fs.n_features, dtype="float64")

    @staticmethod
    def key_prefix(entity: str) -> str:
        """State keys are `<prefix><id>`: `cu:` customers, `ca:` cards, `te:` terminals."""
        return f"{entity[:2]}:"

    def keys(self, customer: str, card: str, terminal: str) -> list[str]:
        """The state keys of a payment, in `_ents` order."""
        ids = (customer, card, terminal)
        return [f"{prefix}{ids[s]}" for prefix, s in self._key_slots]

    def compute(
        self,
        t: int,
        amount: float,
        customer: str,
        card: str,
        terminal: str,
        out,
        record: bool = True,
        label_known_ms: int | None = None,
        transaction_id: str | None = None,
    ) -> int:
        """Fill `out` with the features of a payment at `t` ms; return the `unseen` bit mask.

        The features count the payment itself; `record=True` then adds it to the store (once per
        `transaction_id`: a retry is not counted again), `record=False` changes nothing (a
        what-if score). `label_known_ms` (replay only) files the payment's fraud label,
        effective from that time."""
        keys = self.keys(customer, card, terminal)
        now = [t // g for g, _ in self.plan]
        if self._wants_tiles:
            tiles = [[n - off for off in offs] for n, offs in zip(now, self._offsets, strict=True)]
            states = self.store.read(keys, self._n_levels, tiles)
        else:
            states = self.store.read(keys, self._n_levels)
        unseen = 0
        n_levels = self._n_levels
        for j, st in enumerate(states):
            if st is None:
                states[j] = self._empty
                unseen |= 1 << self._slot[j]
            elif len(st.levels) < n_levels:  # a key known only from a label or warm-up
                states[j] = _padded(st, n_levels)
        self._calendar(t, amount, out)
        spikes = [0] * len(keys)
        for j, (st, steps) in enumerate(zip(states, self._plan, strict=True)):
            for step, params in steps:
                step(params, st, t, amount, terminal, now, out, spikes, j)
        if record:
            rec = Recording(
                t,
                amount,
                tuple(keys),
                tuple(spikes),
                self._pairs,
                terminal,
                customer,
                self.plan,
                self._ttl_s,
                transaction_id,
            )
            if self.store.record(rec) and label_known_ms is not None:
                label = transaction_id or f"{self._anon}{next(self._counter)}"
                fraud_keys = [keys[j] for j in self._fraud_keys]
                known = int(label_known_ms)
                self.store.file_label(fraud_keys, label, known, t, True, self._fraud_keep)
        return unseen

    def _plan_steps(self, e: str) -> tuple:
        """The feature steps of entity `e` in output order: (step, its tile ranges and column
        indices and constants), so that a step reads no attributes per payment."""
        fs, ix = self.fs, self.fs.index
        steps = []
        if e in fs.entities:
            win = self._window_columns(e, fs.windows, 0, "count", "amount_mean", "amount_max")
            steps.append((_window_stats, win))
        if e in fs.pair_entities:
            pwin = self._window_columns(e, fs.pair_windows, 0, "new_terminals")
            cols = (ix(f"{e}_secs_since_prev"), ix(f"{e}_new_terminal"), ix(f"{e}_terminals_ever"))
            steps.append((_terminal_novelty, (*cols, pwin)))
        if e == "customer":
            spikes = self._window_columns(e, fs.spike_windows, 0, "spikes")
            usual = (ix("customer_amount_to_usual"), ix("customer_amount_to_prev_max"))
            (uw,) = self._tile_ranges((fs.usual_window,), 0)
            steps.append((_amount_ratios, (*uw, *usual, fs.spike_ratio, spikes)))
        if e in fs.fraud_entities and fs.fraud_windows:  # no fraud features without windows
            names = ("delayed_count", "known_frauds", "fraud_rate")
            delay = fs.label_delay
            fwin = self._window_columns(e, fs.fraud_windows, delay, *names)
            exact = tuple((w * _MS, fs.window_tile(w, delay) * _MS) for w in fs.fraud_windows)
            back = max(fs.fraud_windows)
            dm = None
            if e == "customer":
                (dm,) = self._tile_ranges((back,), delay)
                dm = (*dm, ix("customer_amount_to_delayed_mean"))
            ages = (ix(f"{e}_secs_since_last_fraud"), ix(f"{e}_secs_since_first_fraud"))
            steps.append((_fraud_risk, (fwin, exact, back * _MS, dm, *ages)))
        return tuple(steps)

    def _tile_offsets(self) -> tuple[tuple[int, ...], ...]:
        """Per level, the offsets back from the payment's tile that some window reads,
        largest first (so that tile ids come out ascending)."""
        fs = self.fs
        ranges = self._tile_ranges((*fs.windows, *fs.pair_windows, *fs.spike_windows), 0)
        if fs.fraud_entities and fs.fraud_windows:
            ranges += self._tile_ranges(fs.fraud_windows, fs.label_delay)
        offsets: list[set[int]] = [set() for _ in self.plan]
        for lv, first, last in ranges:
            offsets[lv].update(range(last, first + 1))
        return tuple(tuple(sorted(o, reverse=True)) for o in offsets)

    def _tile_ranges(self, windows, delay: int) -> list[tuple[int, int, int]]:
        """Per window: (tile level, first, last tile offset back from the payment's tile);
        without delay the window is [T - w, t], with one [T - delay - w, T - delay)."""
        out = []
        for w in windows:
            g = self.fs.window_tile(w, delay)
            if delay:
                out.append((self._sizes.index(g), (delay + w) // g, delay // g + 1))
            else:
                out.append((self._sizes.index(g), w // g, 0))
        return out

    def _window_columns(self, e: str, windows, delay: int, *features: str) -> tuple:
        """Per window: its tile range, then the column of `<e>_<feature>_<window>` per feature."""
        ix = self.fs.index
        return tuple(
            (*rng, *(ix(f"{e}_{f}_{window_label(w)}") for f in features))
            for rng, w in zip(self._tile_ranges(windows, delay), windows, strict=True)
        )

    def _calendar(self, t: int, amount: float, out) -> None:
        """The payment's own features: amount, hour, night, weekend."""
        hour = (t // _HOUR_MS) % 24
        out[self._amount] = amount
        out[self._hour] = hour
        out[self._night] = 1.0 if hour <= self.fs.night_last_hour else 0.0
        out[self._weekend] = 1.0 if ((t // _DAY_MS) + 3) % 7 >= 5 else 0.0

    def add_fraud_label(
        self,
        customer: str,
        terminal: str,
        known_ms: int,
        tx_ms: int | None = None,
        transaction_id: str | None = None,
        is_fraud: bool = True,
    ) -> bool:
        """File a confirmed fraud (payment made at `tx_ms`, default `known_ms`): it counts in the
        customer's and terminal's risk from `known_ms`. With a `transaction_id` it is idempotent
        and `is_fraud=False` takes it back (a correction); True when the state changed."""
        ids = {"customer": customer, "terminal": terminal}
        keys = [entity_key(e, ids[e]) for e in self.fs.fraud_entities]
        label = transaction_id or f"{self._anon}{next(self._counter)}"
        tx = int(known_ms if tx_ms is None else tx_ms)
        return self.store.file_label(keys, label, int(known_ms), tx, is_fraud, self._fraud_keep)

    def replay_frame(self, payments: pd.DataFrame) -> np.ndarray:
        """Feed a payments frame through `compute` in stream order (time, ties in input order),
        each fraud label filed at the time it became known; the feature matrix in stream order."""
        return self._replay_prepared(payments, prepare(payments, self.fs))

    def _replay_prepared(self, payments: pd.DataFrame, p) -> np.ndarray:
        o = p.order
        known = [
            int(k) if f else None
            for k, f in zip(p.known_ms.tolist(), p.is_fraud.tolist(), strict=True)
        ]
        card = payments["card_id"] if "card_id" in payments else payments["customer_id"]
        tx = None
        if "transaction_id" in payments:  # recorded by id: replaying it again is a no-op
            tx = payments["transaction_id"].to_numpy()[o].astype(str).tolist()
        return self.replay(
            p.t_ms.tolist(),
            p.amount.tolist(),
            payments["customer_id"].to_numpy()[o].tolist(),
            card.to_numpy()[o].tolist(),
            payments["terminal_id"].to_numpy()[o].tolist(),
            known,
            tx,
        )

    def replay(
        self,
        t_ms: Sequence[int],
        amount: Sequence[float],
        customer: Sequence[str],
        card: Sequence[str],
        terminal: Sequence[str],
        label_known_ms: Sequence[int | None] | None = None,
        transaction_id: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Feed a time-ordered stream through `compute`; returns the feature matrix (stream order).
        With `transaction_id` each payment (and its label) is recorded once: a replay interrupted
        and started again does not count the payments it already recorded twice."""
        n = len(t_ms)
        X = np.empty((n, self.fs.n_features), dtype="float64")
        buf = [0.0] * self.fs.n_features
        for i in range(n):
            lk = None if label_known_ms is None else label_known_ms[i]
            self.compute(
                int(t_ms[i]),
                float(amount[i]),
                customer[i],
                card[i],
                terminal[i],
                buf,
                label_known_ms=lk,
                transaction_id=None if transaction_id is None else transaction_id[i],
            )
            X[i] = buf
        return X


def replay_frame(payments: pd.DataFrame, fs: FeatureSet | None = None, store=None):
    """Replay a payments frame (in stream order, labels filed at their known time) through the
    online path; returns (feature matrix in stream order, stream order of the input rows)."""
    fs = fs or FeatureSet()
    p = prepare(payments, fs)
    return OnlineFeatures(fs, store)._replay_prepared(payments, p), p.order


def bootstrap_online(online: OnlineFeatures, payments: pd.DataFrame) -> int:
    """Load what the online state keeps beyond the replayed stream — the terminals each
    customer/card has used, its last payment time, and fraud labels that become known later —
    from older payments (bulk, instead of replaying years of history). Replay at least
    `fs.replay_days` of payments after these. Idempotent (labels by transaction id when the
    table has one). Returns the number of keys written."""
    t_ms = epoch_ms_array(payments["timestamp"])
    n = _terminal_history(online, payments, t_ms)
    if online.fs.fraud_entities and "is_fraud" in payments:
        n += _known_frauds(online, payments, t_ms)
    return n


def _terminal_history(online: OnlineFeatures, payments: pd.DataFrame, t_ms) -> int:
    """Per customer/card key: merge the terminals it used and its last payment time into the
    store."""
    n = 0
    for e in online.fs.pair_entities:
        col = payments[ID_COLUMNS[e]].to_numpy()
        frame = pd.DataFrame({"k": col, "m": payments["terminal_id"].to_numpy(), "t": t_ms})
        last = frame.groupby("k", sort=False)["t"].max()
        terms = frame.drop_duplicates(["k", "m"]).groupby("k", sort=False)["m"].agg(list)
        prefix = online.key_prefix(e)
        for k, ts in terms.items():
            online.store.seed(prefix + str(k), [str(x) for x in ts], int(last[k]))
        n += len(terms)
    return n


def _known_frauds(online: OnlineFeatures, payments: pd.DataFrame, t_ms) -> int:
    """File the fraud labels that are still known within the longest fraud window at the end
    of `payments`; returns how many."""
    fs = online.fs
    fraud = payments["is_fraud"].to_numpy(dtype=bool)
    lt = payments["label_time"].to_numpy()[fraud] if "label_time" in payments else None
    known = label_known_ms(t_ms[fraud], lt, fs.label_delay)
    keep = known > t_ms.max(initial=0) - max(fs.fraud_windows) * 1000
    rows = np.flatnonzero(fraud)[keep]
    if "transaction_id" in payments:
        labels = payments["transaction_id"].to_numpy()[rows].astype(str).tolist()
    else:
        labels = [f"row:{r}" for r in rows.tolist()]
    ids = {e: payments[ID_COLUMNS[e]].to_numpy()[rows].tolist() for e in fs.fraud_entities}
    tx = t_ms[rows].tolist()
    for i, (label, when) in enumerate(zip(labels, known[keep].tolist(), strict=True)):
        keys = [entity_key(e, str(ids[e][i])) for e in fs.fraud_entities]
        online.store.file_label(keys, label, int(when), int(tx[i]), True, online._fraud_keep)
    return len(labels)


def _padded(st: KeyState, n_levels: int) -> KeyState:
    """A read-only view of `st` with empty tiles for the levels it does not have yet."""
    view = KeyState(0)
    view.levels = [*st.levels, *(Tiles() for _ in range(n_levels - len(st.levels)))]
    view.last_ms, view.terminals, view.frauds = st.last_ms, st.terminals, st.frauds
    return view


# ---- the per-key feature steps of `OnlineFeatures.compute` (module functions: cheapest calls)
# Each takes (params, state, t, amount, terminal, now, out, spikes, j): `now[l]` is the payment's
# tile id at level l, `spikes[j]` receives the payment's spike flag for key j (customers).
# A range (level, first, last) is the tile ids [now - first, now - last] of that level; a tile's
# values are 5 apart in `Tiles.data` (count, sum, max, spikes, new terminals).


def _window_stats(win, st, t, amount, terminal, now, out, spikes, j) -> None:
    """Count, mean and max amount of the key's payments in each window (with the payment)."""
    levels = st.levels
    for lv, first, last, ic, im, ix in win:
        tiles = levels[lv]
        ids, d = tiles.ids, tiles.data
        n = now[lv]
        a = 5 * bisect_left(ids, n - first)
        b = len(d) if not ids or ids[-1] <= n - last else 5 * bisect_right(ids, n - last)
        c = sum(d[a:b:5]) + 1
        out[ic] = c
        out[im] = (sum(d[a + 1 : b : 5]) + amount) / c
        m = max(d[a + 2 : b : 5], default=amount)
        out[ix] = m if m > amount else amount


def _terminal_novelty(pair, st, t, amount, terminal, now, out, spikes, j) -> None:
    """Time since the previous payment; new terminal, terminals ever, new ones per window."""
    i_since, i_new, i_ever, pwin = pair
    prev = st.last_ms
    out[i_since] = (t - prev) / _MS if prev >= 0 else NAN
    isnew = terminal not in st.terminals
    out[i_new] = 1.0 if isnew else 0.0
    out[i_ever] = len(st.terminals) + isnew
    levels = st.levels
    for lv, first, last, idx in pwin:
        tiles = levels[lv]
        ids, d = tiles.ids, tiles.data
        n = now[lv]
        a = 5 * bisect_left(ids, n - first)
        b = len(d) if not ids or ids[-1] <= n - last else 5 * bisect_right(ids, n - last)
        out[idx] = sum(d[a + 4 : b : 5]) + isnew


def _amount_ratios(params, st, t, amount, terminal, now, out, spikes, j) -> None:
    """Customer only: amount against the usual and the previous maximum; spikes per window."""
    lv, first, last, i_usual, i_pmax, spike_ratio, spike_windows = params
    tiles = st.levels[lv]
    ids, d = tiles.ids, tiles.data
    n = now[lv]
    a = 5 * bisect_left(ids, n - first)
    b = len(d) if not ids or ids[-1] <= n - last else 5 * bisect_right(ids, n - last)
    n_prev = sum(d[a:b:5])
    ratio = NAN
    if n_prev > 0:
        usual = sum(d[a + 1 : b : 5]) / n_prev
        ratio = amount / usual if usual > 0 else NAN
        pmax = max(d[a + 2 : b : 5], default=0.0)
        out[i_pmax] = amount / pmax if pmax > 0 else NAN
    else:
        out[i_pmax] = NAN
    out[i_usual] = ratio
    spike = 1 if ratio > spike_ratio else 0
    spikes[j] = spike
    levels = st.levels
    for lv, first, last, idx in spike_windows:
        tiles = levels[lv]
        ids, d = tiles.ids, tiles.data
        n = now[lv]
        a = 5 * bisect_left(ids, n - first)
        b = len(d) if not ids or ids[-1] <= n - last else 5 * bisect_right(ids, n - last)
        out[idx] = sum(d[a + 3 : b : 5]) + spike


def _fraud_risk(params, st, t, amount, terminal, now, out, spikes, j) -> None:
    """Payments old enough to be labelled, known frauds and their rate per window, the time
    since the last and first known fraud (and, customer only, the amount against the labelled
    payments' mean). Known frauds count by the exact time their label became known; the rate
    divides the frauds known in [T - w, T) (T: the tile start) by the delayed window's payments,
    the same payments when labels come `label_delay` after them."""
    fwin, exact, back, dm, i_last, i_first = params
    levels = st.levels
    if st.frauds:
        labels = sorted(st.frauds.values())  # (known, payment time) by known time
        ks = [k for k, _ in labels]
        hi = bisect_right(ks, t)
        lo = bisect_right(ks, t - back, 0, hi)
    else:
        ks, lo, hi = (), 0, 0
    if dm is not None:
        lv, first, last, i_dm = dm
        ids, d = levels[lv].ids, levels[lv].data
        n = now[lv]
        a = 5 * bisect_left(ids, n - first)
        b = len(d) if not ids or ids[-1] <= n - last else 5 * bisect_right(ids, n - last)
        cnt = sum(d[a:b:5])
        mean = sum(d[a + 1 : b : 5]) / cnt if cnt else NAN
        out[i_dm] = amount / mean if mean > 0 else NAN
    for (lv, first, last, ic, ik, ir), (w, g) in zip(fwin, exact, strict=True):
        ids, d = levels[lv].ids, levels[lv].data
        n = now[lv]
        a = 5 * bisect_left(ids, n - first)
        b = len(d) if not ids or ids[-1] <= n - last else 5 * bisect_right(ids, n - last)
        cnt = sum(d[a:b:5])
        out[ic] = cnt
        out[ik] = hi - bisect_right(ks, t - w, 0, hi) if hi else 0
        if cnt > 0 and ks:  # the rate's frauds: known in [T - w, T), like the payments
            tile = n * g
            out[ir] = (bisect_left(ks, tile) - bisect_left(ks, tile - w)) / cnt
        else:
            out[ir] = 0.0
    if hi > lo:
        txs = [tx for _, tx in labels[lo:hi]]
        out[i_last] = (t - max(txs)) / _MS
        out[i_first] = (t - min(txs)) / _MS
    else:
        out[i_last] = out[i_first] = NAN
