"""`shopml bench online-state`: recording cost against history length, and exact counts under
concurrency against a real Redis.

record_us: p50 microseconds of one scored-and-recorded payment (`OnlineFeatures.compute`) whose
customer, card and terminal each already hold 10, 1,000 or 100,000 payments in the 30-day
window (in-process store; `redis_record_us` the same against Redis). concurrency: 8 processes
send 500 payments each at once on one card and one terminal (each process also resends 50 of
another's transaction ids, as checkout retries), then the store's 30-day counts are compared
with the distinct payments sent. `bytes_per_key`: in-process memory of a key with one payment;
`bytes_per_transaction_id`: of a remembered transaction id (retries, late labels).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import socket
import subprocess
import time
import tracemalloc
from pathlib import Path

import redis

from features.fraud.definition import DAY, FeatureSet
from features.fraud.online import OnlineFeatures
from features.fraud.state_store import InMemoryStateStore, RedisStateStore
from shopml.clock import now_ms

SIZES = (10, 1_000, 100_000)
MEASURED = 2_000  # payments timed per size
WORKERS, PER_WORKER, RETRIES = 8, 500, 50


def fill(online: OnlineFeatures, key: str, n: int, end_ms: int) -> None:
    """`n` payments of customer = card = `key` at terminal `key`, spread over the 29 days
    before `end_ms` (recorded through the store, features not computed)."""
    out = online.new_vector()
    step = (29 * DAY * 1000) // n
    start = end_ms - 29 * DAY * 1000
    for i in range(n):
        online.compute(start + i * step, 10.0 + i % 7, key, key, key, out, transaction_id=None)


def record_us(online: OnlineFeatures, key: str, end_ms: int) -> float:
    """p50 microseconds of scoring and recording one more payment on the keys of `key`."""
    out = online.new_vector()
    times = []
    for i in range(MEASURED):
        t = end_ms + i * 1000  # one a second: new 5-minute tiles now and then
        t0 = time.perf_counter_ns()
        online.compute(t, 12.5, key, key, key, out, transaction_id=f"{key}-m{i}")
        times.append(time.perf_counter_ns() - t0)
    times.sort()
    return round(times[len(times) // 2] / 1000, 1)


def _flat_costs(make_store) -> dict[str, float]:
    end = now_ms() - 3_600_000
    out = {}
    for n in SIZES:
        online = OnlineFeatures(FeatureSet(), make_store())
        fill(online, f"k{n}", n, end)
        out[str(n)] = record_us(online, f"k{n}", end)
    return out


def bytes_per_key(n_keys: int = 20_000, with_ids: bool = False) -> float:
    """In-process bytes per key (customer, card and terminal keys of one-payment customers);
    `with_ids`: per payment remembered by transaction id instead (minus the keys' share)."""
    online = OnlineFeatures(FeatureSet(), InMemoryStateStore())
    out = online.new_vector()
    t = now_ms() - 3_600_000
    online.compute(t, 1.0, "warm", "warm", "warm", out)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n_keys):
        tx = f"{i:032x}" if with_ids else None  # a 32-character id, like a UUID
        online.compute(t + i, 10.0, f"c{i}", f"k{i}", f"m{i}", out, transaction_id=tx)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return round(used / (3 * n_keys), 1) if not with_ids else round(used / n_keys, 1)


def send_burst(
    url: str, prefix: str, worker: int, workers: int, n: int, retries: int, barrier
) -> None:
    """One process of `workers`: `n` payments on card `c1` at terminal `m1`, then `retries`
    of the next worker's transaction ids again; starts with the others at `barrier`."""
    online = OnlineFeatures(FeatureSet(), RedisStateStore(url, prefix=prefix))
    out = online.new_vector()
    t = now_ms() - 60_000
    barrier.wait()
    for i in range(n):
        online.compute(t + i, 5.0, "c1", "c1", "m1", out, transaction_id=f"w{worker}-{i}")
    other = (worker + 1) % workers
    for i in range(retries):
        online.compute(t + i, 5.0, "c1", "c1", "m1", out, transaction_id=f"w{other}-{i}")


def concurrency(url: str, prefix: str, workers: int, per_worker: int, retries: int) -> dict:
    """Run `workers` processes of `send_burst` at once; sent vs recorded 30-day counts."""
    store = RedisStateStore(url, prefix=prefix)
    store.clear()
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(workers)
    procs = [
        ctx.Process(target=send_burst, args=(url, prefix, w, workers, per_worker, retries, barrier))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError(f"a sender failed: exit codes {[p.exitcode for p in procs]}")
    sent = workers * per_worker
    counts = {
        e: store.read_key(e, i)["windows"]["30d"]["count"]
        for e, i in (("card", "c1"), ("terminal", "m1"), ("customer", "c1"))
    }
    recorded = min(counts.values())
    most = max(counts.values())
    return {
        "sent": sent,
        "retried": workers * retries,
        "recorded": recorded,
        "recorded_per_key": counts,
        "lost": max(0, sent - recorded),
        "double_counted": max(0, most - sent),
    }


def start_redis() -> tuple[subprocess.Popen, str] | None:
    """A throw-away redis-server on a free loopback port, or None if it is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(100):
        try:
            client.ping()
            return proc, f"redis://127.0.0.1:{port}/0"
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    proc.terminate()
    return None


def run(out: Path | None = None) -> dict:
    """Measure and return (and write to `out`) the figures described in the module doc."""
    result: dict = {"record_us": _flat_costs(InMemoryStateStore)}
    result["bytes_per_key"] = per_key = bytes_per_key()
    result["bytes_per_transaction_id"] = round(bytes_per_key(with_ids=True) - 3 * per_key, 1)
    server = start_redis()
    if server is None:
        result["redis"] = "redis-server not installed: Redis figures not measured"
    else:
        proc, url = server
        try:
            n = [0]

            def make_store():
                n[0] += 1
                store = RedisStateStore(url, prefix=f"bench:{n[0]}:")
                store.clear()
                return store

            result["redis_record_us"] = _flat_costs(make_store)
            result["concurrency"] = concurrency(url, "bench:burst:", WORKERS, PER_WORKER, RETRIES)
        finally:
            proc.terminate()
            proc.wait(10)
    small, large = min(result["record_us"].values()), max(result["record_us"].values())
    result["largest_over_smallest"] = round(large / small, 2)
    if out is not None:
        Path(out).write_text(json.dumps(result, indent=2))
    return result
