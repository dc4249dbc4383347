"""Benchmark: the generated `medium` store with its planned promotions and prices, h=28, 3 folds.

The generator publishes its promotion calendar and price changes (`promotions`, `prices`, each
row with the time it was planned); each backtest fold reads only what was planned by its origin.
shopml's LightGBM runs twice, with and without the known-future inputs, beside the peers
(mlforecast LightGBM with the same planned promotion/discount/price inputs, statsforecast AutoETS)
and the baselines, on the same folds. Settings are chosen on the inner fold before the first test
origin, as on every dataset. The 500 best sellers (of 5,000 products; the tail sells a few
units a year) are scored, like the Online Retail benchmark.
"""

from __future__ import annotations

import time
from pathlib import Path

from experiments.forecast_online_retail import model_rows, tuned_settings
from experiments.forecast_peers import AutoETSPeer, MLForecastLGBM
from experiments.reports import write_report
from features.demand import PanelConfig, build_panel
from features.generator import generate
from features.generator.config import GeneratorConfig
from features.known_future import KnownFuture
from models.forecast import LightGBMForecaster, MovingAverage, SeasonalNaive
from training.backtest import backtest

SCALE = "medium"
TOP_N = 500
HORIZON = 28
FOLDS = 3


def models(chosen: dict) -> dict:
    """Every model of the run; `chosen` are the settings picked on the inner fold."""
    params = {"horizon": HORIZON, **chosen}
    return {
        "seasonal_naive": lambda: SeasonalNaive(),
        "moving_average": lambda: MovingAverage(window=28),
        "lightgbm": lambda: LightGBMForecaster(**params),
        "lightgbm_no_known_future": lambda: LightGBMForecaster(**{**params, "known_future": False}),
        "mlforecast_lgbm": lambda: MLForecastLGBM(horizon=HORIZON, known_future=True),
        "AutoETS": lambda: AutoETSPeer(horizon=HORIZON),
    }


KNOWN_FUTURE = {"lightgbm": True, "mlforecast_lgbm": True}


def run(out: Path | None = None, seed: int = 0) -> dict:
    """Run the benchmark; write and return the issue-14 JSON (plus targets and settings)."""
    t0 = time.perf_counter()
    store = generate(GeneratorConfig(scale=SCALE, seed=seed))
    known = KnownFuture.from_store(store)
    cfg = PanelConfig(top_n=TOP_N)
    full = build_panel(store.order_lines, store.products, cfg, known)
    lines = store.order_lines
    setup_seconds = time.perf_counter() - t0
    chosen, tuning = tuned_settings(lines, store.products, full, cfg, HORIZON, FOLDS, known=known)
    result = backtest(
        lines,
        store.products,
        models(chosen),
        n_folds=FOLDS,
        horizon=HORIZON,
        panel_config=cfg,
        full_panel=full,
        known=known,
        log=lambda m: print(m, flush=True),
    )
    payload = {
        **model_rows(result, KNOWN_FUTURE),
        "settings": tuning,
        "targets": _targets(result.summary(), result),
        "setup": {
            "scale": SCALE,
            "products": int(full.n_products),
            "panel_days": len(full.dates),
            "horizon": HORIZON,
            "folds": FOLDS,
            "promotions": 0 if store.promotions is None else len(store.promotions),
            "prices": 0 if store.prices is None else len(store.prices),
            "setup_seconds": round(setup_seconds, 1),
        },
    }
    write_report(payload, out)
    return payload


def _targets(summary: dict, result) -> dict:
    """Issue 14: WAPE <= 0.85 x without known-future inputs and <= 0.9 x the best peer; P10-P90
    coverage 0.75-0.85 overall and in every level decile; fit no slower than mlforecast."""
    ours = summary["lightgbm"]
    peers = {m: summary[m]["wape"] for m in ("mlforecast_lgbm", "AutoETS") if m in summary}
    best_peer = min(peers, key=peers.get)
    band = result.coverage("lightgbm")
    deciles = [m["coverage_p10_p90"] for m in band["by_decile"].values()]
    return {
        "wape_ratio_vs_no_known_future": round(
            ours["wape"] / summary["lightgbm_no_known_future"]["wape"], 4
        ),
        "wape_ratio_vs_no_known_future_max": 0.85,
        "wape_ratio_vs_best_peer": round(ours["wape"] / peers[best_peer], 4),
        "best_peer": best_peer,
        "wape_ratio_vs_best_peer_max": 0.9,
        "coverage_p10_p90": round(band["overall"]["coverage_p10_p90"], 4),
        "coverage_decile_min": round(min(deciles), 4),
        "coverage_decile_max": round(max(deciles), 4),
        "coverage_range": [0.75, 0.85],
        "fit_seconds_ratio_vs_mlforecast": round(
            ours["fit_seconds"] / summary["mlforecast_lgbm"]["fit_seconds"], 3
        ),
    }
