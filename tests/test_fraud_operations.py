"""Operating the fraud service: retries, the time guard, labels online, warm-up and store loss.

A checkout retries: the same `transaction_id` with the same body must get the first answer back
and be recorded once; with another body, a 409 naming the field. A payment dated outside the
window around the server clock is refused (422 naming `timestamp`), and no datetime is a 500.
A shared Redis is warmed from history once, whatever the number of workers, and a Redis that
comes back empty is noticed and re-warmed. `shopml fraud state` shows what a key holds.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from features.fraud.batch import compute_batch
from features.fraud.definition import FeatureSet
from features.fraud.labels import LabelStore
from features.fraud.online import OnlineFeatures
from features.fraud.state_store import InMemoryStateStore, open_store, warm_up_store
from features.store import Store
from models.fraud import FraudEngine, FraudScorer
from serving.checkout import Checkout, TimeGuard
from serving.endpoints import Endpoint, error_response
from serving.fraud_schemas import PaymentRequest, ScoreResponse
from serving.history import STATE_RESET, StoreHealth, warm_once, warm_state
from shopml.errors import DataError

pytest_plugins = ["fraud_helpers"]
REPO = Path(__file__).resolve().parents[1]
WIDE = TimeGuard(10**13, 10**13)  # for payments replayed from 2024


@pytest.fixture(scope="module")
def scorer():
    from fraud_helpers import synthetic_payments

    pay = synthetic_payments(1500).sort_values("timestamp", kind="stable")
    fs = FeatureSet()
    X, y = compute_batch(pay, fs).to_numpy(), pay["is_fraud"].to_numpy(bool)
    return FraudScorer(list(fs.names), num_boost_round=5, min_data_in_leaf=20, num_threads=1).fit(
        X, y, X, y
    )


def engine_with(scorer, store=None, label_store=None) -> FraudEngine:
    store = store if store is not None else InMemoryStateStore()
    return FraudEngine(scorer, FeatureSet(), store, label_store=label_store)


def request(**fields) -> PaymentRequest:
    body = {
        "transaction_id": "tx-1",
        "timestamp": datetime.now(UTC).isoformat(),
        "customer_id": "C1",
        "card_id": "K1",
        "terminal_id": "M1",
        "amount": 42.5,
    }
    return PaymentRequest.model_validate({**body, **fields})


def card_count(engine: FraudEngine, card: str = "K1") -> int:
    """How many payments the online store counts for `card` in its longest window."""
    held = engine.store.read_key("card", card)
    return max(w["count"] for w in held["windows"].values()) if held["found"] else 0


# ---------------------------------------------------------------- retries
def test_a_retry_gets_the_first_answer_and_is_recorded_once(scorer):
    checkout = Checkout(engine_with(scorer), "m/1")
    req = request()
    first = checkout.score(req)
    again = checkout.score(request(timestamp=req.timestamp.isoformat()))
    assert again == first  # the same answer, latency_ms included: it was not scored again
    assert card_count(checkout.engine) == 1
    other = checkout.score(request(transaction_id="tx-2", timestamp=req.timestamp.isoformat()))
    assert other["transaction_id"] == "tx-2" and card_count(checkout.engine) == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": 43.0}, "amount"),
        ({"card_id": "K2"}, "card_id"),
        ({"terminal_id": "M9"}, "terminal_id"),
        ({"currency": "USD"}, "currency"),
        ({"timestamp": "2026-12-01T10:00:00+00:00"}, "timestamp"),
    ],
)
def test_the_same_id_with_another_body_is_a_409_naming_the_field(scorer, change, field):
    checkout = Checkout(engine_with(scorer), "m/1", WIDE)
    first = request(timestamp="2026-12-01T09:00:00+00:00")
    checkout.score(first)
    with pytest.raises(Exception) as err:
        checkout.score(request(**{"timestamp": "2026-12-01T09:00:00+00:00", **change}))
    status, body = error_response(err.value)
    assert status == 409 and json.loads(body)["field"] == field
    assert field in json.loads(body)["error"]
    assert card_count(checkout.engine) == 1  # the conflicting payment was not recorded


def test_a_card_left_out_is_the_same_payment_as_the_customer_as_card(scorer):
    checkout = Checkout(engine_with(scorer), "m/1")
    when = datetime.now(UTC).isoformat()
    first = checkout.score(request(card_id=None, timestamp=when))
    assert checkout.score(request(card_id="C1", timestamp=when)) == first


# ---------------------------------------------------------------- the time guard
EDGES = [
    "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
    "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
    "0001-01-01T00:00:00",
    "9999-12-31T23:59:59",
    "9999-12-31T23:59:59+14:00",
    "0001-01-01T00:00:00-14:00",
    "10000-01-01T00:00:00",
    "0000-12-31T00:00:00",
    1e20,
    -1e20,
    "2026-02-30T00:00:00",
]


def fast_score(checkout: Checkout):
    """The fast route's handler of `/score` around `checkout` (what the service serves)."""

    class Service:
        pass

    service = Service()
    service.checkout = checkout
    route = Endpoint(
        route="/score",
        request=PaymentRequest,
        answers=ScoreResponse,
        handler=lambda self, req: self.checkout.score(req),
    )
    handle = route.fast_handler(service)

    def call(body: dict) -> tuple[int, dict]:
        try:
            status, payload = asyncio.run(handle(json.dumps(body).encode()))
        except Exception as exc:  # noqa: BLE001 - what the middleware maps
            status, payload = error_response(exc)
        return status, json.loads(payload)

    return call


