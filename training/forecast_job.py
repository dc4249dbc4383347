"""`shopml train forecast`: backtest, refit, register and publish the next-H-days demand forecast.

Steps: load the store, build the daily demand panel (`features.demand`), run a rolling-origin
backtest of the configured model beside the baselines, log metrics (overall, by horizon week, by
category; the P10-P90 band per level decile and week, the share of ordered bands), curves and
plots to MLflow, refit the model on all days, log it as a native model and
register it, then write the forecast of the next `horizon` days as Parquet and log it.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Literal

import mlflow
import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from features.demand import DemandPanel, PanelConfig, store_country
from features.demand_dask import build_panel_on
from features.known_future import KnownFuture
from features.reference import Profile
from features.sources import SourceConfig, load_source
from models.forecast import FORECASTERS, make_forecaster
from models.forecast.base import FLAG_SHORT, Forecaster, as_panel
from models.forecast.tuning import DEFAULT_WORK_BUDGET
from registry.store import configure, load_logged
from shopml.compute import Compute, ComputeConfig, open_compute
from shopml.config import ConfigModel
from shopml.errors import DataError
from shopml.settings import Settings, load_settings
from training import tracking
from training.backtest import BacktestResult, backtest, settings_before_folds
from training.forecast_dask import dask_booster_trainer
from training.params import check_kind_params
from training.reference_profiles import forecast_reference_for, store_reference
from training.tracking import TrainResult

FAMILY = "forecast"


FORECAST_KINDS = tuple(FORECASTERS)


class ForecastModelConfig(ConfigModel):
    """The forecaster to train: a kind and its constructor parameters (those left out keep the
    forecaster's defaults; the job gives LightGBM its horizon and seed)."""

    kind: Literal[FORECAST_KINDS] = "lightgbm"
    params: dict = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_params(self) -> ForecastModelConfig:
        check_kind_params(FORECASTERS, self.kind, self.params)
        return self


class ForecastJobConfig(ConfigModel):
    """Everything `shopml train forecast` needs (see experiments/configs/forecast.toml)."""

    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    seed: int = 0
    source: SourceConfig = Field(default_factory=lambda: SourceConfig(kind="generated"))
    horizon: int = Field(28, ge=1, le=366)
    n_folds: int = Field(3, ge=1, le=52)
    top_n: int | None = Field(None, ge=1, description="forecast only the N best-selling products")
    country: str | None = Field(None, description="ISO code for holidays; default from the data")
    exclude_categories: list[str] = Field(default_factory=lambda: ["non_product"])
    model: ForecastModelConfig = Field(default_factory=ForecastModelConfig)
    baselines: list[Literal["seasonal_naive", "moving_average"]] = Field(
        default_factory=lambda: ["seasonal_naive", "moving_average"]
    )
    tune_trials: int = Field(
        10,
        ge=0,
        le=200,
        description="LightGBM settings search on the inner fold before the test folds "
        "(Optuna trials, each a nested MLflow run); 0 keeps the configured parameters",
    )
    tune_work_budget: float = Field(
        DEFAULT_WORK_BUDGET,
        ge=0,
        description="cap on the settings search's work: training rows x boosting rounds summed "
        "over trials, in millions; the search stops after the trial that reaches it (a count, not "
        "a clock: the same data and seed give the same choice); 0 = only tune_trials caps it",
    )
    plot_top_products: int = Field(6, ge=0, le=24)
    register_model: bool = True
    output: Path | None = Field(None, description="where to write the forecast Parquet")
    lightgbm_on_dask: bool = Field(
        False,
        description="with compute.engine = 'dask': the final LightGBM model trained across the "
        "workers by lightgbm.dask (data-parallel; its trees differ from the single-machine "
        "booster within tolerance) instead of single-machine LightGBM in one task",
    )


def _factory(kind: str, params: dict, horizon: int, seed: int):
    params = dict(params)
    if kind == "lightgbm":
        params.setdefault("horizon", horizon)
        params.setdefault("seed", seed)

    def make():
        return make_forecaster(kind, **params)

    return make


def _flat_metrics(result: BacktestResult, primary: str) -> dict[str, float]:
    summary = result.summary()
    out: dict[str, float] = {}
    for key, value in summary[primary].items():
        out[key] = value
    for name, agg in summary.items():
        if name == primary:
            continue
        for key in ("wape", "mase", "bias", "coverage_p10_p90", "band_ordered_share"):
            out[f"{name}.{key}"] = agg[key]
    for week, m in result.breakdown(primary, "week").items():
        out[f"wape.week{week}"] = m["wape"]
        out[f"bias.week{week}"] = m["bias"]
    out |= _band_metrics(result.coverage(primary))
    for cat, m in result.breakdown(primary, "category").items():
        safe = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in cat)
        out[f"wape.category.{safe}"] = m["wape"]
    return {k: float(v) for k, v in out.items() if v is not None and np.isfinite(v)}


