"""Warm the fraud service's online features from past payments (a start-up backfill).

A fresh in-process store knows no customer, so every payment would look like a first one until
history builds up again. With `SHOPML_FRAUD_HISTORY=<store folder>` (or `shopml serve
--history DIR`) the service replays the payments of the last feature horizon (about 37 days
before the newest one), with their fraud labels at the time they became known, through the
engine's own online path before it reports ready. With Redis this also fills a new Redis.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from features.store import Store
from models.fraud import FraudEngine
from shopml.clock import epoch_ms_array
from shopml.errors import DataError
from shopml.log import get_logger

log = get_logger("serving.fraud.history")


def warm_state(engine: FraudEngine, folder: str | Path) -> int:
    """Replay the recent payments of the Store at `folder` into `engine`'s state; returns count."""
    store = Store.read(folder, tables=("payments",))
    pay = store.payments
    if pay is None or len(pay) == 0:
        raise DataError(f"{folder}: no payments to warm the fraud features from")
    t_ms = epoch_ms_array(pay["timestamp"])
    recent = pay.iloc[np.flatnonzero(t_ms >= t_ms.max() - engine.feature_set.horizon * 1000)]
    count = engine.replay(recent)
    log.info("online fraud features warmed from history", extra={"payments": count})
    return count
