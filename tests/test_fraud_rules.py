"""Fraud reason codes and rules without retraining: sentences per feature family, only the
features that raise the score, rules files (validation, versions, per-currency limits, review
rules), the engine's decision naming its rule, the service's reload (token, SIGHUP, history)
and the training metrics counting the rules."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from features.fraud.batch import compute_batch
from features.fraud.definition import DAY, HOUR, FeatureSet
from features.fraud.rules_store import RulesStore
from models.fraud import FraudEngine, FraudScorer, RuleSet, describe
from models.fraud.reasons import family
from shopml.errors import ConfigError

pytest_plugins = ["fraud_helpers"]

RULES = """
version = "test-1"
[block]
cards = ["stolen"]
[amount_limits]
EUR = { review = 500.0, decline = 1000.0 }
[[review]]
name = "night_newcomer"
text = "A payment at night by a customer seen for the first time."
when = [
  { feature = "is_night", op = "==", value = 1 },
  { feature = "customer_count_30d", op = "<=", value = 1 },
]
"""


@pytest.fixture(scope="module")
def parts():
    from fraud_helpers import synthetic_payments

    fs = FeatureSet()
    df = synthetic_payments(3000, seed=4, fraud_rate=0.08)
    X = compute_batch(df, fs).to_numpy()
    y = df["is_fraud"].to_numpy()
    half = len(df) // 2
    sc = FraudScorer(
        list(fs.names), feature_version=fs.version, num_boost_round=20, num_threads=1
    ).fit(X[:half], y[:half], X[half:], y[half:])
    return fs, sc, df, X


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
    return p | kw


def _rules(tmp_path: Path, text: str = RULES, name: str = "rules.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------- reasons
@pytest.mark.parametrize(
    "fs", [FeatureSet(), FeatureSet(windows=(1800, 2 * HOUR, DAY), usual_window=DAY)]
)
def test_every_feature_of_the_definition_reads_as_a_sentence(fs):
    for name in fs.names:
        assert family(name) is not None, name
        for value in (0.0, 1.0, 2.5, 7200.0, math.nan):
            text = describe(name, value, fs)
            assert (text[0].isupper() or text[0].isdigit()) and text.endswith("."), (name, text)
            assert "_" not in text and "nan" not in text and " = " not in text, (name, text)


def test_delayed_features_are_their_own_family_not_an_entity():
    text = describe("customer_delayed_count_1d", 0)
    assert text == (
        "0 payments by this customer in the day that ended 7 days ago (old enough to carry labels)."
    )
    assert family("terminal_fraud_rate_7d") == "fraud_rate"
    assert describe("terminal_fraud_rate_7d", 0.25) == (
        "25% of the payments at this terminal in the 7 days that ended 7 days ago were confirmed"
        " frauds."
    )
    assert describe("customer_count_1h", 1) == "1 payment by this customer in the last hour."


def test_model_reasons_only_raise_the_score_and_carry_feature_value_contribution(parts):
    fs, sc, _, X = parts
    for x in np.ascontiguousarray(X[:400]):
        contrib = sc.contributions(x)[:-1]
        reasons = sc.explain(x, top=3, fs=fs)
        assert len(reasons) == min(3, sum(c > 0 for c in contrib))
        for r in reasons:
            d = r.to_dict()
            assert d["kind"] == "model" and d["feature"] == r.code and d["contribution"] > 0
            j = fs.index(r.feature)
            assert r.contribution == pytest.approx(contrib[j])
            assert r.value == x[j] or (math.isnan(r.value) and math.isnan(x[j]))
    # a payment the model finds safe on every feature gets no model reason at all
    rng = np.random.default_rng(0)
    amount = rng.gamma(2.0, 50.0, 4000)
    one = FraudScorer(["amount"], num_boost_round=10, num_threads=1, min_data_in_leaf=20)
    one.fit(amount[:, None], rng.random(4000) < amount / amount.max())
    assert one.contributions(np.array([1.0]))[0] < 0
    assert one.explain(np.array([1.0])) == []


# ------------------------------------------------------------------------------- rules files
def test_rules_version_is_the_declared_version_and_a_hash_of_the_rules(tmp_path):
    a = RuleSet.load(_rules(tmp_path))
    reformatted = RuleSet.load(_rules(tmp_path, "# a comment\n" + RULES.replace(" = ", "=")))
    assert a.version.startswith("test-1@") and a.version == reformatted.version
    changed = RuleSet.load(_rules(tmp_path, RULES.replace('"stolen"', '"stolen", "lost"')))
    assert changed.version.startswith("test-1@") and changed.version != a.version
    assert RuleSet().version == "none"
    assert RuleSet.parse({"block": {"cards": ["x"]}}).version.startswith("rules@")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[block]\ncard = ['x']\n", "block.card"),
        ("[amount_limits]\nEUR = { review = -5.0 }\n", "amount_limits.EUR.review"),
        ("[amount_limits]\nXYZ = { review = 5.0 }\n", "amount_limits.XYZ"),
        ("[amount_limits]\nEUR = { review = 50.0, decline = 5.0 }\n", "amount_limits.EUR"),
        ("[[review]]\nname = 'r'\ntext = 'Some text.'\nwhen = []\n", "review.0.when"),
        ("[[review]]\nname = 'blocked_card'\ntext = 'Some text.'\n", "review.0.name"),
        ("version = 'a b'\n", "version"),
        ("[block\n", "not valid TOML"),
    ],
)
def test_a_bad_rules_file_names_the_field(tmp_path, text, field):
    with pytest.raises(ConfigError, match=f"rules.toml: {field}"):
        RuleSet.load(_rules(tmp_path, text))


def test_a_review_rule_on_an_unknown_feature_is_named(parts, tmp_path):
    fs, sc, _, _ = parts
    bad = RuleSet.load(_rules(tmp_path, RULES.replace("customer_count_30d", "custmer_count")))
    engine = FraudEngine(sc, fs)
    with pytest.raises(ConfigError, match=r"review\.0\.when\.1\.feature: unknown feature"):
        engine.set_rules(bad)
    assert engine.rules.version == "none"


# ------------------------------------------------------------------------------- decisions
def test_a_rule_decision_names_the_rule(parts, tmp_path):
    fs, sc, _, _ = parts
    engine = FraudEngine(sc, fs, rules=RuleSet.load(_rules(tmp_path)))
    d = engine.score(_payment(card_id="stolen"))
    assert d.decision == "decline" and d.decided_by == "rule:blocked_card"
    assert d.reasons[0].code == "rule:blocked_card" and d.reasons[0].kind == "rule"
    assert d.reasons[0].text == "The card is on the block list."
    assert d.rules_version == engine.rules.version
    over = engine.score(_payment(transaction_id="p2", amount=1500.0))
    assert (over.decision, over.decided_by) == ("decline", "rule:amount_decline")
    assert (
        over.reasons[0].text
        == "The amount 1,500.00 EUR is above the decline limit of 1,000.00 EUR."
    )
    assert over.reasons[0].feature == "amount" and over.reasons[0].value == 1500.0
    review = engine.score(_payment(transaction_id="p3", amount=600.0))
    assert (review.decision, review.decided_by) == ("review", "rule:amount_review")
    # limits are per currency: no limit is declared for USD
    usd = engine.score(_payment(transaction_id="p4", amount=1500.0, currency="USD"))
    assert usd.decided_by == "model" and usd.decision == engine.policy.decide(usd.probability)


def test_a_review_rule_on_features_sets_the_decision(parts, tmp_path):
    fs, sc, _, _ = parts
    engine = FraudEngine(sc, fs, rules=RuleSet.load(_rules(tmp_path)))
    night = engine.score(_payment(customer_id="new", card_id="kn", timestamp="2024-03-02T02:00"))
    assert night.decided_by == "rule:night_newcomer" and night.decision in ("review", "decline")
    assert night.reasons[0].text == "A payment at night by a customer seen for the first time."
    day = engine.score(_payment(customer_id="new2", card_id="kd", timestamp="2024-03-02T12:00"))
    assert day.decided_by == "model"


def test_vectorised_rules_give_the_decisions_of_the_single_payment_path(parts, tmp_path):
    fs, sc, df, X = parts
    text = RULES.replace("review = 500.0, decline = 1000.0", "review = 60.0, decline = 150.0")
    engine = FraudEngine(sc, fs, rules=RuleSet.load(_rules(tmp_path, text)), explain="never")
    df = df.copy()
    df.loc[df.index[::50], "card_id"] = "stolen"
    df.loc[df.index[::7], "currency"] = "USD"
    X = compute_batch(df, fs).to_numpy()
    p = sc.predict_proba(X)
    decisions, by = engine.decide_many(p, X, df)
    for i in range(0, len(df), 13):
        row = df.iloc[i]
        hits = engine.rules.check(
            row.customer_id, row.card_id, row.terminal_id, row.amount, row.currency, X[i], p[i]
        )
        want, rule = engine.rules.decide(engine.policy.decide(p[i], row.amount), hits)
        assert decisions[i] == want
        assert by[i] == ("model" if rule is None else f"rule:{rule.name}")
    assert {"model", "rule:blocked_card", "rule:amount_decline", "rule:amount_review"} <= set(by)


def test_saved_engines_keep_their_rules_and_read_the_old_rule_layer(parts, tmp_path):
    fs, sc, _, _ = parts
    engine = FraudEngine(sc, fs, rules=RuleSet.load(_rules(tmp_path)))
    path = engine.save(tmp_path / "engine")
    assert FraudEngine.load(path).rules.version == engine.rules.version
    meta = json.loads((path / "engine.json").read_text())
    meta["rules"] = {"blocked_cards": ["old"], "blocked_terminals": [], "blocked_customers": []}
    meta["rules"] |= {"max_amount": 900.0, "review_amount": None}
    (path / "engine.json").write_text(json.dumps(meta))
    old = FraudEngine.load(path)
    assert old.score(_payment(card_id="old")).decided_by == "rule:blocked_card"
    assert old.score(_payment(amount=950.0, currency="SEK")).decided_by == "rule:amount_decline"


# ------------------------------------------------------------------------------- the service
BLOCK_K9 = RULES.replace('cards = ["stolen"]', 'cards = ["stolen", "k9"]')
TOKEN = "s3cret-token"


@pytest.fixture
def served(parts, tmp_path):
    """The fraud service's handlers on a real engine, rules file and SQLite rules history."""
    from serving.checkout import Checkout
    from serving.fraud_rules import RulesControl
    from serving.fraud_service import FraudService

    fs, sc, _, _ = parts
    engine = FraudEngine(sc, fs)
    path = _rules(tmp_path)
    history = RulesStore(f"sqlite:///{tmp_path / 'fraud.db'}")
    service = object.__new__(FraudService.inner)  # the class BentoML wraps, without its start-up
    service.checkout = Checkout(engine, "shopml-fraud/1")
    service.rules = RulesControl(engine, path, TOKEN, history)
    return service, path, history


