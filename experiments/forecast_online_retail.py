"""Benchmark: daily demand of the 500 best-selling Online Retail products, h=28, 3 rolling folds.

Every shopml forecaster and the `mlforecast` library's LightGBM (peer) run in the same backtest
(`training.backtest`): each fold's panel is rebuilt from the order lines known at its origin and
all models are scored on the days the shop was open. Numbers are means over folds.
Targets (issue 5): LightGBM WAPE <= 0.9 x the best other model, P10-P90 coverage 0.75-0.85,
|bias| < 0.10, panel build + fit < 30 s per fold, predicting 500 x 28 < 2 s. The band is also
reported per decile of the forecast level and per horizon week, with the share of ordered bands
(P90 > P50 > P10, issue 11): the pooled coverage alone is dominated by slow sellers' zero days.
"""

from __future__ import annotations

import time
from pathlib import Path

from experiments.forecast_peers import AutoETSPeer, MLForecastLGBM
from experiments.reports import write_report
from features.demand import PanelConfig, build_panel
from features.loaders.online_retail import load, non_product_codes
from models.forecast import LightGBMForecaster, MovingAverage, SeasonalNaive
from training.backtest import backtest, settings_before_folds

TOP_N = 500
HORIZON = 28
FOLDS = 3
COUNTRY = "GB"
KEYS = (
    "wape",
    "mase",
    "rmsse",
    "bias",
    "pinball_loss",
    "pinball_loss_scaled",
    "coverage_p10_p90",
    "above_p90",
    "below_p10",
    "band_ordered_share",
    "fit_seconds",
    "predict_seconds",
    "build_plus_fit_seconds",
    "build_plus_fit_cpu_seconds",
)
LGBM_PARAMS = {"horizon": HORIZON}
TUNING_TRIALS = 10  # settings search on the inner fold before the test folds (seeded, capped)
PEERS = ("mlforecast_lgbm", "AutoETS")


def models(include_peer: bool = True, lgbm_params: dict | None = None) -> dict:
    params = {**LGBM_PARAMS, **(lgbm_params or {})}
    out = {
        "seasonal_naive": lambda: SeasonalNaive(),
        "moving_average": lambda: MovingAverage(window=28),
        "moving_average_7": lambda: MovingAverage(window=7),
        "lightgbm": lambda: LightGBMForecaster(**params),
    }
    if include_peer:
        out["mlforecast_lgbm"] = lambda: MLForecastLGBM(horizon=HORIZON)
        out["AutoETS"] = lambda: AutoETSPeer(horizon=HORIZON)
    return out


def tuned_settings(lines, products, full, cfg: PanelConfig, horizon: int, folds: int, known=None):
    """Settings chosen on the inner fold before the first test origin (`settings_before_folds`),
    printed; (params, report)."""
    res, first = settings_before_folds(
        lines,
        products,
        full,
        cfg,
        horizon,
        folds,
        known,
        n_trials=TUNING_TRIALS,
        on_trial=lambda n, p, w: print(f"settings trial {n}: inner wape {w:.4f} {p}", flush=True),
    )
    report = {
        "chosen": res.params,
        "inner_fold": [res.inner_origin, res.inner_end],
        "first_test_origin": str(first.date()),
        "inner_wape_chosen": round(res.wape, 4),
        "inner_bias_chosen": round(res.bias, 4),
        "inner_wape_defaults": round(res.default_wape, 4),
        "trials": len(res.trials),
        "work_mrow_rounds": round(res.work, 1),
        "capped_by_work_budget": res.capped,
        "seconds": round(res.seconds, 1),
    }
    print(f"settings chosen on the inner fold: {report}", flush=True)
    return res.params, report


def model_rows(result, known_future: dict[str, bool] | None = None) -> dict:
    """The issue-14 JSON: the best model and one row per model (peer flag, known-future flag,
    WAPE, MASE, bias, pooled and per-level-decile P10-P90 coverage, fit seconds per fold)."""
    known_future = known_future or {}
    summary = result.summary()
    rows = []
    for name, agg in summary.items():
        band = result.coverage(name)
        rows.append(
            {
                "model": name,
                "peer": name in PEERS,
                "known_future": bool(known_future.get(name, False)),
                "wape": round(agg["wape"], 4),
                "mase": round(agg["mase"], 4),
                "bias": round(agg["bias"], 4),
                "coverage_p10_p90": round(band["overall"]["coverage_p10_p90"], 4),
                "coverage_by_decile": [
                    round(band["by_decile"][d]["coverage_p10_p90"], 4)
                    for d in sorted(band["by_decile"])
                ],
                "fit_seconds_per_fold": [round(f.fit_seconds[name], 2) for f in result.folds],
                "fit_cpu_seconds_per_fold": [
                    round(f.fit_cpu_seconds[name], 2) for f in result.folds
                ],
                "load_per_fold": [f.load for f in result.folds],
            }
        )
    best = min(rows, key=lambda r: r["wape"])
    return {"best": best, "models": rows}


