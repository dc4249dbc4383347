"""One call from a raw payment to a decision: online features + calibrated score + policy + rules.

`FraudEngine.score(payment)` validates the payment, computes its features from per-key state
(recording it), scores it, applies the rule layer and the decision policy and returns a
`FraudDecision` with reasons. If the state store fails the payment is scored as if all its keys
were new and the decision is flagged `degraded`. No MLflow or BentoML here: serving wraps it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract import CURRENCIES
from features.fraud.definition import FeatureSet
from features.fraud.labels import Label, LabelStore
from features.fraud.online import UNSEEN, OnlineFeatures
from features.fraud.state_store import STORE_ERRORS, InMemoryStateStore, StateStore
from models.fraud.policy import APPROVE, DecisionPolicy
from models.fraud.reasons import FACT, Reason
from models.fraud.rules import MODEL_DECIDED, RuleSet
from models.fraud.scorer import FraudScorer
from shopml.clock import epoch_ms, from_epoch_ms, now_ms
from shopml.errors import DataError
from shopml.log import get_logger

log = get_logger("models.fraud")

ENGINE_FILE = "engine.json"
_CURRENCIES = frozenset(CURRENCIES)
_UNSEEN_REASONS = {
    e: Reason(f"unseen:{e}", f"This is the first payment seen from this {e} (no history).", FACT)
    for e in UNSEEN
}


@dataclass(frozen=True, slots=True)
class FraudDecision:
    transaction_id: str
    probability: float
    risk_score: int  # round(1000 x probability)
    decision: str  # approve | review | decline
    reasons: tuple[Reason, ...]
    degraded: bool = False
    degraded_reason: str | None = None
    decided_by: str = MODEL_DECIDED  # "model", or "rule:<name>" when a rule set the decision
    rules_version: str = "none"

    def to_dict(self) -> dict:
        return {
            "transaction_id": self.transaction_id,
            "probability": self.probability,
            "risk_score": self.risk_score,
            "decision": self.decision,
            "decided_by": self.decided_by,
            "reasons": [r.to_dict() for r in self.reasons],
            "rules_version": self.rules_version,
            "degraded": self.degraded,
            "degraded_reason": self.degraded_reason,
        }


@dataclass
class LabelReport:
    """What became of a batch of late labels; `degraded_reason` says why the online update failed
    (the labels were then kept for training only). `added`, `corrected` and `unchanged` count
    what the label store did (unchanged includes stale labels older than the stored one)."""

    accepted: int
    unknown_transactions: list[str] = field(default_factory=list)
    stored_at: str | None = None
    degraded_reason: str | None = None
    added: int = 0
    corrected: int = 0
    unchanged: int = 0

    @property
    def degraded(self) -> bool:
        return self.degraded_reason is not None


def _id(payment: Mapping, name: str, default=None, what: str = "payment") -> str:
    v = payment.get(name, default)
    if v is None or isinstance(v, float) and math.isnan(v):
        raise DataError(f"{what}.{name}: missing id")
    v = v if isinstance(v, str) else str(v)
    if not v.strip():
        raise DataError(f"{what}.{name}: empty id")
    return v


def validate_payment(payment: Mapping) -> tuple[str, int, float, str, str, str]:
    """(transaction_id, t_ms, amount, customer, card, terminal) or a DataError naming the field."""
    if not isinstance(payment, Mapping):
        raise DataError(f"payment must be a mapping of fields, got {type(payment).__name__}")
    tx = _id(payment, "transaction_id")
    customer = _id(payment, "customer_id")
    terminal = _id(payment, "terminal_id")
    card = payment.get("card_id")
    card = customer if card is None else _id(payment, "card_id")
    amount = payment.get("amount")
    if amount is None:
        raise DataError("payment.amount: missing")
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        try:
            amount = float(amount)
        except (TypeError, ValueError):
            raise DataError(f"payment.amount: not a number ({amount!r})") from None
    amount = float(amount)
    if not math.isfinite(amount) or amount < 0:
        raise DataError(f"payment.amount: must be a finite number >= 0, got {amount}")
    currency = payment.get("currency", "EUR")
    if currency not in _CURRENCIES:
        raise DataError(
            f"payment.currency: unknown currency {currency!r}; expected one of "
            f"{', '.join(CURRENCIES)}"
        )
    try:
        t_ms = epoch_ms(payment.get("timestamp"))
    except OverflowError:  # an offset that moves the time outside years 1-9999 in UTC
        raise DataError(
            f"payment.timestamp: {payment.get('timestamp')!r} is outside the years 1-9999 in UTC"
        ) from None
    return tx, t_ms, amount, customer, card, terminal


class FraudEngine:
    """Features online state + scorer + rules + policy behind `score(payment)`."""

    def __init__(
        self,
        scorer: FraudScorer,
        feature_set: FeatureSet | None = None,
        store: StateStore | None = None,
        policy: DecisionPolicy | None = None,
        rules: RuleSet | None = None,
        explain: str = "auto",
        top_reasons: int = 3,
        label_store: LabelStore | None = None,
    ):
        self.scorer = scorer
        self.feature_set = feature_set or FeatureSet()
        if list(scorer.feature_names_) != list(self.feature_set.names):
            raise DataError(
                f"scorer was trained on {len(scorer.feature_names_)} features that differ from "
                f"feature set {self.feature_set.version}"
            )
        self.features = OnlineFeatures(self.feature_set, store)
        self.policy = policy or DecisionPolicy()
        self.rules = (rules or RuleSet()).bind(self.feature_set.names)
        if explain not in ("auto", "always", "never"):
            raise DataError(f"explain must be auto, always or never, got {explain!r}")
        self.explain = explain
        self.top_reasons = top_reasons
        self.label_store = label_store
        self._x = self.features.new_vector()
        self._fallback = OnlineFeatures(self.feature_set, InMemoryStateStore())

    @property
    def store(self) -> StateStore:
        return self.features.store

    def set_rules(self, rules: RuleSet) -> RuleSet:
        """Swap in new rules (checked against the feature set first: a ConfigError keeps the
        old ones); the next payment is decided with them. Returns the bound rules."""
        bound = rules.bind(self.feature_set.names)
        self.rules = bound
        return bound

    def score(self, payment: Mapping, record: bool = True) -> FraudDecision:
        """Validate, featurise (recording the payment), score and decide one raw payment."""
        tx, t, amount, customer, card, terminal = validate_payment(payment)
        currency = payment.get("currency", "EUR")
        return self.score_fields(tx, t, amount, customer, card, terminal, record, currency)

    def score_fields(
        self,
        tx: str,
        t: int,
        amount: float,
        customer: str,
        card: str,
        terminal: str,
        record: bool = True,
        currency: str = "EUR",
    ) -> FraudDecision:
        """Score a validated payment (`t` in epoch ms): online features (recorded unless
        `record=False`), calibrated probability, policy, rules and reasons. Features and policy
        see the amount in the base currency (a currency without a rate: a DataError naming
        `payment.currency`), the rules the amount as paid with its currency."""
        x = self._x
        degraded_reason = None
        base_amount = self.feature_set.to_base(amount, currency)
        try:
            unseen = self.features.compute(
                t, base_amount, customer, card, terminal, x, record=record, transaction_id=tx
            )
        except DataError:
            raise
        except Exception as err:  # noqa: BLE001 - any store failure degrades, never fails checkout
            degraded_reason = f"feature state unavailable: {type(err).__name__}"
            self._fallback.store.clear()
            unseen = self._fallback.compute(
                t, base_amount, customer, card, terminal, x, record=False
            )
        p = self.scorer.predict_one(x)
        rules = self.rules  # one version for the whole payment, also during a reload
        hits = rules.check(customer, card, terminal, amount, currency, x, p)
        decision, by = rules.decide(self.policy.decide(p, base_amount), hits)
        reasons = [hit.reason for hit in hits]
        if by is not None:  # the deciding rule's reason first
            reasons.insert(0, reasons.pop(hits.index(by)))
        if self.explain == "always" or (self.explain == "auto" and decision != APPROVE):
            reasons.extend(self.scorer.explain(x, self.top_reasons, self.feature_set))
        if unseen:
            reasons.extend(r for e, r in _UNSEEN_REASONS.items() if unseen & UNSEEN[e])
        if degraded_reason:
            reasons.append(Reason("degraded", f"Scored without history: {degraded_reason}.", FACT))
        return FraudDecision(
            tx,
            p,
            int(round(p * 1000)),
            decision,
            tuple(reasons),
            degraded_reason is not None,
            degraded_reason,
            MODEL_DECIDED if by is None else f"rule:{by.name}",
            rules.version,
        )

    def decide_many(
        self, p: np.ndarray, X: np.ndarray, payments: pd.DataFrame
    ) -> tuple[np.ndarray, np.ndarray]:
        """The decisions `score` would give many payments (policy, then the rules) and what
        set each ("model" or "rule:<name>"): what the training metrics count."""
        amount = payments["amount"].to_numpy(dtype="float64")
        base_amount = self.feature_set.amounts_in_base(payments)  # what the policy weighs
        columns = {c: payments[c].to_numpy() for c in ("customer_id", "card_id", "terminal_id")}
        columns["amount"] = amount
        columns["currency"] = (
            payments["currency"].to_numpy() if "currency" in payments else np.full(len(p), "EUR")
        )
        return self.rules.apply_many(self.policy.decide_many(p, base_amount), p, X, columns)

    def warm_up(self) -> None:
        """Build LightGBM's single-row predictors now, not on the first checkout."""
        for _ in range(2):
            self.score_fields(
                "warm-up", now_ms(), 1.0, "warm-up", "warm-up", "warm-up", record=False
            )
        self.scorer.explain(self.features.new_vector())

    def replay(self, payments: pd.DataFrame) -> int:
        """Record past payments (labels filed when they became known) in the online state, in
        time order, so that their customers, cards and terminals are known; returns the count."""
        self.features.replay_frame(payments)
        return len(payments)

    def predict_frame(self, payments: pd.DataFrame) -> pd.DataFrame:
        """Score a frame of raw payments in time order without recording them (generic use)."""
        order = np.argsort(pd.to_datetime(payments["timestamp"]).to_numpy(), kind="stable")
        rows = payments.to_dict("records")
        out = [None] * len(rows)
        for i in order:
            out[i] = self.score(rows[i], record=False).to_dict()
        return pd.DataFrame(out, index=payments.index)

    # ------------------------------------------------------------ labels
    def ingest_labels(self, labels: Iterable[Mapping] | pd.DataFrame) -> LabelReport:
        """Late labels: see `ingest_labels`; kept in `label_store` when it is set."""
        return ingest_labels(labels, self.features, self.label_store, source="service")

    # --------------------------------------------------------- save/load
    def save(self, path: str | Path) -> Path:
        """Scorer files + `engine.json` (feature set and its version, policy, rules)."""
        path = Path(path)
        self.scorer.save(path)
        meta = {
            "feature_set": self.feature_set.to_dict(),
            "feature_version": self.feature_set.version,
            "policy": self.policy.to_dict(),
            "rules": self.rules.to_dict(),
            "explain": self.explain,
            "top_reasons": self.top_reasons,
        }
        (path / ENGINE_FILE).write_text(json.dumps(meta, indent=2))
        return path

    @classmethod
    def load(
        cls,
        path: str | Path,
        store: StateStore | None = None,
        label_store: LabelStore | None = None,
    ) -> FraudEngine:
        path = Path(path)
        if not (path / ENGINE_FILE).is_file():
            raise DataError(f"{path} holds no saved FraudEngine ({ENGINE_FILE} missing)")
        meta = json.loads((path / ENGINE_FILE).read_text())
        fs = FeatureSet.from_dict(meta["feature_set"])
        return cls(
            FraudScorer.load(path),
            fs,
            store,
            DecisionPolicy(**meta["policy"]),
            RuleSet.from_dict(meta["rules"]),
            meta.get("explain", "auto"),
            meta.get("top_reasons", 3),
            label_store,
        )


