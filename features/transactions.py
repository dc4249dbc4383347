"""Transaction (payment) features for fraud scoring: one declaration, a batch and an online path.

The implementation lives in `features.fraud`: `definition` (the `FeatureSet`), `batch`
(point-in-time features for a whole table), `online` (one payment from per-key state) and
`state_store` (in-memory and Redis state). This module re-exports the public names.
"""

import pandas as pd

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
    "bootstrap_online",
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
    known = [
        int(k) if f else None for k, f in zip(p.known_ms.tolist(), p.is_fraud.tolist(), strict=True)
    ]
    card = payments["card_id"] if "card_id" in payments else payments["customer_id"]
    X = online.replay(
        p.t_ms.tolist(),
        p.amount.tolist(),
        payments["customer_id"].to_numpy()[o].tolist(),
        card.to_numpy()[o].tolist(),
        payments["terminal_id"].to_numpy()[o].tolist(),
        known,
    )
    return X, o


def bootstrap_online(online: OnlineFeatures, payments) -> int:
    """Load what the online state keeps beyond the replayed stream — the terminals each
    customer/card has used, its last payment time, and fraud labels that become known later —
    from older payments (bulk, instead of replaying years of history). Replay at least
    `fs.replay_days` of payments after these. Returns the number of keys written."""
    from features.fraud.definition import ID_COLUMNS
    from features.fraud.state_store import EntityState

    fs = online.fs
    t_ms = payments["timestamp"].to_numpy().astype("datetime64[ms]").astype("int64")
    items: dict[str, EntityState] = {}
    for e in fs.pair_entities:
        col = payments[ID_COLUMNS[e]].to_numpy()
        frame = pd.DataFrame({"k": col, "m": payments["terminal_id"].to_numpy(), "t": t_ms})
        last = frame.groupby("k", sort=False)["t"].max()
        terms = frame.drop_duplicates(["k", "m"]).groupby("k", sort=False)["m"].agg(set)
        prefix = online.key_prefix(e)
        existing = online.store.online_read([prefix + str(k) for k in terms.index])
        for (k, ts), st in zip(terms.items(), existing, strict=True):
            st = st if st is not None else EntityState()
            st.terminals |= set(map(str, ts))
            st.last_ms = max(st.last_ms, int(last[k]))
            items[prefix + str(k)] = st
    if fs.fraud_entities and "is_fraud" in payments:
        from features.fraud.batch import label_known_ms

        fraud = payments["is_fraud"].to_numpy(dtype=bool)
        lt = payments["label_time"].to_numpy()[fraud] if "label_time" in payments else None
        known = label_known_ms(t_ms[fraud], lt, fs.label_delay)
        keep = known > t_ms.max(initial=0) - max(fs.fraud_windows) * 1000
        for e in fs.fraud_entities:
            prefix = online.key_prefix(e)
            ids = payments[ID_COLUMNS[e]].to_numpy()[fraud][keep]
            todo = [prefix + str(k) for k in ids]
            missing = [k for k in dict.fromkeys(todo) if k not in items]
            items.update(zip(missing, online.store.online_read(missing), strict=True))
            tx = t_ms[fraud][keep].tolist()
            for k, when, at in zip(todo, known[keep].tolist(), tx, strict=True):
                if items[k] is None:
                    items[k] = EntityState()
                items[k].add_fraud(int(when), int(at))
    online.store.online_write_batch(items)
    return len(items)
