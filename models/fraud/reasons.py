"""Feature names -> sentences a fraud reviewer understands (used for reason codes)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_UNITS = {
    "h": ("hour", "hours"),
    "d": ("day", "days"),
    "m": ("minute", "minutes"),
    "s": ("second", "seconds"),
}


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason behind a score: a stable code, words for a reviewer, and its weight
    (log-odds contribution for model reasons; 0 for rule hits and facts)."""

    code: str
    text: str
    weight: float = 0.0

    def to_dict(self) -> dict:
        return {"code": self.code, "text": self.text, "weight": round(self.weight, 4)}


def _window(lab: str) -> str:
    n, u = int(lab[:-1]), lab[-1]
    one, many = _UNITS[u]
    return f"last {one}" if n == 1 else f"last {n} {many}"


def _num(v: float) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "n/a"
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.2f}"


def _duration(secs: float) -> str:
    if secs < 120:
        return f"{secs:.0f} seconds"
    if secs < 7200:
        return f"{secs / 60:.0f} minutes"
    if secs < 172800:
        return f"{secs / 3600:.1f} hours"
    return f"{secs / 86400:.1f} days"


# windowed features: pattern with the entity and window label -> sentence; the sentence may
# use {entity}, {window} ("last 7 days"), {span} ("7 days"), {n} (the value) and {pct} (percent)
_WINDOWED: list[tuple[re.Pattern, str]] = [
    (re.compile(pattern), sentence)
    for pattern, sentence in (
        (
            r"^(?P<entity>\w+?)_count_(?P<window>\w+)$",
            "{n} payments by this {entity} in the {window}",
        ),
        (
            r"^(?P<entity>\w+?)_amount_mean_(?P<window>\w+)$",
            "average amount {n} for this {entity} over the {window}",
        ),
        (
            r"^(?P<entity>\w+?)_amount_max_(?P<window>\w+)$",
            "largest amount {n} for this {entity} over the {window}",
        ),
        (
            r"^(?P<entity>\w+?)_new_terminals_(?P<window>\w+)$",
            "{n} terminals used by this {entity} for the first time in the {window}",
        ),
        (
            r"^(?P<entity>\w+?)_delayed_count_(?P<window>\w+)$",
            "{n} payments of this {entity} in the {window} before the label delay",
        ),
        (
            r"^(?P<entity>\w+?)_known_frauds_(?P<window>\w+)$",
            "{n} confirmed frauds of this {entity} reported in the {window}",
        ),
        (
            r"^(?P<entity>\w+?)_fraud_rate_(?P<window>\w+)$",
            "{pct}% of this {entity}'s payments in a {span} window (before the label delay)"
            " were fraud",
        ),
        (
            r"^customer_spikes_(?P<window>\w+)$",
            "{n} unusually large payments by this customer in the {window}",
        ),
    )
]


def _describe_windowed(name: str, value: float) -> str | None:
    """The sentence of a windowed feature (None for any other name)."""
    for pattern, sentence in _WINDOWED:
        m = pattern.match(name)
        if m:
            window = _window(m["window"])
            return sentence.format(
                entity=m.groupdict().get("entity"),
                window=window,
                span=window.removeprefix("last "),
                n=_num(value),
                pct=f"{100 * value:.0f}",
            )
    return None


def describe(name: str, value: float) -> str:
    """A short sentence for feature `name` taking `value`."""
    if name == "amount":
        return f"amount {_num(value)}"
    if name == "hour":
        return f"payment at {int(value):02d}:00 UTC"
    if name == "is_night":
        return "payment at night (00:00-06:59)" if value else "payment during the day"
    if name == "is_weekend":
        return "payment on a weekend" if value else "payment on a weekday"
    if name == "customer_amount_to_usual":
        if math.isnan(value):
            return "no recent payments to compare the amount with"
        return f"amount is {value:.1f}x this customer's usual amount"
    if name == "customer_amount_to_prev_max":
        if math.isnan(value):
            return "no recent payments to compare the amount with"
        return f"amount is {value:.1f}x this customer's largest payment in 30 days"
    m = re.match(r"^(\w+?)_secs_since_prev$", name)
    if m:
        if math.isnan(value):
            return f"first payment seen from this {m.group(1)}"
        return f"{_duration(value)} since this {m.group(1)}'s previous payment"
    m = re.match(r"^(\w+?)_secs_since_(last|first)_fraud$", name)
    if m:
        e, which = m.groups()
        if math.isnan(value):
            return f"no confirmed fraud of this {e} reported in the last 30 days"
        word = "latest" if which == "last" else "earliest"
        return f"the {word} confirmed fraud of this {e} was {_duration(value)} ago"
    m = re.match(r"^(\w+?)_new_terminal$", name)
    if m:
        e = m.group(1)
        return (
            f"first payment of this {e} at this terminal"
            if value
            else f"this {e} has paid at this terminal before"
        )
    m = re.match(r"^(\w+?)_terminals_ever$", name)
    if m:
        return f"this {m.group(1)} has used {_num(value)} different terminals"
    windowed = _describe_windowed(name, value)
    if windowed is not None:
        return windowed
    return f"{name.replace('_', ' ')} = {_num(value)}"
