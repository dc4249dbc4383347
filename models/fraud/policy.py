"""What to do with a scored payment: a decision policy (thresholds or expected cost). The rules
that may override it (block lists, amount limits, review rules) are in `models/fraud/rules.py`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shopml.errors import ConfigError

APPROVE, REVIEW, DECLINE = "approve", "review", "decline"
DECISIONS = (APPROVE, REVIEW, DECLINE)
_SEVERITY = {APPROVE: 0, REVIEW: 1, DECLINE: 2}


def severity(decision: str) -> int:
    """approve 0, review 1, decline 2."""
    return _SEVERITY[decision]


def stricter(a: str, b: str) -> str:
    return a if _SEVERITY[a] >= _SEVERITY[b] else b


@dataclass
class DecisionPolicy:
    """approve / review / decline from a calibrated probability (and the amount, in cost mode).

    - `mode="threshold"`: review when p >= review_threshold, decline when p >= decline_threshold.
    - `mode="cost"`: pick the cheapest expected outcome: approving loses p x amount; a review
      costs `review_cost` and misses `1 - review_recall` of frauds; declining loses
      `decline_cost_ratio` x amount of a genuine sale, (1 - p) x that in expectation.
    """

    mode: str = "threshold"
    review_threshold: float = 0.3
    decline_threshold: float = 0.9
    review_cost: float = 3.0
    review_recall: float = 0.95
    decline_cost_ratio: float = 0.3

    def __post_init__(self) -> None:
        if self.mode not in ("threshold", "cost"):
            raise ConfigError(
                f"DecisionPolicy.mode must be 'threshold' or 'cost', got '{self.mode}'"
            )
        if not 0.0 <= self.review_threshold <= self.decline_threshold <= 1.0:
            raise ConfigError(
                "DecisionPolicy thresholds must satisfy 0 <= review_threshold <= decline_threshold"
                f" <= 1, got {self.review_threshold} and {self.decline_threshold}"
            )

    def decide(self, p: float, amount: float = 0.0) -> str:
        if self.mode == "threshold":
            if p >= self.decline_threshold:
                return DECLINE
            return REVIEW if p >= self.review_threshold else APPROVE
        approve = p * amount
        review = self.review_cost + p * amount * (1.0 - self.review_recall)
        decline = (1.0 - p) * amount * self.decline_cost_ratio
        best = min(approve, review, decline)
        return APPROVE if best == approve else REVIEW if best == review else DECLINE

    def decide_many(self, p: np.ndarray, amount: np.ndarray | None = None) -> np.ndarray:
        """Vectorised `decide`: array of decision strings."""
        p = np.asarray(p, dtype="float64")
        amount = np.zeros_like(p) if amount is None else np.asarray(amount, dtype="float64")
        if self.mode == "threshold":
            out = np.where(p >= self.review_threshold, REVIEW, APPROVE).astype(object)
            out[p >= self.decline_threshold] = DECLINE
            return out
        costs = np.stack(
            [
                p * amount,
                self.review_cost + p * amount * (1 - self.review_recall),
                (1 - p) * amount * self.decline_cost_ratio,
            ]
        )
        return np.array(DECISIONS, dtype=object)[costs.argmin(axis=0)]

    def to_dict(self) -> dict:
        return dict(self.__dict__)
