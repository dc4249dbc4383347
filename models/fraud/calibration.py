"""Probability calibration of raw scores (Platt or isotonic), stored as plain JSON numbers."""

from __future__ import annotations

import math
from bisect import bisect_right
from pathlib import Path
from typing import Any

import numpy as np

from models.base import Estimator, check_is_fitted
from shopml.errors import ConfigError

METHODS = ("platt", "isotonic", "none")


class Calibrator(Estimator):
    """Maps a raw log-odds score to a probability; fitted on a period later than training.

    Stored inside the scorer's JSON (`to_dict` / `from_dict`), or alone by `save`.
    """

    kind = "calibrator"
    fitted_attribute = "fitted_"
    meta_file = "calibrator.json"

    def __init__(self, method: str = "platt"):
        self.method = method

    def fit(self, raw: np.ndarray, y: np.ndarray) -> Calibrator:
        """Learn the map from raw scores to the observed fraud rate (labels `y`)."""
        if self.method not in METHODS:
            raise ConfigError(f"calibration must be one of {METHODS}, got '{self.method}'")
        raw = np.asarray(raw, dtype="float64")
        y = np.asarray(y, dtype="float64")
        if self.method == "platt":
            # scikit-learn: 0.4 s import, needed only to fit (serving loads fitted numbers)
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=1e6, max_iter=1000).fit(raw.reshape(-1, 1), y)
            self.a_, self.b_ = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        elif self.method == "isotonic":
            from sklearn.isotonic import IsotonicRegression  # 0.3 s import, as above

            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, y)
            self.x_ = [float(v) for v in iso.X_thresholds_]
            self.y_ = [float(v) for v in iso.y_thresholds_]
        self.fitted_ = True
        return self

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of raw log-odds scores."""
        check_is_fitted(self)
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
        """The method and its fitted numbers, as JSON values."""
        check_is_fitted(self)
        d: dict = {"method": self.method}
        if self.method == "platt":
            d |= {"a": self.a_, "b": self.b_}
        elif self.method == "isotonic":
            d |= {"x": self.x_, "y": self.y_}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Calibrator:
        """The calibrator `to_dict` described."""
        c = cls(d["method"])
        c._set_fitted(d)
        return c

    def _set_fitted(self, d: dict) -> None:
        if self.method == "platt":
            self.a_, self.b_ = float(d["a"]), float(d["b"])
        elif self.method == "isotonic":
            self.x_, self.y_ = list(d["x"]), list(d["y"])
        self.fitted_ = True

    def _json_state(self) -> dict[str, Any]:
        return {"calibrator": self.to_dict()}

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], path: Path) -> None:
        self._set_fitted(meta["calibrator"])
