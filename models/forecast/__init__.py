"""Demand forecasters behind one interface (`models.forecast.base.Forecaster`);
`FORECASTERS` is the table of kinds."""

from __future__ import annotations

from models.base import load_kind, make
from models.forecast.base import OUTPUT_COLUMNS, Forecaster
from models.forecast.baselines import MovingAverage, SeasonalNaive
from models.forecast.kinds import FORECASTERS
from models.forecast.lgbm import LightGBMForecaster


def make_forecaster(kind: str, **params) -> Forecaster:
    """A forecaster by kind name with its parameters (ConfigError naming an unknown kind)."""
    return make(FORECASTERS, kind, **params)


def load_forecaster(path) -> Forecaster:
    """Load any saved forecaster folder (its kind is read from forecaster.json)."""
    return load_kind(FORECASTERS, path, Forecaster.meta_file)


__all__ = [
    "FORECASTERS",
    "OUTPUT_COLUMNS",
    "Forecaster",
    "LightGBMForecaster",
    "MovingAverage",
    "SeasonalNaive",
    "load_forecaster",
    "make_forecaster",
]
