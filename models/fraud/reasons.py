"""Reason codes: each feature family of the fraud definition as a sentence a reviewer reads.

A feature name is parsed with the definition's own parts (entities, window labels, family
suffixes), so `customer_delayed_count_1d` is the `delayed_count` family of the customer over
one day, never a count of some `customer_delayed` entity. Model reasons carry the feature, its
value and its log-odds contribution; rule and fact reasons carry a contribution of 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from features.fraud.definition import ENTITIES, FeatureSet, window_label

MODEL, RULE, FACT = "model", "rule", "fact"
_UNITS = {"s": ("second", "seconds"), "m": ("minute", "minutes"), "h": ("hour", "hours")}
_UNITS["d"] = ("day", "days")
# how each entity is named after "payments ...": by a customer, with a card, at a terminal
_OF = {"customer": "by this customer", "card": "with this card", "terminal": "at this terminal"}


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason behind a decision: a stable code, a sentence, what it is about and its weight.

    `kind` is model (a feature that raised the score), rule (a rule that set the decision) or
    fact (no history, degraded state); `contribution` is the feature's log-odds push (0 else)."""

    code: str
    text: str
    kind: str = MODEL
    feature: str | None = None
    value: float | None = None
    contribution: float = 0.0

    def to_dict(self) -> dict:
        value = self.value
        if isinstance(value, float) and not math.isfinite(value):
            value = None  # no data (NaN) is `null` in JSON
        return {
            "code": self.code,
            "text": self.text,
            "kind": self.kind,
            "feature": self.feature,
            "value": value,
            "contribution": round(self.contribution, 4),
        }


def _window(lab: str) -> str:
    n, u = int(lab[:-1]), lab[-1]
    one, many = _UNITS[u]
    return f"last {one}" if n == 1 else f"last {n} {many}"


def _span(seconds: int) -> str:
    """`604800 -> '7 days'`, `86400 -> '1 day'`: a definition's window or delay in words."""
    lab = window_label(int(seconds))
    n, (one, many) = int(lab[:-1]), _UNITS[lab[-1]]
    return f"1 {one}" if n == 1 else f"{n} {many}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _num(v: float) -> str:
    if math.isnan(v):
        return "unknown"
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.2f}"


def _money(v: float) -> str:
    return "unknown" if math.isnan(v) else f"{v:,.2f}"


def _count(v: float, one: str, many: str) -> str:
    return f"{_num(v)} {one if v == 1 else many}"


def _duration(secs: float) -> str:
    if secs < 120:
        return "1 second" if round(secs) == 1 else f"{secs:.0f} seconds"
    if secs < 7200:
        return f"{secs / 60:.0f} minutes"
    if secs < 172800:
        return f"{secs / 3600:.1f} hours"
    return f"{secs / 86400:.1f} days"


@dataclass(frozen=True)
class _Context:
    """The parts of a feature name and the definition's constants a sentence may use."""

    entity: str  # customer | card | terminal ("" for payment-level features)
    window: str  # "last 7 days" ("" when the family has no window)
    span: str  # "7 days", "day"
    fs: FeatureSet

    @property
    def of(self) -> str:
        return _OF.get(self.entity, f"of this {self.entity}")

    @property
    def delay(self) -> str:
        return _span(self.fs.label_delay)


def _ratio(what: str) -> Callable[[float, _Context], str]:
    def say(v: float, c: _Context) -> str:
        if math.isnan(v):
            return f"There is nothing to compare the amount with: {what} is unknown."
        return f"The amount is {v:.1f}x {what}."

    return say


def _since_prev(v: float, c: _Context) -> str:
    if math.isnan(v):
        return f"This is the first payment seen {c.of}."
    return f"The previous payment {c.of} was {_duration(v)} earlier."


def _since_fraud(which: str) -> Callable[[float, _Context], str]:
    def say(v: float, c: _Context) -> str:
        if math.isnan(v):
            longest = _span(max(c.fs.fraud_windows))
            return f"No confirmed fraud {c.of} became known in the last {longest}."
        return f"The {which} confirmed fraud {c.of} happened {_duration(v)} before this payment."

    return say


