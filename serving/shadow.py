"""Served fraud decisions to the decision log, and the challenger scoring them in shadow.

At checkout the only work is `DecisionRecorder.observe`: one tuple of what the answer already
computed (ids, time, amount, the copied feature vector, the decision) appended to a bounded
queue; when the queue is full the payment is dropped from the log and counted, never waited
for. A background thread takes the queue every `flush_ms` and turns it into batches: the log's
rows, and for the shadow the batch's feature matrix and payment columns. A `DecisionWriter`
scores each batch with the shadow model (LightGBM's batch predict on one thread, then the
shadow's calibration and policy and the served rules, vectorised) and writes the rows to the
`DecisionLog`, one transaction per `batch_max` rows. A write that fails keeps its rows for the
next round (up to `queue_max`, then the oldest are dropped and counted), so a database outage
costs neither the checkout nor, while it is short, any rows.

Where the writer runs: in the service it runs in a child process at idle CPU priority
(`serving.decision_process`, `process=True`), so that neither the shadow's scoring nor the
database writes hold the checkout's GIL or take a CPU the checkout wants; the worker's thread
only pickles each batch onto a pipe, and the child waits for a quiet moment between requests
(`Traffic`, stamped by the service at each /score's start and end) before it works, within a
bounded backlog. Without `process` (tests, tools) it runs in the recorder's own thread.

The shadow must score the same features as the served model (the same feature set); it never
changes an answer, the online state or the metrics of the served model.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import mmap
import os
import struct
import sys
import threading
import time
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
PAYMENT_COLUMNS = ("customer_id", "card_id", "terminal_id", "amount", "currency")
_TRAFFIC = struct.Struct("=qq")  # requests in flight, CLOCK_MONOTONIC ns of the last change
STALE_IN_FLIGHT_S = 1.0  # "in flight" with no start or end for this long: not believed


class DecisionLogConfig(ConfigModel):
    """How the fraud service logs its decisions (and scores its challenger in shadow)."""

    sample_rate: float = Field(1.0, ge=0.0, le=1.0)  # share of payments logged, by id hash
    shadow: bool = True  # score the Bento's challenger in shadow when it carries one
    queue_max: int = Field(50_000, ge=1)  # payments waiting before new ones are dropped
    flush_ms: int = Field(50, ge=1)  # how often the background thread takes the queue
    batch_max: int = Field(500, ge=1)  # rows per write transaction (and per shadow batch)
    process: bool = False  # score and write in a child process at idle priority
    # with `process`: the child scores and writes only once no request has been in flight for
    # `quiet_ms` (longer than a /score's own time plus the HTTP work the stamp does not see; 0:
    # at once), one `chunk_rows` chunk at a time; past either bound of what it holds it works
    # anyway (counted as `forced`), so the log lags traffic by at most about that much
    quiet_ms: float = Field(5.0, ge=0.0)
    # rows scored and written between two looks at the traffic: a chunk begun in a lull is
    # finished even when a request comes (measured: 500-row chunks still overlapped requests
    # with half their CPU time in the bench's short lulls)
    chunk_rows: int = Field(100, ge=1)
    backlog_max_rows: int = Field(20_000, ge=0)  # ~1 KB a row in the child
    backlog_max_s: float = Field(30.0, ge=0.0)  # the log's readers look days back, not seconds


@dataclass(frozen=True)
class ShadowModel:
    """A second fraud engine scoring in shadow: its scorer, calibration and policy; the rules
    are the served engine's (the rules in force decide for both)."""

    engine: object  # models.fraud.FraudEngine (the challenger's)
    version: str
    # (model kind, native folder): how the log process loads it again (`Family.load`)
    source: tuple[str, str] | None = None

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
        """Probabilities and decisions of many payments (rows of `X`)."""
        raw = self.raw_scores(X)
        p = self.engine.scorer.calibrator_.transform(raw)
        decided = self.engine.policy.decide_many(p, base_amount)
        decisions, _ = rules.apply_many(decided, p, X, columns)
        return p, decisions


