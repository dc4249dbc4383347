"""Tiny trained-and-registered models for the serving tests, by each family's job (`training.jobs`).

Each `train_*` registers `shopml-<family>` in the MLflow store the environment points at and
returns the job's `TrainResult`; `offline_*` loads the champion back for comparisons.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from training.jobs import JOBS

FORECAST_DAYS = 14
SERVING_ENV = ("SHOPML_REDIS_URL",)  # a test server never inherits the shell's Redis


def isolated_home(
    tmp_path_factory, name: str, unset: tuple[str, ...] = SERVING_ENV
) -> Iterator[Path]:
    """A module's own shopml home (SHOPML_HOME, its MLflow store and BentoML home inside it) with
    `unset` removed from the environment, restored when the module's tests are done."""
    home = tmp_path_factory.mktemp(name) / "home"
    home.mkdir()
    mp = pytest.MonkeyPatch()
    mp.setenv("SHOPML_HOME", str(home))
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    mp.setenv("BENTOML_HOME", str(home / "bentoml"))
    mp.setenv("OPENBLAS_NUM_THREADS", "1")
    for var in unset:
        mp.delenv(var, raising=False)
    yield home
    mp.undo()


def train_recommender(store):
    job = JOBS["recommender"]
    cfg = job.config.model_validate(
        {
            "source": {"kind": "generated", "scale": "tiny", "seed": 0},
            "model": {"kind": "als", "params": {"factors": 8, "iterations": 5}},
            "fallback": True,
            "k": 10,
        }
    )
    return job.train(cfg, store=store)


def train_fraud(store):
    job = JOBS["fraud"]
    cfg = job.config.model_validate(
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


def train_forecast(store):
    job = JOBS["forecast"]
    cfg = job.config.model_validate(
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
