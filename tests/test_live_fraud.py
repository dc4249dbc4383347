"""Live fraud performance from the decision log and the late labels: maturity, the metrics per
version and week against hand-computed values, the served model and the shadow side by side on
the same payments, the gate's live checks, `shopml compare --live fraud`, `promote --live` and
the monitor's live table."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from experiment_runs import log_run, run_cli

from features.fraud.decision_log import DecisionLog, LoggedDecision
from features.fraud.labels import Label, LabelStore
from models.family import family
from shopml.errors import ConfigError
from shopml.settings import load_settings
from training.families import family_spec
from training.live_fraud import (
    compare_live,
    decision_metrics,
    fraud_live_tables,
    live_gate_checks,
    live_performance,
    matured,
)
from training.live_performance import PROVIDERS, MonitorContext

pytest_plugins = ["mlflow_server"]

DELAY = 7 * 86400
NOW = datetime(2026, 3, 2, 12, 0)  # a Monday


def _frame(rows: list[dict]) -> pd.DataFrame:
    base = {
        "served_at": NOW,
        "decided_by": "model",
        "degraded": False,
        "label_delay_s": DELAY,
        "shadow_version": None,
        "shadow_probability": np.nan,
        "shadow_decision": None,
    }
    df = pd.DataFrame([base | r for r in rows])
    df["payment_time"] = pd.to_datetime(df["payment_time"]).astype("datetime64[ns]")
    return df


def _labels(rows: list[tuple[str, bool, datetime]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["transaction_id", "is_fraud", "label_time"])
    df["label_time"] = pd.to_datetime(df["label_time"]).astype("datetime64[ns]")
    return df


def test_metrics_per_version_and_week_match_hand_computed_values():
    week1, week2 = datetime(2026, 2, 2, 10), datetime(2026, 2, 10, 10)  # Mon 2 Feb, Tue 10 Feb
    rows = [
        # week 1, v1: two frauds (one declined, one approved), one genuine reviewed, one genuine
        dict(
            transaction_id="a",
            payment_time=week1,
            amount=100.0,
            model_version="v1",
            probability=0.95,
            decision="decline",
        ),
        dict(
            transaction_id="b",
            payment_time=week1,
            amount=40.0,
            model_version="v1",
            probability=0.10,
            decision="approve",
        ),
        dict(
            transaction_id="c",
            payment_time=week1,
            amount=10.0,
            model_version="v1",
            probability=0.50,
            decision="review",
        ),
        dict(
            transaction_id="d",
            payment_time=week1,
            amount=5.0,
            model_version="v1",
            probability=0.05,
            decision="approve",
        ),
        # week 2, v2: one fraud reviewed, one genuine declined
        dict(
            transaction_id="e",
            payment_time=week2,
            amount=70.0,
            model_version="v2",
            probability=0.60,
            decision="review",
        ),
        dict(
            transaction_id="f",
            payment_time=week2,
            amount=30.0,
            model_version="v2",
            probability=0.92,
            decision="decline",
        ),
        # not matured: paid 3 days before now
        dict(
            transaction_id="g",
            payment_time=NOW - timedelta(days=3),
            amount=999.0,
            model_version="v2",
            probability=0.99,
            decision="decline",
        ),
    ]
    labels = _labels(
        [
            ("a", True, week1 + timedelta(days=2)),
            ("b", True, week1 + timedelta(days=5)),
            ("c", False, week1 + timedelta(days=1)),  # cleared
            ("e", True, week2 + timedelta(days=6)),
            ("f", True, NOW + timedelta(days=1)),  # known only after now: genuine by now
            ("g", True, NOW - timedelta(days=1)),
        ]
    )
    frame = matured(_frame(rows), labels, NOW)
    assert sorted(frame["transaction_id"]) == list("abcdef")
    assert list(frame.sort_values("transaction_id")["is_fraud"]) == [
        True,
        True,
        False,
        False,
        True,
        False,
    ]
    perf = live_performance(frame).set_index(["model_version", "week"])
    v1 = perf.loc[("v1", "2026-02-02")]
    assert v1["role"] == "served" and v1["payments"] == 4 and v1["frauds"] == 2
    assert v1["decline_precision"] == 1.0 and v1["decline_recall"] == 0.5
    assert v1["review_precision"] == 0.0 and v1["review_recall"] == 0.0
    assert v1["flagged_precision"] == 0.5 and v1["flagged_recall"] == 0.5
    assert v1["review_rate"] == 0.25 and v1["decline_rate"] == 0.25
    assert v1["fraud_amount"] == 140.0 and v1["fraud_amount_declined"] == 100.0
    assert v1["fraud_amount_approved"] == 40.0 and v1["fraud_amount_reviewed"] == 0.0
    # AP by hand: ranked a(F) .95, c .5, b(F) .1, d .05 -> (1/1 + 2/3) / 2
    assert v1["average_precision"] == pytest.approx((1 + 2 / 3) / 2)
    v2 = perf.loc[("v2", "2026-02-09")]
    assert v2["payments"] == 2 and v2["frauds"] == 1 and v2["review_recall"] == 1.0
    assert v2["decline_precision"] == 0.0 and v2["fraud_amount_reviewed"] == 70.0
    assert np.isnan(decision_metrics([], [], [], [])["average_precision"])


def _shadowed(n: int, shadow_better: bool, seed: int = 0) -> pd.DataFrame:
    """`n` matured payments of served v1 with shadow v2; one of them ranks frauds better."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.1
    sharp = np.clip(np.where(y, 0.7, 0.05) + rng.normal(0, 0.05, n), 0, 1)
    blunt = np.clip(np.where(y, 0.35, 0.15) + rng.normal(0, 0.2, n), 0, 1)
    served, shadow = (blunt, sharp) if shadow_better else (sharp, blunt)

    def decide(p):
        return np.where(p >= 0.9, "decline", np.where(p >= 0.5, "review", "approve"))

    t = [NOW - timedelta(days=30, minutes=i) for i in range(n)]
    frame = _frame(
        [
            dict(
                transaction_id=f"t{i}",
                payment_time=t[i],
                amount=20.0,
                model_version="v1",
                probability=served[i],
                decision=decide(served)[i],
                shadow_version="v2",
                shadow_probability=shadow[i],
                shadow_decision=decide(shadow)[i],
            )
            for i in range(n)
        ]
    )
    labels = _labels([(f"t{i}", True, NOW - timedelta(days=20)) for i in np.flatnonzero(y)])
    return matured(frame, labels, NOW)