def _score(service, **kw) -> dict:
    """Score through the service; its time guard takes recent payments, not those of 2024.

    Yesterday at noon: inside the guard's window (the label delay behind the clock) and never at
    night, so the night rule does not fire when the suite runs between midnight and six.
    """
    from serving.fraud_schemas import PaymentRequest

    noon = datetime.now(UTC).replace(tzinfo=None, hour=12, minute=0, second=0, microsecond=0)
    when = (noon - timedelta(days=1)).isoformat(timespec="seconds")
    return service.checkout.score(PaymentRequest(**_payment(timestamp=when, **kw)))


def _reload(service, authorization: str | None = None, fast: bool = True) -> tuple[int, dict]:
    """POST /rules/reload through the fast route or BentoML's API method of the service."""
    from types import SimpleNamespace

    from serving.endpoints import FastRoutes
    from serving.fraud_schemas import RulesReloadRequest
    from serving.fraud_service import FraudService

    headers = {} if authorization is None else {"authorization": authorization}
    if not fast:
        ctx = SimpleNamespace(
            request=SimpleNamespace(headers=headers), response=SimpleNamespace(status_code=200)
        )
        api = FraudService.apis["reload_rules"].func
        answer = asyncio.run(api(service, RulesReloadRequest(), ctx=ctx))
        # BentoML answers with the context's status (serving.endpoints sets it to the error's)
        return ctx.response.status_code, json.loads(answer.body)

    class Routes(FastRoutes):
        routes = {}

    Routes.serve(service)
    sent = []

    async def call():
        async def receive():
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message):
            sent.append(message)

        raw = [(k.encode(), v.encode()) for k, v in headers.items()]
        scope = {"type": "http", "method": "POST", "path": "/rules/reload", "headers": raw}
        await Routes(None)(scope, receive, send)

    asyncio.run(call())
    return sent[0]["status"], json.loads(sent[1]["body"])


