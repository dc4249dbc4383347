"""The forecaster kinds: the one table from a kind name (as saved in forecaster.json and written
in job configs) to its class."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from models.forecast.base import Forecaster
from models.forecast.baselines import MovingAverage, SeasonalNaive
from models.forecast.lgbm import LightGBMForecaster

FORECASTERS: Mapping[str, type[Forecaster]] = MappingProxyType(
    {m.kind: m for m in (LightGBMForecaster, SeasonalNaive, MovingAverage)}
)
