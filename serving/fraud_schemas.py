"""Typed requests and answers of the fraud service (checkout scoring and late labels).

A payment with a missing id, a negative or non-numeric amount, an unparseable timestamp or an
unknown currency is refused with a 400 naming the field. Timestamps may carry a time zone
(converted to UTC) or be naive (taken as UTC); without one the server's clock is used. A time
outside the checkout's window around the server clock is refused by `serving.checkout.TimeGuard`
(422 naming `timestamp` and the accepted range).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from features.contract import CURRENCIES

Currency = Literal[CURRENCIES]  # type: ignore[valid-type]
Decision = Literal["approve", "review", "decline"]


def _id(description: str, default=...):
    return Field(default, min_length=1, max_length=128, description=description)


def naive_utc(value: datetime | None) -> datetime | None:
    """An aware time converted to naive UTC; one whose UTC falls outside years 1-9999 (e.g.
    `0001-01-01T00:00:00+01:00`) is a ValueError, so a 400 naming the field, never a 500."""
    if value is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        raise ValueError(f"{value.isoformat()} is outside the years 1-9999 in UTC") from None


class PaymentRequest(BaseModel):
    """One card payment at checkout."""

    model_config = ConfigDict(extra="forbid")

    transaction_id: str = _id("Unique id of the payment")
    timestamp: datetime | None = Field(None, description="When it happened (default: now, UTC)")
    customer_id: str = _id("Customer id")
    card_id: str | None = _id("Card / payment instrument id (default: the customer id)", None)
    terminal_id: str = _id("Terminal, merchant or device id")
    amount: float = Field(..., ge=0, le=1e9, allow_inf_nan=False, description="Amount, >= 0")
    currency: Currency = Field("EUR", description=f"ISO 4217 code, one of {', '.join(CURRENCIES)}")

    _utc = field_validator("timestamp")(classmethod(lambda cls, v: naive_utc(v)))


class Reason(BaseModel):
    code: str = Field(description="Stable machine code: the feature, 'rule:<name>' or a fact")
    text: str = Field(description="What it means, as a sentence for a reviewer")
    kind: Literal["model", "rule", "fact"] = Field(
        description="model: a feature that raised the score; rule: a rule that hit; fact: no"
        " history or degraded state"
    )
    feature: str | None = Field(description="The feature (or payment field) it is about")
    value: float | None = Field(description="The feature's value for this payment")
    contribution: float = Field(
        description="How much the feature raised the log-odds of fraud (> 0; 0 for rules, facts)"
    )


class ScoreResponse(BaseModel):
    transaction_id: str
    probability: float = Field(description="Calibrated probability of fraud")
    risk_score: int = Field(ge=0, le=1000, description="round(1000 x probability)")
    decision: Decision
    decided_by: str = Field(
        description="'model', or 'rule:<name>' when a rule set the decision (its reason first)"
    )
    reasons: list[Reason]
    model_version: str = Field(description="MLflow registered model and version")
    rules_version: str = Field(description="Version of the rules that decided: name@content hash")
    latency_ms: float = Field(description="Server time spent on this payment (the budget used)")
    degraded: bool = Field(description="True when online features were unavailable")
    degraded_reason: str = Field(
        None, description="Why the answer is degraded (e.g. online_features); absent otherwise"
    )


class Label(BaseModel):
    """A late fraud label (chargeback, confirmed fraud, or cleared)."""

    model_config = ConfigDict(extra="forbid")

    transaction_id: str = _id("The payment the label is about")
    is_fraud: bool
    label_time: datetime | None = Field(None, description="When it became known (default: now)")

    _utc = field_validator("label_time")(classmethod(lambda cls, v: naive_utc(v)))


class LabelsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[Label] = Field(..., min_length=1, max_length=10_000)


class LabelsResponse(BaseModel):
    accepted: int
    unknown_transactions: list[str] = Field(
        description="Labels whose payment this server never scored (kept for training only)"
    )
    degraded: bool
    model_version: str


def now_utc() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class RulesReloadRequest(BaseModel):
    """Reload the rules file the service was started with (send `{}`)."""

    model_config = ConfigDict(extra="forbid")


class RulesReloadResponse(BaseModel):
    rules_version: str = Field(description="The version now deciding")
    previous_version: str
    changed: bool = Field(description="False when the file held the rules already in force")
    source: str | None = Field(description="The rules file read")


class StateRequest(BaseModel):
    """Which key of the online state to show (the operator view, `shopml fraud state`)."""

    model_config = ConfigDict(extra="forbid")

    entity: Literal["customer", "card", "terminal"]
    id: str = _id("The customer, card or terminal id")


class StateResponse(BaseModel):
    """What the online store holds for the key (`features.fraud.state_store.read_key`): when
    found, `last_payment_ms`, `windows_end_ms`, per window `count`, `sum` and `max` of the
    amounts, `terminals` used and `known_frauds` (label id, known and payment time, ms)."""

    model_config = ConfigDict(extra="allow")

    entity: str
    id: str
    found: bool = Field(description="False when the online store holds nothing for this key")
