"""End to end on tiny generated data: train, register, `shopml build`, serve on loopback, call.

One module-scoped pipeline (train the three families, build the Bentos, start a real
redis-server and both services once); each test then calls the running servers and checks
the answers against the offline models, the 4xx answers to bad requests, and that stopping
Redis turns fraud answers degraded instead of failing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import redis

from features.fraud.labels import LabelStore
from serving import runner

REPO = Path(__file__).resolve().parents[1]
RULES_TOKEN = "e2e-rules-token"
STATE_TOKEN = "e2e-state-token"
REPLAY_BEHIND_S = 20 * 365 * 86400  # the time guard's window back, for the replayed tiny store
pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


# ---------------------------------------------------------------- the pipeline (once per module)
@pytest.fixture(scope="module")
def home(tmp_path_factory):
    import serving_models

    yield from serving_models.isolated_home(tmp_path_factory, "serving-e2e")


@pytest.fixture(scope="module")
def store():
    from features.generator import GeneratorConfig, generate

    return generate(GeneratorConfig(scale="tiny", seed=0))


@pytest.fixture(scope="module")
def trained(home, store):
    import serving_models

    return {
        "recommender": serving_models.train_recommender(store),
        "fraud": serving_models.train_fraud(store),
        "forecast": serving_models.train_forecast(store),
    }


def _cli(*args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture(scope="module")
def built(trained):
    out = _cli("build")
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def redis_url():
    port = runner.free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.time() + 10
    import redis

    while time.time() < deadline:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    yield {"url": url, "proc": proc}
    if proc.poll() is None:
        proc.terminate()
        proc.wait(5)


@pytest.fixture(scope="module")
def servers(built, redis_url, home):
    rec = runner.start("recommend", log_dir=home / "logs")
    fraud = None
    if runner.bento_exists("fraud", runner.load_settings()):
        rules = home / "fraud_rules.toml"  # the shipped rules, edited by the reload test
        shutil.copy(REPO / "experiments" / "configs" / "fraud_rules.toml", rules)
        env = {"SHOPML_REDIS_URL": redis_url["url"], "SHOPML_FRAUD_RULES": str(rules)}
        env["SHOPML_RULES_TOKEN"] = RULES_TOKEN
        env["SHOPML_STATE_TOKEN"] = STATE_TOKEN
        env["SHOPML_FRAUD_MAX_BEHIND_S"] = str(REPLAY_BEHIND_S)  # `payments` replay 2023
        fraud = runner.start("fraud", env=env, log_dir=home / "logs")
    try:
        rec.wait_ready(120)
        if fraud is not None:
            fraud.wait_ready(120)
        with httpx.Client(timeout=10) as client:
            yield {"recommend": rec, "fraud": fraud, "client": client}
    finally:
        rec.stop()
        if fraud is not None:
            fraud.stop()


def post(servers, service, path, payload=None, content=None):
    url = servers[service].url + path
    if content is not None:
        return servers["client"].post(
            url, content=content, headers={"content-type": "application/json"}
        )
    return servers["client"].post(url, json=payload)


# ------------------------------------------------------------------------------- build + health
def test_build_imports_each_champion_with_its_mlflow_version(built, trained, home):
    for family, result in trained.items():
        if result is None:  # family job not there yet
            continue
        assert f"MLflow shopml-{family} v{result.model_version}" in built
        model_yaml = next((home / "bentoml" / "models" / f"shopml-{family}").glob("*/model.yaml"))
        text = model_yaml.read_text()
        assert f"mlflow_version: '{result.model_version}'" in text
        assert result.run_id in text
    assert "shopml-recommend:" in built
    assert ("shopml-fraud:" in built) == (trained["fraud"] is not None)


def test_probes_openapi_and_metrics(servers):
    client = servers["client"]
    for service in ("recommend", "fraud"):
        if servers[service] is None:
            continue
        url = servers[service].url
        assert client.get(url + "/livez").status_code == 200
        assert client.get(url + "/readyz").status_code == 200
        spec = client.get(url + "/docs.json").json()
        assert servers[service].ready_seconds < 60
        paths = set(spec["paths"])
        expected = (
            {"/recommend", "/similar", "/forecast"}
            if service == "recommend"
            else {"/score", "/labels"}
        )
        assert expected <= paths
    post(servers, "recommend", "/recommend", {"customer_id": "nobody", "k": 3})
    text = client.get(servers["recommend"].url + "/metrics").text
    assert "shopml_recommendation_fallbacks_total" in text
    assert 'model_version="shopml-recommender/1"' in text


# ------------------------------------------------------------------------------ recommendations
@pytest.fixture(scope="module")
def offline_recommender(built):
    from models.recommenders import Recommender
    from registry.store import fetch

    return Recommender.load(fetch("recommender").native_dir)


def test_recommend_agrees_with_the_offline_model(servers, offline_recommender):
    from models.recommenders import RecommendFilters

    model = offline_recommender
    for customer in model.customer_ids_[:5].tolist():
        r = post(
            servers,
            "recommend",
            "/recommend",
            {"customer_id": customer, "k": 10, "only_available": False},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        expected = model.recommend_one(customer, 10, RecommendFilters(only_available=False))
        assert [i["product_id"] for i in body["items"]] == expected.product_ids.tolist()
        assert body["source"] == body["model"] and body["fallback"] is False
        assert body["model_version"] == "shopml-recommender/1"


def test_recommend_filters_apply(servers, offline_recommender):
    model = offline_recommender
    customer = model.customer_ids_[0]
    first = post(servers, "recommend", "/recommend", {"customer_id": customer, "k": 5}).json()
    excluded = [first["items"][0]["product_id"]]
    category = str(model.categories_[model.category_codes_[0]])
    r = post(
        servers,
        "recommend",
        "/recommend",
        {"customer_id": customer, "k": 5, "exclude": excluded, "categories": [category]},
    )
    items = [i["product_id"] for i in r.json()["items"]]
    assert excluded[0] not in items
    allowed = set(model.product_ids_[model.category_codes_ == model.category_codes_[0]].tolist())
    assert set(items) <= allowed


def test_unknown_customer_gets_the_fallback_list(servers):
    r = post(servers, "recommend", "/recommend", {"customer_id": "never-seen", "k": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["fallback"] is True and body["source"].startswith("popularity")
    assert len(body["items"]) == 5


def test_recent_products_fold_in_for_a_new_customer(servers, offline_recommender):
    recent = offline_recommender.product_ids_[:3].tolist()
    body = post(servers, "recommend", "/recommend", {"recent_product_ids": recent, "k": 5}).json()
    assert body["source"].endswith("fold-in") and body["fallback"] is True
    assert not set(recent) & {i["product_id"] for i in body["items"]}


def test_similar_agrees_and_unknown_product_is_a_404_naming_it(servers, offline_recommender):
    from models.recommenders import RecommendFilters

    model = offline_recommender
    product = model.product_ids_[0]
    r = post(servers, "recommend", "/similar", {"product_id": product, "k": 5})
    assert r.status_code == 200
    available = RecommendFilters(only_available=True)  # the endpoint's default
    expected = model.similar_items([product], 5, available)[0].product_ids.tolist()
    assert [i["product_id"] for i in r.json()["items"]] == expected
    r = post(servers, "recommend", "/similar", {"product_id": "no-such-product"})
    assert r.status_code == 404 and "no-such-product" in r.text


def test_similar_serves_no_discontinued_product(servers, offline_recommender):
    model = offline_recommender
    gone = set(model.product_ids_[~model.available_].tolist())
    assert gone, "the tiny store has discontinued products"
    for product in model.product_ids_[:40].tolist():
        body = post(servers, "recommend", "/similar", {"product_id": product, "k": 20}).json()
        assert not gone & {i["product_id"] for i in body["items"]}


def test_an_unknown_category_is_a_404_naming_it(servers, offline_recommender):
    customer = offline_recommender.customer_ids_[0]
    for route, payload in (
        ("/recommend", {"customer_id": customer, "categories": ["no-such-category"]}),
        ("/similar", {"product_id": offline_recommender.product_ids_[0], "categories": ["zz"]}),
    ):
        r = post(servers, "recommend", route, payload)
        assert r.status_code == 404, r.text
        assert r.json()["kind"] == "category" and r.json()["ids"] == payload["categories"]


def test_a_known_customer_s_recent_products_are_blended_in(servers, offline_recommender):
    from models.recommenders import RecommendFilters

    model = offline_recommender
    customer = model.customer_ids_[0]
    recent = model.product_ids_[-3:].tolist()
    payload = {"customer_id": customer, "k": 10, "recent_product_ids": recent}
    body = post(servers, "recommend", "/recommend", payload).json()
    assert body["source"] == f"{body['model']}:session" and body["fallback"] is False
    available = RecommendFilters(only_available=True)  # the endpoint's default
    expected = model.recommend_session(customer, recent, 10, available)
    assert [i["product_id"] for i in body["items"]] == expected.product_ids.tolist()


def test_forecast_answers_p10_p50_p90(servers, trained, store):
    import serving_models

    offline = serving_models.offline_forecast()
    products = offline["product_id"].astype(str).unique()[:2].tolist()
    r = post(servers, "recommend", "/forecast", {"product_ids": products})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == f"shopml-forecast/{trained['forecast'].model_version}"
    for fc, product in zip(body["forecasts"], products, strict=True):
        rows = offline[offline["product_id"].astype(str) == product].sort_values("date")
        assert fc["product_id"] == product
        np.testing.assert_allclose(fc["p50"], rows["p50"].to_numpy(), rtol=1e-6)
        assert all(
            lo <= mid <= hi for lo, mid, hi in zip(fc["p10"], fc["p50"], fc["p90"], strict=True)
        )
    r = post(servers, "recommend", "/forecast", {"product_ids": ["no-such-product"]})
    assert r.status_code == 404 and "no-such-product" in r.text


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"customer_id": "x", "k": 1000}, "k"),
        ({"customer_id": "x", "k": 0}, "k"),
        ({"customer_id": "x", "k": "many"}, "k"),
        ({"customer_id": "x", "exclude": "P1"}, "exclude"),
        ({"customer_id": "x", "colour": "red"}, "colour"),
    ],
)
def test_bad_recommend_requests_are_4xx_naming_the_field(servers, payload, field):
    r = post(servers, "recommend", "/recommend", payload)
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]


def test_malformed_json_is_a_400(servers):
    r = post(servers, "recommend", "/recommend", content=b'{"customer_id": "x", "k": ')
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    r = post(servers, "recommend", "/similar", content=b"not json")
    assert 400 <= r.status_code < 500


# ------------------------------------------------------------------------------------- fraud
def payments(store, n=12, prefix="e2e"):
    """The last `n` tiny-store payments as new checkout requests (known customers/terminals)."""
    rows = store.payments.sort_values("timestamp").tail(n)
    out = []
    for i, r in enumerate(rows.itertuples()):
        out.append(
            {
                "transaction_id": f"{prefix}-{i}",
                "timestamp": (r.timestamp + np.timedelta64(30, "D")).isoformat(),
                "customer_id": str(r.customer_id),
                "card_id": str(r.card_id),
                "terminal_id": str(r.terminal_id),
                "amount": float(r.amount),
                "currency": "EUR",
            }
        )
    return out


@pytest.fixture(scope="module")
def offline_engine(built):
    from features.fraud.state_store import InMemoryStateStore
    from models.fraud import FraudEngine
    from registry.store import fetch

    return FraudEngine.load(fetch("fraud").native_dir, store=InMemoryStateStore())


def test_score_agrees_with_the_offline_engine(servers, store, offline_engine):
    """The same stream of payments gives the same probabilities online and offline."""
    stream = payments(store, prefix="agree")
    for p in stream:
        r = post(servers, "fraud", "/score", p)
        assert r.status_code == 200, r.text
        body = r.json()
        expected = offline_engine.score(p)
        assert body["probability"] == pytest.approx(expected.probability, rel=1e-9, abs=1e-12)
        assert body["risk_score"] == expected.risk_score
        assert body["decision"] == expected.decision in ("approve", "review", "decline")
        assert [x["code"] for x in body["reasons"]] == [x.code for x in expected.reasons]
        assert body["degraded"] is False and body["model_version"].startswith("shopml-fraud/")
        assert 0 <= body["latency_ms"] < 1000


def test_the_payment_updates_the_online_features(servers):
    p = {
        "transaction_id": "seen-1",
        "customer_id": "brand-new",
        "terminal_id": "T-new",
        "amount": 10.0,
    }
    first = post(servers, "fraud", "/score", p).json()
    second = post(servers, "fraud", "/score", {**p, "transaction_id": "seen-2"}).json()
    assert "unseen:customer" in [r["code"] for r in first["reasons"]]
    assert "unseen:customer" not in [r["code"] for r in second["reasons"]]


def test_labels_are_accepted_and_unknown_ones_listed(servers, home):
    r = post(
        servers,
        "fraud",
        "/labels",
        {
            "labels": [
                {"transaction_id": "seen-1", "is_fraud": True},
                {"transaction_id": "never-scored", "is_fraud": True},
            ]
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 2 and body["unknown_transactions"] == ["never-scored"]
    stored = LabelStore(f"sqlite:///{home / 'fraud' / 'labels.db'}").read()
    assert set(stored["transaction_id"]) == {"seen-1", "never-scored"}
    assert set(stored["source"]) == {"service"}


GOOD = {"transaction_id": "bad-1", "customer_id": "c", "terminal_id": "t", "amount": 5.0}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({k: v for k, v in GOOD.items() if k != "amount"}, "amount"),
        ({k: v for k, v in GOOD.items() if k != "transaction_id"}, "transaction_id"),
        ({**GOOD, "amount": -5}, "amount"),
        ({**GOOD, "amount": "five"}, "amount"),
        ({**GOOD, "currency": "ZZZ"}, "currency"),
        ({**GOOD, "timestamp": "last tuesday"}, "timestamp"),
        ({**GOOD, "customer_id": 12}, "customer_id"),
    ],
)
def test_bad_payments_are_400_naming_the_field(servers, payload, field):
    r = post(servers, "fraud", "/score", payload)
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]


def test_unknown_customer_is_scored_with_the_fact_among_its_reasons(servers):
    r = post(
        servers, "fraud", "/score", {**GOOD, "transaction_id": "u-1", "customer_id": "nobody-knows"}
    )
    assert r.status_code == 200
    assert "unseen:customer" in [x["code"] for x in r.json()["reasons"]]


def test_malformed_payment_json_is_a_400(servers):
    r = post(servers, "fraud", "/score", content=b'{"transaction_id": "x", ')
    assert r.status_code == 400 and "JSON" in r.json()["error"]


def test_rules_reload_on_the_running_server(servers, home):
    """A card blocked in the rules file declines after POST /rules/reload, without a restart."""
    pay = {**GOOD, "transaction_id": "rules-0", "card_id": "K-e2e-blocked"}
    before = post(servers, "fraud", "/score", pay).json()
    assert before["decided_by"] == "model" and before["rules_version"].startswith("2026-12-01@")
    rules = home / "fraud_rules.toml"
    text = rules.read_text()
    rules.write_text(text.replace("cards = []", 'cards = ["K-e2e-blocked"]'))
    reload = servers["fraud"].url + "/rules/reload"
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        assert servers["client"].post(reload, json={}, headers=headers).status_code == 401
    auth = {"Authorization": f"Bearer {RULES_TOKEN}"}
    r = servers["client"].post(reload, json={}, headers=auth)
    assert r.status_code == 200 and r.json()["previous_version"] == before["rules_version"]
    after = post(servers, "fraud", "/score", {**pay, "transaction_id": "rules-1"}).json()
    assert after["decision"] == "decline" and after["decided_by"] == "rule:blocked_card"
    assert after["rules_version"] == r.json()["rules_version"] != before["rules_version"]
    rules.write_text(text.replace("review = 2000.0", "review = -1.0"))
    bad = servers["client"].post(reload, json={}, headers=auth)
    assert bad.status_code == 422 and "amount_limits.EUR.review" in bad.json()["error"]
    kept = post(servers, "fraud", "/score", {**pay, "transaction_id": "rules-2"}).json()
    assert kept["rules_version"] == after["rules_version"]
    metrics = servers["client"].get(servers["fraud"].url + "/metrics").text
    assert f'rules_version="{after["rules_version"]}"' in metrics
    rules.write_text(text)  # back to the shipped rules, by SIGHUP to the service's workers
    server = psutil.Process(servers["fraud"].process.pid)
    workers = [
        p
        for p in server.children(recursive=True)
        if "_bentoml_impl.worker" in " ".join(p.cmdline())
    ]
    assert workers
    for worker in workers:  # the workers, not `bentoml serve` (which would restart them)
        worker.send_signal(signal.SIGHUP)
    deadline, version = time.time() + 20, after["rules_version"]
    n = 0
    while version == after["rules_version"] and time.time() < deadline:
        time.sleep(0.2)
        n += 1  # a new id each time: a retry of one id gets its first answer back
        version = post(servers, "fraud", "/score", {**pay, "transaction_id": f"rules-3-{n}"})
        version = version.json()["rules_version"]
    assert version == before["rules_version"]
    log = Path(servers["fraud"].log_path).read_text()
    assert log.count("fraud service ready") == 1  # reloaded in place, not restarted


def test_a_retry_gets_the_first_answer_and_another_body_a_409(servers):
    pay = {**GOOD, "transaction_id": "retry-1", "customer_id": "retry-c", "terminal_id": "retry-t"}
    first = post(servers, "fraud", "/score", pay)
    again = post(servers, "fraud", "/score", pay)
    assert first.status_code == again.status_code == 200 and again.json() == first.json()
    conflict = post(servers, "fraud", "/score", {**pay, "amount": 6.0})
    assert conflict.status_code == 409 and conflict.json()["field"] == "amount"
    auth = {"Authorization": f"Bearer {STATE_TOKEN}"}
    held = servers["client"].post(
        servers["fraud"].url + "/state", json={"entity": "card", "id": "retry-c"}, headers=auth
    )
    assert held.status_code == 200 and held.json()["found"], held.text
    assert max(w["count"] for w in held.json()["windows"].values()) == 1  # recorded once


@pytest.mark.parametrize(
    "when",
    [
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "9999-12-31T23:59:59",
        "0001-01-01T00:00:00",
        "10000-01-01T00:00:00",
        1e20,
    ],
)
def test_datetime_edges_are_4xx_naming_timestamp(servers, when):
    r = post(servers, "fraud", "/score", {**GOOD, "transaction_id": "edge", "timestamp": when})
    assert 400 <= r.status_code < 500 and "timestamp" in r.json()["error"], r.text


def test_the_state_view_needs_its_token_and_fraud_state_reads_it(servers):
    url = servers["fraud"].url
    post(servers, "fraud", "/score", {**GOOD, "transaction_id": "view-1", "card_id": "K-view"})
    ask = {"entity": "card", "id": "K-view"}
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        assert servers["client"].post(url + "/state", json=ask, headers=headers).status_code == 401
    out = _cli(
        "fraud", "state", "card", "K-view", "--url", url, env={"SHOPML_STATE_TOKEN": STATE_TOKEN}
    )
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["found"], shown
    assert max(w["count"] for w in shown["windows"].values()) == 1


def start_redis() -> tuple[str, subprocess.Popen]:
    port = runner.free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(200):
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    return url, proc


def _by_time(held: dict) -> dict:
    """A key's view with replayed frauds compared by time (their label ids are per process)."""
    frauds = [(f["known_ms"], f["payment_ms"]) for f in held.get("known_frauds", [])]
    return {**held, "known_frauds": sorted(frauds)}