@pytest.mark.parametrize("when", EDGES)
def test_datetime_edges_are_4xx_naming_timestamp_and_record_nothing(scorer, when):
    checkout = Checkout(engine_with(scorer), "m/1")
    body = {**request().model_dump(mode="json"), "timestamp": when}
    status, answer = fast_score(checkout)(body)
    assert 400 <= status < 500 and "timestamp" in answer["error"], answer
    assert card_count(checkout.engine) == 0
    # the BentoML path (SHOPML_FASTPATH=0) validates with the same model: a ValidationError
    # (its 400), or the same time guard error
    try:
        req = PaymentRequest.model_validate(body)
    except ValidationError as err:
        assert error_response(err)[0] == 400
    else:
        with pytest.raises(DataError, match="timestamp"):
            checkout.score(req)


def test_outside_the_window_is_a_422_with_the_range_inside_it_is_scored(scorer):
    checkout = Checkout(engine_with(scorer), "m/1", TimeGuard(300_000, 7 * 86400_000))
    call = fast_score(checkout)
    now = datetime.now(UTC)
    for i, off in enumerate((timedelta(minutes=6), -timedelta(days=8))):
        status, answer = call(
            {**request(transaction_id=f"x{i}").model_dump(mode="json"), "timestamp": str(now + off)}
        )
        assert status == 422 and answer["error"].startswith("timestamp: ")
        assert "accepted range" in answer["error"] and "300 s ahead" in answer["error"]
    assert card_count(checkout.engine) == 0
    for i, off in enumerate((timedelta(minutes=4), -timedelta(days=6), timedelta(0))):
        body = {
            **request(transaction_id=f"ok{i}").model_dump(mode="json"),
            "timestamp": str(now + off),
        }
        assert call(body)[0] == 200
    status, _ = call(
        {
            k: v
            for k, v in request(transaction_id="now").model_dump(mode="json").items()
            if k != "timestamp"
        }
    )
    assert status == 200 and card_count(checkout.engine) == 4


# ---------------------------------------------------------------- labels online
def test_labels_are_idempotent_online_and_a_correction_reverses_the_fraud(scorer, tmp_path):
    labels = LabelStore(f"sqlite:///{tmp_path / 'labels.db'}")
    checkout = Checkout(engine_with(scorer, label_store=labels), "m/1")
    checkout.score(request(transaction_id="L1"))
    frauds = lambda: checkout.engine.store.read_key("customer", "C1")["known_frauds"]  # noqa: E731
    hours_ago = lambda h: (datetime.now(UTC) - timedelta(hours=h)).isoformat()  # noqa: E731
    fraud = {"transaction_id": "L1", "is_fraud": True, "label_time": hours_ago(3)}
    for _ in range(3):  # sent again and again: filed once
        report = checkout.engine.ingest_labels([fraud, fraud])
    assert report.unchanged == 1 and len(frauds()) == 1
    assert checkout.engine.store.read_key("terminal", "M1")["known_frauds"] == frauds()
    cleared = {**fraud, "is_fraud": False, "label_time": hours_ago(2)}
    assert checkout.engine.ingest_labels([cleared]).corrected == 1
    assert frauds() == [] and checkout.engine.store.read_key("terminal", "M1")["known_frauds"] == []
    again = {**fraud, "label_time": hours_ago(1)}
    checkout.engine.ingest_labels([again])
    assert len(frauds()) == 1


def test_a_label_batch_with_one_bad_row_applies_nothing(scorer, tmp_path):
    labels = LabelStore(f"sqlite:///{tmp_path / 'labels.db'}")
    engine = engine_with(scorer, label_store=labels)
    Checkout(engine, "m/1").score(request(transaction_id="L1"))
    good = {"transaction_id": "L1", "is_fraud": True}
    for bad in (
        {"transaction_id": "L2", "is_fraud": "maybe"},
        {"transaction_id": "L2", "is_fraud": True, "label_time": "not a time"},
        {
            "transaction_id": "L2",
            "is_fraud": True,
            "customer_id": "C1",
            "terminal_id": "M1",
            "timestamp": "not a time",
        },
        {"transaction_id": "", "is_fraud": True},
    ):
        with pytest.raises(DataError):
            engine.ingest_labels([good, bad])
        assert engine.store.read_key("customer", "C1")["known_frauds"] == []
        assert len(labels.read()) == 0