@pytest.mark.parametrize("fast", [True, False])
def test_reload_changes_decisions_without_restart_and_bumps_rules_version(served, fast):
    service, path, history = served
    before = _score(service, card_id="k9")
    assert before["decided_by"] == "model" and before["rules_version"].startswith("test-1@")
    path.write_text(BLOCK_K9)
    status, body = _reload(service, f"Bearer {TOKEN}", fast)
    assert status == 200 and body["changed"] and body["previous_version"] == before["rules_version"]
    after = _score(service, transaction_id="p2", card_id="k9")
    assert after["decision"] == "decline" and after["decided_by"] == "rule:blocked_card"
    assert after["rules_version"] == body["rules_version"] != before["rules_version"]
    assert after["reasons"][0]["code"] == "rule:blocked_card"
    kept = {v.version: v for v in history.versions()}
    assert set(kept) == {before["rules_version"], after["rules_version"]}
    assert kept[after["rules_version"]].content["block"]["cards"] == ["k9", "stolen"]
    again = _reload(service, f"Bearer {TOKEN}", fast)[1]
    assert again["changed"] is False and history.versions()[0].loads == 2


def test_a_bad_rules_file_is_refused_with_the_field_and_keeps_the_old_rules(served):
    service, path, history = served
    version = service.rules.version
    path.write_text(RULES.replace("review = 500.0", "review = -500.0"))
    status, body = _reload(service, f"Bearer {TOKEN}")
    assert status == 422 and "amount_limits.EUR.review" in body["error"]
    path.write_text("[block\n")
    status, body = _reload(service, f"Bearer {TOKEN}", fast=False)
    assert status == 422 and "not valid TOML" in body["error"]
    d = _score(service, card_id="stolen")
    assert d["rules_version"] == version and d["decided_by"] == "rule:blocked_card"
    assert [v.version for v in history.versions()] == [version]


