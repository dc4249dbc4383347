"""Fraud features for one new payment from per-key state: the online twin of `batch.py`.

For each of the payment's keys (customer, card, terminal) the state keeps the payments of the
feature horizon (about 37 days), so an update is an O(1) amortised append plus trimming of what
fell out of the horizon; window reads are a binary search and a C-level slice sum/max bounded by
the window's size. Everything is plain Python lists and floats: no pandas, no numpy scalars.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence

import numpy as np
import pandas as pd

from features.fraud.batch import label_known_ms, prepare
from features.fraud.definition import ENTITIES, ID_COLUMNS, FeatureSet, window_label
from features.fraud.state_store import EntityState, InMemoryStateStore, StateStore
from shopml.clock import epoch_ms_array

NAN = math.nan
_MS = 1000
_HOUR_MS = 3600 * _MS
_DAY_MS = 86400 * _MS

UNSEEN = {e: 1 << i for i, e in enumerate(ENTITIES)}  # bits of the `unseen` mask


class OnlineFeatures:
    """Computes the feature vector of one payment and records it in the state store."""

    def __init__(self, fs: FeatureSet | None = None, store: StateStore | None = None):
        self.fs = fs or FeatureSet()
        self.store = store if store is not None else InMemoryStateStore()
        fs = self.fs
        ix = fs.index
        self._ents = tuple(dict.fromkeys((*fs.entities, *fs.fraud_entities)))
        self._slot = tuple(ENTITIES.index(e) for e in self._ents)
        self._key_slots = tuple(
            (self.key_prefix(e), s) for e, s in zip(self._ents, self._slot, strict=True)
        )
        self._horizon = fs.horizon * _MS
        self._hour, self._night, self._weekend = ix("hour"), ix("is_night"), ix("is_weekend")
        self._amount = ix("amount")
        self._plan = tuple(self._plan_steps(e) for e in self._ents)

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

        `record=False` leaves the state as it was (a what-if score). `label_known_ms` (replay
        only) files the payment's fraud label, effective from that time. Per key: trim and
        insert the payment (`_insert`), then the key's steps planned at start-up (`_plan`).
        """
        keys = self.keys(customer, card, terminal)
        states = self.store.online_read(keys)
        unseen = 0
        for j, st in enumerate(states):
            if st is None:
                states[j] = EntityState()
                unseen |= 1 << self._slot[j]
        self._calendar(t, amount, out)
        known = label_known_ms if record else None
        undo = []
        for st, steps in zip(states, self._plan, strict=True):
            pos = self._insert(st, t, amount)
            change = [st, pos, st.last_ms, None]  # what `_undo` needs to take the payment out
            undo.append(change)
            for step, params in steps:
                step(params, st, t, amount, terminal, pos, out, change, known)
        if record:
            pay = None if transaction_id is None else (transaction_id, customer, terminal, t)
            self.store.online_write_batch(dict(zip(keys, states, strict=True)), pay)
        else:
            self._undo(undo)
        return unseen

    def _plan_steps(self, e: str) -> tuple:
        """The feature steps of entity `e` in output order: (step, its window lengths in ms,
        column indices and constants), so that a step reads no attributes per payment."""
        fs, ix = self.fs, self.fs.index
        steps = []
        if e in fs.entities:
            win = self._window_columns(e, fs.windows, "count", "amount_mean", "amount_max")
            steps.append((_window_stats, win))
        if e in fs.pair_entities:
            pwin = self._window_columns(e, fs.pair_windows, "new_terminals")
            cols = (ix(f"{e}_secs_since_prev"), ix(f"{e}_new_terminal"), ix(f"{e}_terminals_ever"))
            steps.append((_terminal_novelty, (*cols, pwin)))
        if e == "customer":
            spikes = self._window_columns(e, fs.spike_windows, "spikes")
            usual = (ix("customer_amount_to_usual"), ix("customer_amount_to_prev_max"))
            steps.append((_amount_ratios, (fs.usual_window * _MS, *usual, fs.spike_ratio, spikes)))
        if e in fs.fraud_entities and fs.fraud_windows:  # no fraud features without windows
            names = ("delayed_count", "known_frauds", "fraud_rate")
            fwin = self._window_columns(e, fs.fraud_windows, *names)
            back, delay = max(fs.fraud_windows) * _MS, fs.label_delay * _MS
            dm = ix("customer_amount_to_delayed_mean") if e == "customer" else None
            ages = (ix(f"{e}_secs_since_last_fraud"), ix(f"{e}_secs_since_first_fraud"))
            steps.append((_fraud_risk, (fwin, back, delay, dm, *ages)))
        return tuple(steps)

    def _window_columns(self, e: str, windows, *features: str) -> tuple:
        """Per window: (its length in ms, the column of `<e>_<feature>_<window>` per feature)."""
        ix = self.fs.index
        return tuple(
            (w * _MS, *(ix(f"{e}_{f}_{window_label(w)}") for f in features)) for w in windows
        )

    def _calendar(self, t: int, amount: float, out) -> None:
        """The payment's own features: amount, hour, night, weekend."""
        hour = (t // _HOUR_MS) % 24
        out[self._amount] = amount
        out[self._hour] = hour
        out[self._night] = 1.0 if hour <= self.fs.night_last_hour else 0.0
        out[self._weekend] = 1.0 if ((t // _DAY_MS) + 3) % 7 >= 5 else 0.0

    def _insert(self, st: EntityState, t: int, amount: float) -> int:
        """Drop what fell out of the horizon, insert the payment in time order; its position."""
        times, amounts = st.times, st.amounts
        cut = t - self._horizon
        if times and times[0] <= cut:
            k = bisect_right(times, cut)
            del times[:k], amounts[:k]
            if st.spikes:
                del st.spikes[:k]
            if st.newpair:
                del st.newpair[:k]
        if not times or times[-1] <= t:
            pos = len(times)
            times.append(t)
            amounts.append(amount)
        else:
            pos = bisect_right(times, t)
            times.insert(pos, t)
            amounts.insert(pos, amount)
        return pos

    @staticmethod
    def _undo(undo: list) -> None:
        """Take a what-if payment out of the states again (reverse of `_insert` and the steps)."""
        for st, pos, last_ms, added_terminal in undo:
            del st.times[pos], st.amounts[pos]
            if len(st.spikes) > len(st.times):
                del st.spikes[pos]
            if len(st.newpair) > len(st.times):
                del st.newpair[pos]
            st.last_ms = last_ms
            if added_terminal is not None:
                st.terminals.discard(added_terminal)

    def add_fraud_label(
        self, customer: str, terminal: str, known_ms: int, tx_ms: int | None = None
    ) -> None:
        """File a confirmed fraud (payment made at `tx_ms`, default `known_ms`): it counts in the
        customer's and terminal's risk from `known_ms`."""
        ids = {"customer": customer, "terminal": terminal}
        keys = [f"{e[:2]}:{ids[e]}" for e in self.fs.fraud_entities]
        states = self.store.online_read(keys)
        items = {}
        for k, st in zip(keys, states, strict=True):
            st = st if st is not None else EntityState()
            st.add_fraud(int(known_ms), int(known_ms if tx_ms is None else tx_ms))
            items[k] = st
        self.store.online_write_batch(items)

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
        return self.replay(
            p.t_ms.tolist(),
            p.amount.tolist(),
            payments["customer_id"].to_numpy()[o].tolist(),
            card.to_numpy()[o].tolist(),
            payments["terminal_id"].to_numpy()[o].tolist(),
            known,
        )

    def replay(
        self,
        t_ms: Sequence[int],
        amount: Sequence[float],
        customer: Sequence[str],
        card: Sequence[str],
        terminal: Sequence[str],
        label_known_ms: Sequence[int | None] | None = None,
    ) -> np.ndarray:
        """Feed a time-ordered stream through `compute`; returns the feature matrix (stream order)."""
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
    `fs.replay_days` of payments after these. Returns the number of keys written."""
    t_ms = epoch_ms_array(payments["timestamp"])
    items = _terminal_history(online, payments, t_ms)
    if online.fs.fraud_entities and "is_fraud" in payments:
        _known_frauds(online, payments, t_ms, items)
    online.store.online_write_batch(items)
    return len(items)


def _terminal_history(online: OnlineFeatures, payments: pd.DataFrame, t_ms) -> dict:
    """Per customer/card key: the terminals it used and its last payment time, merged into the
    state the store already holds."""
    items: dict[str, EntityState] = {}
    for e in online.fs.pair_entities:
        col = payments[ID_COLUMNS[e]].to_numpy()
        frame = pd.DataFrame({"k": col, "m": payments["terminal_id"].to_numpy(), "t": t_ms})
        last = frame.groupby("k", sort=False)["t"].max()
        terms = frame.drop_duplicates(["k", "m"]).groupby("k", sort=False)["m"].agg(set)
        prefix = online.key_prefix(e)
        existing = online.store.online_read([prefix + str(k) for k in terms.index])
        for (k, ts), st in zip(terms.items(), existing, strict=True):
            st = st if st is not None else EntityState()
            st.terminals |= set(map(str, ts))
            st.last_ms = max(st.last_ms, int(last[k]))
            items[prefix + str(k)] = st
    return items


def _known_frauds(online: OnlineFeatures, payments: pd.DataFrame, t_ms, items: dict) -> None:
    """File into `items` the fraud labels that are still known within the longest fraud window
    at the end of `payments`."""
    fs = online.fs
    fraud = payments["is_fraud"].to_numpy(dtype=bool)
    lt = payments["label_time"].to_numpy()[fraud] if "label_time" in payments else None
    known = label_known_ms(t_ms[fraud], lt, fs.label_delay)
    keep = known > t_ms.max(initial=0) - max(fs.fraud_windows) * 1000
    for e in fs.fraud_entities:
        prefix = online.key_prefix(e)
        ids = payments[ID_COLUMNS[e]].to_numpy()[fraud][keep]
        todo = [prefix + str(k) for k in ids]
        missing = [k for k in dict.fromkeys(todo) if k not in items]
        items.update(zip(missing, online.store.online_read(missing), strict=True))
        tx = t_ms[fraud][keep].tolist()
        for k, when, at in zip(todo, known[keep].tolist(), tx, strict=True):
            if items[k] is None:
                items[k] = EntityState()
            items[k].add_fraud(int(when), int(at))


# ---- the per-key feature steps of `OnlineFeatures.compute` (module functions: cheapest calls)
# Each takes (params, state, t, amount, terminal, pos, out, change, known): `pos` is where the
# payment was inserted, `change` the undo record, `known` the label time to file (or None).


def _window_stats(win, st, t, amount, terminal, pos, out, change, known) -> None:
    """Count, mean and max amount of the key's payments in each window."""
    times, amounts = st.times, st.amounts
    end = pos + 1
    for w, ic, im, ix in win:
        i = bisect_right(times, t - w, 0, end)
        sl = amounts[i:end]
        c = end - i
        out[ic] = c
        out[im] = sum(sl) / c
        out[ix] = max(sl)


def _terminal_novelty(pair, st, t, amount, terminal, pos, out, change, known) -> None:
    """Time since the previous payment; new terminal, terminals ever, new ones per window."""
    i_since, i_new, i_ever, pwin = pair
    times = st.times
    end = pos + 1
    prev = st.last_ms
    out[i_since] = (t - prev) / _MS if prev >= 0 else NAN
    if t > prev:
        st.last_ms = t
    terms = st.terminals
    isnew = terminal not in terms
    if isnew:
        terms.add(terminal)
        change[3] = terminal
    out[i_new] = 1.0 if isnew else 0.0
    out[i_ever] = len(terms)
    newpair = st.newpair
    newpair.insert(pos, 1 if isnew else 0)
    for w, idx in pwin:
        out[idx] = sum(newpair[bisect_right(times, t - w, 0, end) : end])


def _amount_ratios(params, st, t, amount, terminal, pos, out, change, known) -> None:
    """Customer only: amount against the usual and the previous maximum; spikes per window."""
    w, i_usual, i_pmax, spike_ratio, spike_windows = params
    times, amounts = st.times, st.amounts
    end = pos + 1
    i = bisect_right(times, t - w, 0, end)
    n_prev = end - i - 1
    ratio = NAN
    if n_prev > 0:
        usual = (sum(amounts[i:end]) - amount) / n_prev
        ratio = amount / usual if usual > 0 else NAN
        pmax = max(amounts[i : end - 1])
        out[i_pmax] = amount / pmax if pmax > 0 else NAN
    else:
        out[i_pmax] = NAN
    out[i_usual] = ratio
    spikes = st.spikes
    spikes.insert(pos, 1 if ratio > spike_ratio else 0)
    for w, idx in spike_windows:
        out[idx] = sum(spikes[bisect_right(times, t - w, 0, end) : end])


def _fraud_risk(params, st, t, amount, terminal, pos, out, change, known) -> None:
    """Payments old enough to be labelled, known frauds and their rate per window, the time
    since the last and first known fraud (and, customer only, the amount against the labelled
    payments' mean); files the payment's own label when `known` is given (replay)."""
    fwin, back, delay, i_delayed_mean, i_last, i_first = params
    times, amounts = st.times, st.amounts
    end = pos + 1
    fr, ftx = st.frauds, st.fraud_tx
    if fr and fr[0] <= t - back:
        k = bisect_right(fr, t - back)
        del fr[:k], ftx[:k]
    hi = bisect_right(times, t - delay, 0, end)
    n_known = bisect_right(fr, t)
    if i_delayed_mean is not None:
        lo = bisect_right(times, t - delay - back, 0, end)
        mean = sum(amounts[lo:hi]) / (hi - lo) if hi > lo else NAN
        out[i_delayed_mean] = amount / mean if mean > 0 else NAN
    for w, ic, ik, ir in fwin:
        cnt = hi - bisect_right(times, t - delay - w, 0, end)
        k = n_known - bisect_right(fr, t - w)
        out[ic] = cnt
        out[ik] = k
        out[ir] = k / cnt if cnt > 0 else 0.0
    if n_known > 0:
        sl = ftx[:n_known]
        out[i_last] = (t - max(sl)) / _MS
        out[i_first] = (t - min(sl)) / _MS
    else:
        out[i_last] = out[i_first] = NAN
    if known is not None:
        st.add_fraud(known, t)
