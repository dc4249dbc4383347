"""The fraud service's log process: scores decisions in shadow and writes them, at idle priority.

Why a process: a thread beside the checkout shares its GIL, and every millisecond the shadow's
calibration, rules and row building or the database driver hold it is a millisecond a payment
can wait (measured: /score p99 1.22-1.68x the shadow-less server's with the shadow in the
worker's thread). Here the worker's recorder thread only pickles each batch (rows, features,
payment columns; the served rules when they changed) onto the child's stdin; the child, once
loaded, runs under SCHED_IDLE (nice 19 where that is refused), so it takes only CPU the checkout
leaves, and reports its running totals back as JSON lines, which the worker turns into the
decision-log metrics. The cost: on a machine with no idle CPU at all the child falls behind, the
worker's queue fills and payments are dropped from the log (counted), never waited for; at
shutdown the child is put back to normal priority to write what it holds. It ignores SIGINT and
SIGTERM: the end of its input, which also comes when the worker dies, is what stops it.

Yielding to traffic: SCHED_IDLE keeps the child off a CPU a request wants, not out of the
core and caches it shares with the request (2 vCPUs, likely SMT siblings); measured in the log
process, the shadow's scoring costs ~0.9-1.3 ms of CPU per batch of 40-100 payments and each
write ~1.2-1.8 ms, i.e. the child runs a few % of the time, the share of requests the p99 sits
in. So the child only receives while the worker has a /score in flight (`shadow.Traffic`, a
memfd page the worker stamps at each request's start and end): it scores and writes once no
request has been in flight for `quiet_ms`, one `chunk_rows` chunk at a time, checking again
between chunks. Past `backlog_max_rows` rows or `backlog_max_s` seconds held it works anyway
(the rows counted as `forced`), so the log lags steady traffic by about that much at most and
the child's memory stays bounded; it reports its backlog and lag (gauges) once a second while
holding.

Frames on the pipe: 8 bytes of length (little endian), then a pickle. The first is the hello
(model version, config, the shadow's kind, native folder and version, the traffic page's fd);
each later one a batch. End of input (the worker closed the pipe, or died) makes the child score
and write all it holds (for up to `CLOSE_WRITE_S` if the database refuses) and exit. A child that
dies is started again at the next batch (at most once per `RESTART_EVERY_S`); batches it cannot
take are dropped and counted, and so are the rows it was sent and had not written when it died
(the worker keeps the count of rows sent to each child).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import deque

from serving import metrics
from serving.shadow import (
    Batch,
    DecisionLogConfig,
    DecisionWriter,
    ShadowModel,
    Traffic,
    TrafficView,
)
from shopml.log import get_logger

log = get_logger("serving.decision_process")

_LENGTH = struct.Struct("<Q")
_PIPE_BYTES = 1 << 20  # F_SETPIPE_SZ: ~15 batches of 100 payments before a send waits
_F_SETPIPE_SZ = 1031
CLOSE_WRITE_S = 10.0
RESTART_EVERY_S = 5.0
RETRY_WRITE_S = 1.0  # a refusing database is tried again this often
HELD_REPORT_S = 1.0  # while holding batches for quiet, the totals (backlog, lag) this often
CHILD = "from serving.decision_process import main; main()"


class LogProcess:
    """The worker's side: starts the child, sends it batches, reads its totals back."""

    def __init__(
        self,
        model_version: str,
        config: DecisionLogConfig,
        shadow: ShadowModel | None,
        traffic: Traffic | None = None,
    ):
        self.model_version = model_version
        self.config = config
        self.shadow = shadow
        self.traffic = traffic  # the worker's requests, which the child waits out
        self.written = self.shadow_scored = self.dropped = self.waiting = self.forced = 0
        self.lag_s = 0.0
        self.lost = 0  # batches dropped because no child could take them
        self._sent = None  # rows sent to the running child, its totals, whether it ended
        self.restarts = 0
        self.ready = threading.Event()  # set at the child's first report (it is loaded)
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._sent_rules = None
        self._started_at = 0.0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        """Start the child (it loads the shadow by itself; batches wait in the pipe)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        shadow = None
        if self.shadow is not None and self.shadow.source is not None:
            kind, native = self.shadow.source
            shadow = {"kind": kind, "path": native, "version": self.shadow.version}
        self._started_at = time.monotonic()
        fd = None if self.traffic is None else self.traffic.fd
        self._proc = subprocess.Popen(
            [sys.executable, "-c", CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
            pass_fds=() if fd is None else (fd,),
        )
        with contextlib.suppress(OSError):  # over /proc/sys/fs/pipe-max-size: 64 KiB
            fcntl.fcntl(self._proc.stdin.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
        self._sent_rules = None
        self.ready.clear()
        hello = {
            "model_version": self.model_version,
            "config": self.config.model_dump(),
            "shadow": shadow,
            "traffic_fd": fd,
        }
        self._frame(pickle.dumps(hello, protocol=pickle.HIGHEST_PROTOCOL))
        sent = self._sent = _Sent()
        self._reader = threading.Thread(
            target=self._read_totals,
            args=(self._proc, sent),
            name="decision-log-totals",
            daemon=True,
        )
        self._reader.start()
        log.info("decision log process started", extra={"pid": self._proc.pid})

    def close(self, timeout: float = CLOSE_WRITE_S + 5) -> None:
        """End the child's input and wait for it to have written what it holds."""
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        with contextlib.suppress(OSError):  # what it holds now goes at normal priority
            os.sched_setscheduler(proc.pid, os.SCHED_OTHER, os.sched_param(0))
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("decision log process did not finish writing; killed")
            proc.kill()
            proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)

    # ------------------------------------------------------------------ sending
    def send(self, batch: Batch, rules) -> None:
        """Hand one batch to the child (waits only while the pipe is full); a batch no child
        can take is dropped and counted."""
        if self._proc is None or self._proc.poll() is not None:
            if time.monotonic() - self._started_at < RESTART_EVERY_S:
                self._lose(batch)
                return
            if self._proc is not None:
                log.error(
                    "decision log process ended; starting it again",
                    extra={"returncode": self._proc.returncode},
                )
            self.restarts += 1
            self.start()
        fresh = rules if rules is not self._sent_rules else None
        payload = pickle.dumps(
            (fresh, batch.rows, batch.X, batch.payments), protocol=pickle.HIGHEST_PROTOCOL
        )
        try:
            self._frame(payload)
        except OSError as err:  # the child died
            log.error("decision log process refused a batch", extra={"error": str(err)})
            self._lose(batch)
            return
        self._sent_rules = rules
        with self._lock:
            if self._sent.ended:  # its reader already counted what it lost: this one too
                self._drop(len(batch.rows))
            else:
                self._sent.rows += len(batch.rows)

    def _lose(self, batch: Batch) -> None:
        self.lost += 1
        with self._lock:
            self._drop(len(batch.rows))

    def _drop(self, rows: int) -> None:
        """Rows that will never be written (under the lock; the recorder puts them in the
        metrics with its own drops)."""
        self.dropped += rows

    def _frame(self, payload: bytes) -> None:
        fd = self._proc.stdin.fileno()
        data = memoryview(_LENGTH.pack(len(payload)) + payload)
        while data:
            data = data[os.write(fd, data) :]  # os.write releases the GIL while it waits

    # ------------------------------------------------------------------ totals
    def _read_totals(self, proc: subprocess.Popen, sent: _Sent) -> None:
        """The child's running totals (JSON lines) into this side's counts and the metrics;
        when it ends, the rows sent to it that it neither wrote nor counted are dropped and
        counted (a child killed with a backlog loses it, never silently)."""
        seen = {"written": 0, "shadow_scored": 0, "dropped": 0, "forced": 0}
        for line in proc.stdout:
            try:
                totals = json.loads(line)
            except ValueError:
                continue
            new = {k: int(totals.get(k, 0)) - seen[k] for k in seen}
            seen = {k: seen[k] + new[k] for k in seen}
            self.ready.set()
            with self._lock:
                self.written += new["written"]
                self.shadow_scored += new["shadow_scored"]
                self.dropped += new["dropped"]
                self.forced += new["forced"]
                self.waiting = int(totals.get("waiting", 0))
                self.lag_s = float(totals.get("lag_s", 0.0))
            metrics.fraud_decision_log_backlog(self.waiting, self.lag_s, self.model_version)
            for outcome in ("written", "forced"):  # drops: the recorder counts them
                if new[outcome]:
                    metrics.fraud_decision_log(outcome, new[outcome], self.model_version)
            if new["shadow_scored"] and self.shadow is not None:
                metrics.fraud_decision_log(
                    "shadow_scored", new["shadow_scored"], self.shadow.version
                )
        proc.stdout.close()
        with self._lock:
            sent.ended = True
            lost = sent.rows - seen["written"] - seen["dropped"]
            self.waiting, self.lag_s = 0, 0.0
            if lost > 0:
                log.error("decision log process ended holding rows; dropped", extra={"rows": lost})
                self._drop(lost)
        metrics.fraud_decision_log_backlog(0, 0.0, self.model_version)


