"""Rolling-origin backtest of demand forecasters.

Folds end at the data end: with N folds and horizon H the origins are end - N*H, ..., end - H (or
every `step` days). For each fold the demand panel is rebuilt from the order lines known at the
origin (so a cancellation made after the origin cannot leak into history), every model is fitted on
it and forecasts H days, and the forecast is scored against the full-data panel on observed days.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.demand import DemandPanel, PanelConfig, build_panel
from features.known_future import KnownFuture
from models.forecast.base import Forecaster
from models.forecast.tuning import DEFAULT_WORK_BUDGET, TuningResult, choose_settings
from shopml.compute import Compute
from shopml.errors import ConfigError, DataError
from shopml.progress import progress
from training.forecast_metrics import coverage_report, evaluate, evaluation_frame, summarize


@dataclass
class FoldResult:
    fold: int
    origin: pd.Timestamp
    build_seconds: float
    fit_seconds: dict[str, float]
    predict_seconds: dict[str, float]
    fit_cpu_seconds: dict[str, float]
    build_cpu_seconds: float
    metrics: dict[str, dict]
    frames: dict[str, pd.DataFrame] = field(repr=False, default_factory=dict)
    load: float | None = None  # 1-minute load average of the machine at the fold's end


@dataclass
class BacktestResult:
    folds: list[FoldResult]
    horizon: int

    @property
    def models(self) -> list[str]:
        return list(self.folds[0].metrics) if self.folds else []

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean over folds of every overall metric, per model (plus mean fit/predict seconds)."""
        out = {}
        for m in self.models:
            rows = [f.metrics[m]["overall"] for f in self.folds]
            keys = rows[0].keys()
            agg = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
            agg["fit_seconds"] = float(np.mean([f.fit_seconds[m] for f in self.folds]))
            agg["predict_seconds"] = float(np.mean([f.predict_seconds[m] for f in self.folds]))
            agg["build_plus_fit_seconds"] = agg["fit_seconds"] + float(
                np.mean([f.build_seconds for f in self.folds])
            )
            agg["build_plus_fit_cpu_seconds"] = float(
                np.mean([f.fit_cpu_seconds[m] + f.build_cpu_seconds for f in self.folds])
            )
            out[m] = agg
        return out

    def pooled(self, model: str) -> pd.DataFrame:
        """The scored frames of `model` over all folds, one table."""
        return pd.concat([f.frames[model] for f in self.folds], ignore_index=True)

    def breakdown(self, model: str, by: str) -> dict[str, dict[str, float]]:
        """Metrics of `model` by "week" or "category", pooled over all folds."""
        df = self.pooled(model)
        return {str(k): summarize(g) for k, g in df.groupby(by, sort=True)}

    def coverage(self, model: str) -> dict:
        """P10-P90 band of `model` pooled over all folds: overall, per decile of the P50 level
        and per horizon week (`training.forecast_metrics.coverage_report`)."""
        return coverage_report(self.pooled(model))


def rolling_origins(
    dates: pd.DatetimeIndex, n_folds: int, horizon: int, step: int | None = None
) -> list[pd.Timestamp]:
    """Origins (last training day) of `n_folds` folds ending at the last date."""
    if n_folds < 1 or horizon < 1:
        raise ConfigError(f"n_folds and horizon must be >= 1, got {n_folds} and {horizon}")
    step = step or horizon
    end = dates[-1]
    origins = [end - pd.Timedelta(days=horizon + k * step) for k in range(n_folds)][::-1]
    if origins[0] <= dates[0]:
        raise DataError(
            f"{n_folds} folds of {horizon} days need data before {origins[0].date()}, "
            f"but it starts on {dates[0].date()}"
        )
    return origins