def ingest_labels(
    labels: Iterable[Mapping] | pd.DataFrame,
    features: OnlineFeatures,
    label_store: LabelStore | None = None,
    source: str = "service",
) -> LabelReport:
    """Late labels (transaction_id, is_fraud, [label_time], [customer_id, terminal_id,
    [timestamp]]).

    The whole batch is validated first (a bad row: a DataError naming the field, and nothing
    is stored or applied). It is then written to `label_store` (one transaction; the next
    training applies it). The labels the store added or corrected then change the online
    customer and terminal risk from their label time (default now), by transaction id: a label
    sent again changes nothing, a correction from fraud to genuine takes the fraud back out,
    one back to fraud files it again. Without a label store every label is applied, still
    idempotent per transaction id. The payment's customer and terminal come from the row or
    from the payment record the state store kept when it was scored; if the state store is
    unreachable the report is `degraded` (the labels are kept for training only).
    """
    rows = labels.to_dict("records") if isinstance(labels, pd.DataFrame) else list(labels)
    now = now_ms()
    parsed = [
        Label(_id(row, "transaction_id", what="label"), _label_flag(row), from_epoch_ms(k))
        for row, k in ((row, _label_known_ms(row, now)) for row in rows)
    ]
    payments = [_label_payment(row) for row in rows]  # validated before anything is written
    report = LabelReport(len(parsed))
    todo = list(zip(parsed, payments, strict=True))
    if label_store is not None:
        write = label_store.write(parsed, source)
        report.stored_at = label_store.where
        report.added, report.corrected = write.added, write.corrected
        report.unchanged = write.unchanged + write.stale
        changed = {id(lab) for lab in write.changed}
        todo = [(lab, pay) for lab, pay in todo if id(lab) in changed]
    try:
        report.unknown_transactions = _file_labels(todo, features)
    except STORE_ERRORS as exc:
        report.degraded_reason = f"online store unavailable: {type(exc).__name__}"
        log.warning(
            "labels stored for training only: online store unavailable",
            extra={"error_type": type(exc).__name__, "labels": len(rows)},
        )
        if label_store is None:
            report.accepted = 0
    return report


