"""Fraud scorer, baseline, calibration, reasons, policy, rules, engine, labels and metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.fraud.batch import compute_batch
from features.fraud.definition import FeatureSet
from features.fraud.labels import LabelStore, apply_labels
from features.fraud.state_store import RedisStateStore
from models.fraud import (
    DecisionPolicy,
    FraudEngine,
    FraudScorer,
    LogisticBaseline,
    RuleSet,
    describe,
    validate_payment,
)
from shopml.errors import ConfigError, DataError
from training.fraud_metrics import (
    brier_score,
    card_precision_at_k,
    decision_costs,
    expected_calibration_error,
)

pytest_plugins = ["fraud_helpers"]


def _toy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    logit = -4.0 + 2.0 * X[:, 0] + 1.0 * X[:, 1]
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    return X, y


@pytest.fixture(scope="module")
def toy_scorer():
    X, y = _toy(6000, 0)
    Xc, yc = _toy(4000, 1)
    sc = FraudScorer(
        ["a", "b", "c", "d"],
        num_boost_round=40,
        num_threads=1,
        scale_pos_weight=20.0,
        calibration="platt",
    )
    return sc.fit(X, y, Xc, yc)


def test_calibration_improves_brier_on_held_out(toy_scorer):
    X, y = _toy(4000, 2)
    raw = 1 / (1 + np.exp(-toy_scorer.decision_function(X)))
    assert brier_score(y, toy_scorer.predict_proba(X)) < brier_score(y, raw)
    iso = FraudScorer(
        ["a", "b", "c", "d"],
        num_boost_round=40,
        num_threads=1,
        scale_pos_weight=20.0,
        calibration="isotonic",
    )
    iso.fit(*_toy(6000, 0), *_toy(4000, 1))
    assert brier_score(y, iso.predict_proba(X)) < brier_score(y, raw)


def test_fast_path_gives_the_batch_probabilities(toy_scorer):
    X, _ = _toy(50, 3)
    one = [toy_scorer.predict_one(np.ascontiguousarray(x)) for x in X]
    np.testing.assert_allclose(one, toy_scorer.predict_proba(X), rtol=1e-9)


def test_single_class_labels_are_an_error():
    X, y = _toy(500, 0)
    with pytest.raises(DataError, match="single class"):
        FraudScorer(num_boost_round=2).fit(X, np.zeros(len(X), dtype=bool))


def test_explain_gives_top_positive_contributions_in_words(toy_scorer):
    x = np.array([3.0, 2.0, 0.0, 0.0])
    reasons = toy_scorer.explain(x, top=2)
    assert reasons[0].code == reasons[0].feature == "a" and reasons[0].contribution > 0
    assert reasons[0].value == 3.0 and all(r.contribution > 0 for r in reasons)
    safe = toy_scorer.explain(np.array([-3.0, -3.0, 0.0, 0.0]), top=4)
    assert all(r.contribution > 0 and r.code not in ("a", "b") for r in safe)
    text = describe("terminal_fraud_rate_7d", 0.25)
    assert text == (
        "25% of the payments at this terminal in the 7 days that ended 7 days ago were confirmed"
        " frauds."
    )
    assert describe("customer_amount_to_usual", 5.0) == (
        "The amount is 5.0x this customer's average over the last 30 days."
    )
    assert describe("customer_count_1h", 3) == "3 payments by this customer in the last hour."


def test_logistic_baseline_predict_one_fills_missing_values():
    X, y = _toy(2000, 0)
    X[::10, 2] = np.nan
    lr = LogisticBaseline(["a", "b", "c", "d"]).fit(X, y)
    assert lr.predict_one(list(X[0])) == pytest.approx(lr.predict_proba(X[:1])[0])


def test_decision_policy_thresholds_and_cost():
    pol = DecisionPolicy(review_threshold=0.3, decline_threshold=0.8)
    assert [pol.decide(p) for p in (0.1, 0.3, 0.79, 0.8)] == [
        "approve",
        "review",
        "review",
        "decline",
    ]
    assert list(pol.decide_many(np.array([0.1, 0.5, 0.9]))) == ["approve", "review", "decline"]
    cost = DecisionPolicy(mode="cost", review_cost=5.0, decline_cost_ratio=0.3)
    assert cost.decide(0.01, 20.0) == "approve"  # expected loss 0.2 < review 5
    assert cost.decide(0.2, 100.0) == "review"  # loss 20 > review ~6
    assert cost.decide(0.95, 1000.0) == "decline"
    with pytest.raises(ConfigError):
        DecisionPolicy(review_threshold=0.9, decline_threshold=0.5)


@pytest.fixture(scope="module")
def engine_parts():
    from fraud_helpers import synthetic_payments

    fs = FeatureSet()
    df = synthetic_payments(3000, seed=4, fraud_rate=0.08)
    X = compute_batch(df, fs).to_numpy()
    y = df["is_fraud"].to_numpy()
    half = len(df) // 2
    sc = FraudScorer(
        list(fs.names), feature_version=fs.version, num_boost_round=20, num_threads=1
    ).fit(X[:half], y[:half], X[half:], y[half:])
    return fs, sc


def _payment(**kw):
    p = {
        "transaction_id": "p1",
        "timestamp": "2024-03-01T10:00:00",
        "customer_id": "c1",
        "card_id": "k1",
        "terminal_id": "m1",
        "amount": 25.0,
        "currency": "EUR",
    }
    p.update(kw)
    return p


def test_engine_scores_unseen_entities_with_reasons_and_rule_hits(engine_parts, tmp_path):
    fs, sc = engine_parts
    rules = RuleSet.parse(
        {"block": {"cards": ["stolen"]}, "amount_limits": {"EUR": {"decline": 1000.0}}}
    )
    eng = FraudEngine(sc, fs, rules=rules)
    d = eng.score(_payment())
    assert 0.0 <= d.probability <= 1.0 and d.risk_score == round(d.probability * 1000)
    codes = [r.code for r in d.reasons]
    assert {"unseen:customer", "unseen:card", "unseen:terminal"} <= set(codes)
    d2 = eng.score(_payment(transaction_id="p2", card_id="stolen", amount=5000.0))
    assert d2.decision == "decline"
    codes = [r.code for r in d2.reasons]
    assert "rule:blocked_card" in codes and "rule:amount_decline" in codes
    assert d2.decided_by == "rule:blocked_card" and codes[0] == "rule:blocked_card"
    assert "unseen:customer" not in codes  # c1 paid before
    assert all(r.text and "_" not in r.text for r in d2.reasons)
    loaded = FraudEngine.load(eng.save(tmp_path / "engine"))
    assert loaded.rules.spec.block.cards == ["stolen"]
    assert loaded.rules.version == eng.rules.version == d2.rules_version
    assert loaded.feature_set.version == fs.version


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"transaction_id": None}, "transaction_id"),
        ({"transaction_id": "  "}, "transaction_id"),
        ({"amount": -1.0}, "amount"),
        ({"amount": "ten"}, "amount"),
        ({"amount": float("nan")}, "amount"),
        ({"timestamp": "yesterday-ish"}, "timestamp"),
        ({"currency": "XYZ"}, "currency"),
        ({"customer_id": None}, "customer_id"),
    ],
)
def test_bad_payments_name_the_field(change, field):
    with pytest.raises(DataError, match=f"payment.{field}"):
        validate_payment(_payment(**change))


def test_valid_payment_conversions():
    tx, t, amount, cust, card, term = validate_payment(
        _payment(timestamp="2024-03-01T11:00:00+01:00", amount="12.5", card_id=None)
    )
    assert t == pd.Timestamp("2024-03-01 10:00").value // 1_000_000
    assert amount == 12.5 and card == cust == "c1"


class _BrokenStore:
    def online_read(self, keys):
        raise ConnectionError("redis down")

    def online_write_batch(self, items, payment=None):
        raise ConnectionError("redis down")

    def lookup_payment(self, tx):
        return None


def test_engine_degrades_when_state_store_fails(engine_parts):
    fs, sc = engine_parts
    d = FraudEngine(sc, fs, store=_BrokenStore()).score(_payment())
    assert d.degraded and "unavailable" in d.degraded_reason
    assert any(r.code == "degraded" for r in d.reasons)


def test_ingest_labels_updates_online_risk_and_stores_table(engine_parts, tmp_path):
    fs, sc = engine_parts
    labels = LabelStore(f"sqlite:///{tmp_path / 'labels.db'}")
    eng = FraudEngine(sc, fs, label_store=labels, explain="always")
    i = fs.index("terminal_known_frauds_1d")
    eng.score(_payment(transaction_id="a1", timestamp="2024-03-01T10:00:00"))
    rep = eng.ingest_labels(
        [
            {"transaction_id": "a1", "is_fraud": True, "label_time": "2024-03-01T12:00:00"},
            {"transaction_id": "zz", "is_fraud": True},
            {"transaction_id": "a2", "is_fraud": False},
        ]
    )
    assert rep.accepted == 3 and rep.unknown_transactions == ["zz"]
    eng.score(
        _payment(
            transaction_id="a3", customer_id="c9", card_id="k9", timestamp="2024-03-01T13:00:00"
        )
    )
    assert eng._x[i] == 1
    stored = labels.read()
    assert sorted(stored["transaction_id"]) == ["a1", "a2", "zz"]
    pay = pd.DataFrame(
        {
            "transaction_id": ["a1", "b"],
            "is_fraud": [False, False],
            "label_time": pd.Series([pd.NaT, pd.NaT], dtype="datetime64[ns]"),
        }
    )
    merged = apply_labels(pay, stored).payments
    assert merged["is_fraud"].tolist() == [True, False]
    with pytest.raises(DataError, match="is_fraud"):
        eng.ingest_labels([{"transaction_id": "x", "is_fraud": "maybe"}])


def test_labels_are_kept_for_training_when_the_state_store_is_down(engine_parts, tmp_path):
    fs, sc = engine_parts

    class _NoLookups(_BrokenStore):
        def lookup_payment(self, tx):
            raise ConnectionError("redis down")

    labels = LabelStore(f"sqlite:///{tmp_path / 'labels.db'}")
    eng = FraudEngine(sc, fs, store=_NoLookups(), label_store=labels)
    rep = eng.ingest_labels([{"transaction_id": "a1", "is_fraud": True}])
    assert rep.degraded and rep.accepted == 1 and rep.unknown_transactions == []
    assert labels.read()["transaction_id"].tolist() == ["a1"]


def test_card_precision_at_k_known_answer():
    day = [0, 0, 0, 0, 1, 1, 1]
    card = ["a", "a", "b", "c", "a", "b", "c"]
    y = [0, 1, 0, 0, 1, 0, 1]
    s = [0.1, 0.9, 0.8, 0.2, 0.99, 0.5, 0.4]
    # day 0: cards by max score a(0.9, fraud), b(0.8) -> top-2 precision 1/2
    # day 1: a was detected on day 0 and is left out; top-2 = b, c -> 1/2
    assert card_precision_at_k(day, card, y, s, k=2) == pytest.approx(0.5)
    assert card_precision_at_k(day, card, y, s, k=2, remove_detected=False) == pytest.approx(0.5)
    assert card_precision_at_k([0, 0], ["a", "b"], [1, 0], [0.9, 0.1], k=1) == 1.0


def test_calibration_error_and_costs():
    y = np.array([0, 0, 1, 1])
    assert expected_calibration_error(y, np.array([0.0, 0.0, 1.0, 1.0]), bins=2) == 0.0
    c = decision_costs(
        np.array([1, 0, 1]),
        np.array([100.0, 50.0, 10.0]),
        ["decline", "review", "approve"],
        review_cost=2.0,
        review_recall=1.0,
        decline_cost_ratio=0.5,
    )
    assert c["expected_cost"] == pytest.approx(10.0 + 2.0)
    assert c["baseline_cost"] == 110.0 and c["savings"] == pytest.approx(98.0)


def test_engine_on_redis_finds_the_payment_of_a_late_label(engine_parts, redis_url):
    fs, sc = engine_parts
    store = RedisStateStore(redis_url, prefix="test:engine:")
    store.clear()
    eng = FraudEngine(sc, fs, store=store)
    eng.score(_payment(transaction_id="r1", timestamp="2024-03-01T10:00:00"))
    assert store.lookup_payment("r1") == (
        "c1",
        "m1",
        pd.Timestamp("2024-03-01 10:00").value // 10**6,
    )
    rep = eng.ingest_labels(
        [{"transaction_id": "r1", "is_fraud": True, "label_time": "2024-03-01T11:00:00"}]
    )
    assert rep.unknown_transactions == []
    eng.score(
        _payment(
            transaction_id="r2", customer_id="c2", card_id="k2", timestamp="2024-03-01T12:00:00"
        )
    )
    assert eng._x[fs.index("terminal_known_frauds_1d")] == 1
