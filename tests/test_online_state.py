"""Online fraud state: exact counts with concurrent processes on a real Redis, retries recorded
once, idempotent labels and corrections, odd timestamps that cannot evict history, the memory
bound of the in-process store and the service primitives, for both stores."""

from __future__ import annotations

import itertools
from datetime import datetime

import pytest

from experiments.bench_online_state import concurrency
from features.fraud.definition import DAY, FeatureSet
from features.fraud.online import OnlineFeatures
from features.fraud.state_store import InMemoryStateStore, RedisStateStore
from shopml.clock import epoch_ms, now_ms

pytest_plugins = ["fraud_helpers"]

_prefixes = itertools.count()


@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        return InMemoryStateStore()
    url = request.getfixturevalue("redis_url")
    s = RedisStateStore(url, prefix=f"test:state{next(_prefixes)}:")
    s.clear()
    return s


def _history(online: OnlineFeatures, n: int = 50, days: int = 10) -> int:
    """`n` payments of customer/card `a` at terminal `m` over the last `days`; the last time."""
    out = online.new_vector()
    end = now_ms() - 3_600_000
    step = days * DAY * 1000 // n
    for i in range(n):
        online.compute(end - (n - 1 - i) * step, 10.0, "a", "a", "m", out, transaction_id=f"h{i}")
    return end


def test_concurrent_processes_count_every_payment_once(redis_url):
    got = concurrency(redis_url, "test:burst:", workers=4, per_worker=100, retries=20)
    assert got["recorded_per_key"] == {"card": 400, "terminal": 400, "customer": 400}
    assert got["lost"] == 0 and got["double_counted"] == 0


def test_a_retried_transaction_is_recorded_once(store):
    online = OnlineFeatures(FeatureSet(), store)
    out = online.new_vector()
    t = now_ms() - 60_000
    online.compute(t, 10.0, "a", "a", "m", out, transaction_id="t1")
    online.compute(t, 10.0, "a", "a", "m", out, transaction_id="t1")
    online.compute(t + 1, 10.0, "a", "a", "m", out, transaction_id="t2")
    for entity, key in (("customer", "a"), ("card", "a"), ("terminal", "m")):
        assert store.read_key(entity, key)["windows"]["1h"]["count"] == 2
    assert store.lookup_payment("t1") == ("a", "m", t)


def test_labels_are_idempotent_and_a_correction_reverses_them(store):
    fs = FeatureSet()
    online = OnlineFeatures(fs, store)
    out = online.new_vector()
    t = now_ms() - 600_000
    online.compute(t, 10.0, "a", "a", "m", out, transaction_id="t1")
    assert online.add_fraud_label("a", "m", t + 1000, t, transaction_id="t1")
    assert not online.add_fraud_label("a", "m", t + 1000, t, transaction_id="t1")
    online.add_fraud_label("a", "m", t + 1000, t, transaction_id="t1")
    assert len(store.read_key("terminal", "m")["known_frauds"]) == 1
    online.compute(t + 2000, 10.0, "b", "b", "m", out, record=False)
    assert out[fs.index("terminal_known_frauds_1d")] == 1
    assert online.add_fraud_label("a", "m", t + 1000, t, transaction_id="t1", is_fraud=False)
    assert not online.add_fraud_label("a", "m", t + 1000, t, transaction_id="t1", is_fraud=False)
    assert store.read_key("customer", "a")["known_frauds"] == []
    online.compute(t + 3000, 10.0, "b", "b", "m", out, record=False)
    assert out[fs.index("terminal_known_frauds_1d")] == 0


