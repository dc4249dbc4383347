"""Peer library forecasters used only in benchmarks: Nixtla's mlforecast with LightGBM.

Wrapped in the shopml `Forecaster` interface so the backtest scores it like our own models. It is
used the way the library is normally used: a regular daily series per product (closed days are
zero), recursive forecasting with lags 7/14/28, rolling means and std and date features comparable
to ours, a tweedie LightGBM with our tree settings, and mlforecast's own conformal intervals (80%)
for P10/P90. The peer's settings are the best of those tried on the benchmark folds (WAPE, mean of
folds 1-2): lags from 1 with L2 1.07, lags from 1 with tweedie 1.13 (+46% bias on fold 3),
Poisson 1.05, lags from 7 with L2 1.04, lags from 7 with tweedie 0.98.
"""

from __future__ import annotations

import warnings

import lightgbm as lgb
import numpy as np
import pandas as pd
from mlforecast import MLForecast
from mlforecast.lag_transforms import RollingMean, RollingStd
from mlforecast.utils import PredictionIntervals
from statsforecast import StatsForecast
from statsforecast.models import AutoETS

from models.forecast.base import (
    FLAG_MODEL,
    Forecaster,
    as_panel,
    assemble,
    check_horizon,
    empirical_band,
)
from shopml.errors import ShopmlError


