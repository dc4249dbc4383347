"""Warm the fraud service's online features from past payments, once per store, and notice loss.

A fresh store knows no customer, so every payment would look like a first one until history
builds up again. With `SHOPML_FRAUD_HISTORY=<store folder>` (or `shopml serve --history DIR`)
the service replays the payments of the last feature horizon (about 37 days before the newest
one), with their fraud labels at the time they became known, through the engine's own online
path before it reports ready.

A shared store (Redis) is warmed once per store, not once per worker or restart: the store's
generation marker says it holds warmed state, and `acquire_once` lets one worker replay while
the others wait for the marker. `StoreHealth.check` (at most once a second, on the scoring path)
compares the marker with the one this worker started with: missing or changed means the store
lost its data (e.g. Redis restarted empty). Answers then carry `degraded_reason:
"state_store_reset"`, `/readyz` says so (still 200: every worker shares the one store, so taking
them out of rotation would stop checkout; the answers are scored, with less history), the
metric `shopml_fraud_state_resets_total` counts it, and one worker re-warms the store from the
configured history in a background thread; the reason clears once the new marker is set.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import numpy as np

from features.fraud.online import OnlineFeatures
from features.fraud.state_store import STORE_ERRORS, StateStore, warm_up_store
from features.store import Store
from models.fraud import FraudEngine
from serving import metrics
from shopml.clock import epoch_ms_array
from shopml.errors import DataError
from shopml.log import get_logger

log = get_logger("serving.fraud.history")

STATE_RESET = "state_store_reset"
WARM_LOCK = "fraud-history-warm"
WARM_LOCK_TTL_S = 600  # a worker that died while warming frees the lock after this
CHECK_EVERY_S = 1.0


def warm_state(engine: FraudEngine, folder: str | Path, store: StateStore | None = None) -> int:
    """Replay the recent payments of the Store at `folder` into `engine`'s state (through
    `store`, by default the engine's own) by transaction id, so that a replay interrupted and
    run again records each payment once; returns the count."""
    pay = Store.read(folder, tables=("payments",)).payments
    if pay is None or len(pay) == 0:
        raise DataError(f"{folder}: no payments to warm the fraud features from")
    t_ms = epoch_ms_array(pay["timestamp"])
    recent = pay.iloc[np.flatnonzero(t_ms >= t_ms.max() - engine.feature_set.horizon * 1000)]
    if store is None:
        count = engine.replay(recent)
    else:
        OnlineFeatures(engine.feature_set, store).replay_frame(recent)
        count = len(recent)
    log.info("online fraud features warmed from history", extra={"payments": count})
    return count


def warm_once(engine: FraudEngine, history: str | Path | None, wait_s: float = 900.0) -> str:
    """Make sure the shared store is warmed (once per store) and return its generation marker.

    If the store has a marker it is returned as is. Otherwise the worker that wins
    `acquire_once` replays `history` (if any) and sets a new marker; the others wait for it.
    All of it goes through a client of its own with long timeouts (`warm_up_store`).
    """
    store = warm_up_store(engine.store)
    deadline = time.monotonic() + wait_s
    while True:
        gen = store.generation()
        if gen is not None:
            return gen
        if store.acquire_once(WARM_LOCK, WARM_LOCK_TTL_S):
            count = warm_state(engine, history, store) if history else 0
            gen = uuid.uuid4().hex
            store.set_generation(gen)
            log.info("online state store warmed", extra={"payments": count, "generation": gen})
            return gen
        if time.monotonic() > deadline:
            raise DataError(
                f"the online state store was not warmed by another worker in {wait_s} s"
            )
        time.sleep(0.2)


class StoreHealth:
    """Watches the shared store's generation marker; re-warms it once when it is lost."""

    def __init__(self, engine: FraudEngine, history: str | Path | None, generation: str) -> None:
        self.engine = engine
        self.history = history
        self.generation = generation
        self.reason: str | None = None
        self.resets = 0
        self.last_reset: float | None = None
        self._next_check = time.monotonic() + CHECK_EVERY_S
        self._rewarm: threading.Thread | None = None

    def check(self) -> str | None:
        """The degraded reason of answers now (None when the store holds this worker's state)."""
        now = time.monotonic()
        if now < self._next_check:
            return self.reason
        self._next_check = now + CHECK_EVERY_S
        if self._rewarm is not None:
            return self.reason
        try:
            gen = self.engine.store.generation()
        except STORE_ERRORS:
            return self.reason  # unreachable: the engine's own degraded flag says so
        if gen != self.generation:
            self._lost(gen)
        return self.reason

    def _lost(self, gen: str | None) -> None:
        self.reason = STATE_RESET
        self.resets += 1
        self.last_reset = time.time()
        metrics.fraud_state_reset("detected")
        metrics.fraud_state_degraded(self.reason)
        log.warning(
            "online state store lost its data: answers degraded until re-warmed",
            extra={"generation_was": self.generation, "generation_now": gen},
        )
        self._rewarm = threading.Thread(target=self._rewarm_store, name="fraud-rewarm", daemon=True)
        self._rewarm.start()

    def _rewarm_store(self) -> None:
        try:
            gen = warm_once(self.engine, self.history)
        except Exception as err:  # noqa: BLE001 - logged; checked again after CHECK_EVERY_S
            log.error(
                "re-warming the online state failed", extra={"error_type": type(err).__name__}
            )
        else:
            self.generation = gen
            self.reason = None
            metrics.fraud_state_reset("rewarmed")
            metrics.fraud_state_degraded(None)
        finally:
            self._rewarm = None

    def status(self) -> dict:
        """What `/readyz` reports beside readiness."""
        return {
            "degraded": self.reason is not None,
            "degraded_reason": self.reason,
            "state_resets": self.resets,
        }
