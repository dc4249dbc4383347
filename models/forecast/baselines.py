"""Baseline forecasters: weekly seasonal naive and moving average.

Both read the last observed days of each product (closed days skipped) and give an empirical
P10-P90 band from the same recent days, so every model can be compared on the same metrics.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.demand import DemandPanel
from models.forecast.base import (
    FLAG_MODEL,
    FLAG_SHORT,
    Forecaster,
    as_panel,
    assemble,
    check_horizon,
    empirical_band,
)
from shopml.errors import ConfigError


def _flat(values: np.ndarray, horizon: int) -> np.ndarray:
    """One value per product repeated over the horizon: [n_products, horizon]."""
    return np.repeat(values[:, None], horizon, axis=1)


class _Baseline(Forecaster):
    """Fitting only keeps the panel; `window` recent days give the forecast and its band, and
    products with fewer than `min_history` observed days are flagged."""

    def __init__(self, window: int = 28, min_history: int = 7):
        self.window = window
        self.min_history = min_history

    def fit(self, panel) -> _Baseline:
        if self.window < 1:
            raise ConfigError(f"window must be >= 1, got {self.window}")
        self.panel_ = as_panel(panel)
        return self

    def _flags(self, panel: DemandPanel, rows: np.ndarray) -> np.ndarray:
        short = panel.n_observed()[rows] < self.min_history
        return np.where(short, FLAG_SHORT, FLAG_MODEL)


class MovingAverage(_Baseline):
    """Mean of the last `window` observed days, flat over the horizon; band = their 10%/90% quantiles."""

    kind = "moving_average"

    def predict(self, horizon: int, product_ids=None) -> pd.DataFrame:
        horizon = check_horizon(horizon)
        panel = self._check_fitted()
        rows = self._rows(product_ids)
        mean, q10, q90 = empirical_band(panel, self.window)
        p10, p50, p90 = (_flat(a[rows], horizon) for a in (q10, mean, q90))
        return assemble(panel, rows, horizon, p10, p50, p90, self._flags(panel, rows))


class SeasonalNaive(_Baseline):
    """Weekly seasonal naive: each day repeats the last observed same weekday (band from the last
    `window` days); a weekday never observed falls back to the moving average."""

    kind = "seasonal_naive"

    def predict(self, horizon: int, product_ids=None) -> pd.DataFrame:
        horizon = check_horizon(horizon)
        panel = self._check_fitted()
        rows = self._rows(product_ids)
        mean, q10, q90 = empirical_band(panel, self.window)
        u = panel.units[rows]
        n_d = u.shape[1]
        p50 = np.repeat(mean[rows, None], horizon, axis=1)
        for h in range(1, horizon + 1):
            filled = np.zeros(len(rows), dtype=bool)
            for k in range(int(np.ceil(h / 7)), int(np.ceil(h / 7)) + 8):
                d = n_d - 1 + h - 7 * k
                if d < 0:
                    break
                v = u[:, d]
                take = ~filled & ~np.isnan(v)
                p50[take, h - 1] = v[take]
                filled |= take
                if filled.all():
                    break
        p10, p90 = _flat(q10[rows], horizon), _flat(q90[rows], horizon)
        return assemble(panel, rows, horizon, p10, p50, p90, self._flags(panel, rows))
