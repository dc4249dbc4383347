"""The fraud scorer kinds: the one table from a kind name (as saved in the scorer's JSON) to its
class. The registered fraud model is a `FraudEngine` around a `scorer`."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from models.base import Estimator
from models.fraud.baseline import LogisticBaseline
from models.fraud.scorer import FraudScorer

FRAUD_SCORERS: Mapping[str, type[Estimator]] = MappingProxyType(
    {m.kind: m for m in (FraudScorer, LogisticBaseline)}
)
