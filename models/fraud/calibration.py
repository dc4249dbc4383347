"""Probability calibration of raw scores (Platt or isotonic), stored as plain JSON numbers."""

from __future__ import annotations

import math
from bisect import bisect_right

import numpy as np

from shopml.errors import ConfigError, NotFittedError

METHODS = ("platt", "isotonic", "none")


class Calibrator:
    """Maps a raw log-odds score to a probability; fitted on a period later than training."""

    def __init__(self, method: str = "platt"):
        self.method = method

    def fit(self, raw: np.ndarray, y: np.ndarray) -> Calibrator:
        if self.method not in METHODS:
            raise ConfigError(f"calibration must be one of {METHODS}, got '{self.method}'")
        raw = np.asarray(raw, dtype="float64")
        y = np.asarray(y, dtype="float64")
        if self.method == "platt":
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=1e6, max_iter=1000).fit(raw.reshape(-1, 1), y)
            self.a_, self.b_ = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        elif self.method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, y)
            self.x_ = [float(v) for v in iso.X_thresholds_]
            self.y_ = [float(v) for v in iso.y_thresholds_]
        self.fitted_ = True
        return self

    def _check(self) -> None:
        if not getattr(self, "fitted_", False):
            raise NotFittedError("Calibrator is not fitted; call fit() first")

    def transform(self, raw: np.ndarray) -> np.ndarray:
        self._check()
        raw = np.asarray(raw, dtype="float64")
        if self.method == "platt":
            return 1.0 / (1.0 + np.exp(-(self.a_ * raw + self.b_)))
        if self.method == "isotonic":
            return np.interp(raw, self.x_, self.y_)
        return 1.0 / (1.0 + np.exp(-raw))

    def one(self, raw: float) -> float:
        """`transform` for one float, without numpy (hot path)."""
        if self.method == "platt":
            z = self.a_ * raw + self.b_
            return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
        if self.method == "isotonic":
            xs, ys = self.x_, self.y_
            i = bisect_right(xs, raw)
            if i == 0:
                return ys[0]
            if i >= len(xs):
                return ys[-1]
            x0, x1 = xs[i - 1], xs[i]
            return ys[i - 1] + (ys[i] - ys[i - 1]) * (raw - x0) / (x1 - x0) if x1 > x0 else ys[i]
        return 1.0 / (1.0 + math.exp(-raw)) if raw > -700 else 0.0

    def to_dict(self) -> dict:
        self._check()
        d: dict = {"method": self.method}
        if self.method == "platt":
            d |= {"a": self.a_, "b": self.b_}
        elif self.method == "isotonic":
            d |= {"x": self.x_, "y": self.y_}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Calibrator:
        c = cls(d["method"])
        if c.method == "platt":
            c.a_, c.b_ = float(d["a"]), float(d["b"])
        elif c.method == "isotonic":
            c.x_, c.y_ = list(d["x"]), list(d["y"])
        c.fitted_ = True
        return c