@pytest.mark.parametrize("fast", [True, False])
def test_an_unauthorised_reload_is_refused(served, fast):
    service, path, _ = served
    version = service.rules.version
    path.write_text(BLOCK_K9)
    for header in (None, "Bearer wrong", TOKEN, f"Basic {TOKEN}"):
        status, body = _reload(service, header, fast)
        assert status == 401 and "Authorization: Bearer" in body["error"]
    assert service.rules.version == version
    service.rules._token = None  # a server started without SHOPML_RULES_TOKEN
    status, body = _reload(service, f"Bearer {TOKEN}", fast)
    assert status == 403 and "SHOPML_RULES_TOKEN" in body["error"]
    assert service.rules.version == version


def test_sighup_reloads_the_rules(served):
    service, path, _ = served
    version = service.rules.version
    previous = signal.getsignal(signal.SIGHUP)
    try:
        assert service.rules.on_sighup()
        path.write_text(BLOCK_K9)
        os.kill(os.getpid(), signal.SIGHUP)
        deadline = time.monotonic() + 10
        while service.rules.version == version and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert service.rules.version != version
    assert _score(service, card_id="k9")["decided_by"] == "rule:blocked_card"


def test_decision_metrics_carry_the_rules_version(served):
    import prometheus_client

    service, _, _ = served
    d = _score(service, card_id="stolen", transaction_id="metrics-1")
    labels = {"decision": "decline", "model_version": "shopml-fraud/1"}
    labels["rules_version"] = d["rules_version"]
    get = prometheus_client.REGISTRY.get_sample_value
    assert get("shopml_fraud_decisions_total", labels) >= 1
    rule = {"rule": "blocked_card", "decision": "decline", "rules_version": d["rules_version"]}
    assert get("shopml_fraud_rule_decisions_total", rule) >= 1
    assert get("shopml_fraud_rules_info", {"rules_version": d["rules_version"]}) == 1


def test_serve_checks_the_rules_file_before_starting(tmp_path, tmp_shopml_home):
    import subprocess
    import sys

    bad = _rules(tmp_path, "[block]\ncard = 1\n")
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "serve", "fraud", "--rules", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "rules.toml: block.card: Extra inputs are not permitted" in out.stderr


# ------------------------------------------------------------------------------- training
def test_job_config_points_block_lists_to_the_rules_file(tmp_path):
    from shopml.config import load_config
    from training.fraud_job import FraudJobConfig

    bad = tmp_path / "job.toml"
    bad.write_text("[policy]\nblocked_cards = ['x']\n")
    with pytest.raises(ConfigError, match="blocked_cards: .*rules file.*policy.rules_file"):
        load_config(bad, FraudJobConfig)
    bad.write_text("[policy]\nmax_amount = 10.0\n")
    with pytest.raises(ConfigError, match="max_amount"):
        load_config(bad, FraudJobConfig)
    broken = _rules(tmp_path, "[block]\ncard = 1\n")
    bad.write_text(f"[policy]\nrules_file = '{broken}'\n")
    with pytest.raises(ConfigError, match="block.card"):
        load_config(bad, FraudJobConfig).policy.rules()
    default = load_config(
        Path(__file__).parents[1] / "experiments/configs/fraud.toml", FraudJobConfig
    )
    assert default.policy.rules().version.startswith("2026-12-01@")  # the shipped rules file


def test_training_metrics_count_the_rules(tmp_shopml_home, tmp_path):
    import mlflow

    from features.contract import CURRENCIES
    from training.fraud_job import FraudJobConfig, train

    limits = ", ".join(f"{c} = {{ review = 0.01 }}" for c in CURRENCIES)
    path = _rules(tmp_path, f"version = 'review-all'\namount_limits = {{ {limits} }}\n")
    cfg = FraudJobConfig()
    cfg.source.scale = "tiny"
    cfg.model.num_boost_round = 20
    cfg.register_model = False
    cfg.policy.rules_file = str(path)
    result = train(cfg)
    m = result.metrics
    assert m["rule_decided_rate"] > 0.9  # every payment above 0.01 is at least reviewed
    assert m["review_rate"] + m["decline_rate"] > 0.9 and m["review_rate"] > 0.5
    run = mlflow.get_run(result.run_id)
    assert run.data.tags["fraud.rules_version"] == RuleSet.load(path).version