class Traffic:
    """The worker's requests as the log process sees them: how many are in flight and when the
    last one started or ended (CLOCK_MONOTONIC ns), in one page shared with the child (a memfd
    it inherits; a private buffer where there is none, and then the child never waits).
    Written from the event loop's thread (the fast path): a few stores a request, no lock."""

    def __init__(self, shared: bool = True) -> None:
        self.fd: int | None = None
        try:
            if not shared:
                raise OSError("not shared")
            fd = os.memfd_create("shopml-traffic")
            os.ftruncate(fd, _TRAFFIC.size)
            self._page = mmap.mmap(fd, _TRAFFIC.size)
            self.fd = fd
        except (AttributeError, OSError):
            self._page = bytearray(_TRAFFIC.size)
        self._cells = (ctypes.c_int64 * 2).from_buffer(self._page)  # in flight, last ns

    def begin(self) -> None:
        cells = self._cells
        cells[0] += 1
        cells[1] = time.monotonic_ns()

    def end(self) -> None:
        cells = self._cells
        cells[0] -= 1
        cells[1] = time.monotonic_ns()

    def busy(self, quiet_s: float) -> bool:
        """Whether a request is in flight or ended less than `quiet_s` (> 0) ago, as the child
        sees it."""
        return quiet_wait_s(self._cells[0], self._cells[1], quiet_s) > 0


def quiet_wait_s(in_flight: int, last_ns: int, quiet_s: float) -> float:
    """Seconds until the worker has been quiet for `quiet_s`, from its `Traffic` cells: the
    whole `quiet_s` while a request is in flight. A count left wrong by requests counted from
    two threads at once is not believed after STALE_IN_FLIGHT_S without a stamp."""
    since = (time.monotonic_ns() - last_ns) / 1e9
    if in_flight > 0 and since < STALE_IN_FLIGHT_S:
        return quiet_s
    return max(0.0, quiet_s - since)


class TrafficView:
    """The child's side of `Traffic`: seconds until the worker has been quiet for `quiet_s`."""

    def __init__(self, fd: int | None, quiet_s: float) -> None:
        self.quiet_s = quiet_s
        self._page = None
        if fd is not None and quiet_s > 0:
            with contextlib.suppress(OSError, ValueError):
                self._page = mmap.mmap(fd, _TRAFFIC.size, access=mmap.ACCESS_READ)

    def wait_s(self) -> float:
        """0 when no request has been in flight for `quiet_s` (or nothing is watched)."""
        if self._page is None:
            return 0.0
        return quiet_wait_s(*_TRAFFIC.unpack_from(self._page), self.quiet_s)


@dataclass(frozen=True)
class Batch:
    """Served decisions on their way to the log: the rows (`decision_log.ROW` order, shadow
    columns empty) and, when a shadow scores them, their features and payment columns."""

    rows: list[tuple]
    X: np.ndarray | None = None  # (len(rows), n_features) float64
    payments: tuple[list, ...] | None = None  # PAYMENT_COLUMNS, one list each


