"""Tiny trained-and-registered models for the serving tests (the family jobs where they exist).

Each `train_*` registers `shopml-<family>` in the MLflow store the environment points at and
returns the job's `TrainResult`; `offline_*` loads the champion back for comparisons.
"""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path

FORECAST_DAYS = 14


def _job(name: str):
    try:
        return importlib.import_module(f"training.{name}_job")
    except ModuleNotFoundError:
        return None


def train_recommender(store):
    job = _job("recommender")
    cfg = job.RecommenderJobConfig.model_validate(
        {
            "source": {"kind": "generated", "scale": "tiny", "seed": 0},
            "model": {"kind": "als", "params": {"factors": 8, "iterations": 5}},
            "fallback": True,
            "k": 10,
        }
    )
    return job.train(cfg, store=store)


def train_fraud(store):
    job = _job("fraud")
    if job is None:
        return _register_fraud_directly(store)
    cfg = job.FraudJobConfig.model_validate(
        {
            "source": {"kind": "generated", "scale": "tiny", "seed": 0},
            # the job file's settings beside the scorer's defaults (experiments/configs/fraud.toml)
            "model": {
                "num_boost_round": 30,
                "min_data_in_leaf": 20,
                "scale_pos_weight": "auto",
                "num_threads": 1,
            },
        }
    )
    return job.train(cfg)


def _register_fraud_directly(store):
    """A small engine (batch features + LightGBM + policy) when the fraud job is not there."""
    from features.fraud.batch import compute_batch
    from features.fraud.definition import FeatureSet
    from models.fraud import FraudEngine, FraudScorer
    from training.tracking import TrainResult, log_native_model, register_model, start_run

    fs = FeatureSet()
    pay = store.payments.sort_values("timestamp", kind="stable")
    X = compute_batch(pay, fs).to_numpy()
    y = pay["is_fraud"].to_numpy(bool)
    cut = int(len(y) * 0.8)
    scorer = FraudScorer(list(fs.names), num_boost_round=30, min_data_in_leaf=20, num_threads=1)
    scorer.fit(X[:cut], y[:cut], X[cut:], y[cut:])
    engine = FraudEngine(scorer, fs)
    with tempfile.TemporaryDirectory() as tmp, start_run("fraud", config={"seed": 0}) as run:
        native = Path(tmp) / "native"
        engine.save(native)
        uri = log_native_model(native, family="fraud")
        version = register_model(uri, family="fraud")
    return TrainResult(family="fraud", run_id=run.info.run_id, metrics={}, model_version=version)


def train_forecast(store):
    job = _job("forecast")
    if job is None:
        return _register_forecast_directly(store)
    cfg = job.ForecastJobConfig.model_validate(
        {
            "source": {"kind": "generated", "scale": "tiny", "seed": 0},
            "horizon": FORECAST_DAYS,
            "n_folds": 1,
            "model": {"kind": "seasonal_naive"},
            "baselines": [],
            "plot_top_products": 0,
        }
    )
    return job.train(cfg)


def _register_forecast_directly(store):
    from features.demand import build_panel
    from models.forecast import SeasonalNaive
    from training.tracking import TrainResult, log_native_model, register_model, start_run

    panel = build_panel(store.order_lines, store.products)
    model = SeasonalNaive().fit(panel)
    with tempfile.TemporaryDirectory() as tmp, start_run("forecast", config={"seed": 0}) as run:
        native = Path(tmp) / "native"
        model.save(native)
        uri = log_native_model(native, family="forecast")
        version = register_model(uri, family="forecast")
    return TrainResult(family="forecast", run_id=run.info.run_id, metrics={}, model_version=version)


def offline_forecast():
    """The champion forecast table as serving answers it (the run's Parquet, else predicted)."""
    import numpy as np
    import pandas as pd

    from registry.store import fetch
    from serving.build import _forecast_table

    with tempfile.TemporaryDirectory() as tmp:
        champion = fetch("forecast", dst=Path(tmp) / "c")
        files = _forecast_table(champion, Path(tmp))
        with np.load(files["forecast.npz"], allow_pickle=False) as z:
            products = z["product_ids"].astype(str)
            dates = z["dates"].astype(str)
            n, h = z["p50"].shape
            return pd.DataFrame(
                {
                    "product_id": np.repeat(products, h),
                    "date": np.tile(dates, n),
                    "p10": z["p10"].ravel(),
                    "p50": z["p50"].ravel(),
                    "p90": z["p90"].ravel(),
                }
            )
