"""The fraud service's answers from a loaded `FraudEngine` (no BentoML in here).

`score` turns a validated payment into the engine's call and the engine's decision into the
answer (probability, 0-1000 risk score, decision and the model or rule that set it, reasons,
model and rules versions, server time used, degraded flag) and counts it in the metrics.
`labels` feeds late labels to the engine: the label store for training first (one transaction;
if that database is down, a 503 and nothing is changed), then the online risk features; if the
state store is down the labels are still kept for training and the answer says `degraded`.
"""

from __future__ import annotations

import time

from features.fraud.labels import LabelStoreError
from models.fraud import FraudEngine
from serving import metrics
from serving.endpoints import Unavailable
from serving.fraud_schemas import LabelsRequest, PaymentRequest
from shopml.clock import epoch_ms


class Checkout:
    """Scores payments and ingests labels with one engine; answers are plain dicts."""

    def __init__(self, engine: FraudEngine, model_version: str) -> None:
        self.engine = engine
        self.model_version = model_version

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
            currency=req.currency,
        )
        version = self.model_version
        metrics.fraud_decision(d.decision, version, d.rules_version, d.decided_by)
        if d.degraded:
            metrics.fraud_degraded("online_features", version)
        return {
            "transaction_id": d.transaction_id,
            "probability": d.probability,
            "risk_score": d.risk_score,
            "decision": d.decision,
            "decided_by": d.decided_by,
            "reasons": [r.to_dict() for r in d.reasons],
            "model_version": version,
            "rules_version": d.rules_version,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            "degraded": d.degraded,
            "degraded_reason": d.degraded_reason,
        }

    def labels(self, req: LabelsRequest) -> dict:
        try:
            report = self.engine.ingest_labels([lab.model_dump() for lab in req.labels])
        except LabelStoreError as err:
            raise Unavailable(str(err)) from None
        if report.degraded:
            metrics.fraud_degraded("labels", self.model_version)
        metrics.fraud_labels(report.accepted, self.model_version)
        return {
            "accepted": report.accepted,
            "unknown_transactions": list(report.unknown_transactions),
            "degraded": report.degraded,
            "model_version": self.model_version,
        }