class MLForecastLGBM(Forecaster):
    """mlforecast + LightGBM peer (not persisted: benchmark only)."""

    name = "mlforecast_lgbm"

    def __init__(
        self,
        horizon: int = 28,
        n_estimators: int = 200,
        learning_rate: float = 0.07,
        objective: str = "tweedie",
        intervals: bool = True,
        seed: int = 0,
        min_lag: int = 7,
        known_future: bool = False,
    ):
        self.horizon = horizon
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.objective = objective
        self.intervals = intervals
        self.seed = seed
        self.min_lag = min_lag
        self.known_future = known_future

    def _frame(self, panel) -> pd.DataFrame:
        """Regular daily series, closed days as zeros; series shorter than mlforecast's conformal
        windows need (2 x horizon + 2 days) are zero-padded before their first sale."""
        df = panel.to_frame(observed_only=False)
        n_d = len(panel.dates)
        start = np.minimum(panel.first_observed(), max(n_d - 2 * self.horizon - 2, 0))
        first = np.repeat(start, n_d)
        day = np.tile(np.arange(n_d), panel.n_products)
        df = df[day >= first]
        out = pd.DataFrame(
            {
                "unique_id": df["product_id"].astype(str),
                "ds": df["date"],
                "y": df["units"].fillna(0.0).to_numpy(),
            }
        )
        if self._uses_known(panel):
            plan = _plan(panel, 0)
            keep = day >= first
            for name, values in plan.items():
                out[name] = values.ravel()[keep]
        return out

    def _lag_transforms(self) -> dict:
        """Rolling means and std from the first lag, and the weekly lag's means. With the
        default `min_lag` 7 both are lag 7: one entry, so the std is kept (a dict literal with
        the key twice kept only the second list: no std, the peer had one feature less)."""
        out = {self.min_lag: [RollingMean(7), RollingMean(28), RollingStd(28)]}
        if self.min_lag < 7:
            out[7] = [RollingMean(7), RollingMean(28)]
        return out

    def _uses_known(self, panel) -> bool:
        return self.known_future and panel.known is not None

    def fit(self, panel) -> MLForecastLGBM:
        panel = as_panel(panel)
        model = lgb.LGBMRegressor(
            objective=self.objective,
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            num_leaves=31,
            min_child_samples=100,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.8,
            n_jobs=1,
            random_state=self.seed,
            verbosity=-1,
        )
        self.mlf_ = MLForecast(
            models={"lgbm": model},
            freq="D",
            lags=sorted({self.min_lag, 7, 14, 28}),
            lag_transforms=self._lag_transforms(),
            date_features=["dayofweek", "month", "day"],
        )
        intervals = PredictionIntervals(n_windows=2, h=self.horizon) if self.intervals else None
        with warnings.catch_warnings():  # mlforecast warns about NaN lags of young series
            warnings.simplefilter("ignore", UserWarning)
            self.mlf_.fit(self._frame(panel), prediction_intervals=intervals, static_features=[])
        self.panel_ = panel
        return self

    def predict(self, horizon: int, product_ids=None) -> pd.DataFrame:
        horizon = check_horizon(horizon, self.horizon)
        panel = self._check_fitted()
        rows = self._rows(product_ids)
        level = [80] if self.intervals else None
        X_df = None
        if self._uses_known(panel):
            plan = _plan(panel, horizon, future=True)
            dates = panel.future_dates(horizon)[0]
            X_df = pd.DataFrame(
                {
                    "unique_id": np.repeat(panel.product_ids.astype(str), horizon),
                    "ds": np.tile(dates.values, panel.n_products),
                    **{k: v.ravel() for k, v in plan.items()},
                }
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            out = self.mlf_.predict(horizon, level=level, X_df=X_df)
        ids = panel.product_ids[rows]
        wide = lambda c: (  # noqa: E731
            out.pivot(index="unique_id", columns="ds", values=c).reindex(ids).to_numpy(float)
        )
        p50 = np.nan_to_num(wide("lgbm"))
        p10 = np.nan_to_num(wide("lgbm-lo-80")) if self.intervals else p50
        p90 = np.nan_to_num(wide("lgbm-hi-80")) if self.intervals else p50
        flags = np.full(len(rows), FLAG_MODEL)
        return assemble(panel, rows, horizon, p10, p50, p90, flags)

    def save(self, path):
        raise ShopmlError("the mlforecast peer is a benchmark-only model and is not saved")

    @classmethod
    def load(cls, path):
        raise ShopmlError("the mlforecast peer is a benchmark-only model and is not saved")


def _plan(panel, horizon: int, future: bool = False) -> dict[str, np.ndarray]:
    """The planned promotion flag, discount and price ratio known at the panel's last day, on
    its days ([p, days]) or, with `future`, on the `horizon` days after it: the same known-future
    inputs shopml's forecaster reads."""
    plan = panel.known_future(None, horizon)
    days = slice(len(panel.dates), None) if future else slice(0, len(panel.dates))
    return {
        "promotion": plan.promo[:, days].astype(np.float64),
        "discount": plan.discount[:, days],
        "price_ratio": plan.price_ratio[:, days] * (1.0 - plan.discount[:, days]),
    }


class AutoETSPeer(Forecaster):
    """statsforecast AutoETS (weekly season) per series, its own 80% intervals for P10/P90.

    Bounded: only the `max_series` best sellers of the fold (by units in the last 28 days) are
    fitted by AutoETS; the rest get their 28-day mean with an empirical band (`fitted_series_`
    says how many AutoETS fitted). Closed days are zeros in the regular series it needs.
    """

    name = "AutoETS"

    def __init__(self, horizon: int = 28, max_series: int | None = 500, season_length: int = 7):
        self.horizon = horizon
        self.max_series = max_series
        self.season_length = season_length

    def fit(self, panel) -> AutoETSPeer:
        panel = as_panel(panel)
        recent = np.nansum(panel.units[:, -28:], axis=1)
        order = np.argsort(-recent, kind="mergesort")
        n = len(order) if self.max_series is None else min(self.max_series, len(order))
        self.fitted_rows_ = np.sort(order[:n])
        self.fitted_series_ = int(n)
        self.ets_ = self._ets(panel, self.fitted_rows_, self.horizon) if n else None
        self.panel_ = panel
        return self

    def predict(self, horizon: int, product_ids=None) -> pd.DataFrame:
        horizon = check_horizon(horizon, self.horizon)
        panel = self._check_fitted()
        rows = self._rows(product_ids)
        mean, q10, q90 = empirical_band(panel, 28)
        p50 = np.repeat(mean[:, None], horizon, axis=1)
        p10 = np.repeat(q10[:, None], horizon, axis=1)
        p90 = np.repeat(q90[:, None], horizon, axis=1)
        if self.ets_ is not None:  # fitted and forecast in `fit`: its time counts as fit time
            lo, mid, hi = (a[:, :horizon] for a in self.ets_)
            fit_rows = self.fitted_rows_
            p10[fit_rows], p50[fit_rows], p90[fit_rows] = lo, mid, hi
        flags = np.full(len(rows), FLAG_MODEL)
        return assemble(panel, rows, horizon, p10[rows], p50[rows], p90[rows], flags)

    def _ets(self, panel, fit_rows: np.ndarray, horizon: int):
        """AutoETS forecasts and 80% intervals of the panel rows `fit_rows` (last year only)."""
        u = np.nan_to_num(panel.units[fit_rows, -364:])
        n_d = u.shape[1]
        df = pd.DataFrame(
            {
                "unique_id": np.repeat(np.arange(len(fit_rows)), n_d),
                "ds": np.tile(panel.dates[-n_d:].values, len(fit_rows)),
                "y": u.ravel(),
            }
        )
        sf = StatsForecast(models=[AutoETS(season_length=self.season_length)], freq="D", n_jobs=1)
        out = sf.forecast(df=df, h=horizon, level=[80])
        wide = lambda c: out.pivot(index="unique_id", columns="ds", values=c).to_numpy(float)  # noqa: E731
        return wide("AutoETS-lo-80"), wide("AutoETS"), wide("AutoETS-hi-80")

    def save(self, path):
        raise ShopmlError("the AutoETS peer is a benchmark-only model and is not saved")

    @classmethod
    def load(cls, path):
        raise ShopmlError("the AutoETS peer is a benchmark-only model and is not saved")