def _band_metrics(report: dict) -> dict[str, float]:
    """The band's coverage per level decile and horizon week (pooled over folds), and the worst
    decile's coverage and upper-tail share, which the promotion gate guards."""
    out = {
        "coverage_p10_p90.decile_min": report["decile_min_coverage"],
        "above_p90.decile_max": report["decile_max_above_p90"],
    }
    for d, m in report["by_decile"].items():
        out[f"coverage_p10_p90.decile{d}"] = m["coverage_p10_p90"]
        out[f"above_p90.decile{d}"] = m["above_p90"]
        out[f"below_p10.decile{d}"] = m["below_p10"]
    for w, m in report["by_week"].items():
        out[f"coverage_p10_p90.week{w}"] = m["coverage_p10_p90"]
    return out


def _plot_top_products(result: BacktestResult, model: str, panel: DemandPanel, k: int):
    plt = tracking.pyplot()
    fold = result.folds[-1]
    frame = fold.frames[model]
    top = frame.groupby("product_id")["y"].sum().sort_values(ascending=False).head(k).index
    n = max(len(top), 1)
    fig, axes = plt.subplots(n, 1, figsize=(10, 2.4 * n), squeeze=False)
    start = fold.origin - pd.Timedelta(days=3 * result.horizon)
    for ax, pid in zip(axes[:, 0], top, strict=False):
        row = panel.positions([pid])[0]
        hist = pd.Series(panel.units[row], index=panel.dates)
        hist = hist[
            (hist.index > start) & (hist.index <= fold.origin + pd.Timedelta(days=result.horizon))
        ]
        ax.plot(hist.index, hist.to_numpy(), color="black", lw=1, label="actual")
        f = frame[frame["product_id"] == pid].sort_values("date")
        ax.plot(f["date"], f["p50"], color="tab:blue", lw=1.5, label="P50")
        ax.fill_between(
            f["date"], f["p10"], f["p90"], color="tab:blue", alpha=0.25, label="P10-P90"
        )
        ax.axvline(fold.origin, color="grey", ls="--", lw=0.8)
        ax.set_title(f"product {pid}", fontsize=9)
    axes[0, 0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def _plot_error_by_horizon(result: BacktestResult):
    plt = tracking.pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    for model in result.models:
        df = pd.concat([f.frames[model] for f in result.folds])
        g = df.groupby("horizon").apply(
            lambda x: np.abs(x["y"] - x["p50"]).sum() / max(x["y"].sum(), 1e-9),
            include_groups=False,
        )
        ax.plot(g.index, g.to_numpy(), marker=".", label=model)
    ax.set_xlabel("days after the forecast origin")
    ax.set_ylabel("WAPE")
    ax.set_title("Backtest error by horizon (mean over folds)")
    ax.legend()
    fig.tight_layout()
    return fig


def load_demand(config: ForecastJobConfig, settings: Settings | None = None):
    """(store, order_lines, products, panel config) of the configured source."""
    store = load_source(config.source, settings)
    if store.order_lines is None:
        raise DataError(f"source {config.source.describe()} has no order_lines table to forecast")
    lines = store.order_lines
    products = store.products
    if products is not None and config.exclude_categories:
        drop = products.loc[products["category"].isin(config.exclude_categories), "product_id"]
        lines = lines[~lines["product_id"].isin(set(drop.astype(str)))]
    country = config.country or store_country(lines, store.customers)
    return store, lines, products, PanelConfig(top_n=config.top_n, country=country)


def _factories(config: ForecastJobConfig, primary: str) -> dict:
    """Factories of the configured baselines (all but `primary`), in config order."""
    return {
        name: _factory(name, {}, config.horizon, config.seed)
        for name in config.baselines
        if name != primary
    }


def _log_backtest(
    result: BacktestResult, primary: str, panel: DemandPanel, config: ForecastJobConfig
) -> dict[str, float]:
    """Log the backtest of `primary` (metrics, summary, curves, plots); return the metrics."""
    metrics = _flat_metrics(result, primary)
    mlflow.log_metrics(metrics)
    tested = pd.concat([f.frames[primary] for f in result.folds])
    tracking.log_protocol(  # the test: rolling origins, horizon and the series it covers
        {
            "split": "rolling_origin",
            "origins": [str(f.origin.date()) for f in result.folds],
            "horizon": config.horizon,
            "filters": {"top_n": config.top_n, "exclude_categories": config.exclude_categories},
        },
        {"test_series": int(tested["product_id"].nunique()), "test_points": len(tested)},
    )
    mlflow.log_dict(
        {
            "summary": result.summary(),
            "by_week": result.breakdown(primary, "week"),
            "by_category": result.breakdown(primary, "category"),
            "band": result.coverage(primary),
            "origins": [str(f.origin.date()) for f in result.folds],
        },
        "backtest/summary.json",
    )
    by_h = pd.concat([f.frames[primary] for f in result.folds]).groupby("horizon")
    mae = by_h.apply(lambda x: np.abs(x["y"] - x["p50"]).mean(), include_groups=False)
    wape_h = by_h.apply(
        lambda x: np.abs(x["y"] - x["p50"]).sum() / max(x["y"].sum(), 1e-9),
        include_groups=False,
    )
    tracking.log_curve("error_by_horizon", mae.index, mae.to_numpy())
    tracking.log_curve("wape_by_horizon", wape_h.index, wape_h.to_numpy())
    if config.plot_top_products:
        tracking.log_figure(
            _plot_top_products(result, primary, panel, config.plot_top_products),
            "plots/actual_vs_forecast_top_products.png",
        )
    tracking.log_figure(_plot_error_by_horizon(result), "plots/error_by_horizon.png")
    return metrics


def _backtest(
    config: ForecastJobConfig,
    lines,
    products,
    factories: dict,
    panel_cfg,
    panel,
    compute: Compute | None = None,
):
    """The rolling-origin backtest of `factories` that `train` and `evaluate` both run (each
    fold a task on the cluster when `compute` is Dask)."""
    return backtest(
        lines,
        products,
        factories,
        n_folds=config.n_folds,
        horizon=config.horizon,
        panel_config=panel_cfg,
        full_panel=panel,
        known=panel.known,
        compute=compute,
    )


def _tune(config: ForecastJobConfig, lines, products, panel_cfg, panel) -> dict:
    """LightGBM settings chosen on the inner fold before the test folds, each trial a nested
    MLflow run; the chosen values are logged as `tuned.*` params. {} when not searched."""
    if config.model.kind != "lightgbm" or config.tune_trials == 0:
        return {}

    experiment = mlflow.active_run().info.experiment_id

    def log_trial(number: int, params: dict, wape: float) -> None:
        name = f"settings-trial-{number}"
        with mlflow.start_run(experiment_id=experiment, run_name=name, nested=True):
            mlflow.log_params({k: str(v) for k, v in params.items()})
            mlflow.log_metric("inner_wape", wape)

    res, first = settings_before_folds(
        lines,
        products,
        panel,
        panel_cfg,
        config.horizon,
        config.n_folds,
        panel.known,
        n_trials=config.tune_trials,
        seed=config.seed,
        on_trial=log_trial,
        work_budget=config.tune_work_budget or None,
    )
    applied = {k: v for k, v in res.params.items() if k not in config.model.params}
    mlflow.log_params({f"tuned.{k}": str(v) for k, v in applied.items()})  # config keys win
    mlflow.log_params({"tuned.inner_fold": f"{res.inner_origin}..{res.inner_end}"})
    mlflow.log_metrics(
        {
            "tuned.inner_wape": res.wape,
            "tuned.inner_wape_defaults": res.default_wape,
            "tuned.trials": float(len(res.trials)),
            "tuned.work_mrow_rounds": res.work,
            "tuned.seconds": res.seconds,
        }
    )
    mlflow.set_tag("tuned.capped_by_work_budget", str(res.capped).lower())
    return applied


def train(config: ForecastJobConfig, settings: Settings | None = None) -> TrainResult:
    """Backtest, refit, register and publish the forecast (see module docstring), on the
    engine of `config.compute`."""
    settings = settings or load_settings()
    with open_compute(config.compute, settings.dask_scheduler) as compute:
        return _train(config, settings, compute)


def _fit_final(
    compute: Compute, factory, panel: DemandPanel, lightgbm_on_dask: bool = False
) -> Forecaster:
    """The model refitted on all days: here, as one task on a Dask worker (same code and seed,
    so the same model), or with `lightgbm_on_dask` its boosters trained by `lightgbm.dask`
    across the workers (`training.forecast_dask`)."""
    if not compute.is_dask:
        return factory().fit(panel)
    if not lightgbm_on_dask:
        return compute.client.submit(_fit_new, factory, panel, pure=False).result()
    model = factory()
    if model.kind != "lightgbm":  # the baselines train nothing
        return model.fit(panel)
    model.booster_trainer = dask_booster_trainer(compute.client)
    try:
        return model.fit(panel)
    finally:
        del model.booster_trainer


def _fit_new(factory, panel: DemandPanel) -> Forecaster:
    return factory().fit(panel)


def _train(config: ForecastJobConfig, settings: Settings, compute: Compute) -> TrainResult:
    store, lines, products, panel_cfg = load_demand(config, settings)
    panel = build_panel_on(compute, lines, products, panel_cfg, KnownFuture.from_store(store))
    primary = config.model.kind

    with tracking.start_run(FAMILY, config=config, store=store, settings=settings) as run:
        mlflow.log_params({f"compute.cluster.{k}": v for k, v in compute.describe().items()})
        chosen = _tune(config, lines, products, panel_cfg, panel)
        params = {**chosen, **config.model.params}
        factories = {primary: _factory(primary, params, config.horizon, config.seed)}
        factories |= _factories(config, primary)
        result = _backtest(config, lines, products, factories, panel_cfg, panel, compute)
        metrics = _log_backtest(result, primary, panel, config)
        final = _fit_final(compute, factories[primary], panel, config.lightgbm_on_dask)
        out = _publish(final, config, panel, settings.home, run.info.run_id, products)
        reference = forecast_reference_for(
            lines, products, out, config.exclude_categories, store.promotions
        )
        uri = _log_model(final, config, metrics, reference)
        version = tracking.register_model(uri, family=FAMILY) if config.register_model else None
        return TrainResult.of_run(run, store, metrics, version, forecast=str(out), model=uri)


def _publish(
    final: Forecaster, config: ForecastJobConfig, panel, home: Path, run_id: str, products=None
) -> Path:
    """Write the next `horizon` days' forecast as Parquet, log it and its totals; its path.
    Without `top_n`, catalog products that never sold get a zero forecast (`short_history`), so
    the forecast (and `/forecast`) covers every product."""
    forecast = final.predict(config.horizon)
    if products is not None and config.top_n is None:
        forecast = pd.concat([forecast, _unsold(forecast, products, config)], ignore_index=True)
    out = Path(config.output or (home / "forecasts" / f"forecast-{run_id}.parquet"))
    out.parent.mkdir(parents=True, exist_ok=True)
    forecast.to_parquet(out, index=False)
    mlflow.log_artifact(str(out), "forecast")
    mlflow.log_metrics(
        {
            "forecast.products": float(forecast["product_id"].nunique()),
            "forecast.units_p50": float(forecast["p50"].sum()),
        }
    )
    return out


def _unsold(forecast: pd.DataFrame, products: pd.DataFrame, config: ForecastJobConfig):
    """Zero forecasts, flagged `short_history`, for the catalog products without any sale."""
    catalog = products
    if "category" in products.columns:
        catalog = products[~products["category"].isin(config.exclude_categories)]
    ids = sorted(set(catalog["product_id"].astype(str)) - set(forecast["product_id"].astype(str)))
    dates = forecast["date"].drop_duplicates().sort_values().to_numpy()
    n = len(ids) * len(dates)
    return pd.DataFrame(
        {
            "product_id": np.repeat(np.array(ids, dtype=object), len(dates)),
            "date": np.tile(dates, len(ids)),
            "p10": np.zeros(n),
            "p50": np.zeros(n),
            "p90": np.zeros(n),
            "flag": np.full(n, FLAG_SHORT, dtype=object),
        }
    )


def _log_model(
    final: Forecaster, config: ForecastJobConfig, metrics: dict, reference: Profile | None = None
) -> str:
    """Log the refitted forecaster (with the job's horizon, backtest metrics and reference
    profile); its URI."""
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = final.save(Path(tmp) / "model")
        if reference is not None:
            store_reference(model_dir, reference)
        (model_dir / "job.json").write_text(
            json.dumps({"horizon": config.horizon, "metrics": metrics})
        )
        return tracking.log_native_model(
            model_dir, family=FAMILY, metadata_extra={"shopml.horizon": config.horizon}
        )


class _Fixed:
    """A fitted forecaster used as is inside a backtest: `fit` does not train, it only gives the
    model the fold's history to forecast from (its `panel_`, the state every forecaster predicts
    from); the learned part (LightGBM booster, calibration, id maps) stays the champion's."""

    def __init__(self, model: Forecaster):
        self.model = model

    def fit(self, panel) -> _Fixed:
        self.model_ = copy.copy(self.model)
        self.model_.panel_ = as_panel(panel)
        return self

    def predict(self, horizon: int, product_ids=None) -> pd.DataFrame:
        return self.model_.predict(horizon, product_ids)


def evaluate(
    config: ForecastJobConfig, model_uri: str, settings: Settings | None = None
) -> TrainResult:
    """Backtest metrics of an existing fitted model (e.g. the champion) on `config`'s data and
    folds, under the names `train` logs; nothing is refitted, published or registered.

    Every fold is the one `train` would run (same origins, history rebuilt from the order lines
    known at the origin), but instead of fitting a new model the saved one forecasts from that
    history without retraining, as it does in production when fed new data; the baselines are
    fitted per fold as in `train`, so `<baseline>.wape` etc. are comparable too. The model's
    longest horizon must cover `config.horizon`. Caveat: when the new data extends the data the
    model was trained on, folds ending before its training end (tag `forecast.model_train_end`)
    were seen in training and flatter it; tag `forecast.folds_after_model_end` counts the folds
    that are truly out of sample (retrain at least `horizon` days after the model's training
    end and the last fold is one).
    """
    settings = configure(settings)
    with open_compute(config.compute, settings.dask_scheduler) as compute:
        return _evaluate(config, model_uri, settings, compute)


def _evaluate(config: ForecastJobConfig, model_uri: str, settings: Settings, compute: Compute):
    model: Forecaster = load_logged(model_uri, FAMILY)
    store, lines, products, panel_cfg = load_demand(config, settings)
    panel = build_panel_on(compute, lines, products, panel_cfg, KnownFuture.from_store(store))
    name = model.kind
    factories = {name: lambda: _Fixed(model)} | _factories(config, name)
    model_end = model.panel_.dates[-1]
    with tracking.evaluation_run(
        FAMILY, model_uri, config=config, store=store, settings=settings
    ) as run:
        mlflow.log_params({f"compute.cluster.{k}": v for k, v in compute.describe().items()})
        result = _backtest(config, lines, products, factories, panel_cfg, panel, compute)
        mlflow.set_tags(
            {
                "forecast.model_train_end": str(model_end.date()),
                "forecast.folds_after_model_end": str(
                    sum(f.origin >= model_end for f in result.folds)
                ),
            }
        )
        metrics = _log_backtest(result, name, panel, config)
    return TrainResult.of_run(run, store, metrics, model_uri=model_uri)