def backtest(
    order_lines: pd.DataFrame,
    products: pd.DataFrame | None,
    models: dict[str, Callable[[], Forecaster]],
    *,
    n_folds: int = 3,
    horizon: int = 28,
    step: int | None = None,
    panel_config: PanelConfig | None = None,
    full_panel: DemandPanel | None = None,
    known: KnownFuture | None = None,
    log: Callable[[str], None] | None = None,
    compute: Compute | None = None,
) -> BacktestResult:
    """Fit and score every model factory on each rolling-origin fold (see module docstring).
    `known`: the planned promotions/prices/closures; each fold's panel reads only what was
    planned by its origin (`DemandPanel.known_future`). On a Dask `compute` each fold is one
    task on the cluster (the same code: the same metrics and frames as here)."""
    cfg = panel_config or PanelConfig()
    full = full_panel if full_panel is not None else build_panel(order_lines, products, cfg, known)
    keep = set(full.product_ids)
    lines = order_lines[order_lines["product_id"].astype(str).isin(keep)]
    origins = rolling_origins(full.dates, n_folds, horizon, step)
    args = (lines, products, cfg, known, models, full, horizon)
    folds = []
    if compute is not None and compute.is_dask:
        client = compute.client
        shared = [client.scatter(a) for a in args]
        futures = [
            client.submit(_run_fold, i, origin, *shared, pure=False)
            for i, origin in enumerate(origins, start=1)
        ]
        for future in futures:  # in fold order, each logged as soon as it is there
            folds.append(future.result())
            _log_fold(folds[-1], log)
    else:
        for i, origin in enumerate(progress(origins, "backtest folds", unit="fold"), start=1):
            folds.append(_run_fold(i, origin, *args))
            _log_fold(folds[-1], log)
    return BacktestResult(folds, horizon)


def _log_fold(fold: FoldResult, log: Callable[[str], None] | None) -> None:
    for name in fold.metrics if log else ():
        o = fold.metrics[name]["overall"]
        log(
            f"fold {fold.fold} ({fold.origin.date()}) {name}: wape {o['wape']:.3f} bias "
            f"{o['bias']:+.3f} coverage {o['coverage_p10_p90']:.3f} ordered band "
            f"{o['band_ordered_share']:.3f} fit "
            f"{fold.fit_seconds[name]:.1f}s (CPU {fold.fit_cpu_seconds[name]:.1f}s) predict {fold.predict_seconds[name]:.2f}s"
        )


def _run_fold(i, origin, lines, products, cfg, known, models, full, horizon) -> FoldResult:
    """Fold `i`: the panel known at `origin`, every model fitted on it and scored."""
    t0, c0 = time.perf_counter(), time.process_time()
    fold_cfg = dataclasses.replace(cfg, end=origin, top_n=None)
    history = build_panel(
        lines[lines["timestamp"] < origin + pd.Timedelta(days=1)], products, fold_cfg, known
    )
    build, build_cpu = time.perf_counter() - t0, time.process_time() - c0
    fit_s, pred_s, fit_cpu, metrics, frames = {}, {}, {}, {}, {}
    for name, factory in models.items():
        timing, metrics[name], frames[name] = _score_model(factory, history, full, horizon, i)
        fit_s[name], fit_cpu[name], pred_s[name] = timing
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return FoldResult(i, origin, build, fit_s, pred_s, fit_cpu, build_cpu, metrics, frames, load)


def _score_model(factory, history: DemandPanel, full: DemandPanel, horizon: int, fold: int):
    """Fit a new model on the fold's history, forecast `horizon` days and score it against the
    full panel: ((fit wall s, fit CPU s, predict wall s), metrics, scored frame)."""
    model = factory()
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit(history)
    fit, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    fc = model.predict(horizon)
    predict = time.perf_counter() - t0
    frame = evaluation_frame(fc, full, history)
    frame["fold"] = fold
    return (fit, fit_cpu, predict), evaluate(frame), frame


def settings_before_folds(
    order_lines: pd.DataFrame,
    products: pd.DataFrame | None,
    full: DemandPanel,
    cfg: PanelConfig,
    horizon: int,
    n_folds: int,
    known: KnownFuture | None = None,
    n_trials: int = 10,
    seed: int = 0,
    on_trial: Callable[[int, dict, float], None] | None = None,
    work_budget: float | None = DEFAULT_WORK_BUDGET,
) -> tuple[TuningResult, pd.Timestamp]:
    """LightGBM settings chosen on the shop's own history before the first test fold: the panel
    is rebuilt from the order lines known at the first test origin and its last `horizon` days
    are the inner validation fold, so no test day is read. (result, first test origin)."""
    first = rolling_origins(full.dates, n_folds, horizon)[0]
    keep = set(full.product_ids)
    known_lines = order_lines[
        order_lines["product_id"].astype(str).isin(keep)
        & (order_lines["timestamp"] < first + pd.Timedelta(days=1))
    ]
    fold_cfg = dataclasses.replace(cfg, end=first, top_n=None)
    history = build_panel(known_lines, products, fold_cfg, known)
    res = choose_settings(
        history, horizon, n_trials=n_trials, seed=seed, on_trial=on_trial, work_budget=work_budget
    )
    return res, first