# ---------------------------------------------------------------- warm-up once, loss detected
@pytest.fixture(scope="module")
def history(tmp_path_factory):
    from fraud_helpers import synthetic_payments

    folder = tmp_path_factory.mktemp("history") / "store"
    Store(payments=synthetic_payments(200, days=20)).write(folder)
    return folder


def _warm_in_a_worker(engine_dir: str, redis_url: str, history: str) -> None:
    """One service worker's start-up: load the engine on the shared store, warm once."""
    store, _ = open_store(redis_url)
    warm_once(FraudEngine.load(engine_dir, store=store), history)


def without_label_ids(held: dict) -> dict:
    """A key's view with replayed frauds compared by time (their label ids are per process)."""
    frauds = [(f["known_ms"], f["payment_ms"]) for f in held.get("known_frauds", [])]
    return {**held, "known_frauds": sorted(frauds)}


def state_of_every_key(store, payments) -> dict:
    """Every key's state, read through the warm-up's long-timeout client: an inspection on a
    loaded machine must not fail on the checkout's 50 ms Redis timeout."""
    store = warm_up_store(store)
    keys = {}
    for entity, col in (
        ("customer", "customer_id"),
        ("card", "card_id"),
        ("terminal", "terminal_id"),
    ):
        for key_id in sorted(set(payments[col])):
            keys[f"{entity}:{key_id}"] = without_label_ids(store.read_key(entity, key_id))
    return keys


def test_two_workers_warm_a_shared_redis_once_and_a_flush_is_detected_and_rewarmed(
    scorer, history, redis_url, tmp_path
):
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    engine_dir = str(engine_with(scorer).save(tmp_path / "engine"))
    spawn = multiprocessing.get_context("spawn")
    workers = [
        spawn.Process(
            target=_warm_in_a_worker, args=(engine_dir, redis_url, str(history)), daemon=True
        )
        for _ in range(2)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(300)
    assert [w.exitcode for w in workers] == [0, 0]
    _warm_in_a_worker(engine_dir, redis_url, str(history))  # a restarted worker: no replay
    pay = Store.read(history, tables=("payments",)).payments
    once = engine_with(scorer)
    warm_state(once, history)  # what one warm-up gives
    store, _ = open_store(redis_url)
    assert state_of_every_key(store, pay) == state_of_every_key(once.store, pay)

    engine = FraudEngine.load(engine_dir, store=store)
    health = StoreHealth(engine, history, store.generation())
    assert health.check() is None
    redis.Redis.from_url(redis_url).flushdb()  # Redis comes back empty
    health._next_check = 0.0
    assert health.check() == STATE_RESET and health.status()["degraded"]
    checkout = Checkout(engine, "m/1", WIDE, health=health)
    answer = checkout.score(
        request(transaction_id="during", customer_id="new", card_id="new", terminal_id="new")
    )
    assert answer["degraded"] and answer["degraded_reason"] == STATE_RESET
    health._rewarm.join(120)
    assert health.check() is None and health.resets == 1
    assert state_of_every_key(store, pay) == state_of_every_key(once.store, pay)


def test_a_warm_up_cut_off_half_way_and_run_again_records_each_payment_once(
    scorer, history, redis_url
):
    """A worker that dies mid-replay leaves half the history in Redis; the next warm-up
    (through its own long-timeout client) completes it instead of counting that half twice."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    pay = Store.read(history, tables=("payments",)).payments
    store, _ = open_store(redis_url)
    engine = engine_with(scorer, store=store)
    warm = warm_up_store(store)
    assert warm.client.connection_pool.connection_kwargs["socket_timeout"] >= 30
    first_half = pay.sort_values("timestamp", kind="stable").iloc[: len(pay) // 2]
    OnlineFeatures(engine.feature_set, warm).replay_frame(first_half)  # then the worker died
    warm_once(engine, history)
    once = engine_with(scorer)
    warm_state(once, history)
    assert state_of_every_key(store, pay) == state_of_every_key(once.store, pay)


# ---------------------------------------------------------------- the operator view
def test_fraud_state_prints_what_redis_holds_for_a_key(scorer, redis_url):
    store, _ = open_store(redis_url)
    engine = engine_with(scorer, store=store)
    checkout = Checkout(engine, "m/1")
    for i, amount in enumerate((10.0, 25.0, 40.0)):
        checkout.score(request(transaction_id=f"S{i}", card_id="KS", amount=amount))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "fraud",
            "state",
            "card",
            "KS",
            "--redis-url",
            redis_url,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
        env={**os.environ, "SHOPML_REDIS_URL": ""},
    )
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown == store.read_key("card", "KS")
    longest = max(shown["windows"].values(), key=lambda w: w["count"])
    assert longest["count"] == 3 and longest["sum"] == 75.0 and longest["max"] == 40.0
    assert shown["found"] and shown["last_payment_ms"] > 0
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "fraud",
            "state",
            "shop",
            "KS",
            "--redis-url",
            redis_url,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2 and "entity" in bad.stderr and "Traceback" not in bad.stderr