class DecisionWriter:
    """Scores batches in shadow and writes them to the log, keeping what the database refused
    (in the log process of the service, or in the recorder's thread)."""

    def __init__(
        self,
        decision_log: DecisionLog,
        model_version: str,
        config: DecisionLogConfig,
        shadow: ShadowModel | None = None,
        rules=None,
    ) -> None:
        self.log = decision_log
        self.model_version = model_version
        self.config = config
        self.shadow = shadow
        self.rules = rules  # the served rules in force (they decide for the shadow too)
        self._unwritten: deque = deque()
        self.written = self.shadow_scored = 0
        self.dropped = 0  # database down too long
        self._failing = False

    @property
    def waiting(self) -> int:
        return len(self._unwritten)

    def take(self, batch: Batch) -> None:
        """Score `batch` in shadow (when there is a shadow and it carries features) and keep
        its rows for `write`."""
        rows = batch.rows
        if self.shadow is not None and batch.X is not None and rows:
            p, decisions = self._shadow_scores(batch)
            if p is not None:
                version, probabilities = self.shadow.version, p.tolist()
                rows = [
                    (*row[:10], version, probabilities[i], str(decisions[i]))
                    for i, row in enumerate(rows)
                ]
        self._unwritten.extend(rows)

    def _shadow_scores(self, batch: Batch):
        """The shadow's probabilities and decisions of a batch; (None, None) if it fails (the
        rows are still logged, without shadow scores)."""
        try:
            customers, cards, terminals, amounts, currencies = batch.payments
            columns = {
                "customer_id": np.array(customers, dtype=object),
                "card_id": np.array(cards, dtype=object),
                "terminal_id": np.array(terminals, dtype=object),
                "amount": np.array(amounts, dtype="float64"),
                "currency": np.array(currencies, dtype=object),
            }
            base = np.array([row[3] for row in batch.rows], dtype="float64")
            p, decisions = self.shadow.score(batch.X, base, columns, self.rules)
        except Exception as err:  # noqa: BLE001 - a failing shadow never stops the log
            log.warning(
                "shadow scoring failed; decisions logged without shadow scores",
                extra={"error_type": type(err).__name__, "shadow": self.shadow.version},
            )
            return None, None
        self.shadow_scored += len(batch.rows)
        return p, decisions

    def write(self) -> tuple[int, int]:
        """Write what is kept, `batch_max` rows a transaction, until done or the database
        refuses: (rows written, of them with a shadow score)."""
        written = scored = 0
        while self._unwritten:
            n, s = self._write_one()
            if not n:
                break  # the database is down: the rows wait for the next round
            written, scored = written + n, scored + s
        return written, scored

    def _write_one(self) -> tuple[int, int]:
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
            over = len(self._unwritten) - self.config.queue_max
            for _ in range(max(over, 0)):
                self._unwritten.popleft()
            self.dropped += max(over, 0)
            return 0, 0
        if self._failing:
            log.info("decision log reachable again", extra={"rows": n})
        self._failing = False
        for _ in range(n):
            self._unwritten.popleft()
        self.written += n
        return n, sum(row[10] is not None for row in batch)