def test_compare_live_puts_both_on_the_same_payments_and_the_gate_reads_it():
    spec = family_spec("fraud")
    frame = _shadowed(800, shadow_better=True)
    # payments the shadow did not score stay out of the comparison
    extra = frame.iloc[:50].copy()
    extra["transaction_id"] = "x" + extra["transaction_id"]
    extra[["shadow_version", "shadow_probability", "shadow_decision"]] = [None, np.nan, None]
    c = compare_live(pd.concat([frame, extra], ignore_index=True))
    assert (c.served_version, c.shadow_version, c.payments) == ("v1", "v2", 800)
    assert c.shadow["average_precision"] > c.served["average_precision"]
    assert c.served["frauds"] == c.shadow["frauds"] == frame["is_fraud"].sum()
    checks = {ch.name: ch for ch in live_gate_checks(spec, c)}
    assert checks["live primary average_precision"].passed
    assert checks["live evidence test_frauds"].passed
    worse = compare_live(_shadowed(800, shadow_better=False))
    checks = {ch.name: ch for ch in live_gate_checks(spec, worse)}
    assert not checks["live primary average_precision"].passed
    few = compare_live(_shadowed(60, shadow_better=True))
    checks = {ch.name: ch for ch in live_gate_checks(spec, few)}
    assert not checks["live evidence test_frauds"].passed
    assert "too little to decide" in checks["live evidence test_frauds"].detail
    with pytest.raises(ConfigError, match="no matured payments scored in shadow"):
        compare_live(frame, served_version="v7")