class _Sent:
    """What one child was sent (rows), and whether its totals have ended (it exited)."""

    def __init__(self) -> None:
        self.rows = 0
        self.ended = False


# ---------------------------------------------------------------------- the child
def _lower_priority() -> str:
    """SCHED_IDLE: run only on CPU time nothing else wants; nice 19 where that is refused."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return "idle"
    except (AttributeError, OSError):
        try:
            os.nice(19)
        except OSError:
            return "normal"
        return "nice"


def _read_exact(fd: int, n: int) -> bytes | None:
    parts, left = [], n
    while left:
        chunk = os.read(fd, min(left, _PIPE_BYTES))
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _read_frame(fd: int):
    head = _read_exact(fd, _LENGTH.size)
    if head is None:
        return None
    body = _read_exact(fd, _LENGTH.unpack(head)[0])
    if body is None:
        return None
    return pickle.loads(body)


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def _load_shadow(spec: dict | None) -> ShadowModel | None:
    """The shadow from its native folder (`spec`: kind, path, version); None without one."""
    if not spec:
        return None
    from models.family import family

    try:
        engine = family("fraud").load(spec["kind"], spec["path"])
    except Exception as err:  # noqa: BLE001 - the log goes on without shadow scores
        log.error(
            "shadow model not loaded in the log process; decisions logged without its scores",
            extra={"error_type": type(err).__name__, "shadow": spec["version"]},
        )
        return None
    return ShadowModel(engine, spec["version"], (spec["kind"], spec["path"]))


class _Child:
    """The child's loop: receive batches as they come, keep them unscored while the worker has
    requests in flight (`TrafficView`), score and write them one `chunk_rows` chunk at a time
    once it has been quiet for `quiet_ms`, or at once past either backlog bound (`forced`)."""

    def __init__(self, writer: DecisionWriter, config: DecisionLogConfig, traffic, out: int):
        self.writer = writer
        self.config = config
        self.traffic = traffic
        self.out = out
        self.frames: deque = deque()  # (rules, Batch, received at) not yet scored
        self.held = 0  # rows in `frames`
        self.forced = 0
        self._retry_at = 0.0  # after a refused write: not before this
        self._reported = 0.0

    # ------------------------------------------------------------------ input
    def receive(self, timeout: float | None) -> bool:
        """Every frame readable within `timeout` s (None: until one comes) into the backlog;
        False at the end of input."""
        if not select.select([0], [], [], timeout)[0]:
            return True
        while True:
            frame = _read_frame(0)
            if frame is None:
                return False
            rules, rows, X, payments = frame
            self.frames.append((rules, Batch(rows, X, payments), time.monotonic()))
            self.held += len(rows)
            if not _readable(0):
                return True

    # ------------------------------------------------------------------ work
    def over_bound(self) -> bool:
        """At either backlog bound: `backlog_max_rows` held, as the worker's queue counts it (it
        hands its queue on once it holds that many), or the oldest batch `backlog_max_s` old."""
        config = self.config
        if self.held + self.writer.waiting >= config.backlog_max_rows:
            return True
        return bool(self.frames) and time.monotonic() - self.frames[0][2] > config.backlog_max_s

    def work(self, forced: bool = False) -> None:
        """Score held batches up to `chunk_rows` rows and write what is waiting; while the
        database refuses, score every held batch into the writer (whose `queue_max` bounds an
        outage) and write nothing until the retry time."""
        writer = self.writer
        refused = time.monotonic() < self._retry_at
        limit = float("inf") if refused else self.config.chunk_rows
        taken = 0
        while self.frames and writer.waiting < limit:
            rules, batch, _ = self.frames.popleft()
            self.held -= len(batch.rows)
            taken += len(batch.rows)
            if rules is not None:
                writer.rules = rules
            writer.take(batch)
        if forced:
            self.forced += taken
        if refused:
            return
        try:
            done = writer.write()[0]
        except Exception as err:  # noqa: BLE001 - a bug here must not end the log process
            log.error("decision log round failed", extra={"error_type": type(err).__name__})
            done = 0
        if writer.waiting and not done:  # the database refused: try again in a while
            self._retry_at = time.monotonic() + RETRY_WRITE_S

    def has_work(self) -> bool:
        if time.monotonic() < self._retry_at:
            return bool(self.frames)
        return bool(self.frames) or self.writer.waiting > 0

    def lag_s(self) -> float:
        return time.monotonic() - self.frames[0][2] if self.frames else 0.0

    def report(self, every_s: float = 0.0) -> None:
        """The running totals to the worker (at most once per `every_s`)."""
        now = time.monotonic()
        if now - self._reported < every_s:
            return
        self._reported = now
        writer = self.writer
        totals = {
            "written": writer.written,
            "shadow_scored": writer.shadow_scored,
            "dropped": writer.dropped,
            "waiting": writer.waiting + self.held,
            "forced": self.forced,
            "lag_s": round(self.lag_s(), 3),
        }
        with contextlib.suppress(BrokenPipeError):  # the worker is gone: nobody to tell
            os.write(self.out, (json.dumps(totals) + "\n").encode())

    def run(self) -> None:
        """Until the end of input; then everything held is scored and written."""
        self.report()  # ready
        open_input = True
        while open_input:
            if not self.has_work():  # wait for a batch (or for the time to retry a write)
                wait = None
                if self.writer.waiting:
                    wait = max(0.0, self._retry_at - time.monotonic())
                open_input = self.receive(wait)
                continue
            wait = self.traffic.wait_s()
            if wait > 0 and not self.over_bound():  # requests in flight: hold on
                open_input = self.receive(wait)
                self.report(every_s=HELD_REPORT_S)
                continue
            self.work(forced=wait > 0)
            self.report()
            open_input = self.receive(0)
        self.drain()

    def drain(self) -> None:
        """At the end of input: score and write everything held, retrying a refusing
        database for up to CLOSE_WRITE_S; what is left then the worker counts as dropped."""
        deadline = time.monotonic() + CLOSE_WRITE_S
        while self.has_work() or self.writer.waiting:
            self._retry_at = 0.0
            before = self.writer.written
            self.work()
            if self.writer.written == before and self.writer.waiting:  # refused
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.2)
        self.report()
        if self.writer.waiting or self.held:
            log.error(
                "decision log process ended with rows unwritten",
                extra={"rows": self.writer.waiting + self.held},
            )


def main() -> None:
    """The child: read batches from stdin until it ends, score them in shadow, write them."""
    from features.fraud.decision_log import DecisionLog

    # the worker's end of the pipe is how it stops us: a signal to its process group (Ctrl-C,
    # a supervisor's SIGTERM) must not cut short the writing of what we hold
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out = os.dup(1)  # the totals' channel; anything printed goes to stderr, the server's log
    os.dup2(2, 1)
    hello = _read_frame(0)
    if hello is None:
        return
    config = DecisionLogConfig(**hello["config"])
    shadow = _load_shadow(hello["shadow"])
    writer = DecisionWriter(DecisionLog.open(), hello["model_version"], config, shadow)
    traffic = TrafficView(hello.get("traffic_fd"), config.quiet_ms / 1000)
    priority = _lower_priority()  # loaded at normal priority: the cold start stays short
    log.info(
        "decision log process ready",
        extra={"priority": priority, "shadow": None if shadow is None else shadow.version},
    )
    _Child(writer, config, traffic, out).run()
    os.close(out)


if __name__ == "__main__":  # pragma: no cover - started with `python -c` by LogProcess
    main()