@pytest.mark.parametrize(
    "when",
    [datetime(9999, 12, 31, 23, 59), datetime(1, 1, 1), epoch_ms(datetime(1, 1, 1)) - 3_600_000],
    ids=["far-future", "far-past", "offset-edge"],
)
def test_an_odd_timestamp_evicts_no_history(store, when):
    fs = FeatureSet()
    online = OnlineFeatures(fs, store)
    out = online.new_vector()
    last = _history(online)
    before = {e: store.read_key(e, k)["windows"] for e, k in (("customer", "a"), ("terminal", "m"))}
    odd = when if isinstance(when, int) else epoch_ms(when)
    online.compute(odd, 900.0, "a", "a", "m", out, transaction_id="odd")
    for e, k in (("customer", "a"), ("terminal", "m")):
        assert store.read_key(e, k, fs)["windows"] == before[e] or odd > last
    online.compute(last + 1000, 900.0, "a", "a", "m", out, transaction_id="next")
    assert out[fs.index("customer_count_30d")] == 51
    assert out[fs.index("terminal_count_30d")] == 51
    assert out[fs.index("card_amount_max_30d")] == 900.0


def test_a_late_payment_lands_in_its_own_tile(store):
    fs = FeatureSet()
    online = OnlineFeatures(fs, store)
    out = online.new_vector()
    t = now_ms() - 60_000
    online.compute(t, 10.0, "a", "a", "m", out, transaction_id="now")
    online.compute(t - 2 * DAY * 1000, 30.0, "a", "a", "m", out, transaction_id="late")
    windows = store.read_key("customer", "a")["windows"]
    assert windows["1h"]["count"] == 1 and windows["1d"]["count"] == 1
    assert windows["7d"] == {"count": 2, "sum": 40.0, "max": 30.0}


def test_in_process_store_keeps_at_most_max_keys_and_expires_idle_ones(monkeypatch):
    store = InMemoryStateStore(max_keys=300)
    online = OnlineFeatures(FeatureSet(), store)
    out = online.new_vector()
    t = now_ms() - 60_000
    for i in range(500):
        online.compute(t + i, 10.0, f"c{i}", f"c{i}", "m", out)
    assert len(store) == 300
    assert store.read_key("terminal", "m")["windows"]["1h"]["count"] == 500  # used last: kept
    assert not store.read_key("customer", "c0")["found"]
    assert store.read_key("customer", "c499")["found"]
    later = store._touched["te:m"] + 1  # past the key's TTL (longest window + lateness + 1 day)
    monkeypatch.setattr("features.fraud.state_store.time.monotonic", lambda: later)
    online.compute(t + 1000, 10.0, "z", "z", "n", out)
    assert len(store) == 3


def test_redis_keys_expire_past_the_longest_window(redis_url):
    store = RedisStateStore(redis_url, prefix="test:ttl:")
    store.clear()
    online = OnlineFeatures(FeatureSet(), store)
    online.compute(now_ms(), 10.0, "a", "a", "m", online.new_vector(), transaction_id="t1")
    ttl = store.client.ttl("test:ttl:te:m")
    longest = FeatureSet().horizon
    assert longest < ttl <= longest + FeatureSet().label_delay + DAY
    assert 0 < store.client.ttl("test:ttl:tx:t1") <= store.payment_ttl_s


def test_service_primitives(store):
    assert store.put_if_absent("score:t1", b"first", 60) is None
    assert store.put_if_absent("score:t1", b"second", 60) == b"first"
    assert store.get("score:t1") == b"first" and store.get("score:t2") is None
    assert store.generation() is None
    store.set_generation("g1")
    assert store.generation() == "g1"
    assert store.acquire_once("warm-up", 60) and not store.acquire_once("warm-up", 60)
    store.clear()
    assert store.generation() is None and store.get("score:t1") is None
    assert store.acquire_once("warm-up", 60)


def test_old_fraud_labels_are_dropped_once_no_window_can_see_them(store):
    online = OnlineFeatures(FeatureSet(), store)
    start = now_ms() - 200 * DAY * 1000
    for day in range(0, 200, 2):
        t = start + day * DAY * 1000
        online.add_fraud_label("a", "m", t + 1000, t, transaction_id=f"f{day}")
    kept = store.read_key("terminal", "m")["known_frauds"]
    keep_days = 30 + 1 + FeatureSet().label_delay // DAY  # longest window, its tile, lateness
    assert len(kept) == keep_days // 2 + 1
    assert min(f["payment_ms"] for f in kept) >= start + (198 - keep_days) * DAY * 1000