def _label_payment(row: Mapping) -> tuple[str, str, int | None] | None:
    """(customer, terminal, payment time ms or None) when the row names them, else None."""
    if row.get("customer_id") is None or row.get("terminal_id") is None:
        return None
    ts = row.get("timestamp")
    missing = ts is None or ts is pd.NaT or (isinstance(ts, float) and math.isnan(ts))
    return (
        str(row["customer_id"]),
        str(row["terminal_id"]),
        None if missing else epoch_ms(ts, "label.timestamp"),
    )


def _label_flag(row: Mapping) -> bool:
    """The label's `is_fraud` as a bool (true/false/1/0, also as strings), else a DataError."""
    flag = row.get("is_fraud")
    if isinstance(flag, str) and flag.strip().lower() in ("true", "false", "1", "0"):
        flag = flag.strip().lower() in ("true", "1")
    if not isinstance(flag, bool | np.bool_ | int | np.integer) or flag not in (0, 1):
        raise DataError(f"label.is_fraud: must be true or false, got {flag!r}")
    return bool(flag)


def _label_known_ms(row: Mapping, now: int) -> int:
    """When the label became known: its `label_time`, else `now`."""
    lt = row.get("label_time")
    missing = lt is None or lt is pd.NaT or (isinstance(lt, float) and math.isnan(lt))
    return now if missing else epoch_ms(lt, "label.label_time")


def _file_labels(
    todo: list[tuple[Label, tuple[str, str, int | None] | None]], features: OnlineFeatures
) -> list[str]:
    """Set (fraud) or take back (genuine) each label in the online state, by transaction id,
    once every payment is found; returns the frauds whose payment is unknown."""
    unknown, found = [], []
    for label, payment in todo:
        if payment is None:
            payment = features.store.lookup_payment(label.transaction_id)
            if payment is None:
                if label.is_fraud:
                    unknown.append(label.transaction_id)
                continue
        found.append((label, payment))
    for label, (customer, terminal, tx_ms) in found:
        features.add_fraud_label(
            customer,
            terminal,
            epoch_ms(label.label_time),
            tx_ms,
            transaction_id=label.transaction_id,
            is_fraud=label.is_fraud,
        )
    return unknown
