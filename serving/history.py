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

from shopml.errors import DataError
from shopml.log import get_logger

log = get_logger("serving.fraud.history")


def warm_state(engine, folder: str | Path) -> int:
    """Replay the recent payments of the Store at `folder` into `engine`'s state; returns count."""
    from features.fraud.batch import label_known_ms, to_ms
    from features.store import Store

    store = Store.read(folder, tables=("payments",))
    pay = store.payments
    if pay is None or len(pay) == 0:
        raise DataError(f"{folder}: no payments to warm the fraud features from")
    fs = engine.feature_set
    t_ms = to_ms(pay["timestamp"])
    keep = np.flatnonzero(t_ms >= t_ms.max() - fs.horizon * 1000)
    keep = keep[np.argsort(t_ms[keep], kind="stable")]
    pay = pay.iloc[keep]
    t = t_ms[keep]
    label_time = pay.get("label_time")
    known = label_known_ms(t, label_time, fs.label_delay)
    fraud = pay["is_fraud"].to_numpy(bool) if "is_fraud" in pay else np.zeros(len(pay), bool)
    labels = [int(k) if f else None for k, f in zip(known, fraud, strict=True)]
    card = pay["card_id"] if "card_id" in pay else pay["customer_id"]
    engine.features.replay(
        t.tolist(),
        pay["amount"].astype(float).tolist(),
        pay["customer_id"].astype(str).tolist(),
        card.astype(str).tolist(),
        pay["terminal_id"].astype(str).tolist(),
        label_known_ms=labels,
    )
    log.info("online fraud features warmed from history", extra={"payments": len(pay)})
    return len(pay)