# family -> sentence of (value, context); families with a window end in `_<window label>`
_WINDOWED: dict[str, Callable[[float, _Context], str]] = {
    "count": lambda v, c: _cap(f"{_count(v, 'payment', 'payments')} {c.of} in the {c.window}."),
    "amount_mean": lambda v, c: f"The average payment {c.of} over the {c.window} is {_money(v)}.",
    "amount_max": lambda v, c: f"The largest payment {c.of} over the {c.window} is {_money(v)}.",
    "new_terminals": lambda v, c: (
        f"This {c.entity} paid at {_count(v, 'terminal', 'terminals')} for the first time in the"
        f" {c.window}."
    ),
    "delayed_count": lambda v, c: _cap(
        f"{_count(v, 'payment', 'payments')} {c.of} in the {c.span} that ended {c.delay} ago"
        " (old enough to carry labels)."
    ),
    "known_frauds": lambda v, c: _cap(
        f"{_count(v, 'confirmed fraud', 'confirmed frauds')} {c.of} became known in the {c.window}."
    ),
    "fraud_rate": lambda v, c: (
        f"{100 * v:.0f}% of the payments {c.of} in the {c.span} that ended {c.delay} ago were"
        " confirmed frauds."
    ),
    "spikes": lambda v, c: (
        f"This customer made {_count(v, 'unusually large payment', 'unusually large payments')}"
        f" (over {c.fs.spike_ratio:g}x the usual amount) in the {c.window}."
    ),
}
_PER_ENTITY: dict[str, Callable[[float, _Context], str]] = {
    "secs_since_prev": _since_prev,
    "new_terminal": lambda v, c: (
        f"This {c.entity} pays at this terminal for the first time."
        if v
        else f"This {c.entity} has paid at this terminal before."
    ),
    "terminals_ever": lambda v, c: (
        f"This {c.entity} has paid at {_count(v, 'different terminal', 'different terminals')}."
    ),
    "secs_since_last_fraud": _since_fraud("latest"),
    "secs_since_first_fraud": _since_fraud("earliest"),
}
_PAYMENT: dict[str, Callable[[float, _Context], str]] = {
    "amount": lambda v, c: f"The amount is {_money(v)}.",
    "hour": lambda v, c: f"The payment was made at {_num(v).zfill(2)}:00 UTC.",
    "is_night": lambda v, c: (
        f"The payment was made at night (00:00-{c.fs.night_last_hour:02d}:59 UTC)."
        if v
        else "The payment was made during the day."
    ),
    "is_weekend": lambda v, c: (
        "The payment was made on a weekend." if v else "The payment was made on a weekday."
    ),
    "customer_amount_to_usual": lambda v, c: _ratio(
        f"this customer's average over the last {_span(c.fs.usual_window)}"
    )(v, c),
    "customer_amount_to_prev_max": lambda v, c: _ratio(
        f"this customer's largest payment of the last {_span(c.fs.usual_window)}"
    )(v, c),
    "customer_amount_to_delayed_mean": lambda v, c: _ratio(
        f"this customer's average payment old enough to carry labels ({c.delay} or more ago)"
    )(v, c),
}
_ENTITY = "|".join(ENTITIES)
_NAME = re.compile(
    rf"^(?P<entity>{_ENTITY})_(?:(?P<windowed>{'|'.join(_WINDOWED)})_(?P<window>\d+[smhd])"
    rf"|(?P<plain>{'|'.join(_PER_ENTITY)}))$"
)


def family(name: str) -> str | None:
    """The feature family of `name` (`count`, `fraud_rate`, `amount`...), None if unknown."""
    if name in _PAYMENT:
        return name
    m = _NAME.match(name)
    return None if m is None else m["windowed"] or m["plain"]


def describe(name: str, value: float, fs: FeatureSet | None = None) -> str:
    """The sentence of feature `name` taking `value` (constants such as the label delay from
    `fs`, the default definition otherwise)."""
    fs = fs or _DEFAULT
    value = float("nan") if value is None else float(value)
    if name in _PAYMENT:
        return _PAYMENT[name](value, _Context("customer", "", "", fs))
    m = _NAME.match(name)
    if m is None:
        return f"The feature {name.replace('_', ' ')} is {_num(value)}."
    if m["plain"]:
        return _PER_ENTITY[m["plain"]](value, _Context(m["entity"], "", "", fs))
    window = _window(m["window"])
    if math.isnan(value):
        words = m["windowed"].replace("_", " ")
        return f"The {words} {_OF[m['entity']]} over the {window} is unknown."
    ctx = _Context(m["entity"], window, window.removeprefix("last "), fs)
    return _WINDOWED[m["windowed"]](value, ctx)


_DEFAULT = FeatureSet()
