"""Transaction (payment) features for fraud scoring: one declaration, a batch and an online path.

The implementation lives in `features.fraud`: `definition` (the `FeatureSet`), `batch`
(point-in-time features for a whole table), `online` (one payment from per-key state) and
`state_store` (in-memory and Redis state). This module re-exports the public names.
"""

from features.fraud.batch import compute_batch, compute_columns, prepare, to_matrix
from features.fraud.definition import HANDBOOK_BASELINE, FeatureSet, window_label
from features.fraud.online import UNSEEN, OnlineFeatures
from features.fraud.state_store import (
    EntityState,
    InMemoryStateStore,
    RedisStateStore,
    StateStore,
)

__all__ = [
    "HANDBOOK_BASELINE",
    "UNSEEN",
    "EntityState",
    "FeatureSet",
    "InMemoryStateStore",
    "OnlineFeatures",
    "RedisStateStore",
    "StateStore",
    "compute_batch",
    "compute_columns",
    "prepare",
    "replay_frame",
    "to_matrix",
    "window_label",
]


def replay_frame(payments, fs: FeatureSet | None = None, store: StateStore | None = None):
    """Replay a payments frame (in stream order, labels filed at their known time) through the
    online path; returns (feature matrix in stream order, stream order of the input rows)."""
    fs = fs or FeatureSet()
    p = prepare(payments, fs)
    online = OnlineFeatures(fs, store)
    o = p.order
    known = [int(k) if f else None for k, f in zip(p.known_ms.tolist(), p.is_fraud.tolist(),
                                                    strict=True)]  # fmt: skip
    card = payments["card_id"] if "card_id" in payments else payments["customer_id"]
    X = online.replay(p.t_ms.tolist(), p.amount.tolist(),
                      payments["customer_id"].to_numpy()[o].tolist(), card.to_numpy()[o].tolist(),
                      payments["terminal_id"].to_numpy()[o].tolist(), known)  # fmt: skip
    return X, o
