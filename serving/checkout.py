"""The fraud service's answers from a loaded `FraudEngine` (no BentoML in here).

`score` turns a validated payment into the engine's call and the engine's decision into the
answer (probability, 0-1000 risk score, decision, reasons, model version, server time used,
degraded flag) and counts it in the metrics. `labels` feeds late labels to the engine (online
risk features + the label store for training); if the state store is down the labels are
still stored for training and the answer says `degraded`.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

from serving import metrics
from serving.fraud_schemas import LabelsRequest, PaymentRequest
from serving.online import store_errors
from shopml.log import get_logger

log = get_logger("serving.fraud")

_EPOCH = datetime(1970, 1, 1)
_ONE_MS = timedelta(milliseconds=1)


def epoch_ms(ts: datetime | None) -> int:
    """Naive-UTC datetime (None: now) -> epoch milliseconds, as the feature code counts time."""
    if ts is None:
        return time.time_ns() // 1_000_000
    return (ts - _EPOCH) // _ONE_MS


class Checkout:
    """Scores payments and ingests labels with one engine; answers are plain dicts."""

    def __init__(self, engine, model_version: str, labels_dir: Path | None = None) -> None:
        self.engine = engine
        self.model_version = model_version
        self.labels_dir = labels_dir
        self._store_errors = store_errors()

    def score(self, req: PaymentRequest) -> dict:
        started = time.perf_counter()
        customer = req.customer_id
        d = self.engine.score_fields(
            req.transaction_id,
            epoch_ms(req.timestamp),
            req.amount,
            customer,
            req.card_id or customer,
            req.terminal_id,
        )
        version = self.model_version
        metrics.fraud_decision(d.decision, version)
        if d.degraded:
            metrics.fraud_degraded("online_features", version)
        return {
            "transaction_id": d.transaction_id,
            "probability": d.probability,
            "risk_score": d.risk_score,
            "decision": d.decision,
            "reasons": [{"code": r.code, "text": r.text, "weight": r.weight} for r in d.reasons],
            "model_version": version,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            "degraded": d.degraded,
            "degraded_reason": d.degraded_reason,
        }

    def labels(self, req: LabelsRequest) -> dict:
        rows = [lab.model_dump() for lab in req.labels]
        degraded = False
        try:
            report = self.engine.ingest_labels(rows)
            unknown = list(report.unknown_transactions)
            accepted = report.accepted
        except self._store_errors as exc:
            degraded = True
            unknown = []
            accepted = self._store_only(rows)
            metrics.fraud_degraded("labels", self.model_version)
            log.warning(
                "labels stored for training only: online store unavailable",
                extra={"error_type": type(exc).__name__, "labels": len(rows)},
            )
        metrics.fraud_labels(accepted, self.model_version)
        return {
            "accepted": accepted,
            "unknown_transactions": unknown,
            "degraded": degraded,
            "model_version": self.model_version,
        }

    def _store_only(self, rows: list[dict]) -> int:
        """Keep labels for the next training when the online update is impossible."""
        if self.labels_dir is None:
            return 0
        import pandas as pd

        from features.fraud.labels import append_labels

        now = datetime.utcnow()  # noqa: DTZ003 - naive UTC like every shopml timestamp
        frame = pd.DataFrame(
            {
                "transaction_id": [r["transaction_id"] for r in rows],
                "is_fraud": [bool(r["is_fraud"]) for r in rows],
                "label_time": [r.get("label_time") or now for r in rows],
            }
        )
        append_labels(frame, self.labels_dir)
        return len(rows)
