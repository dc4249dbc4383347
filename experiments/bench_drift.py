"""Benchmark: does `shopml monitor` flag injected shifts on the columns they touch, and stay
quiet without one? Over `seeds` generated stores.

    .venv/bin/python -m experiments.bench_drift [--seeds 20] [--scale small] [--out FILE.json]
        [--config experiments/configs/monitor.toml]
    shopml bench drift --out FILE.json

Per seed, one generated store; every family's reference is built from an older window and the
newest window is the new data, as a model trained a while ago would see it (the drift rule of
the monitor config's `[drift]` and the profile builders are the ones `shopml monitor` uses;
shifts are injected post hoc into the generated tables, the generator is untouched):

* fraud (reference: the 7 x 24 h ending 13 days before the last payment; new: the last
  7 x 24 h, as `shopml monitor` takes them, `training.monitor.last_days`; calendar days would
  end on a near-empty day when a payment falls just after the generated period's midnight):
  `fraud_scenario_<n>pct_cards` adds a card-testing attack, bursts of 6 tiny payments
  (0.5-2 EUR) within 10 minutes at random terminals by n % of the week's cards (2 and 10); it
  should touch the amount, time-of-day and velocity
  features of cards, customers and terminals, never the label-derived ones (known frauds,
  fraud rates, delayed counts, time since a fraud: its labels arrive after the week).
* forecast (reference: the 28 days before the last 28; new: the last 28): `price_change`
  raises the unit price of one category's lines by 30 %; it should touch `price:<category>`.
* recommender (reference: the sessions of the week before the last; known customers: those
  active before it; new: the last week): `new_segment` adds visitors nobody knew (30 % more
  sessions) browsing two categories; it should touch `request_kind` and `category`.

Each family also runs the no-shift control; its false-alarm rate is the share of seeds on
which any column is flagged. The fraud reference here has no score column (that needs a model
per seed); `shopml monitor fraud` compares the score too.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.fraud.batch import compute_columns, to_matrix
from features.fraud.definition import FeatureSet
from features.reference import DriftRule, Profile, compare_profiles
from features.sources import SourceConfig, load_source
from features.store import Store
from shopml.progress import progress
from training.monitor import load_monitor_config
from training.reference_profiles import (
    forecast_batch,
    forecast_reference,
    fraud_batch,
    fraud_reference,
    recommender_batch,
    recommender_reference,
)

DAY = pd.Timedelta(days=1)
LABEL_DERIVED = ("delayed_count", "known_frauds", "fraud_rate", "since_last_fraud")
LABEL_DERIVED += ("since_first_fraud",)


def flagged(reference: Profile, new: Profile, rule: DriftRule) -> list[str]:
    return [d.name for d in compare_profiles(reference, new, rule) if d.drifted]


# ------------------------------------------------------------------------------------ fraud
def card_testing(payments: pd.DataFrame, start, rng: np.random.Generator, share: float = 0.02):
    """Payments plus a card-testing attack after `start`: 2 % of the cards active then each
    make 6 tiny payments within 10 minutes at random terminals."""
    recent = payments[payments["timestamp"] > start]
    cards = recent.drop_duplicates("card_id")[["card_id", "customer_id"]]
    hit = cards.sample(max(1, int(len(cards) * share)), random_state=int(rng.integers(1 << 31)))
    terminals = payments["terminal_id"].unique()
    end = payments["timestamp"].max()
    rows = []
    for card, customer in hit.itertuples(index=False):
        t0 = start + (end - start) * rng.random()
        for k in range(6):
            rows.append(
                {
                    "transaction_id": f"INJ-{card}-{k}",
                    "timestamp": t0 + pd.Timedelta(seconds=int(rng.integers(0, 600))),
                    "customer_id": customer,
                    "card_id": card,
                    "terminal_id": rng.choice(terminals),
                    "amount": round(float(rng.uniform(0.5, 2.0)), 2),
                    "currency": "EUR",
                    "is_fraud": True,
                    "label_time": pd.NaT,
                    "fraud_scenario": 4,
                }
            )
    extra = pd.DataFrame(rows).astype({c: payments[c].dtype for c in payments.columns})
    return pd.concat([payments, extra], ignore_index=True)


ATTACK_SHARES = (0.02, 0.10)  # shares of the week's cards in the card-testing attack


def fraud_case(pay: pd.DataFrame, rule: DriftRule, rng) -> dict[str, list[str]]:
    fs = FeatureSet()
    end = pay["timestamp"].max()
    new_start, ref = end - 7 * DAY, (end - 20 * DAY, end - 13 * DAY)
    out = {}
    frames = [("control", pay)]
    frames += [
        (f"fraud_scenario_{int(share * 100)}pct_cards", card_testing(pay, new_start, rng, share))
        for share in ATTACK_SHARES
    ]
    for case, frame in frames:
        cols = compute_columns(frame, fs)
        t = frame["timestamp"]
        ref_rows = np.flatnonzero(((t > ref[0]) & (t <= ref[1])).to_numpy())
        new_rows = np.flatnonzero((t > new_start).to_numpy())
        if case == "control":
            reference = fraud_reference(to_matrix(cols, fs.names, ref_rows), fs.names, np.empty(0))
            reference.columns.pop("score")
        new = fraud_batch(reference, to_matrix(cols, fs.names, new_rows), fs.names, None)
        out[case] = flagged(reference, new, rule)
    return out


def fraud_touched(name: str) -> bool:
    return not any(part in name for part in LABEL_DERIVED)


# --------------------------------------------------------------------------------- forecast
def forecast_case(store: Store, rule: DriftRule, rng) -> tuple[dict[str, list[str]], str]:
    lines, products = store.order_lines, store.products
    end = lines["timestamp"].max()
    old = lines[lines["timestamp"] <= end - 28 * DAY]
    promos = store.promotions
    reference = forecast_reference(old, products, promotions=promos)
    cats = [c.removeprefix("price:") for c in reference.columns if c.startswith("price:")]
    cat = str(rng.choice(sorted(cats)))
    shifted = lines.copy()
    in_cat = set(products.loc[products["category"] == cat, "product_id"].astype(str))
    mask = (shifted["timestamp"] > end - 28 * DAY) & shifted["product_id"].isin(in_cat)
    shifted.loc[mask, "unit_price"] = shifted.loc[mask, "unit_price"] * 1.3
    out = {
        "control": flagged(reference, forecast_batch(reference, lines, products, promos), rule),
        "price_change": flagged(
            reference, forecast_batch(reference, shifted, products, promos), rule
        ),
    }
    return out, cat


# ------------------------------------------------------------------------------ recommender
def new_segment(inter: pd.DataFrame, products: pd.DataFrame, start, rng, share: float = 0.3):
    """Interactions plus sessions of new visitors (30 % more sessions after `start`) who
    browse two categories."""
    recent = inter[inter["timestamp"] >= start]
    n = max(1, int(recent["session_id"].nunique() * share))
    cats = rng.choice(sorted(products["category"].unique()), size=2, replace=False)
    pool = products.loc[products["category"].isin(cats), "product_id"].to_numpy()
    end = inter["timestamp"].max()
    rows = []
    for i in range(n):
        t0 = start + (end - start) * rng.random()
        for k in range(int(rng.integers(1, 6))):
            rows.append(
                {
                    "customer_id": f"NEWSEG-{i:06d}",
                    "product_id": rng.choice(pool),
                    "timestamp": t0 + pd.Timedelta(minutes=k),
                    "event": "view",
                    "quantity": 1,
                    "session_id": f"NEWSEG-S{i:06d}",
                }
            )
    extra = pd.DataFrame(rows)
    extra = extra.astype({c: inter[c].dtype for c in extra.columns if c in inter.columns})
    return pd.concat([inter, extra], ignore_index=True)


def recommender_case(store: Store, rule: DriftRule, rng) -> dict[str, list[str]]:
    inter, products = store.interactions, store.products
    end = inter["timestamp"].max()
    new_start, ref_start = end - 7 * DAY, end - 14 * DAY
    ref_part = inter[(inter["timestamp"] > ref_start) & (inter["timestamp"] <= new_start)]
    known = set(inter.loc[inter["timestamp"] <= ref_start, "customer_id"].astype(str))
    reference = recommender_reference(ref_part, products, known)
    out = {}
    shifted = new_segment(inter, products, new_start, rng)
    for case, frame in (("control", inter), ("new_segment", shifted)):
        new = recommender_batch(reference, frame[frame["timestamp"] > new_start], products, known)
        out[case] = flagged(reference, new, rule)
    return out


# ------------------------------------------------------------------------------------- run
def summarise(per_seed: list[dict], touched) -> dict:
    """Detection (any touched column flagged), cleanliness (no other column flagged) and how
    often each column was flagged."""
    n = len(per_seed)
    counts: dict[str, int] = {}
    for cols in per_seed:
        for c in cols:
            counts[c] = counts.get(c, 0) + 1
    detected = sum(any(touched(c) for c in cols) for cols in per_seed)
    clean = sum(not any(not touched(c) for c in cols) for cols in per_seed)
    return {
        "detected": f"{detected}/{n}",
        "detection_rate": detected / n,
        "on_target_rate": clean / n,
        "columns_flagged_mean": float(np.mean([len(c) for c in per_seed])),
        "flagged_counts": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
    }


def run(
    seeds: int = 20, scale: str = "small", out: Path | None = None, config: Path | None = None
) -> dict:
    drift = load_monitor_config(config).drift
    rule = drift.rule()
    started = time.perf_counter()
    cases: dict[str, list] = {}
    price_categories: list[str] = []
    for seed in progress(range(seeds), desc="drift seeds", unit="seed"):
        rng = np.random.default_rng(1000 + seed)
        store = load_source(SourceConfig(kind="generated", scale=scale, seed=seed))
        results = fraud_case(store.payments, rule, rng)
        fc, cat = forecast_case(store, rule, rng)
        price_categories.append(cat)
        rc = recommender_case(store, rule, rng)
        for family, res in (("fraud", results), ("forecast", fc), ("recommender", rc)):
            for case, cols in res.items():
                key = f"{family}:{case}"
                cases.setdefault(key, []).append(cols)
        print(f"seed {seed}: " + "; ".join(f"{k}={len(v[-1])}" for k, v in cases.items()))
    controls = {
        family: {
            "false_alarms": f"{sum(bool(c) for c in cases[f'{family}:control'])}/{seeds}",
            "false_alarm_rate": float(np.mean([bool(c) for c in cases[f"{family}:control"]])),
            "flagged_counts": summarise(cases[f"{family}:control"], lambda c: False)[
                "flagged_counts"
            ],
        }
        for family in ("fraud", "forecast", "recommender")
    }
    price_cols = cases["forecast:price_change"]
    price_hits = [
        f"price:{cat}" in cols for cat, cols in zip(price_categories, price_cols, strict=True)
    ]
    price_clean = [
        all(c == f"price:{cat}" for c in cols)
        for cat, cols in zip(price_categories, price_cols, strict=True)
    ]
    shifts = {
        **{
            key.removeprefix("fraud:"): summarise(cases[key], fraud_touched)
            for key in cases
            if key.startswith("fraud:fraud_scenario")
        },
        "price_change": {
            "detected": f"{sum(price_hits)}/{seeds}",
            "detection_rate": float(np.mean(price_hits)),
            "on_target_rate": float(np.mean(price_clean)),
            "columns_flagged_mean": float(np.mean([len(c) for c in price_cols])),
            "flagged_counts": summarise(price_cols, lambda c: True)["flagged_counts"],
        },
        "new_segment": summarise(
            cases["recommender:new_segment"], lambda c: c in ("request_kind", "category")
        ),
    }
    result = {
        "seeds": seeds,
        "scale": scale,
        "rule": drift.model_dump(),
        "controls": controls,
        "shifts": shifts,
        "seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if out is not None:
        Path(out).write_text(text + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--scale", default="small")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--config", type=Path, help="monitor config (its [drift] rule)")
    args = parser.parse_args()
    run(args.seeds, args.scale, args.out, args.config)


if __name__ == "__main__":
    main()
