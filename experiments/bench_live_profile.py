"""Benchmark: what the live fraud profile costs the checkout.

    .venv/bin/python -m experiments.bench_live_profile [--payments 20000] [--out FILE.json]

Fits a small scorer on the tiny generated store, then scores the same payments through
`serving.checkout.Checkout` (the `/score` handler without HTTP) with and without the live
profile, in 20 alternating rounds so both see the same machine load (the ratio is the median of the
rounds' ratios), and times the profile's
`observe` alone (the copy into the row buffer plus the amortised binning every 256 payments).
Prints microseconds per payment; compare them only as ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

from features.fraud.batch import compute_columns, to_matrix
from features.fraud.definition import FeatureSet
from features.sources import SourceConfig, load_source
from models.fraud import FraudEngine, FraudScorer
from serving import live_profile
from serving.checkout import Checkout, TimeGuard
from serving.fraud_schemas import PaymentRequest
from shopml.clock import now_ms
from training.reference_profiles import fraud_reference


def setup():
    store = load_source(SourceConfig(kind="generated", scale="tiny", seed=0))
    pay, fs = store.payments, FeatureSet()
    X = to_matrix(compute_columns(pay, fs), fs.names)
    y = pay["is_fraud"].to_numpy(dtype=bool)
    half = len(X) // 2
    scorer = FraudScorer(list(fs.names), num_boost_round=30, num_threads=1)
    scorer.fit(X[:half], y[:half], X[half:], y[half:])
    reference = fraud_reference(X[half:], fs.names, scorer.predict_proba(X[half:]))
    return scorer, fs, reference, pay


def requests(pay, n: int, tag: str) -> list[PaymentRequest]:
    rows = pay.sample(n, replace=True, random_state=0)
    base = now_ms()
    out = []
    for i, r in enumerate(rows.itertuples(index=False)):
        t = base - 3_600_000 + i * 10
        out.append(
            PaymentRequest(
                transaction_id=f"{tag}-{i}",
                timestamp=f"{np.datetime64(t, 'ms')}",
                customer_id=r.customer_id,
                card_id=r.card_id,
                terminal_id=r.terminal_id,
                amount=float(r.amount),
                currency="EUR",
            )
        )
    return out


def run(payments: int = 20_000, rounds: int = 20, out: Path | None = None) -> dict:
    live_profile.metrics.live_psi = lambda *a: None  # no Prometheus registry outside a server
    scorer, fs, reference, pay = setup()
    engine = FraudEngine(scorer, fs)
    engine.warm_up()
    guard = TimeGuard(300_000, int(timedelta(days=7).total_seconds() * 1000))
    checkout = Checkout(engine, "bench", guard, retry_ttl_s=0)
    live = live_profile.FraudLive(reference, fs.names, "bench")
    per = payments // rounds
    times = {"without": [], "with": []}
    for k in range(rounds):
        for case in ("without", "with") if k % 2 == 0 else ("with", "without"):
            checkout.profile = live if case == "with" else None
            batch = requests(pay, per, f"{case}{k}")
            t0 = time.perf_counter()
            for req in batch:
                checkout.score(req)
            times[case].append((time.perf_counter() - t0) / per * 1e6)
    x, n = np.zeros(len(fs.names)), 200_000
    t0 = time.perf_counter()
    for _ in range(n):
        live.observe(x, 0.1)
    observe_us = (time.perf_counter() - t0) / n * 1e6
    result = {
        "payments_per_case": per * rounds,
        "score_us_without_profile": round(float(np.median(times["without"])), 2),
        "score_us_with_profile": round(float(np.median(times["with"])), 2),
        "observe_us": round(observe_us, 3),
    }
    paired = [w / wo for w, wo in zip(times["with"], times["without"], strict=True)]
    result["ratio_with_to_without_median_of_rounds"] = round(float(np.median(paired)), 4)
    result["observe_share_of_score"] = round(observe_us / result["score_us_without_profile"], 4)
    text = json.dumps(result, indent=2)
    print(text)
    if out is not None:
        Path(out).write_text(text + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=20_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    run(args.payments, out=args.out)


if __name__ == "__main__":
    main()
