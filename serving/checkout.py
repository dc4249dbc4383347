"""The fraud service's answers from a loaded `FraudEngine` (no BentoML in here).

`score` turns a validated payment into the engine's call and the engine's decision into the
answer (probability, 0-1000 risk score, decision and the model or rule that set it, reasons,
model and rules versions, server time used, degraded flag) and counts it in the metrics.
Before anything is recorded the payment's time must lie in the `TimeGuard` window (else a 422
naming `timestamp`), and its `transaction_id` is claimed in the `RetryLedger`: a retry with the
same body gets the first answer back without being recorded again, one with a different body a
409 naming the field. `labels` feeds late labels to the engine: the label store for training
first (one transaction; if that database is down, a 503 and nothing is changed), then the online
risk features; if the state store is down the labels are still kept for training and the answer
says `degraded`.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass

from pydantic_core import to_json

from features.fraud.labels import LabelStoreError
from features.fraud.state_store import STORE_ERRORS
from models.fraud import FraudEngine
from serving import metrics
from serving.endpoints import Conflict, Unavailable
from serving.fraud_schemas import LabelsRequest, PaymentRequest
from shopml.clock import epoch_ms, from_epoch_ms, now_ms
from shopml.errors import DataError

# the payment fields a retry must repeat exactly (everything the answer depends on)
FINGERPRINT = (
    "transaction_id",
    "timestamp",
    "customer_id",
    "card_id",
    "terminal_id",
    "amount",
    "currency",
)
IN_FLIGHT_WAIT_S = 2.0  # how long a retry waits for the first attempt's answer


@dataclass(frozen=True, slots=True)
class TimeGuard:
    """A payment's time must lie in [now - behind_ms, now + ahead_ms] of the server clock: a
    payment dated far ahead would otherwise trim every window it touches, one far behind fall
    out of them. Outside: a DataError (422) naming `timestamp` and the accepted range."""

    ahead_ms: int
    behind_ms: int

    def check(self, t_ms: int, now: int | None = None) -> None:
        now = now_ms() if now is None else now
        lo, hi = now - self.behind_ms, now + self.ahead_ms
        if lo <= t_ms <= hi:
            return
        raise DataError(
            f"timestamp: {_iso(t_ms)} is outside the accepted range {_iso(lo)} .. {_iso(hi)} "
            f"(at most {self.ahead_ms // 1000} s ahead of and {self.behind_ms // 1000} s behind "
            "the server clock, UTC)"
        )


def _iso(ms: int) -> str:
    return from_epoch_ms(ms).isoformat(timespec="seconds")


def fingerprint(req: PaymentRequest, t_ms: int | None) -> list:
    """The canonical payment a retry must repeat: its fields as the engine sees them (the card
    defaults to the customer, the time in epoch ms, None when the server clock was used)."""
    return [
        req.transaction_id,
        t_ms,
        req.customer_id,
        req.card_id or req.customer_id,
        req.terminal_id,
        req.amount,
        req.currency,
    ]


class RetryLedger:
    """First answers by `transaction_id`, in the shared state store (so across workers).

    `claim` puts the payment's fingerprint under `score:claim:<id>` if absent: the caller that
    wins scores and records the payment and `keep`s its answer under `score:answer:<id>`; a
    later caller gets the first answer (same fingerprint) or a Conflict naming the field.
    """

    def __init__(self, store, ttl_s: int) -> None:
        self.ttl_s = ttl_s
        self._put, self._get = store.put_if_absent, store.get  # bound once: the hot path

    def claim(self, tx: str, canon: list) -> dict | None:
        """None when this caller owns `tx`; else the first answer (or a Conflict/DataError)."""
        first = self._put(f"score:claim:{tx}", to_json(canon), self.ttl_s)
        if first is None:
            return None
        earlier = json.loads(first)
        differ = [f for f, a, b in zip(FINGERPRINT, earlier, canon, strict=True) if a != b]
        if differ:
            raise Conflict(
                f"transaction_id {tx!r} was already scored with a different {', '.join(differ)}"
                "; a retry must repeat the payment exactly",
                differ[0],
            )
        return self._first_answer(tx)

    def _first_answer(self, tx: str) -> dict:
        deadline = time.monotonic() + IN_FLIGHT_WAIT_S
        while True:
            blob = self._get(f"score:answer:{tx}")
            if blob is not None:
                answer = json.loads(blob)
                if "error" in answer:
                    raise DataError(answer["error"])
                return answer
            if time.monotonic() > deadline:
                raise Conflict(
                    f"transaction_id {tx!r} is still being scored by an earlier request; retry",
                    "transaction_id",
                )
            time.sleep(0.005)

    def keep(self, tx: str, answer: dict) -> None:
        self._put(f"score:answer:{tx}", to_json(answer), self.ttl_s)


class Checkout:
    """Scores payments and ingests labels with one engine; answers are plain dicts."""

    def __init__(
        self,
        engine: FraudEngine,
        model_version: str,
        guard: TimeGuard | None = None,
        retry_ttl_s: int = 86400,
        health=None,
    ) -> None:
        self.engine = engine
        self.model_version = model_version
        behind = engine.feature_set.label_delay * 1000
        self.guard = guard or TimeGuard(300_000, behind)
        self.ledger = RetryLedger(engine.store, retry_ttl_s) if retry_ttl_s > 0 else None
        self.health = health  # serving.history.StoreHealth: the shared store's generation
        self.profile = None  # serving.live_profile.FraudLive, set by the service (issue 15)

    def score(self, req: PaymentRequest) -> dict:
        started = time.perf_counter()
        t_ms = None if req.timestamp is None else epoch_ms(req.timestamp)
        now = now_ms()
        self.guard.check(now if t_ms is None else t_ms, now)
        ledger = self.ledger
        if ledger is not None:
            try:
                first = ledger.claim(req.transaction_id, fingerprint(req, t_ms))
            except STORE_ERRORS:  # the store is down: scored degraded, nothing to dedupe with
                ledger = None
            else:
                if first is not None:
                    metrics.fraud_retry(self.model_version)
                    return first
        try:
            answer = self._score(req, now if t_ms is None else t_ms, started)
        except DataError as err:  # nothing recorded: a retry gets the same 422
            if ledger is not None:
                ledger.keep(req.transaction_id, {"error": str(err)})
            raise
        if ledger is not None:
            with contextlib.suppress(*STORE_ERRORS):  # answered; only a retry would not find it
                ledger.keep(req.transaction_id, answer)
        return answer

    def _score(self, req: PaymentRequest, t_ms: int, started: float) -> dict:
        customer = req.customer_id
        reset = self.health.check() if self.health is not None else None
        d = self.engine.score_fields(
            req.transaction_id,
            t_ms,
            req.amount,
            customer,
            req.card_id or customer,
            req.terminal_id,
            currency=req.currency,
        )
        if self.profile is not None and not d.degraded:  # the live profile (~3 us): the
            self.profile.observe(self.engine._x, d.probability)  # engine's vector of this payment
        version = self.model_version
        metrics.fraud_decision(d.decision, version, d.rules_version, d.decided_by)
        degraded, reason = d.degraded, d.degraded_reason
        if degraded:
            metrics.fraud_degraded("online_features", version)
        elif reset is not None:
            degraded, reason = True, reset
            metrics.fraud_degraded(reset, version)
        answer = {
            "transaction_id": d.transaction_id,
            "probability": d.probability,
            "risk_score": d.risk_score,
            "decision": d.decision,
            "decided_by": d.decided_by,
            "reasons": [r.to_dict() for r in d.reasons],
            "model_version": version,
            "rules_version": d.rules_version,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            "degraded": degraded,
        }
        if reason:  # a string when degraded, absent otherwise (as documented)
            answer["degraded_reason"] = reason
        return answer

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