class DecisionRecorder:
    """Bounded queue + background thread: served decisions (and shadow scores) to the log,
    through a `DecisionWriter` in this thread or in the log process (`config.process`)."""

    def __init__(
        self,
        decision_log: DecisionLog | None,
        served,
        model_version: str,
        config: DecisionLogConfig | None = None,
        shadow: ShadowModel | None = None,
    ) -> None:
        self.config = config or DecisionLogConfig()
        self.served = served  # the served FraudEngine: its feature vector, feature set, rules
        self.model_version = model_version
        self.shadow = shadow if self.config.shadow else None
        if self.shadow is not None:
            self.shadow.check_features(served)
        self.label_delay_s = int(served.feature_set.label_delay)
        # the engine's reused feature vector: it holds the features of the payment just scored
        self._x = served._x
        self._queue: deque = deque()
        self._max = self.config.queue_max
        rate = self.config.sample_rate
        self._keep_below = None if rate >= 1.0 else int(rate * _SAMPLE_BUCKETS)
        self.observed = 0
        self.dropped = 0  # queue full: counted by the request thread only
        self._reported_dropped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # the service marks each request's start and end here (the log process waits for quiet)
        self.traffic = Traffic(shared=self.config.process)
        if self.config.process:
            from serving.decision_process import LogProcess  # the child's side imports us

            self.writer = None
            self.sink = LogProcess(model_version, self.config, self.shadow, self.traffic)
        else:
            self.writer = DecisionWriter(decision_log, model_version, self.config, self.shadow)
            self.sink = None

    @property
    def log(self) -> DecisionLog | None:
        return None if self.writer is None else self.writer.log

    @log.setter
    def log(self, decision_log: DecisionLog) -> None:
        self.writer.log = decision_log

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
                self.served.rules,  # the rules that decided it decide for the shadow too
            )
        )

    # --------------------------------------------------------------- the background thread
    def start(self) -> DecisionRecorder:
        """Start the background thread (a daemon; drained at interpreter exit) and, with
        `process`, the log process."""
        if self._thread is None:
            if self.sink is not None:
                self.sink.start()
            else:
                # a request that arrives while this thread holds the GIL waits for the switch
                # interval (5 ms by default) before Python hands it over: 1 ms bounds that wait
                sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
            self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
            self._thread.start()
            atexit.register(self.close)
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread after it has handed on what is queued, and the log process after
        it has written it (best effort within `timeout`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.sink is not None:
            self.sink.close(timeout)

    def _run(self) -> None:
        wait = self.config.flush_ms / 1000
        while not self._stop.wait(wait):
            if self._hold():
                continue
            self._flush_logged()
        self._flush_logged()

    def _hold(self) -> bool:
        """With the log process: keep the queue (its batching and pickling hold the GIL) while
        requests are in flight, within the same bounds as the child's backlog."""
        config = self.config
        if self.sink is None or not config.quiet_ms:
            return False
        queue = self._queue
        if not queue or len(queue) >= min(config.backlog_max_rows, self._max // 2):
            return False
        if now_ms() - queue[0][9] > config.backlog_max_s * 1000:
            return False
        return self.traffic.busy(config.quiet_ms / 1000)

    def _flush_logged(self) -> None:
        try:
            self.flush()
        except Exception as err:  # noqa: BLE001 - a bug here must not end the log's thread
            log.error("decision log round failed", extra={"error_type": type(err).__name__})

    def flush(self) -> int:
        """Hand on everything queued now; returns the rows written in this thread (0 when the
        log process writes them). Tests call it directly; the thread every `flush_ms`."""
        written = 0
        # only what is queued now: payments arriving meanwhile wait for the next round (under
        # steady traffic the loop would otherwise commit a row or two at a time, never waiting)
        pending = len(self._queue)
        while pending:
            n = min(pending, self.config.batch_max)
            pending -= n
            for rules, items in _by_rules([self._queue.popleft() for _ in range(n)]):
                batch = self._batch(items)
                if self.sink is not None:
                    self.sink.send(batch, rules)
                else:
                    self.writer.rules = rules
                    self.writer.take(batch)
                    written += self._write()
        if self.writer is not None and self.writer.waiting:
            written += self._write()  # what the database refused last round
        self._report()
        return written

    def _batch(self, items: list[tuple]) -> Batch:
        """The log's rows (`decision_log.ROW` order) of queued payments, and what the shadow
        needs to score them."""
        self.observed += len(items)
        to_base = self.served.feature_set.to_base
        version, delay = self.model_version, self.label_delay_s
        rows = [
            (tx, t_ms, served_ms, to_base(amount, currency), version, d.probability, d.decision,
             d.decided_by, d.degraded, delay, None, None, None)
            for (tx, t_ms, amount, _, _, _, currency, _, d, served_ms, _) in items
        ]  # fmt: skip
        if self.shadow is None:
            return Batch(rows)
        # one concatenation: np.stack's per-row work cost 4x as much GIL time (0.13 vs 0.03 ms
        # per 100 payments) in the worker's thread
        X = np.concatenate([item[7] for item in items]).reshape(len(items), -1)
        payments = tuple([item[i] for item in items] for i in (3, 4, 5, 2, 6))
        return Batch(rows, X, payments)

    def _write(self) -> int:
        written, scored = self.writer.write()
        if written:
            metrics.fraud_decision_log("written", written, self.model_version)
        if scored:
            metrics.fraud_decision_log("shadow_scored", scored, self.shadow.version)
        return written

    def _report(self) -> None:
        later = self.writer.dropped if self.writer is not None else self.sink.dropped
        dropped = self.dropped + later - self._reported_dropped
        if dropped:
            self._reported_dropped += dropped
            metrics.fraud_decision_log("dropped", dropped, self.model_version)

    def status(self) -> dict:
        """Counts since start: observed, written, shadow scored, dropped, still queued (in
        this process and, with `process`, held by the log process as it last reported, like
        the written figures); with `process` also `forced` (rows worked while traffic was in
        flight, the backlog past its bound) and `lag_s` (age of the oldest row it holds)."""
        part = self.writer if self.writer is not None else self.sink
        return {
            "observed": self.observed,
            "written": part.written,
            "shadow_scored": part.shadow_scored,
            "dropped": self.dropped + part.dropped,
            "queued": len(self._queue) + part.waiting,
            "forced": getattr(part, "forced", 0),
            "lag_s": getattr(part, "lag_s", 0.0),
            "shadow_version": None if self.shadow is None else self.shadow.version,
        }


def _by_rules(items: list[tuple]) -> list[tuple[object, list[tuple]]]:
    """Queued payments in runs decided by the same rules (one run unless they were reloaded)."""
    runs: list[tuple[object, list[tuple]]] = []
    for item in items:
        if not runs or runs[-1][0] is not item[10]:
            runs.append((item[10], []))
        runs[-1][1].append(item)
    return runs


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
