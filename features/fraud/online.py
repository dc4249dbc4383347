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

from features.fraud.definition import ENTITIES, FeatureSet, window_label
from features.fraud.state_store import EntityState, InMemoryStateStore, StateStore

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
        self._horizon = fs.horizon * _MS
        self._win = {
            e: tuple(
                (
                    w * _MS,
                    ix(f"{e}_count_{window_label(w)}"),
                    ix(f"{e}_amount_mean_{window_label(w)}"),
                    ix(f"{e}_amount_max_{window_label(w)}"),
                )
                for w in fs.windows
            )
            for e in fs.entities
        }
        self._pair = {
            e: (
                ix(f"{e}_secs_since_prev"),
                ix(f"{e}_new_terminal"),
                ix(f"{e}_terminals_ever"),
                tuple(
                    (w * _MS, ix(f"{e}_new_terminals_{window_label(w)}")) for w in fs.pair_windows
                ),
            )
            for e in fs.pair_entities
        }
        self._usual = (
            fs.usual_window * _MS,
            ix("customer_amount_to_usual"),
            ix("customer_amount_to_prev_max"),
        )
        self._spikes = tuple(
            (w * _MS, ix(f"customer_spikes_{window_label(w)}")) for w in fs.spike_windows
        )
        self._fraud = {
            e: tuple(
                (
                    w * _MS,
                    ix(f"{e}_delayed_count_{window_label(w)}"),
                    ix(f"{e}_known_frauds_{window_label(w)}"),
                    ix(f"{e}_fraud_rate_{window_label(w)}"),
                )
                for w in fs.fraud_windows
            )
            for e in fs.fraud_entities
        }
        self._fraud_back = max(fs.fraud_windows) * _MS if fs.fraud_windows else 0
        self._fraud_age = (
            {
                e: (ix(f"{e}_secs_since_last_fraud"), ix(f"{e}_secs_since_first_fraud"))
                for e in fs.fraud_entities
            }
            if fs.fraud_windows
            else {}
        )
        has_dm = "customer_amount_to_delayed_mean" in fs.names
        self._delayed_mean = ix("customer_amount_to_delayed_mean") if has_dm else -1
        self._delay = fs.label_delay * _MS
        self._hour, self._night, self._weekend = ix("hour"), ix("is_night"), ix("is_weekend")
        self._amount = ix("amount")

    def new_vector(self) -> np.ndarray:
        """A preallocated float64 feature vector to pass as `out`."""
        return np.zeros(self.fs.n_features, dtype="float64")

    @staticmethod
    def key_prefix(entity: str) -> str:
        """State keys are `<prefix><id>`: `cu:` customers, `ca:` cards, `te:` terminals."""
        return f"{entity[:2]}:"

    def keys(self, customer: str, card: str, terminal: str) -> list[str]:
        ids = (customer, card, terminal)
        return [f"{e[:2]}:{ids[s]}" for e, s in zip(self._ents, self._slot, strict=True)]

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
        only) files the payment's fraud label, effective from that time.
        """
        keys = self.keys(customer, card, terminal)
        states = self.store.online_read(keys)
        unseen = 0
        for j, st in enumerate(states):
            if st is None:
                states[j] = EntityState()
                unseen |= 1 << self._slot[j]
        hour = (t // _HOUR_MS) % 24
        out[self._amount] = amount
        out[self._hour] = hour
        out[self._night] = 1.0 if hour <= self.fs.night_last_hour else 0.0
        out[self._weekend] = 1.0 if ((t // _DAY_MS) + 3) % 7 >= 5 else 0.0
        undo = []
        cut = t - self._horizon
        for e, st in zip(self._ents, states, strict=True):
            times, amounts = st.times, st.amounts
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
            end = pos + 1
            record_undo = [st, pos, st.last_ms, None, False]
            undo.append(record_undo)
            win = self._win.get(e)
            if win is not None:
                for w, ic, im, ix in win:
                    i = bisect_right(times, t - w, 0, end)
                    sl = amounts[i:end]
                    c = end - i
                    out[ic] = c
                    out[im] = sum(sl) / c
                    out[ix] = max(sl)
            pair = self._pair.get(e)
            if pair is not None:
                i_since, i_new, i_ever, pwin = pair
                prev = st.last_ms
                out[i_since] = (t - prev) / _MS if prev >= 0 else NAN
                if t > prev:
                    st.last_ms = t
                terms = st.terminals
                isnew = terminal not in terms
                if isnew:
                    terms.add(terminal)
                    record_undo[3] = terminal
                out[i_new] = 1.0 if isnew else 0.0
                out[i_ever] = len(terms)
                newpair = st.newpair
                newpair.insert(pos, 1 if isnew else 0)
                for w, idx in pwin:
                    out[idx] = sum(newpair[bisect_right(times, t - w, 0, end) : end])
            if e == "customer":
                w, i_usual, i_pmax = self._usual
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
                spikes.insert(pos, 1 if ratio > self.fs.spike_ratio else 0)
                for w, idx in self._spikes:
                    out[idx] = sum(spikes[bisect_right(times, t - w, 0, end) : end])
            fwin = self._fraud.get(e)
            if fwin is not None:
                fr, ftx = st.frauds, st.fraud_tx
                if fr and fr[0] <= t - self._fraud_back:
                    k = bisect_right(fr, t - self._fraud_back)
                    del fr[:k], ftx[:k]
                hi = bisect_right(times, t - self._delay, 0, end)
                known = bisect_right(fr, t)
                if e == "customer":
                    lo = bisect_right(times, t - self._delay - self._fraud_back, 0, end)
                    mean = sum(amounts[lo:hi]) / (hi - lo) if hi > lo else NAN
                    out[self._delayed_mean] = amount / mean if mean > 0 else NAN
                for w, ic, ik, ir in fwin:
                    cnt = hi - bisect_right(times, t - self._delay - w, 0, end)
                    k = known - bisect_right(fr, t - w)
                    out[ic] = cnt
                    out[ik] = k
                    out[ir] = k / cnt if cnt > 0 else 0.0
                i_last, i_first = self._fraud_age[e]
                if known > 0:
                    sl = ftx[:known]
                    out[i_last] = (t - max(sl)) / _MS
                    out[i_first] = (t - min(sl)) / _MS
                else:
                    out[i_last] = out[i_first] = NAN
                if label_known_ms is not None and record:
                    st.add_fraud(label_known_ms, t)
                    record_undo[4] = True
        if record:
            pay = None if transaction_id is None else (transaction_id, customer, terminal, t)
            self.store.online_write_batch(dict(zip(keys, states, strict=True)), pay)
        else:
            self._undo(undo)
        return unseen

    @staticmethod
    def _undo(undo: list) -> None:
        for st, pos, last_ms, added_terminal, _ in undo:
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
