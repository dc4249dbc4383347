"""Served fraud decisions to the decision log, and the challenger scoring them in shadow.

At checkout the only work is `DecisionRecorder.observe`: one tuple of what the answer already
computed (ids, time, amount, the copied feature vector, the decision) appended to a bounded
queue; when the queue is full the payment is dropped from the log and counted, never waited
for. A background thread takes the queue every `flush_ms`, scores the whole batch with the
shadow model (LightGBM's batch predict on one thread, which releases the GIL while it runs,
then the shadow's calibration and policy and the served rules, vectorised), and writes the
rows to the `DecisionLog`, one transaction per `batch_max` rows. A write that fails keeps its
rows for the next round (up to `queue_max`, then the oldest are dropped and counted), so a
database outage costs neither the checkout nor, while it is short, any rows.

The shadow must score the same features as the served model (the same feature set); it never
changes an answer, the online state or the metrics of the served model.
"""

from __future__ import annotations

import atexit
import ctypes
import sys
import threading
import zlib
from collections import deque
from dataclasses import dataclass

import numpy as np
from lightgbm.basic import _LIB, _safe_call
from pydantic import Field

from features.fraud.decision_log import DecisionLog
from serving import metrics
from shopml.clock import now_ms
from shopml.config import ConfigModel
from shopml.errors import ConfigError, ShopmlError
from shopml.log import get_logger

log = get_logger("serving.shadow")

_SAMPLE_BUCKETS = 1_000_000
SWITCH_INTERVAL_S = 0.001  # the longest a request waits for the GIL this thread holds
_PREDICT_RAW, _FLOAT64 = 1, 1  # LightGBM C API: C_API_PREDICT_RAW_SCORE, C_API_DTYPE_FLOAT64


class DecisionLogConfig(ConfigModel):
    """How the fraud service logs its decisions (and scores its challenger in shadow)."""

    sample_rate: float = Field(1.0, ge=0.0, le=1.0)  # share of payments logged, by id hash
    shadow: bool = True  # score the Bento's challenger in shadow when it carries one
    queue_max: int = Field(50_000, ge=1)  # payments waiting before new ones are dropped
    flush_ms: int = Field(50, ge=1)  # how often the background thread takes the queue
    batch_max: int = Field(500, ge=1)  # rows per write transaction (and per shadow batch)


@dataclass(frozen=True)
class ShadowModel:
    """A second fraud engine scoring in shadow: its scorer, calibration and policy; the rules
    are the served engine's (the rules in force decide for both)."""

    engine: object  # models.fraud.FraudEngine (the challenger's)
    version: str

    def check_features(self, served) -> None:
        """ConfigError when the shadow was trained on other features than the served model."""
        mine, theirs = list(self.engine.feature_set.names), list(served.feature_set.names)
        if mine != theirs or self.engine.feature_set.version != served.feature_set.version:
            raise ConfigError(
                f"shadow model {self.version} uses feature set {self.engine.feature_set.version} "
                f"({len(mine)} features), the served model {served.feature_set.version} "
                f"({len(theirs)}): a shadow must score the same features"
            )

    def raw_scores(self, X: np.ndarray) -> np.ndarray:
        """LightGBM's raw scores of the rows of `X` (C-contiguous float64) in one C call on one
        thread: the GIL is released for the whole prediction (the Python wrapper of
        `Booster.predict` would hold it for ~0.1 ms of checks per call)."""
        n, m = X.shape
        out = np.empty(n, dtype=np.float64)
        got = ctypes.c_int64()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMat(
                self.engine.scorer.booster_._handle,
                X.ctypes.data_as(ctypes.c_void_p),
                ctypes.c_int(_FLOAT64),
                ctypes.c_int32(n),
                ctypes.c_int32(m),
                ctypes.c_int(1),  # row major
                ctypes.c_int(_PREDICT_RAW),
                ctypes.c_int(0),  # from the first iteration
                ctypes.c_int(-1),  # to the best (all)
                ctypes.c_char_p(b"num_threads=1"),
                ctypes.byref(got),
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
            )
        )
        if got.value != n:
            raise ShopmlError(f"shadow predict returned {got.value} scores for {n} payments")
        return out

    def score(self, X: np.ndarray, base_amount: np.ndarray, columns: dict, rules) -> tuple:
        """Probabilities and decisions of many payments (rows of `X`). No explicit yields of
        the GIL between the steps: each is one more hand-over to wait for, and measured in one
        process they raised the checkout's p99 beside the shadow (1.6-2.1x that of the
        log-only thread, against 0.9-1.2x without them)."""
        raw = self.raw_scores(X)
        p = self.engine.scorer.calibrator_.transform(raw)
        decided = self.engine.policy.decide_many(p, base_amount)
        decisions, _ = rules.apply_many(decided, p, X, columns)
        return p, decisions