def _fill(settings, served: str, shadow: str, shadow_better: bool) -> None:
    """The settings' fraud database: the decision log and labels of `_shadowed` payments."""
    frame = _shadowed(600, shadow_better)
    log = DecisionLog.open(settings)
    cols = [c for c in LoggedDecision.__dataclass_fields__ if c in frame]
    rows = frame[cols].assign(model_version=served, shadow_version=shadow)
    rows = rows.assign(shadow_probability=rows["shadow_probability"].astype(float))
    log.write(
        [
            LoggedDecision(
                **{
                    k: (v.to_pydatetime() if isinstance(v, pd.Timestamp) else v)
                    for k, v in r.items()
                }
            )
            for r in rows.to_dict("records")
        ]
    )
    frauds = frame.loc[frame["is_fraud"], "transaction_id"]
    LabelStore.open(settings).write(
        [Label(t, True, NOW - timedelta(days=20)) for t in frauds], source="test"
    )


def test_promote_live_and_compare_live_read_the_decision_log(mlflow_env, monkeypatch, capsys):
    good = {
        "average_precision": 0.70,
        "calibration_error": 0.02,
        "review_rate": 0.01,
        "test_frauds": 40,
    }
    log_run("fraud", good)
    better = log_run("fraud", {**good, "average_precision": 0.75})
    name = family("fraud").registered_model
    settings = load_settings()
    code, out = run_cli(["promote", "fraud", better, "--live", "--dry-run"], monkeypatch, capsys)
    assert code == 3 and "[FAIL] live evidence: no matured payments" in out, out
    _fill(settings, f"{name}/1", f"{name}/2", shadow_better=False)
    code, out = run_cli(["compare", "--live", "fraud"], monkeypatch, capsys)
    assert code == 0, out
    assert "600 matured payments" in out and "would NOT pass" in out
    code, out = run_cli(["promote", "fraud", better, "--live"], monkeypatch, capsys)
    assert code == 3 and "[FAIL] live primary average_precision" in out, out
    assert "[pass] primary average_precision" in out  # offline it would have passed
    code, out = run_cli(["compare", "--live", "recommender"], monkeypatch, capsys)
    assert code == 2 and "fraud service's shadow" in out
    log = DecisionLog.open(settings)
    with log.engine.begin() as conn:  # the same payments, now with the shadow ranking better
        conn.execute(sa.text("DELETE FROM fraud_decisions"))
    _fill(settings, f"{name}/1", f"{name}/2", shadow_better=True)
    code, out = run_cli(["promote", "fraud", better, "--live", "--dry-run"], monkeypatch, capsys)
    assert "[pass] live primary average_precision" in out, out
    assert "[pass] live evidence test_frauds" in out, out


def test_the_monitor_shows_live_weeks_beside_the_offline_test(tmp_shopml_home):
    assert fraud_live_tables in PROVIDERS["fraud"]
    settings = load_settings()
    ctx = MonitorContext("fraud", settings, "1", "run", {"average_precision": 0.7})
    empty = fraud_live_tables(ctx)
    assert empty[0].rows == [] and "no matured decisions yet" in empty[0].note
    _fill(settings, "shopml-fraud/1", "shopml-fraud/2", shadow_better=True)
    tables = fraud_live_tables(ctx)
    live, side = tables
    assert live.rows[0][:3] == ["offline test", "shopml-fraud/1", "test period"]
    assert live.rows[0][live.columns.index("AP")] == 0.7
    roles = {(r[0], r[1]) for r in live.rows[1:]}
    assert roles == {("served", "shopml-fraud/1"), ("shadow", "shopml-fraud/2")}
    assert "shadow shopml-fraud/2 vs served shopml-fraud/1" in side.title
