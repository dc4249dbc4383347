"""The fraud decision log and the shadow challenger: every fresh answer logged with the shadow's
score while the answers stay those of the champion-only service; retries and refused payments
not logged; a full queue drops and counts; a database outage keeps the rows; the log's batches
are all or nothing on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa
from test_loaders import postgres_url  # noqa: F401 - the real PostgreSQL fixture

from features.fraud.batch import compute_batch
from features.fraud.decision_log import DecisionLog, DecisionLogError, LoggedDecision
from features.fraud.definition import DAY, HOUR, FeatureSet
from features.fraud.state_store import InMemoryStateStore
from models.fraud import FraudEngine, FraudScorer
from models.fraud.rules import BlockLists, RuleSet, RulesSpec
from serving.checkout import Checkout, TimeGuard
from serving.fraud_schemas import PaymentRequest
from serving.shadow import DecisionLogConfig, DecisionRecorder, RecordingEngine, ShadowModel
from shopml.clock import now_ms
from shopml.errors import ConfigError, DataError

pytest_plugins = ["fraud_helpers"]


@pytest.fixture(scope="module")
def scorers():
    """A champion and a different challenger, on the same features."""
    from fraud_helpers import synthetic_payments

    fs = FeatureSet()
    df = synthetic_payments(3000, seed=7, fraud_rate=0.08)
    X = compute_batch(df, fs).to_numpy()
    y = df["is_fraud"].to_numpy()
    half = len(df) // 2

    def fit(rounds: int, leaves: int) -> FraudScorer:
        sc = FraudScorer(
            list(fs.names),
            feature_version=fs.version,
            num_boost_round=rounds,
            num_leaves=leaves,
            num_threads=1,
        )
        return sc.fit(X[:half], y[:half], X[half:], y[half:])

    return fs, fit(20, 15), fit(40, 7), df


def _engine(fs, scorer, tmp_path, name) -> FraudEngine:
    """A fresh engine loaded from disk (its own state, as a service would have)."""
    path = FraudEngine(scorer, fs).save(tmp_path / name)
    return FraudEngine.load(path, store=InMemoryStateStore())


def _requests(df, n: int) -> list[PaymentRequest]:
    """`n` payments of the stream in time order, moved to end a minute before now."""
    rows = df.sort_values("timestamp").head(n)
    shift = (now_ms() - 60_000) - rows["timestamp"].max().value // 1_000_000
    out = []
    for r in rows.itertuples(index=False):
        t = r.timestamp.value // 1_000_000 + shift
        out.append(
            PaymentRequest(
                transaction_id=r.transaction_id,
                timestamp=datetime.utcfromtimestamp(t / 1000).isoformat(timespec="milliseconds")
                + "Z",
                customer_id=r.customer_id,
                card_id=r.card_id,
                terminal_id=r.terminal_id,
                amount=r.amount,
                currency=r.currency,
            )
        )
    return out


GUARD = TimeGuard(300_000, 400 * 86_400_000)


def _same(answer: dict, other: dict) -> bool:
    keep = {k: v for k, v in answer.items() if k != "latency_ms"}
    return keep == {k: v for k, v in other.items() if k != "latency_ms"}


def test_shadow_scores_every_payment_while_answers_match_the_champion_only_service(
    scorers, tmp_path
):
    fs, champion, challenger, df = scorers
    alone = _engine(fs, champion, tmp_path, "alone")  # the champion-only service
    served = _engine(fs, champion, tmp_path, "served")
    shadow = ShadowModel(_engine(fs, challenger, tmp_path, "challenger"), "shopml-fraud/2")
    log = DecisionLog(f"sqlite:///{tmp_path / 'decisions.db'}")
    recorder = DecisionRecorder(log, served, "shopml-fraud/1", shadow=shadow)
    plain = Checkout(alone, "shopml-fraud/1", GUARD)
    watched = Checkout(RecordingEngine(served, recorder), "shopml-fraud/1", GUARD)
    features, answers = {}, {}
    for req in _requests(df, 600):
        expected = plain.score(req)
        features[req.transaction_id] = alone._x.copy()
        answers[req.transaction_id] = watched.score(req)
        assert _same(answers[req.transaction_id], expected), req.transaction_id
    assert len(log) == 0  # nothing written on the answer's path
    assert recorder.flush() == 600
    rows = log.read().set_index("transaction_id")
    assert len(rows) == 600 and set(rows.index) == set(answers)
    assert rows["shadow_version"].eq("shopml-fraud/2").all()
    assert rows["model_version"].eq("shopml-fraud/1").all()
    ids = list(features)
    X = np.stack([features[i] for i in ids])
    expected_p = challenger.predict_proba(X)
    np.testing.assert_allclose(rows.loc[ids, "shadow_probability"], expected_p, rtol=1e-9)
    expected_d = shadow.engine.policy.decide_many(expected_p, rows.loc[ids, "amount"].to_numpy())
    assert list(rows.loc[ids, "shadow_decision"]) == list(expected_d)
    served_p = [answers[i]["probability"] for i in ids]
    np.testing.assert_allclose(rows.loc[ids, "probability"], served_p, rtol=0, atol=0)
    assert list(rows.loc[ids, "decision"]) == [answers[i]["decision"] for i in ids]
    # the two models really differ, or the test could not tell the shadow from the champion
    assert np.abs(rows["shadow_probability"] - rows["probability"]).max() > 1e-3
    assert rows["label_delay_s"].eq(fs.label_delay).all()


def test_the_log_process_scores_in_shadow_at_idle_priority_and_follows_the_rules(
    scorers, tmp_path, monkeypatch
):
    """The service's set-up: the shadow scores and the rows are written by a child process
    (SCHED_IDLE), every payment logged with the shadow's score once the recorder is closed,
    the answers those of the champion-only service, a rules change sent on to the child."""
    fs, champion, challenger, df = scorers
    monkeypatch.setenv("SHOPML_LABELS_URL", f"sqlite:///{tmp_path / 'fraud.db'}")
    alone = _engine(fs, champion, tmp_path, "alone")
    served = _engine(fs, champion, tmp_path, "served")
    native = FraudEngine(challenger, fs).save(tmp_path / "challenger")
    shadow = ShadowModel(FraudEngine.load(native), "shopml-fraud/2", ("engine", str(native)))
    config = DecisionLogConfig(process=True, flush_ms=10)
    recorder = DecisionRecorder(None, served, "shopml-fraud/1", config, shadow).start()
    plain = Checkout(alone, "shopml-fraud/1", GUARD)
    watched = Checkout(RecordingEngine(served, recorder), "shopml-fraud/1", GUARD)
    reqs = _requests(df, 400)
    features, rules_then = {}, served.rules
    try:
        assert recorder.sink.ready.wait(60)  # loaded: it then lowers its priority
        assert os.sched_getscheduler(recorder.sink._proc.pid) == os.SCHED_IDLE
        for i, req in enumerate(reqs):
            if i == 200:  # the card of the next payment blocked from now on, in both services
                blocked = RuleSet(RulesSpec(block=BlockLists(cards=[req.card_id])))
                alone.set_rules(blocked)
                served.set_rules(blocked)
            expected = plain.score(req)
            features[req.transaction_id] = alone._x.copy()
            assert _same(watched.score(req), expected), req.transaction_id
    finally:
        recorder.close()
    status = recorder.status()
    assert status["observed"] == status["written"] == status["shadow_scored"] == 400
    assert status["dropped"] == status["queued"] == 0
    rows = DecisionLog(f"sqlite:///{tmp_path / 'fraud.db'}").read().set_index("transaction_id")
    ids = [r.transaction_id for r in reqs]
    assert len(rows) == 400 and rows["shadow_version"].eq("shopml-fraud/2").all()
    expected_p = challenger.predict_proba(np.stack([features[i] for i in ids]))
    np.testing.assert_allclose(rows.loc[ids, "shadow_probability"], expected_p, rtol=1e-9)
    card = reqs[200].card_id
    after = [r.transaction_id for r in reqs[200:] if r.card_id == card]
    before = [r.transaction_id for r in reqs[:200] if r.card_id == card]
    assert rows.loc[after, "shadow_decision"].eq("decline").all()
    assert rows.loc[after, "decided_by"].eq("rule:blocked_card").all()
    # the payments before the change: the shadow's decisions under the rules then in force
    first = [r.transaction_id for r in reqs[:200]]
    rows_before = rows.loc[first]
    columns = {
        "customer_id": np.array([r.customer_id for r in reqs[:200]], dtype=object),
        "card_id": np.array([r.card_id for r in reqs[:200]], dtype=object),
        "terminal_id": np.array([r.terminal_id for r in reqs[:200]], dtype=object),
        "amount": np.array([r.amount for r in reqs[:200]], dtype="float64"),
        "currency": np.array([r.currency for r in reqs[:200]], dtype=object),
    }
    p_before = expected_p[:200]
    policy = shadow.engine.policy.decide_many(p_before, rows_before["amount"].to_numpy())
    X_before = np.stack([features[i] for i in first])
    want, _ = rules_then.apply_many(policy, p_before, X_before, columns)
    assert list(rows_before["shadow_decision"]) == list(want)
    assert before and not rows.loc[before, "shadow_decision"].eq("decline").all()


def test_retries_and_refused_payments_are_not_logged(scorers, tmp_path):
    fs, champion, _, df = scorers
    served = _engine(fs, champion, tmp_path, "served")
    log = DecisionLog(f"sqlite:///{tmp_path / 'decisions.db'}")
    recorder = DecisionRecorder(log, served, "v1")
    checkout = Checkout(RecordingEngine(served, recorder), "v1", GUARD)
    reqs = _requests(df, 5)
    for req in reqs:
        checkout.score(req)
    first = checkout.score(reqs[0])  # a retry: answered from the ledger
    assert first["transaction_id"] == reqs[0].transaction_id
    late = reqs[1].model_copy(update={"transaction_id": "old", "timestamp": "2001-01-01T00:00:00Z"})
    with pytest.raises(DataError, match="timestamp"):
        checkout.score(late)
    recorder.flush()
    assert len(log) == 5 and recorder.status()["observed"] == 5


def test_a_full_queue_drops_and_counts_instead_of_waiting(scorers, tmp_path):
    fs, champion, _, df = scorers
    served = _engine(fs, champion, tmp_path, "served")
    log = DecisionLog(f"sqlite:///{tmp_path / 'decisions.db'}")
    recorder = DecisionRecorder(log, served, "v1", DecisionLogConfig(queue_max=4))
    checkout = Checkout(RecordingEngine(served, recorder), "v1", GUARD)
    for req in _requests(df, 10):
        checkout.score(req)
    assert recorder.status()["dropped"] == 6
    assert recorder.flush() == 4 and len(log) == 4


def test_a_database_outage_keeps_the_rows_for_the_next_round(scorers, tmp_path):
    fs, champion, _, df = scorers
    served = _engine(fs, champion, tmp_path, "served")
    down = DecisionLog("postgresql+psycopg://shopml:secret@127.0.0.1:1/none")
    recorder = DecisionRecorder(down, served, "v1")
    checkout = Checkout(RecordingEngine(served, recorder), "v1", GUARD)
    for req in _requests(df, 20):
        checkout.score(req)
    assert recorder.flush() == 0
    assert recorder.status()["queued"] == 20 and recorder.status()["dropped"] == 0
    recorder.log = DecisionLog(f"sqlite:///{tmp_path / 'decisions.db'}")  # back up
    assert recorder.flush() == 20 and len(recorder.log) == 20
    # down for longer than the queue holds: the oldest waiting rows go, counted
    small = DecisionRecorder(down, served, "v1", DecisionLogConfig(queue_max=8))
    checkout = Checkout(RecordingEngine(served, small), "v1", GUARD)
    reqs = _requests(df, 36)[20:]
    for req in reqs[:8]:
        checkout.score(req)
    assert small.flush() == 0 and small.status()["queued"] == 8
    for req in reqs[8:]:
        checkout.score(req)
    assert small.flush() == 0
    assert small.status()["dropped"] == 8
    small.log = DecisionLog(f"sqlite:///{tmp_path / 'later.db'}")
    assert small.flush() == 8
    kept = set(small.log.read()["transaction_id"])
    assert kept == {r.transaction_id for r in reqs[8:]}  # the newest were kept


def test_the_background_thread_writes_and_a_sample_rate_keeps_a_stable_share(scorers, tmp_path):
    fs, champion, _, df = scorers
    served = _engine(fs, champion, tmp_path, "served")
    log = DecisionLog(f"sqlite:///{tmp_path / 'decisions.db'}")
    config = DecisionLogConfig(sample_rate=0.5, flush_ms=10)
    recorder = DecisionRecorder(log, served, "v1", config).start()
    checkout = Checkout(RecordingEngine(served, recorder), "v1", GUARD)
    reqs = _requests(df, 400)
    for req in reqs:
        checkout.score(req)
    deadline = time.monotonic() + 10
    while recorder.status()["queued"] and time.monotonic() < deadline:
        time.sleep(0.02)
    recorder.close()
    kept = set(log.read()["transaction_id"])
    assert 140 <= len(kept) <= 260, len(kept)  # about half
    again = DecisionRecorder(log, served, "v1", config)  # the same ids are sampled again
    for req in reqs[:50]:
        again.observe(req.transaction_id, 0, 1.0, "c", "k", "t", "EUR", None)
    assert {item[0] for item in again._queue} == kept & {r.transaction_id for r in reqs[:50]}


def test_a_shadow_on_other_features_is_refused(scorers, tmp_path):
    fs, champion, _, df = scorers
    other = FeatureSet(windows=(HOUR, DAY, 30 * DAY))
    X = compute_batch(df, other).to_numpy()
    y = df["is_fraud"].to_numpy()
    sc = FraudScorer(
        list(other.names), feature_version=other.version, num_boost_round=5, num_threads=1
    ).fit(X, y)
    served = _engine(fs, champion, tmp_path, "served")
    shadow = ShadowModel(FraudEngine(sc, other), "v9")
    with pytest.raises(ConfigError, match="same features"):
        DecisionRecorder(DecisionLog(f"sqlite:///{tmp_path / 'd.db'}"), served, "v1", shadow=shadow)


# ------------------------------------------------------------------------ the decision log


def _decision(tx: str, **kw) -> LoggedDecision:
    t = datetime(2026, 1, 5, 12, 0)
    base = dict(
        transaction_id=tx,
        payment_time=t,
        served_at=t + timedelta(milliseconds=3),
        amount=42.5,
        model_version="shopml-fraud/1",
        probability=0.12,
        decision="approve",
        decided_by="model",
        degraded=False,
        label_delay_s=7 * 86400,
    )
    return LoggedDecision(**(base | kw))


def _log_semantics(log: DecisionLog) -> None:
    assert (
        log.write(
            [
                _decision("a"),
                _decision(
                    "b", shadow_version="v2", shadow_probability=0.5, shadow_decision="review"
                ),
            ]
        )
        == 2
    )
    # a batch is one transaction: a bad row (no decision) and nothing of it is written
    bad = [_decision("c"), _decision("d", decision=None)]
    with pytest.raises(DecisionLogError, match="decision log"):
        log.write(bad)
    assert len(log) == 2
    # an id already logged keeps its first row; repeats in a batch too
    assert log.write([_decision("a", probability=0.99), _decision("c"), _decision("c")]) == 1
    df = log.read().set_index("transaction_id")
    assert len(df) == 3 and df.loc["a", "probability"] == 0.12
    assert df.loc["b", "shadow_decision"] == "review" and df.loc["b", "shadow_probability"] == 0.5
    assert np.isnan(df.loc["a", "shadow_probability"]) and df.loc["a", "shadow_version"] is None
    assert df["payment_time"].dtype == "datetime64[ns]" and not df["degraded"].any()
    since = log.read(since=datetime(2026, 1, 6))
    assert since.empty


def test_decision_log_semantics_sqlite(tmp_path):
    _log_semantics(DecisionLog(f"sqlite:///{tmp_path / 'fraud' / 'decisions.db'}"))


def test_decision_log_semantics_postgresql(postgres_url):  # noqa: F811
    log = DecisionLog(postgres_url)
    with log.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS fraud_decisions"))
    _log_semantics(log)
    log.dispose()


def test_decision_log_errors_hide_the_password():
    log = DecisionLog("postgresql+psycopg://shopml:secret@127.0.0.1:1/none")
    with pytest.raises(DecisionLogError) as err:
        log.write([_decision("a")])
    assert "secret" not in str(err.value) and "decision log" in str(err.value)
