"""The decision log process yields to traffic: while the worker has a request in flight it
holds what it receives (reporting the backlog), and scores and writes it once the worker is
quiet; past its backlog bound it works anyway and counts that; what it holds is written at
shutdown, and counted as dropped if it dies holding it."""

from __future__ import annotations

import io
import json
import threading
import time

from test_shadow import GUARD, _engine, _requests, scorers  # noqa: F401 - the fixture

from features.fraud.decision_log import DecisionLog
from models.fraud import FraudEngine
from serving.checkout import Checkout
from serving.decision_process import LogProcess, _Child, _Sent
from serving.shadow import DecisionLogConfig, DecisionRecorder, RecordingEngine, ShadowModel

pytest_plugins = ["fraud_helpers"]


def _service(scorers, tmp_path, monkeypatch, **config):  # noqa: F811
    """A recorder with its log process (loaded) and the checkout that feeds it."""
    fs, champion, challenger, df = scorers
    monkeypatch.setenv("SHOPML_LABELS_URL", f"sqlite:///{tmp_path / 'fraud.db'}")
    served = _engine(fs, champion, tmp_path, "served")
    native = FraudEngine(challenger, fs).save(tmp_path / "challenger")
    shadow = ShadowModel(FraudEngine.load(native), "shopml-fraud/2", ("engine", str(native)))
    cfg = DecisionLogConfig(process=True, flush_ms=10, quiet_ms=200, **config)
    recorder = DecisionRecorder(None, served, "shopml-fraud/1", cfg, shadow).start()
    assert recorder.sink.ready.wait(60)
    return recorder, Checkout(RecordingEngine(served, recorder), "shopml-fraud/1", GUARD), df


def _until(recorder, check, timeout: float = 30.0) -> dict:
    """The recorder's status once `check(status)` holds (AssertionError after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        status = recorder.status()
        if check(status):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.02)


class _Traffic:
    """Requests back to back on the service (each 2 ms, no gap: far from the 200 ms of quiet the
    child waits for, even on a loaded machine) while it is on."""

    def __init__(self, recorder) -> None:
        self.traffic = recorder.traffic
        self.on = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.on.wait(0.01):
                continue
            self.traffic.begin()
            time.sleep(0.002)
            self.traffic.end()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def test_decisions_wait_for_quiet_past_the_bound_they_are_worked_and_all_get_both_scores(
    scorers,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    recorder, checkout, df = _service(scorers, tmp_path, monkeypatch, backlog_max_rows=250)
    reqs = _requests(df, 500)
    busy = _Traffic(recorder)
    try:
        busy.on.set()  # requests in flight: the child only receives
        for req in reqs[:200]:
            checkout.score(req)
        held = _until(recorder, lambda s: s["queued"] == 200)
        assert held["written"] == 0
        time.sleep(0.2)
        assert recorder.status()["written"] == 0  # still nothing while the traffic goes on
        busy.on.clear()  # quiet: it catches up by itself
        caught_up = _until(recorder, lambda s: s["written"] == 200)
        assert caught_up["forced"] == 0 and caught_up["queued"] == 0
        busy.on.set()  # busy again, and past the bound: worked anyway, counted
        for req in reqs[200:480]:
            checkout.score(req)
        forced = _until(recorder, lambda s: s["forced"] > 0 and s["written"] + s["queued"] == 480)
        assert forced["written"] >= 480 - 250 and forced["forced"] == forced["written"] - 200
        for req in reqs[480:]:  # held again at shutdown: written too
            checkout.score(req)
    finally:
        recorder.close()
        busy.stop()
    status = recorder.status()
    assert status["observed"] == status["written"] == status["shadow_scored"] == 500
    assert status["dropped"] == 0 and status["queued"] == 0
    rows = DecisionLog(f"sqlite:///{tmp_path / 'fraud.db'}").read()
    assert set(rows["transaction_id"]) == {r.transaction_id for r in reqs}
    assert rows["shadow_version"].eq("shopml-fraud/2").all()
    assert rows["shadow_probability"].notna().all()


class _Ended:
    """A log process that reported some totals and died (its stdout: those lines, then EOF)."""

    def __init__(self, *totals: dict) -> None:
        self.stdout = io.BytesIO(b"".join(json.dumps(t).encode() + b"\n" for t in totals))


def test_rows_held_by_a_log_process_that_dies_are_counted_as_dropped():
    sink = LogProcess("shopml-fraud/1", DecisionLogConfig(process=True), None)
    sent = _Sent()
    sent.rows = 130
    sink._read_totals(
        _Ended({"written": 50, "dropped": 0, "waiting": 80}, {"written": 70, "waiting": 60}),
        sent,
    )
    assert sink.written == 70 and sink.dropped == 60 and sink.waiting == 0
    assert sent.ended


class _Writer:
    waiting = 0


def test_the_child_works_at_the_bound_the_worker_hands_its_queue_on_at():
    """The worker hands on its queue once it holds `backlog_max_rows` rows (`_hold`), so a child
    holding exactly that many is at the bound: with `>` it waited `backlog_max_s` (30 s) for
    the age bound instead, the race that timed out the backlog test."""
    cfg = DecisionLogConfig(process=True, backlog_max_rows=250)
    child = _Child(_Writer(), cfg, traffic=None, out=-1)
    child.frames.append((None, None, time.monotonic()))
    child.held = 249
    assert not child.over_bound()
    child.held = 250
    assert child.over_bound()