def test_two_workers_warm_redis_once_and_rewarm_it_after_a_flush(built, store, home):
    """`--workers 2 --history DIR` on a shared Redis: the history is recorded once (as one
    in-process warm-up records it); a flush is noticed (degraded_reason, /readyz, metric) and
    the store re-warmed to the same state."""
    from features.fraud.state_store import InMemoryStateStore, RedisStateStore
    from models.fraud import FraudEngine
    from registry.store import fetch
    from serving.history import warm_state

    history = home / "history"
    store.write(history)
    once = FraudEngine.load(fetch("fraud").native_dir, store=InMemoryStateStore())
    warm_state(once, history)
    last = store.payments.sort_values("timestamp").tail(20)
    keys = [("customer", c) for c in last["customer_id"]] + [
        ("terminal", t) for t in last["terminal_id"]
    ]
    expected = {k: _by_time(once.store.read_key(*k)) for k in keys}
    url, proc = start_redis()
    env = {
        "SHOPML_REDIS_URL": url,
        "SHOPML_FRAUD_WORKERS": "2",
        "SHOPML_FRAUD_HISTORY": str(history),
    }
    server = runner.start("fraud", env=env, log_dir=home / "logs-warm")
    try:
        server.wait_ready(180)
        shared = RedisStateStore(url)
        assert {k: _by_time(shared.read_key(*k)) for k in keys} == expected
        assert shared.generation() is not None
        redis.Redis.from_url(url).flushdb()  # Redis comes back empty
        seen, deadline, i = set(), time.time() + 20, 0
        with httpx.Client(timeout=10) as client:
            while time.time() < deadline:
                i += 1
                pay = {
                    **GOOD,
                    "transaction_id": f"flush-{i}",
                    "customer_id": "flush-c",
                    "terminal_id": "flush-t",
                }
                seen.add(client.post(server.url + "/score", json=pay).json().get("degraded_reason"))
                if "state_store_reset" in seen:
                    break
                time.sleep(0.1)
            assert "state_store_reset" in seen
            deadline = time.time() + 90
            while (
                time.time() < deadline
                and {k: _by_time(shared.read_key(*k)) for k in keys} != expected
            ):
                time.sleep(0.5)
            assert {k: _by_time(shared.read_key(*k)) for k in keys} == expected  # re-warmed, once
            healthy, deadline = 0, time.time() + 20
            while healthy < 8 and time.time() < deadline:  # either worker: ready, not degraded
                ready = client.get(server.url + "/readyz")
                assert ready.status_code == 200, ready.text
                healthy = healthy + 1 if ready.json()["degraded"] is False else 0
                time.sleep(0.3)
            assert healthy >= 8
            metrics = client.get(server.url + "/metrics").text
            assert 'shopml_fraud_state_resets_total{outcome="detected"' in metrics
    finally:
        server.stop()
        proc.terminate()
        proc.wait(5)


def test_redis_stopped_gives_degraded_answers_not_errors(servers, redis_url):
    """Last test of the module: Redis goes away mid-run."""
    redis_url["proc"].terminate()
    redis_url["proc"].wait(5)
    for i in range(5):
        r = post(servers, "fraud", "/score", {**GOOD, "transaction_id": f"down-{i}"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["degraded"] is True and body["degraded_reason"]
        assert 0.0 <= body["probability"] <= 1.0
    r = post(
        servers, "fraud", "/labels", {"labels": [{"transaction_id": "down-0", "is_fraud": True}]}
    )
    assert r.status_code == 200 and r.json()["degraded"] is True
    metrics = servers["client"].get(servers["fraud"].url + "/metrics").text
    line = next(
        x
        for x in metrics.splitlines()
        if x.startswith("shopml_fraud_degraded_total") and "online_features" in x
    )
    assert float(line.rsplit(" ", 1)[1]) >= 5
