"""Shared fixtures of the fraud tests: synthetic payment streams and a real redis-server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import numpy as np
import pandas as pd
import pytest


def synthetic_payments(
    n: int = 2000,
    days: int = 50,
    customers: int = 25,
    terminals: int = 30,
    seed: int = 0,
    fraud_rate: float = 0.05,
) -> pd.DataFrame:
    """A shuffled stream with repeated timestamps, several cards per customer, and fraud labels
    of which half have a label_time (the rest fall back to the label delay)."""
    rng = np.random.default_rng(seed)
    t = pd.Timestamp("2024-01-01") + pd.to_timedelta(
        np.sort(rng.integers(0, days * 86400, n)), unit="s"
    )
    t = t.to_numpy()
    t[10] = t[11] = t[9]  # simultaneous payments
    cust = rng.integers(0, customers, n).astype(str)
    df = pd.DataFrame(
        {
            "transaction_id": [f"T{i}" for i in range(n)],
            "timestamp": t,
            "customer_id": np.char.add("C", cust),
            "card_id": np.char.add(
                np.char.add("K", cust), (rng.random(n) < 0.2).astype(int).astype(str)
            ),
            "terminal_id": np.char.add("M", rng.integers(0, terminals, n).astype(str)),
            "amount": np.round(rng.gamma(2.0, 30.0, n), 2),
            "currency": "EUR",
            "is_fraud": rng.random(n) < fraud_rate,
        }
    )
    lt = df["timestamp"] + pd.to_timedelta(rng.integers(0, 20 * 86400, n), unit="s")
    lt[rng.random(n) < 0.5] = pd.NaT
    df["label_time"] = lt
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)


@pytest.fixture
def make_payments():
    """The `synthetic_payments` factory as a fixture."""
    return synthetic_payments


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url():
    """A real redis-server on a free loopback port for the session (skips if not installed)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.skip("redis-server did not start")
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)
