"""Demand forecasters behind one interface (`models.forecast.base.Forecaster`)."""

from __future__ import annotations

import json
from pathlib import Path

from models.forecast.base import OUTPUT_COLUMNS, Forecaster
from models.forecast.baselines import MovingAverage, SeasonalNaive
from models.forecast.lgbm import LightGBMForecaster
from shopml.errors import ConfigError, DataError

FORECASTERS: dict[str, type[Forecaster]] = {
    "lightgbm": LightGBMForecaster,
    "seasonal_naive": SeasonalNaive,
    "moving_average": MovingAverage,
}


def make_forecaster(kind: str, **params) -> Forecaster:
    """A forecaster by kind name with its parameters (ConfigError naming an unknown kind)."""
    if kind not in FORECASTERS:
        raise ConfigError(f"unknown forecaster kind {kind!r}; choose one of {sorted(FORECASTERS)}")
    return FORECASTERS[kind](**params)


def load_forecaster(path) -> Forecaster:
    """Load any saved forecaster folder (its kind is read from forecaster.json)."""
    path = Path(path)
    meta_file = path / "forecaster.json"
    if not meta_file.exists():
        raise DataError(f"{path} is not a saved forecaster (no forecaster.json)")
    kind = json.loads(meta_file.read_text()).get("kind")
    if kind not in FORECASTERS:
        raise DataError(f"{meta_file} names unknown forecaster kind {kind!r}")
    return FORECASTERS[kind].load(path)


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