def run(out: Path | None = None, path: Path | None = None, include_peer: bool = True) -> dict:
    """Run the benchmark; write and return the JSON result described in issue 5."""
    t0 = time.perf_counter()
    store = load(path)
    lines = store.order_lines
    lines = lines[~lines["product_id"].isin(set(non_product_codes(store.products)))]
    cfg = PanelConfig(top_n=TOP_N, country=COUNTRY)
    full = build_panel(lines, store.products, cfg)
    load_seconds = time.perf_counter() - t0
    chosen, tuning = tuned_settings(lines, store.products, full, cfg, HORIZON, FOLDS)
    result = backtest(
        lines,
        store.products,
        models(include_peer, chosen),
        n_folds=FOLDS,
        horizon=HORIZON,
        panel_config=cfg,
        full_panel=full,
        log=lambda m: print(m, flush=True),
    )
    payload = {
        **model_rows(result),
        "settings": tuning,
        "targets": _targets(result.summary()),
        "lightgbm_by_week": {
            w: {k: round(v[k], 4) for k in ("wape", "bias", "coverage_p10_p90")}
            for w, v in result.breakdown("lightgbm", "week").items()
        },
        "lightgbm_band": _band(result.coverage("lightgbm")),
        "folds": [_fold_row(f) for f in result.folds],
        "setup": {
            "products": int(full.n_products),
            "horizon": HORIZON,
            "folds": FOLDS,
            "panel_days": len(full.dates),
            "closed_weekdays": list(full.closed_weekdays),
            "load_seconds": round(load_seconds, 2),
            "note": "train_seconds = panel build + LightGBM fit per fold (mean, wall clock; "
            "train_cpu_seconds = the same in CPU time of this process, which is "
            "what it costs without other jobs on the machine), predict_seconds "
            "= LightGBM predict of all products x 28 days",
        },
    }
    write_report(payload, out)
    return payload


def _targets(summary: dict) -> dict:
    """Issue 14: WAPE <= 0.95 x the best other model, |bias| < 0.10, fit no slower than mlforecast."""
    ours = summary["lightgbm"]
    others = {m: a["wape"] for m, a in summary.items() if m != "lightgbm"}
    best_other = min(others, key=others.get)
    out = {
        "wape_ratio_vs_best_other": round(ours["wape"] / others[best_other], 4),
        "best_other_model": best_other,
        "wape_ratio_max": 0.95,
        "bias": round(ours["bias"], 4),
        "abs_bias_max": 0.10,
    }
    if "mlforecast_lgbm" in summary:
        out["fit_seconds_ratio_vs_mlforecast"] = round(
            ours["fit_seconds"] / summary["mlforecast_lgbm"]["fit_seconds"], 3
        )
    return out


BAND_KEYS = ("coverage_p10_p90", "above_p90", "below_p10", "band_ordered_share")


def _band(report: dict) -> dict:
    """LightGBM's P10-P90 band pooled over folds: per level decile, per horizon week, worst ones."""
    return {
        "by_level_decile": {d: _rounded(m) for d, m in report["by_decile"].items()},
        "by_week": {w: _rounded(m) for w, m in report["by_week"].items()},
        "decile_min_coverage": round(report["decile_min_coverage"], 4),
        "decile_max_above_p90": round(report["decile_max_above_p90"], 4),
    }


def _rounded(metrics: dict) -> dict:
    return {k: round(metrics[k], 4) for k in BAND_KEYS}


def _fold_row(f) -> dict:
    """One backtest fold: its origin, every model's WAPE and LightGBM's bias, coverage, times."""
    return {
        "origin": str(f.origin.date()),
        "build_seconds": round(f.build_seconds, 2),
        **{f"{m}_wape": round(f.metrics[m]["overall"]["wape"], 4) for m in f.metrics},
        "lightgbm_bias": round(f.metrics["lightgbm"]["overall"]["bias"], 4),
        "lightgbm_coverage": round(f.metrics["lightgbm"]["overall"]["coverage_p10_p90"], 4),
        "lightgbm_band_ordered_share": round(
            f.metrics["lightgbm"]["overall"]["band_ordered_share"], 4
        ),
        "lightgbm_fit_seconds": round(f.fit_seconds["lightgbm"], 2),
        "lightgbm_fit_cpu_seconds": round(f.fit_cpu_seconds["lightgbm"], 2),
        "lightgbm_predict_seconds": round(f.predict_seconds["lightgbm"], 3),
    }
