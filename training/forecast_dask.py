"""The forecaster's LightGBM trained across the Dask workers by `lightgbm.dask`.

`LightGBMForecaster` builds its training rows (products x origins x horizon) and hands them to
its `booster_trainer` when it has one. The trainer here cuts the rows into one block per worker,
puts each block on its worker and trains data-parallel with `lightgbm.dask.DaskLGBMRegressor`:
each worker builds histograms of its rows and the workers merge them over LightGBM's own
network. The result is the native `lightgbm.Booster` the local engine makes (saved as
`lightgbm.txt`, loaded by serving), but not the same trees: bin boundaries are found per worker
and merged histograms add up in another order, so forecasts differ from the single-machine
booster within tolerance (`tests/test_dask_jobs.py`). Opt-in, per job:
`lightgbm_on_dask = true` in the forecast config with `[compute] engine = "dask"`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from features.demand_features import feature_names


def dask_booster_trainer(client) -> Callable:
    """A `booster_trainer` for `LightGBMForecaster` that trains on the workers of `client`."""

    def train(params: dict, X: np.ndarray, y: np.ndarray, w: np.ndarray, cats, rounds: int):
        import dask.array as da
        import lightgbm.dask as lgbd

        n_workers = max(len(client.scheduler_info(n_workers=-1)["workers"]), 1)
        rows = max(-(-len(y) // n_workers), 1)
        X_d = da.from_array(X, chunks=(rows, X.shape[1]))
        y_d = da.from_array(y, chunks=rows)
        w_d = da.from_array(w, chunks=rows)
        X_d, y_d, w_d = client.persist([X_d, y_d, w_d])
        params = dict(params)
        params.pop("num_threads", None)  # each worker trains with its own threads
        model = lgbd.DaskLGBMRegressor(client=client, n_estimators=rounds, **params)
        model.fit(
            X_d, y_d, sample_weight=w_d, feature_name=feature_names(), categorical_feature=cats
        )
        return model.booster_

    return train
