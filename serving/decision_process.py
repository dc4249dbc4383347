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

Frames on the pipe: 8 bytes of length (little endian), then a pickle. The first is the hello
(model version, config, the shadow's kind, native folder and version); each later one a batch.
End of input (the worker closed the pipe, or died) makes the child write what it holds (for up
to `CLOSE_WRITE_S` if the database refuses) and exit. A child that dies is started again at the
next batch (at most once per `RESTART_EVERY_S`); batches it cannot take are dropped and counted.
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

from serving import metrics
from serving.shadow import Batch, DecisionLogConfig, DecisionWriter, ShadowModel
from shopml.log import get_logger

log = get_logger("serving.decision_process")

_LENGTH = struct.Struct("<Q")
_PIPE_BYTES = 1 << 20  # F_SETPIPE_SZ: ~15 batches of 100 payments before a send waits
_F_SETPIPE_SZ = 1031
CLOSE_WRITE_S = 10.0
RESTART_EVERY_S = 5.0
CHILD = "from serving.decision_process import main; main()"


class LogProcess:
    """The worker's side: starts the child, sends it batches, reads its totals back."""

    def __init__(self, model_version: str, config: DecisionLogConfig, shadow: ShadowModel | None):
        self.model_version = model_version
        self.config = config
        self.shadow = shadow
        self.written = self.shadow_scored = self.dropped = self.waiting = 0
        self.lost = 0  # batches dropped because no child could take them
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
        self._proc = subprocess.Popen(
            [sys.executable, "-c", CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        with contextlib.suppress(OSError):  # over /proc/sys/fs/pipe-max-size: 64 KiB
            fcntl.fcntl(self._proc.stdin.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
        self._sent_rules = None
        self.ready.clear()
        hello = {
            "model_version": self.model_version,
            "config": self.config.model_dump(),
            "shadow": shadow,
        }
        self._frame(pickle.dumps(hello, protocol=pickle.HIGHEST_PROTOCOL))
        self._reader = threading.Thread(
            target=self._read_totals, args=(self._proc,), name="decision-log-totals", daemon=True
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

    def _lose(self, batch: Batch) -> None:
        self.lost += 1
        with self._lock:
            self.dropped += len(batch.rows)

    def _frame(self, payload: bytes) -> None:
        fd = self._proc.stdin.fileno()
        data = memoryview(_LENGTH.pack(len(payload)) + payload)
        while data:
            data = data[os.write(fd, data) :]  # os.write releases the GIL while it waits

    # ------------------------------------------------------------------ totals
    def _read_totals(self, proc: subprocess.Popen) -> None:
        """The child's running totals (JSON lines) into this side's counts and the metrics."""
        seen = {"written": 0, "shadow_scored": 0, "dropped": 0}
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
                self.waiting = int(totals.get("waiting", 0))
            if new["written"]:
                metrics.fraud_decision_log("written", new["written"], self.model_version)
            if new["shadow_scored"] and self.shadow is not None:
                metrics.fraud_decision_log(
                    "shadow_scored", new["shadow_scored"], self.shadow.version
                )
        proc.stdout.close()


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
    priority = _lower_priority()  # loaded at normal priority: the cold start stays short
    log.info(
        "decision log process ready",
        extra={"priority": priority, "shadow": None if shadow is None else shadow.version},
    )

    def report() -> None:
        totals = {
            "written": writer.written,
            "shadow_scored": writer.shadow_scored,
            "dropped": writer.dropped,
            "waiting": writer.waiting,
        }
        os.write(out, (json.dumps(totals) + "\n").encode())

    def take(frame) -> None:
        rules, rows, X, payments = frame
        if rules is not None:
            writer.rules = rules
        writer.take(Batch(rows, X, payments))

    report()  # ready
    while True:
        frame = _read_frame(0)
        if frame is None:
            break
        take(frame)
        # batches already waiting in the pipe join this round: fewer, larger transactions
        while writer.waiting < config.batch_max and _readable(0):
            frame = _read_frame(0)
            if frame is None:
                break
            take(frame)
        if frame is None:
            break
        try:
            writer.write()
        except Exception as err:  # noqa: BLE001 - a bug here must not end the log process
            log.error("decision log round failed", extra={"error_type": type(err).__name__})
        report()
    deadline = time.monotonic() + CLOSE_WRITE_S
    while writer.waiting and time.monotonic() < deadline:
        if not writer.write()[0]:
            time.sleep(0.2)
    report()
    if writer.waiting:
        log.error("decision log process ended with rows unwritten", extra={"rows": writer.waiting})
    os.close(out)


if __name__ == "__main__":  # pragma: no cover - started with `python -c` by LogProcess
    main()