class DecisionRecorder:
    """Bounded queue + background thread: served decisions (and shadow scores) to the log."""

    def __init__(
        self,
        decision_log: DecisionLog,
        served,
        model_version: str,
        config: DecisionLogConfig | None = None,
        shadow: ShadowModel | None = None,
    ) -> None:
        self.config = config or DecisionLogConfig()
        self.log = decision_log
        self.served = served  # the served FraudEngine: its feature vector, feature set, rules
        self.model_version = model_version
        self.shadow = shadow if self.config.shadow else None
        if self.shadow is not None:
            self.shadow.check_features(served)
        self.label_delay_s = int(served.feature_set.label_delay)
        # the engine's reused feature vector: it holds the features of the payment just scored
        self._x = served._x
        self._queue: deque = deque()
        self._unwritten: deque = deque()
        self._max = self.config.queue_max
        rate = self.config.sample_rate
        self._keep_below = None if rate >= 1.0 else int(rate * _SAMPLE_BUCKETS)
        self.observed = self.written = self.shadow_scored = 0
        self.dropped = 0  # queue full: counted by the request thread only
        self.dropped_unwritten = 0  # database down too long: by the background thread only
        self._reported_dropped = 0
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ the request thread
    def observe(self, tx, t_ms, amount, customer, card, terminal, currency, decision) -> None:
        """Queue one freshly served decision (its features are the engine's vector now)."""
        if self._keep_below is not None and (
            zlib.crc32(tx.encode()) % _SAMPLE_BUCKETS >= self._keep_below
        ):
            return
        if len(self._queue) >= self._max:
            self.dropped += 1
            return
        self._queue.append(
            (
                tx,
                t_ms,
                amount,
                customer,
                card,
                terminal,
                currency,
                self._x.copy(),
                decision,
                now_ms(),
            )
        )

    # --------------------------------------------------------------- the background thread
    def start(self) -> DecisionRecorder:
        """Start the background thread (a daemon; drained at interpreter exit)."""
        if self._thread is None:
            # a request that arrives while this thread holds the GIL waits for the switch
            # interval (5 ms by default) before Python hands it over: 1 ms bounds that wait
            sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
            self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
            self._thread.start()
            atexit.register(self.close)
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread after it has written what is queued (best effort within `timeout`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        wait = self.config.flush_ms / 1000
        while not self._stop.wait(wait):
            self._flush_logged()
        self._flush_logged()

    def _flush_logged(self) -> None:
        try:
            self.flush()
        except Exception as err:  # noqa: BLE001 - a bug here must not end the log's thread
            log.error("decision log round failed", extra={"error_type": type(err).__name__})

    def flush(self) -> int:
        """Score and write everything queued now; returns the rows written (tests call it
        directly; the background thread calls it every `flush_ms`)."""
        written = 0
        # only what is queued now: payments arriving meanwhile wait for the next round (under
        # steady traffic the loop would otherwise commit a row or two at a time, never waiting)
        pending = len(self._queue)
        while pending or self._unwritten:
            n = min(pending, self.config.batch_max)
            pending -= n
            if n:
                self._unwritten.extend(self._rows([self._queue.popleft() for _ in range(n)]))
            done = self._write()
            written += done
            if not done:
                break  # the database is down: the rows wait for the next round
        self._report()
        return written

    def _rows(self, items: list[tuple]) -> list[tuple]:
        """The log's rows (`decision_log.ROW` order) of a batch, shadow scores included."""
        self.observed += len(items)
        to_base = self.served.feature_set.to_base
        base = [to_base(item[2], item[6]) for item in items]
        version, delay = self.model_version, self.label_delay_s
        rows = [
            (tx, t_ms, served_ms, base[i], version, d.probability, d.decision, d.decided_by,
             d.degraded, delay, None, None, None)
            for i, (tx, t_ms, _, _, _, _, _, _, d, served_ms) in enumerate(items)
        ]  # fmt: skip
        if self.shadow is not None:
            p, decisions = self._shadow_scores(items, base)
            if p is not None:
                shadow, probabilities = self.shadow.version, p.tolist()
                rows = [
                    (*row[:10], shadow, probabilities[i], str(decisions[i]))
                    for i, row in enumerate(rows)
                ]
        return rows

    def _shadow_scores(self, items: list[tuple], base: list[float]):
        """The shadow's probabilities and decisions of a batch; (None, None) if it fails (the
        rows are still logged, without shadow scores)."""
        try:
            X = np.stack([item[7] for item in items])
            columns = {
                "customer_id": np.array([item[3] for item in items], dtype=object),
                "card_id": np.array([item[4] for item in items], dtype=object),
                "terminal_id": np.array([item[5] for item in items], dtype=object),
                "amount": np.array([item[2] for item in items], dtype="float64"),
                "currency": np.array([item[6] for item in items], dtype=object),
            }
            p, decisions = self.shadow.score(
                X, np.asarray(base, dtype="float64"), columns, self.served.rules
            )
        except Exception as err:  # noqa: BLE001 - a failing shadow never stops the log
            log.warning(
                "shadow scoring failed; decisions logged without shadow scores",
                extra={"error_type": type(err).__name__, "shadow": self.shadow.version},
            )
            return None, None
        self.shadow_scored += len(items)
        return p, decisions

    def _write(self) -> int:
        """Write the oldest unwritten rows (one transaction); 0 when the database refused."""
        if not self._unwritten:
            return 0
        n = min(len(self._unwritten), self.config.batch_max)
        batch = [self._unwritten[i] for i in range(n)]
        try:
            self.log.write_rows(batch)
        except ShopmlError as err:
            if not self._failing:
                log.warning(
                    "decision log unavailable; rows kept for the next round",
                    extra={"error": str(err), "waiting": len(self._unwritten)},
                )
            self._failing = True
            over = len(self._unwritten) - self._max
            for _ in range(max(over, 0)):
                self._unwritten.popleft()
            self.dropped_unwritten += max(over, 0)
            return 0
        if self._failing:
            log.info("decision log reachable again", extra={"rows": n})
        self._failing = False
        for _ in range(n):
            self._unwritten.popleft()
        self.written += n
        metrics.fraud_decision_log("written", n, self.model_version)
        if self.shadow is not None:
            scored = sum(row[10] is not None for row in batch)
            if scored:
                metrics.fraud_decision_log("shadow_scored", scored, self.shadow.version)
        return n

    def _report(self) -> None:
        dropped = self.dropped + self.dropped_unwritten - self._reported_dropped
        if dropped:
            self._reported_dropped += dropped
            metrics.fraud_decision_log("dropped", dropped, self.model_version)

    def status(self) -> dict:
        """Counts since start: observed, written, shadow scored, dropped, still queued."""
        return {
            "observed": self.observed,
            "written": self.written,
            "shadow_scored": self.shadow_scored,
            "dropped": self.dropped + self.dropped_unwritten,
            "queued": len(self._queue) + len(self._unwritten),
            "shadow_version": None if self.shadow is None else self.shadow.version,
        }


class RecordingEngine:
    """The served engine as `Checkout` sees it: every freshly scored payment (not a retry
    answered from the ledger, not a refused one) is handed to the recorder after its decision
    is made. Everything else is the engine's own."""

    def __init__(self, engine, recorder: DecisionRecorder) -> None:
        self._engine = engine
        self._score_fields = engine.score_fields
        self._observe = recorder.observe

    def score_fields(self, tx, t, amount, customer, card, terminal, record=True, currency="EUR"):
        d = self._score_fields(tx, t, amount, customer, card, terminal, record, currency)
        if record:
            self._observe(tx, t, amount, customer, card, terminal, currency, d)
        return d

    def __getattr__(self, name: str):
        return getattr(self._engine, name)
